"""Membership claims about one item, checkable with nothing but the receipt and a key.

``prove`` answers "was the item with this SHA-256 in the data set the receipt covers?"
with a JSON proof; ``verify_proof`` checks that proof against a receipt's (already
signature-checked) statement. Every proof names its receipt by receipt digest (SHA-256 of
the DSSE payload, see ``statement``) and carries the tree size and root it was made
against, which must equal the receipt's. Hashes are lowercase hex.

Version 2 (what ``prove`` writes; compact JSON, sorted keys, no spaces) spells an RFC 9162
§2.1.3 audit path as one base64 string (RFC 4648 §4, padded, canonical): the path's
32-byte nodes, bottom up, concatenated. A non-inclusion proof's two neighbours share the
top of their paths (the siblings above their lowest common ancestor), so the right leaf
stores only its own nodes and ``shared``, the number of nodes to take from the end of the
left leaf's path: its full path is ``path + left.path[len(left.path) - shared:]``.

    inclusion      {version: 2, type: "inclusion", receipt_digest, tree_size, root,
                    sha256, index, path: BASE64}
    non-inclusion  {version: 2, type: "non-inclusion", receipt_digest, tree_size, root,
                    sha256, left: {sha256, index, path} | null,
                    right: {sha256, index, path, shared} | null}
    removed        {version: 2, type: "removed", sha256, old: inclusion, new: non-inclusion}

``shared`` is 0 when there is no left leaf. Version 1 (still verified; ``prove(...,
version=1)`` writes it for older verifiers) has the same fields less ``shared``, paths as
lists of hex strings, each neighbour's path whole, and two-space indented JSON.

Non-inclusion relies on the leaves being sorted and unique: the two included leaves at
adjacent indices i and i+1 with L < H < R leave no place for H. Below the first leaf only
``right`` (index 0, H < R) is given, above the last only ``left`` (index n-1, H > L); for
the empty tree both are null and the root must be SHA-256 of nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clearset.errors import InputError, VerificationError
from clearset.receipts.dsse import verify_envelope
from clearset.receipts.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    hash_leaf,
    verify_inclusion,
)
from clearset.receipts.statement import parse_json, statement_digest, tree_of

#: The version ``prove`` writes; ``verify_proof`` reads every one in PROOF_VERSIONS.
PROOF_VERSION = 2
PROOF_VERSIONS = (1, 2)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMMON = {"version", "type", "receipt_digest", "tree_size", "root", "sha256"}
_FIELDS = {
    "inclusion": _COMMON | {"index", "path"},
    "non-inclusion": _COMMON | {"left", "right"},
}
_LEAF_FIELDS = {"sha256", "index", "path"}
# A path longer than this cannot belong to a tree of at most 2**64 leaves: refuse it
# before decoding, so a hostile proof cannot make the verifier hash megabytes.
_MAX_PATH_NODES = 64


def _as_bytes(sha256: bytes | str) -> bytes:
    if isinstance(sha256, str):
        if not _HEX64.fullmatch(sha256.lower()):
            raise InputError(f"not a SHA-256 hex value: {sha256!r}")
        return bytes.fromhex(sha256)
    if len(sha256) != 32:
        raise InputError(f"a SHA-256 value is 32 bytes, got {len(sha256)}")
    return bytes(sha256)


def _leaf_path(tree: MerkleTree, index: int) -> tuple[bytes, list[bytes]]:
    path = tree.inclusion_proof(index)
    value = tree.leaf(index)
    # A proof that does not verify against the tree's own root means tree.bin is damaged
    # (open() checks only the header and the top); say so here rather than hand out a
    # proof every verifier will reject.
    if not verify_inclusion(hash_leaf(value), index, tree.size, path, tree.root):
        where = tree.path if tree.path is not None else "tree"
        raise InputError(f"{where}: tree is corrupted (leaf {index} does not reach the root)")
    return value, path


def encode_path(path: list[bytes]) -> str:
    """A version-2 path: the nodes concatenated, in base64."""
    return base64.b64encode(b"".join(path)).decode("ascii")


def _shared_suffix(left: list[bytes], right: list[bytes]) -> int:
    """How many nodes the two paths end with in common (the siblings above the LCA)."""
    shared = 0
    while shared < min(len(left), len(right)) and left[-1 - shared] == right[-1 - shared]:
        shared += 1
    return shared


def prove(
    tree: MerkleTree, sha256: bytes | str, receipt_digest: str, *, version: int = PROOF_VERSION
) -> dict[str, Any]:
    """An inclusion proof if the tree holds ``sha256``, else a non-inclusion proof.

    ``version`` 2 (the default) is the compact form; 1 is for verifiers that predate it.
    """
    value = _as_bytes(sha256)
    if not isinstance(receipt_digest, str) or not _HEX64.fullmatch(receipt_digest):
        raise InputError(f"receipt digest must be 64 lowercase hex characters: {receipt_digest!r}")
    if type(version) is not int or version not in PROOF_VERSIONS:
        raise InputError(f"proof version must be one of {PROOF_VERSIONS}, got {version!r}")
    header = {
        "version": version,
        "receipt_digest": receipt_digest,
        "tree_size": tree.size,
        "root": tree.root.hex(),
        "sha256": value.hex(),
    }
    index = tree.position(value)
    if index < tree.size and tree.leaf(index) == value:
        _, path = _leaf_path(tree, index)
        encoded = encode_path(path) if version == 2 else [p.hex() for p in path]
        return {"type": "inclusion", **header, "index": index, "path": encoded}
    # Leaves index-1 and index bracket the value (either may fall off an end).
    left = _leaf_path(tree, index - 1) if index > 0 else None
    right = _leaf_path(tree, index) if index < tree.size else None
    entries: dict[str, Any] = {"left": None, "right": None}
    if left is not None:
        entries["left"] = {"sha256": left[0].hex(), "index": index - 1}
    if right is not None:
        entries["right"] = {"sha256": right[0].hex(), "index": index}
    if version == 1:
        for side, found in (("left", left), ("right", right)):
            if found is not None:
                entries[side]["path"] = [p.hex() for p in found[1]]
    else:
        if left is not None:
            entries["left"]["path"] = encode_path(left[1])
        if right is not None:
            shared = _shared_suffix(left[1], right[1]) if left is not None else 0
            own = right[1][: len(right[1]) - shared]
            entries["right"].update(path=encode_path(own), shared=shared)
    return {"type": "non-inclusion", **header, **entries}


def _fail(reason: str) -> NoReturn:
    raise VerificationError(reason)


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        _fail(f"proof {what} is not 64 lowercase hex characters")
    return bytes.fromhex(value)


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(f"proof {what} is not a non-negative integer")
    return value


def _path(value: Any, what: str, version: int) -> list[bytes]:
    """A proof's path as node hashes: hex strings (version 1) or base64 (version 2)."""
    if version == 1:
        if not isinstance(value, list):
            _fail(f"proof {what} is not a list")
        if len(value) > _MAX_PATH_NODES:
            _fail(f"proof {what} has {len(value)} nodes, more than any tree needs")
        return [_hex(p, f"{what} entry") for p in value]
    if not isinstance(value, str):
        _fail(f"proof {what} is not a base64 string")
    if len(value) > 4 * (_MAX_PATH_NODES * HASH_SIZE // 3 + 1):
        _fail(f"proof {what} is longer than any tree needs")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        _fail(f"proof {what} is not base64 (RFC 4648, padded, no other characters)")
    # validate=True still reads some non-canonical forms (nonzero padding bits); two
    # texts for one path would let a proof change without changing what it says.
    if base64.b64encode(raw).decode("ascii") != value:
        _fail(f"proof {what} is not canonical base64")
    if len(raw) % HASH_SIZE:
        _fail(f"proof {what} is {len(raw)} bytes, not a whole number of 32-byte hashes")
    return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]


