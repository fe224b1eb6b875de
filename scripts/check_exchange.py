#!/usr/bin/env python3
"""Check a clearset exchange request or answer folder with the standard library and
`cryptography` only (see docs/reference/exchange-format.md): the index's files by their
SHA-256, the statement's subject (the index's SHA-256) and its Ed25519 DSSE signature.

    python scripts/check_exchange.py FOLDER --pubkey SIGNER.pub

Exit 0 valid, 1 invalid (one line saying why).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

KINDS = {
    "request.json": ("request.dsse.json", "https://clearset.dev/exchange/request/v1"),
    "answer.json": ("answer.dsse.json", "https://clearset.dev/exchange/answer/v1"),
}
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def fail(reason: str) -> None:
    print(f"invalid: {reason}", file=sys.stderr)
    sys.exit(1)


def check(folder: Path, pubkey: Path) -> str:
    index_name = next((n for n in KINDS if (folder / n).exists()), None)
    if index_name is None:
        fail(f"{folder}: holds neither request.json nor answer.json")
    envelope_name, predicate_type = KINDS[index_name]
    raw = (folder / index_name).read_bytes()
    index = json.loads(raw)
    canonical = json.dumps(index, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if canonical.encode() != raw:
        fail(f"{index_name} is not canonical JSON")
    if index.get("version") != 1:
        fail(f"{index_name}: format version {index.get('version')!r}, this checker reads 1")
    for entry in index.get("files", []):
        name = entry["name"]
        if "/" in name or name.startswith("."):
            fail(f"{index_name} names {name!r}, not a file of the folder")
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            fail(f"{name}: its SHA-256 differs from {index_name}'s (altered)")
    envelope = json.loads((folder / envelope_name).read_text())
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        fail(f"{envelope_name}: payloadType is not {PAYLOAD_TYPE}")
    payload = base64.b64decode(envelope["payload"], validate=True)
    key = serialization.load_pem_public_key(pubkey.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = hashlib.sha256(der).hexdigest()
    kind = PAYLOAD_TYPE.encode()
    message = b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
    for signature in envelope.get("signatures", []):
        if signature.get("keyid", "") not in (key_id, ""):
            continue
        try:
            key.verify(base64.b64decode(signature["sig"]), message)  # type: ignore[union-attr]
            break
        except Exception:  # InvalidSignature; a non-Ed25519 key
            continue
    else:
        fail(f"{envelope_name}: no valid signature by key {key_id}")
    statement = json.loads(payload)
    if statement.get("predicateType") != predicate_type:
        fail(f"{envelope_name}: predicateType is not {predicate_type}")
    if statement["subject"][0]["digest"]["sha256"] != hashlib.sha256(raw).hexdigest():
        fail(f"{envelope_name}: signs another {index_name} (digest differs)")
    return f"valid: {index_name} {hashlib.sha256(raw).hexdigest()} signed by key {key_id}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--pubkey", type=Path, required=True)
    args = parser.parse_args()
    try:
        print(check(args.folder, args.pubkey))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        fail(f"{args.folder}: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
