"""Receipt signing: keys, DSSE envelopes checked by us and by securesystemslib, tampering.

Every byte of the payload, the signature and the public key is altered in turn; each
change must make verification fail with a reason.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import stat

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import clearset
from clearset.errors import InputError, OutputError, VerificationError
from clearset.receipts import (
    MerkleTree,
    build_statement,
    commit_removed,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    open_commitment,
    pae,
    prove,
    receipt_digest,
    sign_statement,
    statement_digest,
    verify,
    verify_envelope,
)

LISTS = [
    {
        "name": "demo-list",
        "version": "2024-05",
        "digest": "sha256:" + "1" * 64,
        "hash_type": "pdq",
        "threshold": 31,
    },
    {
        "name": "exact-list",
        "version": "7",
        "digest": "sha256:" + "2" * 64,
        "hash_type": "sha256",
        "threshold": None,
    },
]


def leaves(n: int) -> np.ndarray:
    hashes = sorted(hashlib.sha256(b"item %d" % i).digest() for i in range(n))
    return np.frombuffer(b"".join(hashes), np.uint8).reshape(n, 32)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    keydir = tmp_path_factory.mktemp("keys")
    private_path, public_path = generate_keypair(keydir)
    return load_private_key(private_path), load_public_key(public_path), keydir


@pytest.fixture(scope="module")
def receipt(keys):
    private, _, _ = keys
    tree = MerkleTree.build(leaves(40))
    commitment, _, count = commit_removed([hashlib.sha256(b"gone").digest()])
    statement = build_statement(
        dataset_name="demo-set",
        tree_size=tree.size,
        root=tree.root,
        source_name="/data/demo",
        manifest_digest="ab" * 32,
        lists=LISTS,
        scan_started="2024-05-01T10:00:00+02:00",
        scan_finished="2024-05-01T11:00:00Z",
        removed_count=count,
        removed_commitment=commitment,
    )
    return tree, statement, sign_statement(statement, private)


def test_generate_keypair_files(keys):
    _, public, keydir = keys
    private_file, public_file = keydir / "clearset.key", keydir / "clearset.pub"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert private_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_file.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(public) == hashlib.sha256(der).hexdigest()


def test_generate_keypair_refuses_to_overwrite(keys):
    _, _, keydir = keys
    before = (keydir / "clearset.key").read_bytes()
    with pytest.raises(OutputError, match="clearset.key"):
        generate_keypair(keydir)
    assert (keydir / "clearset.key").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n"])
def test_bad_pem_is_an_input_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.pem"
    path.write_bytes(content)
    with pytest.raises(InputError, match="broken.pem"):
        load_public_key(path)
    with pytest.raises(InputError, match="broken.pem"):
        load_private_key(path)
    with pytest.raises(InputError, match="absent.pem"):
        load_public_key(tmp_path / "absent.pem")


def test_statement_shape(receipt):
    tree, statement, envelope = receipt
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://clearset.dev/receipt/v1"
    assert statement["subject"] == [
        {"name": "demo-set", "digest": {"rfc9162_sha256": tree.root.hex()}}
    ]
    predicate = statement["predicate"]
    assert predicate["tree"]["size"] == 40 and predicate["tree"]["root"] == tree.root.hex()
    assert predicate["lists"] == LISTS
    assert predicate["tool"] == {"name": clearset.TOOL_NAME, "version": clearset.__version__}
    assert predicate["scan"] == {
        "started": "2024-05-01T08:00:00Z",
        "finished": "2024-05-01T11:00:00Z",
    }
    assert predicate["removed"]["count"] == 1 and predicate["previous"] is None
    payload = base64.b64decode(envelope["payload"])
    assert receipt_digest(envelope) == hashlib.sha256(payload).hexdigest()
    assert receipt_digest(envelope) == statement_digest(statement)


def test_list_identity_cannot_carry_entries():
    with pytest.raises(InputError, match="entries"):
        build_statement(
            dataset_name="x",
            tree_size=0,
            root=b"\0" * 32,
            source_name="x",
            manifest_digest="ab" * 32,
            lists=[{**LISTS[0], "entries": ["..."]}],
            scan_started="2024-05-01T10:00:00Z",
            scan_finished="2024-05-01T10:00:00Z",
            removed_count=0,
            removed_commitment="cd" * 32,
        )


def test_removed_commitment_opens_only_with_the_same_set_and_salt():
    removed = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    commitment, salt, count = commit_removed(removed)
    assert count == 2
    assert open_commitment(commitment, salt, list(reversed(removed)) + removed[:1])
    assert open_commitment(
        commitment, salt, np.frombuffer(b"".join(removed), np.uint8).reshape(2, 32)
    )
    assert not open_commitment(commitment, salt, removed[:1])
    assert not open_commitment(commitment, b"\0" * 32, removed)
    assert commit_removed(removed)[0] != commitment  # a fresh salt hides equal sets


def test_envelope_verifies_with_clearset(receipt, keys):
    _, statement, envelope = receipt
    _, public, _ = keys
    assert verify_envelope(envelope, public) == statement
    assert envelope["payloadType"] == "application/vnd.in-toto+json"


def test_envelope_verifies_with_securesystemslib(receipt, keys):
    dsse = pytest.importorskip("securesystemslib.dsse")
    signer = pytest.importorskip("securesystemslib.signer")
    _, statement, envelope = receipt
    _, public, _ = keys
    key = signer.SSlibKey.from_crypto(public, keyid=key_id(public))
    theirs = dsse.Envelope.from_dict(copy.deepcopy(envelope))  # from_dict edits its input
    assert key.keyid in theirs.verify([key], 1)
    assert theirs.pae() == pae(envelope["payloadType"], theirs.payload)
    assert json.loads(theirs.payload) == statement


def test_securesystemslib_rejects_what_we_reject(receipt, keys):
    dsse = pytest.importorskip("securesystemslib.dsse")
    signer = pytest.importorskip("securesystemslib.signer")
    exceptions = pytest.importorskip("securesystemslib.exceptions")
    _, _, envelope = receipt
    _, public, _ = keys
    tampered = copy.deepcopy(envelope)
    tampered["payload"] = base64.b64encode(base64.b64decode(envelope["payload"]) + b" ").decode()
    key = signer.SSlibKey.from_crypto(public, keyid=key_id(public))
    with pytest.raises(exceptions.VerificationError):
        dsse.Envelope.from_dict(copy.deepcopy(tampered)).verify([key], 1)
    with pytest.raises(VerificationError):
        verify_envelope(tampered, public)


def _replace_char(text: str, position: int) -> str:
    """Change one base64 character to another base64 character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    old = text[position]
    new = "A" if old == "=" else alphabet[(alphabet.index(old) + 1) % 64]
    return text[:position] + new + text[position + 1 :]


