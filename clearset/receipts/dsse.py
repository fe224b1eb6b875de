"""Signing receipts: Ed25519 keys and DSSE envelopes around in-toto statements.

A receipt file is a DSSE envelope (https://github.com/secure-systems-lab/dsse):

    {"payloadType": "application/vnd.in-toto+json",
     "payload": base64(canonical statement bytes),
     "signatures": [{"keyid": sha256 hex of the public key's DER, "sig": base64(Ed25519)}]}

The signature covers PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body,
so the payload type cannot be swapped under a signature. Any DSSE verifier (for example
securesystemslib's) accepts clearset's envelopes. Verifying here is stricter: base64 must
be canonical and the payload must be the statement's canonical JSON, so one statement has
one byte form and one receipt digest (see ``statement``).

Keys are Ed25519 in PEM: ``clearset.key`` (PKCS#8, unencrypted, mode 0600) and
``clearset.pub`` (SubjectPublicKeyInfo). A key id is the SHA-256 hex of the public key's
DER encoding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from clearset.errors import InputError, OutputError, VerificationError
from clearset.receipts.statement import canonical_json, check_statement, parse_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PRIVATE_KEY_NAME = "clearset.key"
PUBLIC_KEY_NAME = "clearset.pub"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 hex of the public key's SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def generate_keypair(keydir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new clearset.key (mode 0600) and clearset.pub into ``keydir``.

    Refuses (OutputError) if either file exists: overwriting a signing key would orphan
    every receipt it signed. Returns (private key path, public key path).
    """
    keydir = Path(keydir)
    private_path, public_path = keydir / PRIVATE_KEY_NAME, keydir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise OutputError(f"{path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        keydir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a file that appeared since the check above is still not overwritten.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as sink:
            os.fchmod(sink.fileno(), 0o600)  # the umask cannot widen it, but be explicit
            sink.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as sink:
            sink.write(public_pem)
    except FileExistsError as error:
        raise OutputError(f"{error.filename}: already exists; refusing to overwrite") from error
    except OSError as error:
        raise OutputError(f"{keydir}: cannot write keys ({error.strerror})") from error
    return private_path, public_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read {what} ({error.strerror})") from error


def insecure_key_warning(path: str | os.PathLike[str]) -> str | None:
    """A one-line warning if a private key file is open to group or others, else None.

    As ssh does for its keys: whoever can read the file can sign receipts in your name.
    """
    path = Path(path)
    try:
        found = path.stat()
    except OSError:
        return None  # load_private_key says why it cannot be read
    mode = stat.S_IMODE(found.st_mode)
    if not stat.S_ISREG(found.st_mode) or not mode & 0o077:
        # A folder or a public key given by mistake: load_private_key names the file to give.
        return None
    return (
        f"{path}: private key has mode {mode:04o}, so group or others can read it and sign "
        f"receipts in your name; run `chmod 600 {path}`"
    )


#: What a user is told to give for each kind of key (`clearset keygen KEYDIR` makes both).
_GIVE = {
    "private": f"KEYDIR/{PRIVATE_KEY_NAME}, the private key made by `clearset keygen`",
    "public": f"KEYDIR/{PUBLIC_KEY_NAME}, the public key made by `clearset keygen`",
}


def _key_pem(path: Path, wanted: str) -> bytes:
    """The PEM of a `wanted` ("private" or "public") key file; InputError in one line
    saying what was given instead and which file to give. Never quotes the file."""
    other = "public" if wanted == "private" else "private"
    name = PRIVATE_KEY_NAME if wanted == "private" else PUBLIC_KEY_NAME
    if path.is_dir():
        beside = path / name
        hint = f"give {beside}" if beside.is_file() else f"give {_GIVE[wanted]}"
        raise InputError(f"{path}: a folder, not a {wanted} key; {hint}")
    data = _read(path, f"{wanted} key")
    if re.search(rb"-----BEGIN [A-Z0-9 ]*" + other.upper().encode() + rb" KEY-----", data):
        beside = path.with_name(name)
        hint = f"give {beside}" if beside.is_file() else f"give {_GIVE[wanted]}"
        why = (
            "a receipt is signed with the private one"
            if wanted == "private"
            else "verifying needs only the public one; the private key stays with the signer"
        )
        raise InputError(f"{path}: a {other} key, not the {wanted} key ({why}); {hint}")
    return data


def load_private_key(
    path: str | os.PathLike[str], password: bytes | None = None
) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM); InputError naming the file otherwise."""
    path = Path(path)
    data = _key_pem(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        raise InputError(
            f"{path}: an encrypted private key; clearset signs with an unencrypted one, "
            f"{_GIVE['private']}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's own message says nothing a user can act on.
        raise InputError(
            f"{path}: not a readable PEM private key; give {_GIVE['private']}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 key (clearset signs with Ed25519)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM); InputError naming the file otherwise."""
    path = Path(path)
    data = _key_pem(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path}: not a readable PEM public key; give {_GIVE['public']}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 key (clearset signs with Ed25519)")
    return key


