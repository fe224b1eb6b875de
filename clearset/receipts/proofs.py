"""Membership claims about one item, checkable with nothing but the receipt and a key.

``prove`` answers "was the item with this SHA-256 in the data set the receipt covers?"
with a JSON proof; ``verify_proof`` checks that proof against a receipt's (already
signature-checked) statement. Hashes are lowercase hex; every proof names its receipt by
receipt digest (SHA-256 of the DSSE payload, see ``statement``) and carries the tree size
and root it was made against, which must equal the receipt's.

    inclusion      {version, type: "inclusion", receipt_digest, tree_size, root,
                    sha256, index, path: [hex, ...]}          (RFC 9162 §2.1.3 path)
    non-inclusion  {version, type: "non-inclusion", receipt_digest, tree_size, root,
                    sha256, left: LEAF | null, right: LEAF | null}
                    LEAF = {sha256, index, path}
    removed        {version, type: "removed", sha256, old: inclusion, new: non-inclusion}

Non-inclusion relies on the leaves being sorted and unique: the two included leaves at
adjacent indices i and i+1 with L < H < R leave no place for H. Below the first leaf only
``right`` (index 0, H < R) is given, above the last only ``left`` (index n-1, H > L); for
the empty tree both are null and the root must be SHA-256 of nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clearset.errors import InputError, VerificationError
from clearset.receipts.dsse import verify_envelope
from clearset.receipts.merkle import EMPTY_ROOT, MerkleTree, hash_leaf, verify_inclusion
from clearset.receipts.statement import parse_json, statement_digest, tree_of

PROOF_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMMON = {"version", "type", "receipt_digest", "tree_size", "root", "sha256"}
_FIELDS = {
    "inclusion": _COMMON | {"index", "path"},
    "non-inclusion": _COMMON | {"left", "right"},
}


def _as_bytes(sha256: bytes | str) -> bytes:
    if isinstance(sha256, str):
        if not _HEX64.fullmatch(sha256.lower()):
            raise InputError(f"not a SHA-256 hex value: {sha256!r}")
        return bytes.fromhex(sha256)
    if len(sha256) != 32:
        raise InputError(f"a SHA-256 value is 32 bytes, got {len(sha256)}")
    return bytes(sha256)


def _leaf_entry(tree: MerkleTree, index: int) -> dict[str, Any]:
    path = tree.inclusion_proof(index)
    value = tree.leaf(index)
    # A proof that does not verify against the tree's own root means tree.bin is damaged
    # (open() checks only the header and the top); say so here rather than hand out a
    # proof every verifier will reject.
    if not verify_inclusion(hash_leaf(value), index, tree.size, path, tree.root):
        where = tree.path if tree.path is not None else "tree"
        raise InputError(f"{where}: tree is corrupted (leaf {index} does not reach the root)")
    return {"sha256": value.hex(), "index": index, "path": [p.hex() for p in path]}


def prove(tree: MerkleTree, sha256: bytes | str, receipt_digest: str) -> dict[str, Any]:
    """An inclusion proof if the tree holds ``sha256``, else a non-inclusion proof."""
    value = _as_bytes(sha256)
    if not isinstance(receipt_digest, str) or not _HEX64.fullmatch(receipt_digest):
        raise InputError(f"receipt digest must be 64 lowercase hex characters: {receipt_digest!r}")
    header = {
        "version": PROOF_VERSION,
        "receipt_digest": receipt_digest,
        "tree_size": tree.size,
        "root": tree.root.hex(),
        "sha256": value.hex(),
    }
    index = tree.position(value)
    if index < tree.size and tree.leaf(index) == value:
        entry = _leaf_entry(tree, index)
        return {"type": "inclusion", **header, "index": index, "path": entry["path"]}
    # Leaves index-1 and index bracket the value (either may fall off an end).
    left = _leaf_entry(tree, index - 1) if index > 0 else None
    right = _leaf_entry(tree, index) if index < tree.size else None
    return {"type": "non-inclusion", **header, "left": left, "right": right}


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


def _check_leaf(entry: Any, size: int, root: bytes, side: str) -> tuple[bytes, int]:
    if not isinstance(entry, dict) or set(entry) != {"sha256", "index", "path"}:
        _fail(f"proof {side} leaf must hold exactly sha256, index and path")
    value = _hex(entry["sha256"], f"{side} sha256")
    index = _count(entry["index"], f"{side} index")
    if not isinstance(entry["path"], list):
        _fail(f"proof {side} path is not a list")
    path = [_hex(p, f"{side} path entry") for p in entry["path"]]
    if not verify_inclusion(hash_leaf(value), index, size, path, root):
        _fail(f"{side} leaf {index} is not in the tree: its path does not reach the root")
    return value, index


def _check_version(proof: Mapping[str, Any]) -> None:
    # Exactly the integer 1: 1.0 and true compare equal to 1 in Python, but are other
    # JSON, so another verifier could read them otherwise.
    version = proof["version"]
    if type(version) is not int or version != PROOF_VERSION:
        _fail(f"proof version {version!r} is not supported (expected {PROOF_VERSION})")


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
    _check_version(proof)
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
        if not isinstance(proof["path"], list):
            _fail("proof path is not a list")
        path = [_hex(p, "path entry") for p in proof["path"]]
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
    if left is not None:
        low, low_index = _check_leaf(left, size, root, "left")
        if not low < value:
            _fail("left leaf is not below the claimed hash")
    if right is not None:
        high, high_index = _check_leaf(right, size, root, "right")
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
) -> dict[str, Any]:
    """Show an item was in the OLD receipt's set and is not in the NEW one's.

    InputError if the item is not in OLD or is still in NEW (nothing to show).
    """
    value = _as_bytes(sha256)
    old = prove(old_tree, value, old_digest)
    if old["type"] != "inclusion":
        raise InputError(f"{value.hex()} is not in the old receipt's data set")
    new = prove(new_tree, value, new_digest)
    if new["type"] != "non-inclusion":
        raise InputError(f"{value.hex()} is still in the new receipt's data set")
    return {
        "version": PROOF_VERSION,
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
    _check_version(proof)
    _hex(proof["sha256"], "sha256")
    for part, kind in (("old", "inclusion"), ("new", "non-inclusion")):
        if not isinstance(proof[part], dict) or proof[part].get("type") != kind:
            _fail(f"removed proof's {part} part must be a {kind} proof")
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
    """A proof as the JSON text clearset writes (sorted keys, two-space indent)."""
    return json.dumps(proof, sort_keys=True, indent=2) + "\n"


def load_proof(text: str | bytes, source: str = "proof") -> dict[str, Any]:
    """Parse proof JSON strictly (see ``statement.parse_json``), NOT verified.

    VerificationError naming ``source`` if it is not strict JSON or not an object: to a
    verifier a proof that cannot be read is an invalid claim.
    """
    proof = parse_json(text, source)
    if not isinstance(proof, dict):
        raise VerificationError(f"{source} is not a proof (expected a JSON object)")
    return proof