def _check_leaf(
    entry: Any, size: int, root: bytes, side: str, version: int, left_path: list[bytes]
) -> tuple[bytes, int, list[bytes]]:
    fields = _LEAF_FIELDS | ({"shared"} if version == 2 and side == "right" else set())
    if not isinstance(entry, dict) or set(entry) != fields:
        _fail(f"proof {side} leaf must hold exactly {', '.join(sorted(fields))}")
    value = _hex(entry["sha256"], f"{side} sha256")
    index = _count(entry["index"], f"{side} index")
    path = _path(entry["path"], f"{side} path", version)
    if "shared" in entry:
        shared = _count(entry["shared"], f"{side} shared")
        if shared > len(left_path):
            _fail(f"right leaf shares {shared} nodes, the left path has {len(left_path)}")
        path = path + left_path[len(left_path) - shared :]
    if not verify_inclusion(hash_leaf(value), index, size, path, root):
        _fail(f"{side} leaf {index} is not in the tree: its path does not reach the root")
    return value, index, path


def _check_version(proof: Mapping[str, Any]) -> int:
    # Exactly the integer 1 or 2: 1.0 and true compare equal to 1 in Python, but are
    # other JSON, so another verifier could read them otherwise.
    version = proof["version"]
    if type(version) is not int or version not in PROOF_VERSIONS:
        expected = " or ".join(str(v) for v in PROOF_VERSIONS)
        _fail(f"proof version {version!r} is not supported (expected {expected})")
    return version


