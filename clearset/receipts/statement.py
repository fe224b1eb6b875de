"""The receipt's content: an in-toto Statement v1 naming a data set's Merkle root.

A receipt says "this data set, scanned with these lists by this tool at this time, kept
exactly the items under this root, and removed this many items, committed to here". It is
an in-toto Statement whose one subject is the data set, with the tree root as its digest
under the algorithm name ``rfc9162_sha256`` (not ``sha256``: the root is not the SHA-256 of
any one file, and in-toto lets a DigestSet name its own algorithm), and whose predicate
(type ``https://clearset.dev/receipt/v1``) carries:

    tree      {algorithm: "RFC9162-SHA256", leaf_rule, size, root}
    source    {name}                        the source's name, never a local path
    run       {manifest_digest: {sha256}}   the run folder's manifest
    lists     [{name, version, digest, hash_type, threshold}]   identities, never entries
    tool      {name, version}
    scan      {started, finished}           RFC 3339 UTC, seconds
    removed   {count, commitment, commitment_rule}
    previous  {receipt_digest, root} or null   the receipt this version replaces
    clean     {destination, finished, manifest_digest: {sha256}} or null
                                            which cleaned copy: its name (not its path),
                                            when its clean finished, and the digest of
                                            its manifest (the kept rows)
    kept      {samples, members, images, unreadable, without_bytes, other_members,
               leaves: {images, other_members}}   what the tree was built from: the
                                            cleaned copy's samples (keys) and members
                                            (files) by kind, and its leaves (distinct
                                            SHA-256 of kept members) by kind: an image
                                            leaf is one an image holds, the others are
                                            other members' only; they add up to the tree
                                            size. Absent in receipts made before it was
                                            recorded.
    review    {allow_list: {digest, entries}, allowed_kept}   only when the clean used an
                                            allow list (`clearset.matching.review`): its
                                            identity (never its values), and how many
                                            samples a list matched that the operator's
                                            review allowed, so the tree keeps them.

The statement is serialised canonically (sorted keys, no whitespace, UTF-8, integers
only), and its **receipt digest** is the SHA-256 of those bytes, which are exactly the
DSSE payload. A proof names its receipt by this digest; a re-signed receipt keeps it.

The removed-items commitment is SHA-256(salt || r_1 || ... || r_m) over the removed
items' 32-byte SHA-256 values sorted ascending and unique, with a 32-byte random salt the
builder keeps private in the run folder. Publishing it reveals nothing about the removed
items (the salt blinds a guess), yet binds the builder: given the salt, anyone can check
that a claimed list of removed hashes is the one the receipt committed to.

Receipts and proofs come from people we need not trust, so ``parse_json`` reads them
strictly: UTF-8, no NaN or Infinity, no repeated keys, no lone surrogates and no nesting
deeper than ``MAX_JSON_DEPTH``; anything else is a VerificationError with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

import clearset
from clearset.errors import InputError, VerificationError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://clearset.dev/receipt/v1"
SUBJECT_DIGEST_ALGORITHM = "rfc9162_sha256"
TREE_ALGORITHM = "RFC9162-SHA256"
LEAF_RULE = "sha256 of item bytes, sorted ascending, unique"
COMMITMENT_RULE = "sha256(salt || sorted unique removed sha256 values)"
SALT_SIZE = 32

#: Deepest JSON nesting a receipt or proof may have. Ours nest at most 5 levels; the
#: limit keeps a hostile file from exhausting the parser's (or the encoder's) recursion.
MAX_JSON_DEPTH = 64

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LIST_FIELDS = ("name", "version", "digest", "hash_type", "threshold")
_CLEAN_FIELDS = ("destination", "finished", "manifest_digest")
#: The member kinds `kept` counts; they add up to its members.
KEPT_MEMBER_KINDS = ("images", "unreadable", "without_bytes", "other_members")
_KEPT_FIELDS = ("samples", "members", *KEPT_MEMBER_KINDS, "leaves")
_REVIEW_FIELDS = ("allow_list", "allowed_kept")
_LEAF_KINDS = ("images", "other_members")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("a key is repeated in one object")
    return value


def _check_json_tree(value: Any) -> None:
    """Depth and string checks on parsed JSON, iteratively (no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in items:
                if isinstance(key, str):
                    key.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
                stack.append((item, depth + 1))
        elif isinstance(node, str):
            node.encode("utf-8")


def parse_json(data: bytes | str, what: str) -> Any:
    """Parse a receipt's or proof's JSON strictly (see module doc).

    VerificationError "WHAT: not ... (reason)" for anything that is not plain JSON; a
    verifier treats such a file as an invalid claim, not as a usage error.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise VerificationError(
                f"{what} is not UTF-8 text (bad byte at offset {error.start})"
            ) from None
    try:
        value = json.loads(data, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except RecursionError:
        raise VerificationError(f"{what} is not JSON (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, our hooks, an over-long integer
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise VerificationError(f"{what} is not JSON ({reason})") from None
    try:
        _check_json_tree(value)
    except UnicodeEncodeError:
        raise VerificationError(f"{what} is not JSON (a string holds a lone surrogate)") from None
    except ValueError as error:
        raise VerificationError(f"{what} is not JSON ({error})") from None
    return value


def canonical_json(value: Any) -> bytes:
    """The one byte form clearset signs: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def statement_digest(statement: Mapping[str, Any]) -> str:
    """The receipt digest: SHA-256 hex of the statement's canonical bytes (the payload)."""
    return hashlib.sha256(canonical_json(statement)).hexdigest()


def _hex32(value: bytes | str, what: str) -> str:
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise InputError(f"{what} must be 32 bytes, got {len(value)}")
        return bytes(value).hex()
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise InputError(f"{what} must be 64 lowercase hex characters, got {value!r}")
    return value


def _timestamp(value: datetime | str, what: str) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as error:
            raise InputError(f"{what} is not an ISO 8601 time: {value!r}") from error
    if value.tzinfo is None:
        raise InputError(f"{what} must carry a time zone (naive times are ambiguous)")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sorted_unique(removed: np.ndarray | Iterable[bytes]) -> bytes:
    if isinstance(removed, np.ndarray):
        if removed.dtype != np.uint8 or removed.ndim != 2 or removed.shape[1] != 32:
            raise InputError("removed hashes must be a uint8[N, 32] array")
        values = np.unique(np.ascontiguousarray(removed).view("S32").ravel())
        return np.ascontiguousarray(values).view(np.uint8).tobytes()
    items = set()
    for value in removed:
        if len(value) != 32:
            raise InputError(f"a removed SHA-256 must be 32 bytes, got {len(value)}")
        items.add(bytes(value))
    return b"".join(sorted(items))


def commit_removed(
    removed: np.ndarray | Iterable[bytes], salt: bytes | None = None
) -> tuple[str, bytes, int]:
    """Commit to the removed items' SHA-256 values.

    Returns (commitment hex, salt, count of unique values). Keep the salt private in the
    run folder; pass it to :func:`open_commitment` to show what was committed.
    """
    if salt is None:
        salt = os.urandom(SALT_SIZE)
    if len(salt) != SALT_SIZE:
        raise InputError(f"commitment salt must be {SALT_SIZE} bytes, got {len(salt)}")
    joined = _sorted_unique(removed)
    return hashlib.sha256(salt + joined).hexdigest(), salt, len(joined) // 32


def open_commitment(commitment: str, salt: bytes, removed: np.ndarray | Iterable[bytes]) -> bool:
    """True if ``removed`` (any order) with ``salt`` is what ``commitment`` committed to."""
    joined = _sorted_unique(removed)
    fresh = hashlib.sha256(bytes(salt) + joined).hexdigest()
    return hmac.compare_digest(fresh, commitment)


def build_statement(
    *,
    dataset_name: str,
    tree_size: int,
    root: bytes | str,
    source_name: str,
    manifest_digest: str,
    lists: Sequence[Mapping[str, Any]],
    scan_started: datetime | str,
    scan_finished: datetime | str,
    removed_count: int,
    removed_commitment: str,
    previous: Mapping[str, Any] | None = None,
    clean: Mapping[str, Any] | None = None,
    kept: Mapping[str, Any] | None = None,
    exchange: Mapping[str, Any] | None = None,
    review: Mapping[str, Any] | None = None,
    tool_name: str = clearset.TOOL_NAME,
    tool_version: str = clearset.__version__,
) -> dict[str, Any]:
    """Assemble (and check) a receipt statement; sign it with ``dsse.sign_statement``.

    ``lists`` entries carry exactly name, version, digest, hash_type and threshold (None
    for exact lists); anything else is refused, so list entries cannot leak into a receipt.
    ``previous`` is None or {"receipt_digest", "root"} of the receipt this one replaces.
    ``clean`` is None or {"destination", "finished", "manifest_digest"} of the cleaned copy
    the tree covers: its name, its clean's finish time and its manifest's digest (hex).
    ``kept`` is None or the counts the tree was built from (see the module doc); its
    leaves must add up to ``tree_size``. ``review`` is None or {"allow_list": {"digest",
    "entries"}, "allowed_kept"}: the allow list the clean honoured and the matched samples
    it kept because of it.
    """
    list_identities = []
    for entry in lists:
        extra = set(entry) - set(_LIST_FIELDS)
        missing = set(_LIST_FIELDS) - set(entry)
        if extra or missing:
            raise InputError(
                f"a list identity has exactly the fields {', '.join(_LIST_FIELDS)}; "
                f"got extra {sorted(extra)} and missing {sorted(missing)}"
            )
        list_identities.append({field: entry[field] for field in _LIST_FIELDS})
    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": dataset_name,
                "digest": {SUBJECT_DIGEST_ALGORITHM: _hex32(root, "tree root")},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "tree": {
                "algorithm": TREE_ALGORITHM,
                "leaf_rule": LEAF_RULE,
                "size": tree_size,
                "root": _hex32(root, "tree root"),
            },
            "source": {"name": source_name},
            "run": {"manifest_digest": {"sha256": _hex32(manifest_digest, "manifest digest")}},
            "lists": list_identities,
            "tool": {"name": tool_name, "version": tool_version},
            "scan": {
                "started": _timestamp(scan_started, "scan start"),
                "finished": _timestamp(scan_finished, "scan finish"),
            },
            "removed": {
                "count": removed_count,
                "commitment": _hex32(removed_commitment, "removed commitment"),
                "commitment_rule": COMMITMENT_RULE,
            },
            "previous": None
            if previous is None
            else {
                "receipt_digest": _hex32(previous["receipt_digest"], "previous receipt digest"),
                "root": _hex32(previous["root"], "previous root"),
            },
            "clean": None if clean is None else _clean_record(clean),
        },
    }
    if kept is not None:
        statement["predicate"]["kept"] = _kept_record(kept)
    if exchange is not None:  # the hash exchange's answers this clean applied
        statement["predicate"]["exchange"] = dict(exchange)
    if review is not None:
        allow = review["allow_list"]
        statement["predicate"]["review"] = {
            "allow_list": {"digest": allow["digest"], "entries": allow["entries"]},
            "allowed_kept": review["allowed_kept"],
        }
    _refuse_floats(statement)
    try:
        check_statement(statement)
    except VerificationError as error:
        raise InputError(str(error)) from error
    return statement