def sign_statement(statement: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Wrap a receipt statement in a DSSE envelope signed with ``key``."""
    check_statement(statement)
    payload = canonical_json(statement)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": key_id(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }


def _strict_b64(text: Any, what: str) -> bytes:
    """Decode base64 that is in its one canonical form (else two texts, one meaning)."""
    if not isinstance(text, str):
        raise VerificationError(f"envelope {what} is not a base64 string")
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise VerificationError(f"envelope {what} is not valid base64") from error
    if base64.b64encode(decoded).decode("ascii") != text:
        raise VerificationError(f"envelope {what} is not canonical base64")
    return decoded


def parse_envelope(data: bytes | str, where: str = "receipt") -> dict[str, Any]:
    """A receipt file's bytes as an envelope object, NOT verified.

    VerificationError naming ``where`` if it is not strict JSON (see ``statement``) or not
    a JSON object; ``verify_envelope`` checks the rest.
    """
    envelope = parse_json(data, where)
    if not isinstance(envelope, dict):
        raise VerificationError(f"{where} is not a DSSE envelope (not a JSON object)")
    return envelope


def envelope_payload(envelope: Any) -> bytes:
    """The payload bytes of an envelope, decoded but NOT verified."""
    if not isinstance(envelope, dict):
        raise VerificationError("receipt is not a DSSE envelope (not a JSON object)")
    return _strict_b64(envelope.get("payload"), "payload")


def receipt_digest(envelope: dict[str, Any]) -> str:
    """SHA-256 hex of the envelope's payload: the digest proofs name. Not verified."""
    return hashlib.sha256(envelope_payload(envelope)).hexdigest()


def verify_envelope(envelope: Any, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check the envelope's signature by ``public_key``; return the statement it signs.

    Raises VerificationError saying why: wrong payload type, bad base64, no signature by
    this key, a signature that does not verify, or a payload that is not a canonical
    clearset receipt statement.
    """
    payload = envelope_payload(envelope)
    if set(envelope) != {"payloadType", "payload", "signatures"}:
        raise VerificationError(
            "envelope must hold exactly payloadType, payload and signatures; got "
            + ", ".join(repr(field) for field in sorted(envelope))
        )
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError(
            f"envelope payloadType is {envelope['payloadType']!r}, not {PAYLOAD_TYPE!r}"
        )
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError("envelope carries no signatures")
    wanted = key_id(public_key)
    message = pae(PAYLOAD_TYPE, payload)
    candidates = []
    for signature in signatures:
        if not isinstance(signature, dict) or "sig" not in signature:
            raise VerificationError("envelope signature entry has no sig")
        # DSSE makes keyid optional; an entry without one may still be ours.
        if signature.get("keyid", "") in (wanted, ""):
            candidates.append(_strict_b64(signature["sig"], "signature"))
    if not candidates:
        named = ", ".join(repr(s.get("keyid")) for s in signatures)
        raise VerificationError(f"receipt is not signed by key {wanted} (signed by: {named})")
    for candidate in candidates:
        try:
            public_key.verify(candidate, message)
            break
        except InvalidSignature:
            continue
    else:
        raise VerificationError(
            f"signature by key {wanted} does not verify: the receipt or the key was altered"
        )
    statement: dict[str, Any] = parse_json(payload, "signed payload")
    check_statement(statement)
    if canonical_json(statement) != payload:
        raise VerificationError("signed payload is not in clearset's canonical JSON form")
    return statement