def verify_proof(proof: Any, statement: Mapping[str, Any]) -> None:
    """Check a proof against a receipt statement; VerificationError says why it fails.

    ``statement`` must come from ``dsse.verify_envelope`` (this checks no signature).
    """
    if not isinstance(proof, dict):
        _fail("proof is not a JSON object")
    kind = proof.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        _fail(f"proof type {kind!r} is not inclusion or non-inclusion")
    if set(proof) != _FIELDS[kind]:
        _fail(f"{kind} proof must hold exactly {', '.join(sorted(_FIELDS[kind]))}")
    version = _check_version(proof)
    expected_digest = statement_digest(statement)
    if proof["receipt_digest"] != expected_digest:
        _fail(
            f"proof is for receipt {proof['receipt_digest']!r}, not this receipt "
            f"({expected_digest})"
        )
    size, root = tree_of(statement)
    if _count(proof["tree_size"], "tree_size") != size:
        _fail(f"proof is for a tree of {proof['tree_size']} leaves, the receipt's has {size}")
    if _hex(proof["root"], "root") != root:
        _fail("proof root is not the receipt's root")
    value = _hex(proof["sha256"], "sha256")
    if kind == "inclusion":
        index = _count(proof["index"], "index")
        path = _path(proof["path"], "path", version)
        if not verify_inclusion(hash_leaf(value), index, size, path, root):
            _fail(f"inclusion path for index {index} does not lead to the receipt's root")
        return
    left, right = proof["left"], proof["right"]
    if size == 0:
        if left is not None or right is not None or root != EMPTY_ROOT:
            _fail("non-inclusion in an empty tree takes no leaves and the empty root")
        return
    if left is None and right is None:
        _fail("non-inclusion proof gives neither a left nor a right leaf")
    left_path: list[bytes] = []
    if left is not None:
        low, low_index, left_path = _check_leaf(left, size, root, "left", version, [])
        if not low < value:
            _fail("left leaf is not below the claimed hash")
    if right is not None:
        high, high_index, _ = _check_leaf(right, size, root, "right", version, left_path)
        if not value < high:
            _fail("right leaf is not above the claimed hash")
    if left is None and high_index != 0:
        _fail("a proof with no left leaf must give leaf 0 as its right leaf")
    if right is None and low_index != size - 1:
        _fail("a proof with no right leaf must give the last leaf as its left leaf")
    if left is not None and right is not None and high_index != low_index + 1:
        _fail(f"leaves {low_index} and {high_index} are not adjacent, so do not bracket")


def prove_removed(
    old_tree: MerkleTree,
    new_tree: MerkleTree,
    sha256: bytes | str,
    old_digest: str,
    new_digest: str,
    *,
    version: int = PROOF_VERSION,
) -> dict[str, Any]:
    """Show an item was in the OLD receipt's set and is not in the NEW one's.

    InputError if the item is not in OLD or is still in NEW (nothing to show).
    """
    value = _as_bytes(sha256)
    old = prove(old_tree, value, old_digest, version=version)
    if old["type"] != "inclusion":
        raise InputError(f"{value.hex()} is not in the old receipt's data set")
    new = prove(new_tree, value, new_digest, version=version)
    if new["type"] != "non-inclusion":
        raise InputError(f"{value.hex()} is still in the new receipt's data set")
    return {
        "version": version,
        "type": "removed",
        "sha256": value.hex(),
        "old": old,
        "new": new,
    }


def check_removed_form(proof: Any) -> None:
    """VerificationError unless ``proof`` has a removed proof's shape (nothing verified)."""
    if not isinstance(proof, dict) or set(proof) != {"version", "type", "sha256", "old", "new"}:
        _fail("removed proof must hold exactly version, type, sha256, old and new")
    if proof["type"] != "removed":
        _fail("not a removed proof")
    version = _check_version(proof)
    _hex(proof["sha256"], "sha256")
    for part, kind in (("old", "inclusion"), ("new", "non-inclusion")):
        if not isinstance(proof[part], dict) or proof[part].get("type") != kind:
            _fail(f"removed proof's {part} part must be a {kind} proof")
        # type() too: 1.0 == 1 and True == 1 in Python, not in JSON.
        part_version = proof[part].get("version")
        if type(part_version) is not int or part_version != version:
            _fail(f"removed proof's {part} part is not a version {version} proof")
        if proof[part].get("sha256") != proof["sha256"]:
            _fail(f"removed proof's {part} part is about another item")


def verify_removed(
    proof: Any, old_statement: Mapping[str, Any], new_statement: Mapping[str, Any]
) -> None:
    """Check a removed proof against two signature-checked statements."""
    check_removed_form(proof)
    verify_proof(proof["old"], old_statement)
    verify_proof(proof["new"], new_statement)


def verify(envelope: Any, proof: Any, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Verify a receipt envelope and a proof in one call; return the statement."""
    statement = verify_envelope(envelope, public_key)
    verify_proof(proof, statement)
    return statement


def proof_to_json(proof: Mapping[str, Any]) -> str:
    """A proof as the JSON text clearset writes: sorted keys; version 2 compact (no
    spaces: at 10**9 leaves indentation alone would cost a tenth of the proof), version 1
    with a two-space indent as before."""
    if proof.get("version") == 1:
        return json.dumps(proof, sort_keys=True, indent=2) + "\n"
    return json.dumps(proof, sort_keys=True, separators=(",", ":")) + "\n"


def load_proof(text: str | bytes, source: str = "proof") -> dict[str, Any]:
    """Parse proof JSON strictly (see ``statement.parse_json``), NOT verified.

    VerificationError naming ``source`` if it is not strict JSON or not an object: to a
    verifier a proof that cannot be read is an invalid claim.
    """
    proof = parse_json(text, source)
    if not isinstance(proof, dict):
        raise VerificationError(f"{source} is not a proof (expected a JSON object)")
    return proof
