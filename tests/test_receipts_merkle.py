"""The Merkle tree against RFC 6962/9162 vectors, pymerkle, and its own reference twin.

Also tree.bin round trips and damage, and inclusion / non-inclusion / removed proofs,
including forged ones a verifier must refuse.
"""

from __future__ import annotations

import copy
import hashlib
import json

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
    load_proof,
    proof_to_json,
    prove,
    prove_removed,
    verify_proof,
    verify_removed,
)
from clearset.receipts.statement import build_statement, statement_digest

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


def _forge(tree, statement, digest, how):
    """Non-inclusion proofs a dishonest prover might write, each for a held or bracketed H."""
    gap = _between(tree.leaf(120), tree.leaf(121))
    honest = prove(tree, gap, digest)
    proof = copy.deepcopy(honest)
    if how == "non_adjacent":
        # Claim H is absent by bracketing with leaves 119 and 121: both included, but they
        # leave room for leaf 120. Take H = leaf 120 itself.
        proof["sha256"] = tree.leaf(120).hex()
        proof["left"] = {
            "sha256": tree.leaf(119).hex(),
            "index": 119,
            "path": [p.hex() for p in tree.inclusion_proof(119)],
        }
    elif how == "not_bracketing":
        # Adjacent leaves 10, 11, but H lies elsewhere.
        proof["left"] = {
            "sha256": tree.leaf(10).hex(),
            "index": 10,
            "path": [p.hex() for p in tree.inclusion_proof(10)],
        }
        proof["right"] = {
            "sha256": tree.leaf(11).hex(),
            "index": 11,
            "path": [p.hex() for p in tree.inclusion_proof(11)],
        }
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


@pytest.mark.parametrize(
    "how",
    ["non_adjacent", "not_bracketing", "held_value", "drop_left", "drop_right", "drop_both",
     "left_not_in_tree", "wrong_receipt", "as_empty_tree"],
)  # fmt: skip
def test_forged_non_inclusion_is_rejected(tree_and_statement, how):
    tree, statement, digest = tree_and_statement
    with pytest.raises(VerificationError) as raised:
        verify_proof(_forge(tree, statement, digest, how), statement)
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
    inclusion = prove(tree, tree.leaf(77), digest)
    exclusion = prove(tree, _between(tree.leaf(200), tree.leaf(201)), digest)
    return [json.dumps(p, sort_keys=True, separators=(",", ":")) for p in (inclusion, exclusion)]


@pytest.mark.parametrize("which", [0, 1])
def test_every_byte_of_a_proof_matters(tree_and_statement, compact_proofs, which):
    # Flip each byte of the proof's JSON in turn: each change must be refused, as bad JSON
    # (InputError from load_proof) or as a failed verification, always with a reason.
    tree, statement, _ = tree_and_statement
    text = compact_proofs[which]
    verify_proof(load_proof(text), statement)
    for position in range(len(text)):
        tampered = text[:position] + chr(ord(text[position]) ^ 0x01) + text[position + 1 :]
        try:
            proof = load_proof(tampered)
            verify_proof(proof, statement)
        except (InputError, VerificationError) as error:
            assert str(error), position
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
