"""The Merkle tree against RFC 6962/9162 vectors, pymerkle, and its own reference twin.

Also tree.bin round trips and damage, and inclusion / non-inclusion / removed proofs,
including forged ones a verifier must refuse.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from clearset.errors import InputError, VerificationError
from clearset.receipts import merkle
from clearset.receipts.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    hash_leaf,
    inclusion_path_of,
    reference_path,
    reference_root,
    root_of,
    verify_inclusion,
)
from clearset.receipts.proofs import (
    encode_path,
    load_proof,
    proof_to_json,
    prove,
    prove_removed,
    verify_proof,
    verify_removed,
)
from clearset.receipts.statement import build_statement, statement_digest, tree_of

# certificate-transparency merkle_tree_test.cc: the eight leaf inputs and the roots of
# the trees over the first 1..8 of them.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path) from the same test file.
CT_PATHS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
DATA = Path(__file__).parent / "data"
EMPTY_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def sorted_leaves(n: int, seed: int = 0) -> np.ndarray:
    """n random, sorted, unique 32-byte values (collisions are out of reach at 256 bits)."""
    values = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    order = np.argsort(values.view("S32").ravel(), kind="stable")
    return np.ascontiguousarray(values[order])


def statement_for(tree: MerkleTree, name: str = "demo") -> dict:
    return build_statement(
        dataset_name=name,
        tree_size=tree.size,
        root=tree.root,
        source_name="/data/demo",
        manifest_digest="ab" * 32,
        lists=[],
        scan_started="2024-05-01T10:00:00Z",
        scan_finished="2024-05-01T11:00:00Z",
        removed_count=0,
        removed_commitment="cd" * 32,
    )


# --- RFC vectors -------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT.hex() == EMPTY_HEX
    assert root_of([]).hex() == EMPTY_HEX
    assert MerkleTree.build(np.empty((0, 32), np.uint8)).root.hex() == EMPTY_HEX


@pytest.mark.parametrize("size", range(1, 9))
def test_ct_roots(size):
    assert root_of(CT_LEAVES[:size]).hex() == CT_ROOTS[size - 1]
    assert reference_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_ct_inclusion_paths(index, size, path):
    entries = CT_LEAVES[:size]
    assert [p.hex() for p in inclusion_path_of(entries, index)] == path
    root = bytes.fromhex(CT_ROOTS[size - 1])
    hashes = [bytes.fromhex(p) for p in path]
    assert verify_inclusion(hash_leaf(entries[index]), index, size, hashes, root)
    # The same path must not prove another index, or reach another tree's root. (It may
    # verify for another tree size with the same shape: RFC 9162 paths do not bind the
    # size; the signed root does, which is why verify_proof checks size and root.)
    assert not verify_inclusion(hash_leaf(entries[index]), index ^ 1, size, hashes, root)
    other_root = bytes.fromhex(CT_ROOTS[size % 8])
    assert not verify_inclusion(hash_leaf(entries[index]), index, size, hashes, other_root)


@pytest.mark.parametrize("size", range(1, 9))
def test_every_ct_path_matches_the_rfc_definition(size):
    entries = CT_LEAVES[:size]
    root = bytes.fromhex(CT_ROOTS[size - 1])
    for index in range(size):
        path = inclusion_path_of(entries, index)
        assert path == reference_path(entries, index)
        assert verify_inclusion(hash_leaf(entries[index]), index, size, path, root)


def test_verify_inclusion_rejects_bad_shapes():
    root = bytes.fromhex(CT_ROOTS[7])
    path = inclusion_path_of(CT_LEAVES, 3)
    leaf = hash_leaf(CT_LEAVES[3])
    assert verify_inclusion(leaf, 3, 8, path, root)
    assert not verify_inclusion(leaf, 3, 8, path[:-1], root)  # too short
    assert not verify_inclusion(leaf, 3, 8, [*path, path[0]], root)  # too long
    assert not verify_inclusion(leaf, 8, 8, path, root)  # index out of range
    assert not verify_inclusion(leaf, -1, 8, path, root)
    assert not verify_inclusion(CT_LEAVES[3], 3, 8, path, root)  # unhashed leaf


# --- against pymerkle and the reference twin ---------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 9, 16, 17, 31, 33, 100, 257])
def test_roots_and_paths_match_pymerkle(size):
    pymerkle = pytest.importorskip("pymerkle")
    leaves = sorted_leaves(size, seed=size)
    reference = pymerkle.InmemoryTree(algorithm="sha256")
    for row in leaves:
        reference.append_entry(bytes(row))
    for cache_level in (0, 1, 4):
        tree = MerkleTree.build(leaves, cache_level=cache_level)
        assert tree.root == reference.get_root()
        for index in sorted({0, size // 3, size // 2, size - 1}):
            path = tree.inclusion_proof(index)
            # pymerkle's path starts with the leaf's own hash, then the siblings.
            theirs = reference.prove_inclusion(index + 1).serialize()["path"]
            assert [p.hex() for p in path] == theirs[1:]
            assert verify_inclusion(hash_leaf(bytes(leaves[index])), index, size, path, tree.root)


@pytest.mark.parametrize("size", [0, 1, 2, 15, 16, 17, 63, 64, 65, 200, 1000])
def test_tree_matches_reference_twin(size):
    leaves = sorted_leaves(size, seed=size + 1000)
    entries = [bytes(row) for row in leaves]
    tree = MerkleTree.build(leaves)
    assert tree.root == reference_root(entries)
    # The recursive reference costs O(n) a path: every index up to 200, a sample above.
    indices = range(size) if size <= 200 else range(0, size, 37)
    for index in [*indices, size - 1] if size else []:
        assert tree.inclusion_proof(index) == reference_path(entries, index)


def test_streamed_chunks_equal_whole_array(monkeypatch):
    # A small build batch makes the chunks cross batch and group boundaries.
    monkeypatch.setattr(merkle, "BUILD_BATCH", 64)
    leaves = sorted_leaves(1000, seed=3)
    cuts = [0, 1, 7, 64, 65, 300, 999, 1000]
    chunks = (leaves[a:b] for a, b in zip(cuts, cuts[1:], strict=False))
    assert (
        MerkleTree.build(chunks).root
        == MerkleTree.build(leaves).root
        == root_of([bytes(r) for r in leaves])
    )


@pytest.mark.parametrize("bad", ["unsorted", "repeat", "repeat_across_chunks", "shape"])
def test_build_refuses_leaves_that_break_the_leaf_rule(bad):
    leaves = sorted_leaves(50, seed=4)
    if bad == "unsorted":
        chunks = [leaves[::-1]]
    elif bad == "repeat":
        chunks = [np.concatenate([leaves[:10], leaves[9:]])]
    elif bad == "repeat_across_chunks":
        chunks = [leaves[:10], leaves[9:]]
    else:
        chunks = [leaves[:, :16]]
    with pytest.raises(InputError):
        MerkleTree.build(iter(chunks))


def test_find_uses_full_32_bytes_including_trailing_zeros():
    # numpy's byte strings drop trailing NULs when read back; searching must not.
    base = bytes(range(1, 31))
    values = [base + b"\x00\x00", base + b"\x00\x01", base + b"\x01\x00"]
    tree = MerkleTree.build(np.frombuffer(b"".join(values), np.uint8).reshape(3, 32))
    for index, value in enumerate(values):
        assert tree.find(value) == index
    assert tree.find(base + b"\x00\x02") is None
    assert tree.position(base + b"\x00\x02") == 2


# --- tree.bin -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5, 16, 1000])
def test_tree_bin_round_trip(tmp_path, size):
    leaves = sorted_leaves(size, seed=5)
    built = MerkleTree.build(leaves)
    built.write(tmp_path / "tree.bin")
    opened = MerkleTree.open(tmp_path / "tree.bin")
    streamed = MerkleTree.build(iter([leaves]), tmp_path / "streamed.bin")
    assert (tmp_path / "tree.bin").read_bytes() == (tmp_path / "streamed.bin").read_bytes()
    for tree in (opened, streamed):
        assert (tree.root, tree.size) == (built.root, built.size)
        assert np.array_equal(tree.leaves, leaves)
        tree.verify()
        for index in range(0, size, max(1, size // 7)):
            assert tree.inclusion_proof(index) == built.inclusion_proof(index)
            assert tree.find(bytes(leaves[index])) == index
    assert not list(tmp_path.glob("*.part"))
    expected = 128 + 32 * size + 32 * sum(merkle._level_sizes(size, merkle.CACHE_LEVEL))
    assert (tmp_path / "tree.bin").stat().st_size == expected


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[:-7]
    elif how == "extended":
        data += b"\0" * 32
    elif how == "magic":
        data[0] ^= 0xFF
    elif how == "version":
        data[8] ^= 0x01
    elif how == "size_field":
        data[16] ^= 0x01
    elif how == "root_field":
        data[30] ^= 0x01
    elif how == "top_level":
        data[-1] ^= 0x01
    elif how == "empty_file":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how",
    ["truncated", "extended", "magic", "version", "size_field", "root_field", "top_level",
     "empty_file"],
)  # fmt: skip
def test_damaged_tree_bin_is_an_input_error_naming_the_file(tmp_path, how):
    path = tmp_path / "tree.bin"
    MerkleTree.build(sorted_leaves(100, seed=6), path)
    _damage(path, how)
    with pytest.raises(InputError, match="tree.bin"):
        MerkleTree.open(path)


def test_missing_tree_bin_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="nothere.bin"):
        MerkleTree.open(tmp_path / "nothere.bin")


@pytest.mark.parametrize("offset", [128 + 32 * 7 + 3, 128 + 32 * 100 + 5])
def test_corrupted_leaves_or_levels_are_caught(tmp_path, offset):
    # A damaged leaf (offset in leaf 7) or stored level passes the cheap checks at open,
    # but verify() and any proof touching it refuse, naming the file.
    path = tmp_path / "tree.bin"
    leaves = sorted_leaves(100, seed=7)
    MerkleTree.build(leaves, path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    tree = MerkleTree.open(path)
    with pytest.raises(InputError, match="tree.bin"):
        tree.verify()
    with pytest.raises(InputError, match="tree.bin"):
        # Leaf 7 itself, or leaf 16, whose path holds level-4 node 0 (the damaged one).
        prove(tree, bytes(leaves[7] if offset < 128 + 32 * 100 else leaves[16]), "0" * 64)


# --- proofs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_and_statement():
    tree = MerkleTree.build(sorted_leaves(300, seed=8))
    statement = statement_for(tree)
    return tree, statement, statement_digest(statement)


def _between(low: bytes, high: bytes) -> bytes:
    """A 32-byte value strictly between two sorted leaves (random leaves leave room)."""
    value = (int.from_bytes(low, "big") + int.from_bytes(high, "big")) // 2
    candidate = value.to_bytes(32, "big")
    assert low < candidate < high
    return candidate


def test_inclusion_proof_verifies(tree_and_statement):
    tree, statement, digest = tree_and_statement
    for index in (0, 1, 150, 299):
        proof = prove(tree, tree.leaf(index), digest)
        assert proof["type"] == "inclusion" and proof["index"] == index
        verify_proof(load_proof(proof_to_json(proof)), statement)


@pytest.mark.parametrize("where", ["below_first", "between", "above_last"])
def test_non_inclusion_proof_verifies(tree_and_statement, where):
    tree, statement, digest = tree_and_statement
    if where == "below_first":
        value = bytes(32)
        assert value < tree.leaf(0)
    elif where == "between":
        value = _between(tree.leaf(120), tree.leaf(121))
    else:
        value = b"\xff" * 32
        assert value > tree.leaf(tree.size - 1)
    proof = prove(tree, value, digest)
    assert proof["type"] == "non-inclusion"
    assert (proof["left"] is None) == (where == "below_first")
    assert (proof["right"] is None) == (where == "above_last")
    verify_proof(proof, statement)


def test_non_inclusion_in_an_empty_tree():
    tree = MerkleTree.build(np.empty((0, 32), np.uint8))
    statement = statement_for(tree)
    proof = prove(tree, hashlib.sha256(b"x").digest(), statement_digest(statement))
    assert proof["type"] == "non-inclusion" and proof["tree_size"] == 0
    assert proof["left"] is None and proof["right"] is None
    verify_proof(proof, statement)


def test_non_inclusion_in_a_one_leaf_tree():
    tree = MerkleTree.build(sorted_leaves(1, seed=9))
    statement = statement_for(tree)
    for value in (bytes(32), b"\xff" * 32):
        verify_proof(prove(tree, value, statement_digest(statement)), statement)


def _entry(tree, index, version, left=None):
    """A neighbour entry as prove writes it (a right one shares nothing when forged)."""
    path = tree.inclusion_proof(index)
    if version == 1:
        return {"sha256": tree.leaf(index).hex(), "index": index, "path": [p.hex() for p in path]}
    entry = {"sha256": tree.leaf(index).hex(), "index": index, "path": encode_path(path)}
    if left is not None:
        entry["shared"] = 0
    return entry


def _forge(tree, statement, digest, how, version):
    """Non-inclusion proofs a dishonest prover might write, each for a held or bracketed H."""
    gap = _between(tree.leaf(120), tree.leaf(121))
    honest = prove(tree, gap, digest, version=version)
    proof = copy.deepcopy(honest)
    if how == "non_adjacent":
        # Claim H is absent by bracketing with leaves 119 and 121: both included, but they
        # leave room for leaf 120. Take H = leaf 120 itself. (The right entry of a
        # version-2 proof shares nodes with the left: give it whole.)
        proof["sha256"] = tree.leaf(120).hex()
        proof["left"] = _entry(tree, 119, version)
        proof["right"] = _entry(tree, 121, version, left=True)
    elif how == "not_bracketing":
        # Adjacent leaves 10, 11, but H lies elsewhere.
        proof["left"] = _entry(tree, 10, version)
        proof["right"] = _entry(tree, 11, version, left=True)
    elif how == "held_value":
        # H equal to the left leaf: L < H fails.
        proof["sha256"] = tree.leaf(120).hex()
    elif how == "drop_left":
        proof["left"] = None  # pretends H is below the first leaf
    elif how == "drop_right":
        proof["right"] = None  # pretends H is above the last leaf
    elif how == "drop_both":
        proof["left"] = proof["right"] = None
    elif how == "left_not_in_tree":
        proof["left"]["sha256"] = _between(tree.leaf(119), tree.leaf(120)).hex()
    elif how == "wrong_receipt":
        proof["receipt_digest"] = "0" * 64
    elif how == "as_empty_tree":
        proof.update(tree_size=0, root=EMPTY_HEX, left=None, right=None)
    return proof


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    "how",
    ["non_adjacent", "not_bracketing", "held_value", "drop_left", "drop_right", "drop_both",
     "left_not_in_tree", "wrong_receipt", "as_empty_tree"],
)  # fmt: skip
def test_forged_non_inclusion_is_rejected(tree_and_statement, how, version):
    tree, statement, digest = tree_and_statement
    with pytest.raises(VerificationError) as raised:
        verify_proof(_forge(tree, statement, digest, how, version), statement)
    assert str(raised.value)


def test_proof_for_another_receipt_is_rejected(tree_and_statement):
    tree, statement, digest = tree_and_statement
    other = statement_for(tree, name="another data set")  # same tree, other receipt
    proof = prove(tree, tree.leaf(3), digest)
    with pytest.raises(VerificationError, match="not this receipt"):
        verify_proof(proof, other)


@pytest.fixture(scope="module")
def compact_proofs(tree_and_statement):
    tree, statement, digest = tree_and_statement
    texts = []
    for version in (1, 2):
        inclusion = prove(tree, tree.leaf(77), digest, version=version)
        exclusion = prove(tree, _between(tree.leaf(200), tree.leaf(201)), digest, version=version)
        texts += [
            json.dumps(p, sort_keys=True, separators=(",", ":")) for p in (inclusion, exclusion)
        ]
    return texts


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_every_byte_of_a_proof_matters(tree_and_statement, compact_proofs, which):
    # Flip each byte of the proof's JSON in turn: each change must be refused, as bad JSON
    # (InputError from load_proof) or as a failed verification, always with a reason. In a
    # version-2 proof that covers every base64 character of both paths and the digits of
    # the right leaf's ``shared`` count.
    tree, statement, _ = tree_and_statement
    text = compact_proofs[which]
    verify_proof(load_proof(text), statement)
    for position in range(len(text)):
        tampered = text[:position] + chr(ord(text[position]) ^ 0x01) + text[position + 1 :]
        try:
            proof = load_proof(tampered)
            verify_proof(proof, statement)
        except (InputError, VerificationError) as error:
            assert str(error) and "\n" not in str(error), position
            continue
        # The one change that may still verify: a non-inclusion claim moved to another
        # hash inside the same gap, which is then a true claim about that other hash.
        assert proof["type"] == "non-inclusion", position
        assert proof["sha256"] != json.loads(text)["sha256"], position
        assert tree.find(bytes.fromhex(proof["sha256"])) is None, position


def test_removed_proof_between_versions():
    old_tree = MerkleTree.build(sorted_leaves(64, seed=10))
    keep = np.ones(64, bool)
    keep[[0, 20, 63]] = False  # removed: the first, a middle and the last item
    new_tree = MerkleTree.build(old_tree.leaves[keep])
    old_statement = statement_for(old_tree, "v1")
    new_statement = statement_for(new_tree, "v2")
    old_digest, new_digest = statement_digest(old_statement), statement_digest(new_statement)
    for index in (0, 20, 63):
        proof = prove_removed(old_tree, new_tree, old_tree.leaf(index), old_digest, new_digest)
        verify_removed(proof, old_statement, new_statement)
        with pytest.raises(VerificationError):
            verify_removed(proof, new_statement, old_statement)  # swapped receipts
    with pytest.raises(InputError, match="still in"):
        prove_removed(old_tree, new_tree, old_tree.leaf(5), old_digest, new_digest)
    with pytest.raises(InputError, match="not in the old"):
        prove_removed(old_tree, new_tree, b"\x00" * 32, old_digest, new_digest)


# --- reading proofs from tree.bin, and proof version 2 --------------------------------


def _skewed_leaves(n: int, seed: int) -> np.ndarray:
    """Sorted unique leaves far from uniform (half at the bottom of the range, half at the
    top, differing in the last bytes): interpolation guesses badly, the search must not."""
    rng = np.random.default_rng(seed)
    values = np.zeros((n, 32), np.uint8)
    values[n // 2 :, 0] = 0xFF
    values[:, 29:] = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    unique = np.unique(values.view("S32").ravel())
    return np.ascontiguousarray(unique.view(np.uint8).reshape(-1, 32))


@pytest.mark.parametrize("kind", ["uniform", "skewed"])
def test_batched_reads_match_the_mapped_reference(tmp_path, kind):
    # The pread/WILLNEED reader (the default for an opened tree.bin) against the plain
    # memory-mapped reads, byte for byte: positions, leaves and inclusion paths.
    rng = np.random.default_rng(21)
    for n in (1, 2, 15, 16, 17, 257, 3000, 20000):
        leaves = sorted_leaves(n, seed=n) if kind == "uniform" else _skewed_leaves(n, n)
        n = len(leaves)  # the skewed ones lose a few repeats
        path = tmp_path / f"{kind}-{n}.bin"
        batched = MerkleTree.build(leaves, path)
        mapped = MerkleTree.open(path, batched=False)
        assert batched._batched_file is not None and mapped._batched_file is None
        held = [bytes(leaves[i]) for i in rng.integers(0, len(leaves), 40)]
        probes = held + [bytes(v) for v in rng.integers(0, 256, (40, 32), dtype=np.uint8)]
        probes += [bytes(32), b"\xff" * 32, bytes(leaves[0]), bytes(leaves[-1])]
        probes += [bytes(v[:-1]) + bytes([v[-1] ^ 1]) for v in leaves[:: max(1, n // 20)]]
        for value in probes:
            assert batched.position(value) == mapped.position(value), (n, value.hex())
            assert batched.find(value) == mapped.find(value)
        for index in {0, 1, n // 2, n - 2, n - 1, *rng.integers(0, n, 20).tolist()}:
            if 0 <= index < n:
                assert batched.leaf(index) == mapped.leaf(index)
                assert batched.inclusion_proof(index) == mapped.inclusion_proof(index)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 255, 256, 257, 1000])
def test_v1_and_v2_proofs_from_tree_bin_verify(tmp_path, size):
    leaves = sorted_leaves(size, seed=size + 30)
    tree = MerkleTree.build(leaves, tmp_path / "tree.bin")
    statement = statement_for(tree)
    digest = statement_digest(statement)
    held = {0, 1, size // 2, size - 2, size - 1} & set(range(size))
    absent = [bytes(32), b"\xff" * 32]
    absent += [_between(tree.leaf(i), tree.leaf(i + 1)) for i in {0, size // 2, size - 2}
               if 0 <= i < size - 1]  # fmt: skip
    for version in (1, 2):
        for index in held:
            proof = prove(tree, tree.leaf(index), digest, version=version)
            assert (proof["type"], proof["index"], proof["version"]) == (
                "inclusion",
                index,
                version,
            )
            verify_proof(load_proof(proof_to_json(proof)), statement)
        for value in absent:
            proof = prove(tree, value, digest, version=version)
            assert proof["type"] == "non-inclusion"
            verify_proof(load_proof(proof_to_json(proof)), statement)


def test_v2_right_path_is_rebuilt_from_the_shared_top(tree_and_statement):
    tree, statement, digest = tree_and_statement
    for low in (0, 1, 14, 15, 127, 254, 255, 298):
        proof = prove(tree, _between(tree.leaf(low), tree.leaf(low + 1)), digest)
        left = base64.b64decode(proof["left"]["path"])
        own = base64.b64decode(proof["right"]["path"])
        shared = proof["right"]["shared"]
        rebuilt = own + left[len(left) - 32 * shared :] if shared else own
        assert rebuilt == b"".join(tree.inclusion_proof(low + 1))
        assert len(own) < len(left) or low >= 255  # leaves 255/256 part at the root
        verify_proof(proof, statement)


def test_old_version_1_proofs_still_verify():
    # Proofs written by the version-1 code (commit e8f028f) before version 2 existed.
    fixture = json.loads((DATA / "proofs-v1.json").read_text())
    old_statement, new_statement = fixture["old_statement"], fixture["new_statement"]
    kinds = []
    for text in fixture["proofs"]:
        proof = load_proof(text)
        assert proof["version"] == 1 and isinstance(proof.get("path", []), list)
        verify_proof(proof, new_statement)
        kinds.append(proof["type"])
    assert kinds == ["inclusion"] * 3 + ["non-inclusion"] * 3
    for text in fixture["removed"]:
        verify_removed(load_proof(text), old_statement, new_statement)
    # and prove(version=1) still writes exactly what the old code wrote
    values = sorted(hashlib.sha256(b"proof v1 item %d" % i).digest() for i in range(21))
    old_tree = MerkleTree.build(np.frombuffer(b"".join(values), np.uint8).reshape(21, 32))
    keep = np.ones(21, bool)
    keep[[0, 9, 20]] = False
    new_tree = MerkleTree.build(np.ascontiguousarray(old_tree.leaves[keep]))
    digest = statement_digest(new_statement)
    assert new_tree.root.hex() == tree_of(new_statement)[1].hex()
    again = [new_tree.leaf(i) for i in (0, 8, 17)]
    again += [bytes(32), old_tree.leaf(9), b"\xff" * 32]
    for value, text in zip(again, fixture["proofs"], strict=True):
        assert proof_to_json(prove(new_tree, value, digest, version=1)) == text
    old_digest = statement_digest(old_statement)
    for index, text in zip((0, 9, 20), fixture["removed"], strict=True):
        value = old_tree.leaf(index)
        removed = prove_removed(old_tree, new_tree, value, old_digest, digest, version=1)
        assert proof_to_json(removed) == text


def test_removed_proofs_v2_from_tree_bin(tmp_path):
    old_tree = MerkleTree.build(sorted_leaves(40, seed=41), tmp_path / "old.bin")
    keep = np.ones(40, bool)
    keep[[0, 17, 39]] = False
    new_tree = MerkleTree.build(np.ascontiguousarray(old_tree.leaves[keep]), tmp_path / "new.bin")
    old_statement, new_statement = statement_for(old_tree, "v1"), statement_for(new_tree, "v2")
    digests = statement_digest(old_statement), statement_digest(new_statement)
    for index in (0, 17, 39):
        proof = prove_removed(old_tree, new_tree, old_tree.leaf(index), *digests)
        assert proof["version"] == proof["old"]["version"] == proof["new"]["version"] == 2
        verify_removed(load_proof(proof_to_json(proof)), old_statement, new_statement)
        mixed = {**proof, "old": prove(old_tree, old_tree.leaf(index), digests[0], version=1)}
        with pytest.raises(VerificationError, match="not a version 2 proof"):
            verify_removed(mixed, old_statement, new_statement)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("not base64!", "not base64"),
        ("A" * 43, "not base64"),  # 43 characters: a padding error
        ("A" * 42 + "B=", "not canonical"),  # nonzero bits under the padding
        ("A" * 40 + "====", "not base64|not canonical"),
        ("A" * 40 + "\n" + "A" * 3 + "=", "not base64"),
        ("-" * 44, "not base64"),  # the URL-safe alphabet is another encoding
        ("é" * 44, "not base64"),
        (base64.b64encode(bytes(31)).decode(), "not a whole number of 32-byte hashes"),
        (base64.b64encode(bytes(32 * 65)).decode(), "longer than any tree needs"),
        (["00" * 32], "not a base64 string"),
        (None, "not a base64 string"),
    ],
)
def test_bad_base64_paths_are_one_line_reasons(tree_and_statement, path, reason):
    tree, statement, digest = tree_and_statement
    inclusion = prove(tree, tree.leaf(5), digest)
    exclusion = prove(tree, _between(tree.leaf(5), tree.leaf(6)), digest)
    for proof in (
        {**inclusion, "path": path},
        {**exclusion, "left": {**exclusion["left"], "path": path}},
        {**exclusion, "right": {**exclusion["right"], "path": path}},
    ):
        with pytest.raises(VerificationError, match=reason) as raised:
            verify_proof(proof, statement)
        assert "\n" not in str(raised.value)


def test_v2_shared_count_is_checked(tree_and_statement):
    tree, statement, digest = tree_and_statement
    proof = prove(tree, _between(tree.leaf(40), tree.leaf(41)), digest)
    shared = proof["right"]["shared"]
    for bad in (shared - 1, shared + 1, 99, -1, True, 1.0, "1"):
        forged = {**proof, "right": {**proof["right"], "shared": bad}}
        with pytest.raises(VerificationError):
            verify_proof(forged, statement)
    below = prove(tree, bytes(32), digest)
    assert below["right"]["shared"] == 0 and below["left"] is None
    with pytest.raises(VerificationError, match="shares 1 nodes"):
        verify_proof({**below, "right": {**below["right"], "shared": 1}}, statement)
    extra = {**proof, "left": {**proof["left"], "shared": 0}}
    with pytest.raises(VerificationError, match="exactly"):
        verify_proof(extra, statement)


class _PathsOnly:
    """A stand-in tree with 2**30 - 5 leaves whose paths are made up, to size the encoder
    at LAION scale without a 36 GB file (nothing here is verified)."""

    size = (1 << 30) - 5
    root = b"\x07" * 32
    path = None

    def __init__(self, held: bytes, depth: int, split: int) -> None:
        self.held, self.depth, self.split = held, depth, split

    def position(self, value: bytes) -> int:
        return 1 << 29 if value == self.held else (1 << 29) + 1

    def leaf(self, index: int) -> bytes:
        return self.held if index == 1 << 29 else b"\xfe" * 32

    def inclusion_proof(self, index: int) -> list[bytes]:
        # Two neighbours share the nodes above their common ancestor at level ``split``.
        own = [hashlib.sha256(b"%d %d" % (index, i)).digest() for i in range(self.split)]
        top = [hashlib.sha256(b"top %d" % i).digest() for i in range(self.depth - self.split)]
        return own + top


def test_a_v2_proof_at_two_to_the_thirty_leaves_fits_in_2_kib(monkeypatch):
    from clearset.receipts import proofs

    monkeypatch.setattr(proofs, "verify_inclusion", lambda *args: True)
    digest = "ab" * 32
    held = b"\x10" * 32
    tree = _PathsOnly(held, depth=30, split=1)  # neighbours are siblings: the common case
    inclusion = proof_to_json(prove(tree, held, digest))
    exclusion = proof_to_json(prove(tree, b"\x11" * 32, digest))
    assert len(inclusion) <= 2048 and len(exclusion) <= 2048, (len(inclusion), len(exclusion))
    assert json.loads(exclusion)["right"]["shared"] == 29
    # Version 1 spent 2.5 KB and 5 KB on the same paths.
    assert len(proof_to_json(prove(tree, held, digest, version=1))) > 2048
    # Non-inclusion grows by ~43 base64 characters a level the neighbours' common ancestor
    # sits above the leaves (half of all gaps are between siblings, a quarter one level
    # up, ...); the worst gap, across the root's split, needs both 30-node paths whole.
    sizes = [len(proof_to_json(prove(_PathsOnly(held, 30, split), b"\x11" * 32, digest)))
             for split in range(1, 31)]  # fmt: skip
    assert all(39 <= b - a <= 44 for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    # within 2 KiB while the common ancestor is at most 5 levels up: 31 gaps in 32
    assert max(i for i, size in enumerate(sizes, 1) if size <= 2048) == 5, sizes
    assert sizes[-1] <= 3200, sizes


def test_an_opened_tree_keeps_reading_its_own_file(tmp_path):
    # A new build renamed over tree.bin must not change what an opened tree proves (the
    # map keeps the old file; so must the reader), and opening trees leaks no descriptor.
    path = tmp_path / "tree.bin"
    first = MerkleTree.build(sorted_leaves(100, seed=50), path)
    statement = statement_for(first)
    MerkleTree.build(sorted_leaves(70, seed=51), tmp_path / "other.bin")
    (tmp_path / "other.bin").replace(path)
    for index in (0, 57, 99):
        proof = prove(first, first.leaf(index), statement_digest(statement))
        verify_proof(proof, statement)
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    for _ in range(50):
        MerkleTree.open(path).inclusion_proof(3)
    after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert after <= before + 2