def test_every_payload_character_is_signed(receipt, keys):
    _, _, envelope = receipt
    _, public, _ = keys
    for position in range(len(envelope["payload"])):
        tampered = dict(envelope, payload=_replace_char(envelope["payload"], position))
        with pytest.raises(VerificationError) as raised:
            verify_envelope(tampered, public)
        assert str(raised.value), position


@pytest.mark.parametrize("position", range(88))  # base64 of a 64-byte Ed25519 signature
def test_every_signature_character_matters(receipt, keys, position):
    _, _, envelope = receipt
    _, public, _ = keys
    signature = envelope["signatures"][0]
    tampered = dict(
        envelope, signatures=[dict(signature, sig=_replace_char(signature["sig"], position))]
    )
    with pytest.raises(VerificationError, match="signature|base64"):
        verify_envelope(tampered, public)


@pytest.mark.parametrize("position", range(32))
def test_every_public_key_byte_matters(receipt, keys, position):
    _, _, envelope = receipt
    _, public, _ = keys
    raw = bytearray(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    raw[position] ^= 0x01
    other = Ed25519PublicKey.from_public_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="not signed by key"):
        verify_envelope(envelope, other)
    # Even if the envelope claimed the altered key's id, its signature cannot verify.
    relabelled = dict(envelope, signatures=[dict(envelope["signatures"][0], keyid=key_id(other))])
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(relabelled, other)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda e: e.update(payloadType="application/json"), "payloadType"),
        (lambda e: e.update(signatures=[]), "no signatures"),
        (lambda e: e.pop("signatures"), "exactly"),
        (lambda e: e.update(payload=e["payload"] + "=="), "base64"),
        (lambda e: e["signatures"][0].update(keyid="0" * 64), "not signed by key"),
    ],
)
def test_envelope_structure_errors(receipt, keys, change, reason):
    _, _, envelope = receipt
    _, public, _ = keys
    tampered = copy.deepcopy(envelope)
    change(tampered)
    with pytest.raises(VerificationError, match=reason):
        verify_envelope(tampered, public)


def test_non_canonical_payload_is_refused_even_when_signed(receipt, keys):
    # Signed by the right key but pretty-printed: its digest would differ from the
    # statement's, so proofs could not name it; refuse it.
    _, statement, _ = receipt
    private, public, _ = keys
    payload = json.dumps(statement, indent=1).encode()
    envelope = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {
                "keyid": key_id(public),
                "sig": base64.b64encode(
                    private.sign(pae("application/vnd.in-toto+json", payload))
                ).decode(),
            }
        ],
    }
    with pytest.raises(VerificationError, match="canonical"):
        verify_envelope(envelope, public)


def test_verify_receipt_and_proof_end_to_end(receipt, keys):
    tree, statement, envelope = receipt
    _, public, _ = keys
    proof = prove(tree, tree.leaf(5), receipt_digest(envelope))
    assert verify(envelope, proof, public) == statement
    absent = prove(tree, hashlib.sha256(b"never there").digest(), receipt_digest(envelope))
    assert absent["type"] == "non-inclusion"
    verify(envelope, absent, public)


def test_floats_are_refused_in_a_statement():
    with pytest.raises(InputError, match="float"):
        build_statement(
            dataset_name="x",
            tree_size=0,
            root=b"\0" * 32,
            source_name="x",
            manifest_digest="ab" * 32,
            lists=[{**LISTS[0], "threshold": 31.0}],
            scan_started="2024-05-01T10:00:00Z",
            scan_finished="2024-05-01T10:00:00Z",
            removed_count=0,
            removed_commitment="cd" * 32,
        )
