"""The hash exchange's files: a versioned format a list holder can answer with any tool.

A request folder (request.json, rows-NNNNN.parquet, request.dsse.json) carries row ids
and hashes, nothing else; an answer folder (answer.json, matches.parquet,
answer.dsse.json) carries the matched row ids with list, hash type, field and distance,
never a list entry. Index files are canonical JSON; statements are in-toto in Ed25519
DSSE envelopes. The spec is docs/reference/exchange-format.md; scripts/check_exchange.py
checks a folder with the standard library and `cryptography` only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clearset.errors import InputError, VerificationError
from clearset.hashing import types
from clearset.receipts.dsse import PAYLOAD_TYPE, key_id, pae
from clearset.receipts.statement import STATEMENT_TYPE, canonical_json, parse_json

VERSION = 1
REQUEST_FORMAT = "clearset-exchange-request"
ANSWER_FORMAT = "clearset-exchange-answer"
REQUEST_PREDICATE = "https://clearset.dev/exchange/request/v1"
ANSWER_PREDICATE = "https://clearset.dev/exchange/answer/v1"
REQUEST_INDEX = "request.json"
REQUEST_ENVELOPE = "request.dsse.json"
ANSWER_INDEX = "answer.json"
ANSWER_ENVELOPE = "answer.dsse.json"
ANSWER_ROWS = "matches.parquet"
ROWS_FILE = re.compile(r"rows-[0-9]{5,}\.parquet")
#: A list's identity as an answer discloses it: `digest` or `commitment` (one of them).
LIST_FIELDS = ("name", "version", "hash_type", "entries", "threshold")
COMMITMENT_RULE = "sha256(salt || list digest bytes)"
_HEX64 = re.compile(r"[0-9a-f]{64}")

#: The hash types a request may carry: a file's own hashes (never a URL's).
REQUEST_TYPES = ("sha256", "md5", "sha1", "pdq")
DEFAULT_TYPES = REQUEST_TYPES


def rows_file_name(number: int) -> str:
    return f"rows-{number:05d}.parquet"


def request_schema(hash_types: tuple[str, ...]) -> pa.Schema:
    """The rows files' schema for these hash types (in registry order)."""
    fields = [pa.field("row_id", pa.int64(), nullable=False), pa.field("group", pa.int64())]
    for name in hash_types:
        fields.extend(types.get(name).manifest_columns)
    return pa.schema(fields)


ANSWER_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("list", pa.string(), nullable=False),
        pa.field("hash_type", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("distance", pa.int16(), nullable=False),
    ]
)


def parse_hash_types(text: str) -> tuple[str, ...]:
    """`--hash sha256,md5,pdq` as registry names, in the registry's order."""
    wanted = set()
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        found = types.lookup(name)
        name = found.name if found is not None else ""
        if name not in REQUEST_TYPES:
            raise InputError(
                f"--hash {part.strip()!r}: a request carries {', '.join(REQUEST_TYPES)}"
            )
        wanted.add(name)
    if not wanted:
        raise InputError("--hash: name at least one of " + ", ".join(REQUEST_TYPES))
    return tuple(n for n in REQUEST_TYPES if n in wanted)


# ------------------------------------------------------------------ digests and statements


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def index_bytes(index: Mapping[str, Any]) -> bytes:
    return canonical_json(index)


def statement(
    subject_name: str, subject_digest: str, predicate_type: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_digest}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def sign(value: dict[str, Any], key: Ed25519PrivateKey | None) -> dict[str, Any]:
    """A DSSE envelope around `value` (no signature without a key)."""
    payload = canonical_json(value)
    signatures = []
    if key is not None:
        signature = key.sign(pae(PAYLOAD_TYPE, payload))
        signatures.append(
            {"keyid": key_id(key.public_key()), "sig": base64.b64encode(signature).decode()}
        )
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": signatures,
    }


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64")
    return raw


def open_envelope(
    data: bytes, where: str, predicate_type: str, key: Ed25519PublicKey | None
) -> tuple[dict[str, Any], str | None]:
    """The statement an envelope carries, and the key id that signed it (checked with
    `key` when given; None when not checked)."""
    envelope = parse_json(data, where)
    if not isinstance(envelope, dict) or set(envelope) != {
        "payloadType",
        "payload",
        "signatures",
    }:
        raise VerificationError(f"{where}: not a DSSE envelope")
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(f"{where}: payloadType is not {PAYLOAD_TYPE}")
    payload = _b64(envelope["payload"], f"{where}: payload")
    value = parse_json(payload, f"{where}: payload")
    if canonical_json(value) != payload:
        raise VerificationError(f"{where}: payload is not canonical JSON")
    if not isinstance(value, dict) or value.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"{where}: not an in-toto statement")
    if value.get("predicateType") != predicate_type:
        raise VerificationError(
            f"{where}: predicateType is {value.get('predicateType')!r}, not {predicate_type}"
        )
    subject = value.get("subject")
    if (
        not isinstance(subject, list)
        or len(subject) != 1
        or not isinstance(subject[0], dict)
        or not isinstance(subject[0].get("digest"), dict)
        or not _HEX64.fullmatch(str(subject[0]["digest"].get("sha256")))
        or not isinstance(value.get("predicate"), dict)
    ):
        raise VerificationError(f"{where}: statement has no subject digest or predicate")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list):
        raise VerificationError(f"{where}: signatures is not a list")
    if key is None:
        return value, None
    wanted = key_id(key)
    message = pae(PAYLOAD_TYPE, payload)
    for entry in signatures:
        if isinstance(entry, dict) and entry.get("keyid", "") in (wanted, ""):
            try:
                key.verify(_b64(entry.get("sig"), f"{where}: signature"), message)
                return value, wanted
            except InvalidSignature:
                continue
    if not signatures:
        raise VerificationError(f"{where}: is not signed (key {wanted} expected)")
    raise VerificationError(f"{where}: no valid signature by key {wanted} (wrong key or altered)")


def subject_digest(value: Mapping[str, Any]) -> str:
    return str(value["subject"][0]["digest"]["sha256"])


def list_commitment(digest: str, salt: bytes) -> str:
    return hashlib.sha256(salt + bytes.fromhex(digest)).hexdigest()


def check_disclosed_list(entry: Any, where: str) -> dict[str, Any]:
    """A list identity of an answer statement, or VerificationError."""
    if not isinstance(entry, dict):
        raise VerificationError(f"{where}: a list identity is not an object")
    allowed = {*LIST_FIELDS, "digest", "commitment"}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise VerificationError(f"{where}: a list identity holds {', '.join(extra)}")
    missing = sorted(set(LIST_FIELDS) - set(entry))
    if missing:
        raise VerificationError(f"{where}: a list identity lacks {', '.join(missing)}")
    proofs = [k for k in ("digest", "commitment") if k in entry]
    if len(proofs) != 1 or not _HEX64.fullmatch(str(entry[proofs[0]])):
        raise VerificationError(f"{where}: a list has one of digest or commitment (64 hex)")
    if not isinstance(entry["name"], str) or not entry["name"]:
        raise VerificationError(f"{where}: a list has no name")
    if types.lookup(str(entry["hash_type"])) is None:
        raise VerificationError(f"{where}: unknown hash type {entry['hash_type']!r}")
    return dict(entry)


def list_identity_digest(entry: Mapping[str, Any]) -> str:
    """The 64 hex a receipt names a disclosed list by: its digest or its commitment."""
    return str(entry.get("digest") or entry.get("commitment"))
