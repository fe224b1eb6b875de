"""Commands for receipts: keygen, receipt, prove, verify, diff-receipts."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clearset.cli.app import app, out
from clearset.errors import InputError, VerificationError
from clearset.receipts import (
    envelope_payload,
    generate_keypair,
    load_proof,
    load_public_key,
    proof_to_json,
    receipt_digest,
    verify,
    verify_envelope,
    verify_removed,
)
from clearset.receipts.issue import (
    RECEIPT_FILE,
    issue_receipt,
    prove_item,
    prove_item_removed,
    read_receipt,
)
from clearset.sinks.atomic import atomic_path

Sha256Opt = Annotated[
    str | None, typer.Option("--sha256", help="The item's SHA-256 (hex) to prove.")
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", help="Prove the item with these exact bytes.")
]
ProofOutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the proof here (default: stdout).")
]


@app.command()
def keygen(
    keydir: Annotated[Path, typer.Argument(help="Folder for clearset.key and clearset.pub.")],
) -> None:
    """Make an Ed25519 signing key pair (the private key is mode 0600)."""
    key, pub = generate_keypair(keydir)
    out.print(f"private key: {key} (keep it secret)\npublic key:  {pub} (give it to auditors)")


@app.command()
def receipt(
    run_dir: Annotated[Path, typer.Argument(help="A cleaned run folder.")],
    key: Annotated[Path, typer.Option("--key", "-k", help="The private key (clearset.key).")],
    name: Annotated[
        str | None, typer.Option(help="The data set's name in the receipt (default: its URL).")
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(help="The receipt (or run folder) of the version this one replaces."),
    ] = None,
) -> None:
    """Sign a receipt over the cleaned copy: RUN/receipt.dsse.json and RUN/tree.bin."""
    envelope = issue_receipt(run_dir, key, dataset_name=name, previous=previous)
    statement = json.loads(envelope_payload(envelope))  # signed just now, by us
    tree = statement["predicate"]["tree"]
    out.print(
        f"receipt: {run_dir / RECEIPT_FILE}\n"
        f"  digest {receipt_digest(envelope)}\n"
        f"  {tree['size']:,} items, root {tree['root']}"
    )


def _target_hash(sha256: str | None, file: Path | None) -> bytes:
    if (sha256 is None) == (file is None):
        raise InputError("give exactly one of --sha256 HEX or --file IMAGE")
    if file is not None:
        try:
            return hashlib.sha256(file.read_bytes()).digest()
        except OSError as exc:
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from None
    text = sha256.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"--sha256 {sha256!r}: not 64 hex digits")
    return bytes.fromhex(text)


def _emit(proof: dict[str, Any], dest: Path | None) -> None:
    text = proof_to_json(proof)
    if dest is None:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
        return
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    out.print(f"{proof['type']} proof written to {dest}")


@app.command()
def prove(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with a receipt.")],
    sha256: Sha256Opt = None,
    file: FileOpt = None,
    dest: ProofOutOpt = None,
) -> None:
    """Prove one item in the receipted set (inclusion) or not in it (non-inclusion)."""
    _emit(prove_item(run_dir, _target_hash(sha256, file)), dest)


@app.command("diff-receipts")
def diff_receipts(
    old_run: Annotated[Path, typer.Argument(help="The earlier version's run folder.")],
    new_run: Annotated[Path, typer.Argument(help="The later version's run folder.")],
    sha256: Sha256Opt = None,
    file: FileOpt = None,
    dest: ProofOutOpt = None,
) -> None:
    """Prove an item was in OLD and is not in NEW (one inclusion, one non-inclusion)."""
    _emit(prove_item_removed(old_run, new_run, _target_hash(sha256, file)), dest)


@app.command("verify")
def verify_command(
    receipt_path: Annotated[Path, typer.Argument(help="receipt.dsse.json")],
    pubkey: Annotated[Path, typer.Option("--pubkey", help="The signer's public key (PEM).")],
    proof: Annotated[Path | None, typer.Option(help="A proof made by prove/diff-receipts.")] = None,
    old_receipt: Annotated[
        Path | None,
        typer.Option("--old-receipt", help="For a removal proof: the earlier receipt."),
    ] = None,
) -> None:
    """Check a receipt's signature, and a proof against it. Exit 0 valid, 1 invalid."""
    envelope = read_receipt(receipt_path)
    key = load_public_key(pubkey)
    try:
        statement = verify_envelope(envelope, key)
        if proof is None:
            message = "receipt signature valid"
        else:
            try:
                raw = proof.read_bytes()
            except OSError as exc:
                raise InputError(f"{proof}: cannot read ({exc.strerror or exc})") from None
            try:
                loaded = load_proof(raw, str(proof))
            except InputError as exc:  # readable but not a proof: an invalid claim
                raise VerificationError(str(exc)) from None
            if loaded.get("type") == "removed":
                if old_receipt is None:
                    raise InputError(f"{proof}: a removal proof needs --old-receipt OLD")
                old_statement = verify_envelope(read_receipt(old_receipt), key)
                verify_removed(loaded, old_statement, statement)
                message = f"valid: {loaded['sha256']} was in the old set and is not in the new"
            else:
                verify(envelope, loaded, key)
                verb = "is in" if loaded["type"] == "inclusion" else "is not in"
                message = f"valid: {loaded['sha256']} {verb} the set"
    except VerificationError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    tree = statement["predicate"]["tree"]
    print(f"{message} (receipt {receipt_digest(envelope)}, {tree['size']:,} items)")