def _clean_record(clean: Mapping[str, Any]) -> dict[str, Any]:
    if set(clean) != set(_CLEAN_FIELDS):
        raise InputError(f"a clean record has exactly the fields {', '.join(_CLEAN_FIELDS)}")
    destination = clean["destination"]
    if not isinstance(destination, str) or not destination or "\n" in destination:
        raise InputError("the cleaned copy's name must be one non-empty line")
    return {
        "destination": destination,
        "finished": _timestamp(clean["finished"], "clean finish"),
        "manifest_digest": {"sha256": _hex32(clean["manifest_digest"], "cleaned manifest")},
    }


def _kept_fields(kept: Mapping[str, Any]) -> tuple[str, ...]:
    """The kept record's fields: a set with videos counts them as a member kind."""
    return (*_KEPT_FIELDS, "videos") if "videos" in kept else _KEPT_FIELDS


def _kept_record(kept: Mapping[str, Any]) -> dict[str, Any]:
    fields = _kept_fields(kept)
    if set(kept) != set(fields) or set(kept["leaves"]) != set(_LEAF_KINDS):
        raise InputError(
            f"a kept record has exactly the fields {', '.join(_KEPT_FIELDS)}, its leaves "
            f"{', '.join(_LEAF_KINDS)}"
        )
    record = {name: kept[name] for name in fields if name != "leaves"}
    record["leaves"] = {name: kept["leaves"][name] for name in _LEAF_KINDS}
    return record


def _kept_problem(kept: Any, tree_size: Any) -> str | None:
    """Why a statement's ``kept`` is not one, or None (absent counts as fine)."""
    if kept is None:
        return None
    if not isinstance(kept, dict) or sorted(kept) != sorted(_kept_fields(kept)):
        return "predicate.kept must hold " + ", ".join(_KEPT_FIELDS)
    leaves = kept["leaves"]
    if not isinstance(leaves, dict) or sorted(leaves) != sorted(_LEAF_KINDS):
        return "predicate.kept.leaves must hold " + ", ".join(_LEAF_KINDS)
    values = [kept[n] for n in _kept_fields(kept) if n != "leaves"] + list(leaves.values())
    if not all(_is_int(v) and v >= 0 for v in values):
        return "predicate.kept holds a value that is not a count"
    if sum(kept[n] for n in KEPT_MEMBER_KINDS) + kept.get("videos", 0) != kept["members"]:
        return "predicate.kept's member kinds do not add up to its members"
    if sum(leaves.values()) != tree_size:
        return "predicate.kept's leaves do not add up to the tree size"
    return None


def _refuse_floats(value: Any, where: str = "statement") -> None:
    # Floats have no single JSON spelling across languages, so a verifier elsewhere could
    # re-serialise them differently; receipts carry integers and strings only.
    if isinstance(value, float):
        raise InputError(f"{where} is a float; receipts hold integers and strings only")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _refuse_floats(item, f"{where}[{position}]")


def _need(condition: bool, reason: str) -> None:
    if not condition:
        raise VerificationError(f"receipt statement is malformed: {reason}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_statement(statement: Any) -> None:
    """VerificationError naming the first field that makes this not a clearset receipt."""
    _need(isinstance(statement, dict), "not a JSON object")
    _need(statement.get("_type") == STATEMENT_TYPE, f"_type is not {STATEMENT_TYPE}")
    _need(
        statement.get("predicateType") == PREDICATE_TYPE,
        f"predicateType is not {PREDICATE_TYPE}",
    )
    subject = statement.get("subject")
    _need(isinstance(subject, list) and len(subject) == 1, "subject must hold one entry")
    _need(isinstance(subject[0], dict), "subject entry is not an object")
    _need(isinstance(subject[0].get("name"), str), "subject has no name")
    predicate = statement.get("predicate")
    _need(isinstance(predicate, dict), "predicate is not an object")
    tree = predicate.get("tree")
    _need(isinstance(tree, dict), "predicate.tree is missing")
    _need(tree.get("algorithm") == TREE_ALGORITHM, f"tree algorithm is not {TREE_ALGORITHM}")
    _need(tree.get("leaf_rule") == LEAF_RULE, "tree leaf_rule is not clearset's")
    _need(_is_int(tree.get("size")) and tree["size"] >= 0, "tree size is not a count")
    root = tree.get("root")
    _need(isinstance(root, str) and bool(_HEX64.fullmatch(root)), "tree root is not hex")
    _need(
        subject[0].get("digest") == {SUBJECT_DIGEST_ALGORITHM: root},
        "subject digest does not name the tree root",
    )
    _need(isinstance(predicate.get("lists"), list), "predicate.lists is missing")
    for entry in predicate["lists"]:
        _need(
            isinstance(entry, dict) and sorted(entry) == sorted(_LIST_FIELDS),
            "a list identity has fields other than " + ", ".join(_LIST_FIELDS),
        )
    removed = predicate.get("removed")
    _need(isinstance(removed, dict), "predicate.removed is missing")
    _need(_is_int(removed.get("count")) and removed["count"] >= 0, "removed count")
    previous = predicate.get("previous", "absent")
    _need(
        previous is None
        or (
            isinstance(previous, dict)
            and isinstance(previous.get("receipt_digest"), str)
            and isinstance(previous.get("root"), str)
        ),
        "predicate.previous must be null or {receipt_digest, root}",
    )
    clean = predicate.get("clean")  # absent in receipts made before it was recorded
    _need(
        clean is None
        or (
            isinstance(clean, dict)
            and sorted(clean) == sorted(_CLEAN_FIELDS)
            and isinstance(clean["destination"], str)
            and isinstance(clean["finished"], str)
            and isinstance(clean["manifest_digest"], dict)
            and isinstance(clean["manifest_digest"].get("sha256"), str)
        ),
        "predicate.clean must be null or {destination, finished, manifest_digest}",
    )
    source = predicate.get("source")
    _need(
        isinstance(source, dict) and isinstance(source.get("name"), str),
        "predicate.source has no name",
    )
    problem = _kept_problem(predicate.get("kept"), tree["size"])
    _need(problem is None, str(problem))
    _need(
        _review_ok(predicate.get("review")),
        "predicate.review must be absent or {allow_list: {digest, entries}, allowed_kept}",
    )


def _review_ok(review: Any) -> bool:
    """Whether a statement's ``review`` (absent: fine) is an allow list's identity and a
    count."""
    if review is None:
        return True
    if not isinstance(review, dict) or sorted(review) != sorted(_REVIEW_FIELDS):
        return False
    allow = review["allow_list"]
    return (
        isinstance(allow, dict)
        and sorted(allow) == ["digest", "entries"]
        and isinstance(allow["digest"], str)
        and bool(_HEX64.fullmatch(allow["digest"]))
        and _is_int(allow["entries"])
        and allow["entries"] >= 0
        and _is_int(review["allowed_kept"])
        and review["allowed_kept"] >= 0
    )


def tree_of(statement: Mapping[str, Any]) -> tuple[int, bytes]:
    """(tree size, root) a checked statement signs."""
    tree = statement["predicate"]["tree"]
    return tree["size"], bytes.fromhex(tree["root"])
