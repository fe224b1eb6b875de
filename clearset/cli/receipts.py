"""Commands for receipts: keygen, receipt, prove, verify, diff-receipts."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clearset.atomic import atomic_path
from clearset.cli.app import (
    AddressOpt,
    EngineOpt,
    ProgressOpt,
    RetriesOpt,
    WorkersOpt,
    app,
    console,
    engine_for,
    out,
    run_folder,
    show_progress,
)
from clearset.documents.counts import plural, statement_counts
from clearset.errors import InputError, VerificationError
from clearset.exchange.run import answer_matched_sha256, verify_exchange
from clearset.matching.review import review_text
from clearset.receipts import (
    PROOF_VERSION,
    check_removed_form,
    envelope_payload,
    generate_keypair,
    insecure_key_warning,
    key_id,
    load_private_key,
    load_proof,
    load_public_key,
    proof_to_json,
    receipt_digest,
    verify_envelope,
    verify_proof,
    verify_removed,
)
from clearset.receipts.issue import read_receipt
from clearset.receipts.statement import parse_json
from clearset.runfolder import RECEIPT_FILE
from clearset.runs.issue import issue_receipt, prove_item, prove_item_removed
from clearset.runs.tasks import DEFAULT_RETRIES

Sha256Opt = Annotated[
    str | None, typer.Option("--sha256", help="The item's SHA-256 (hex) to prove.")
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", help="Prove the item with these exact bytes.")
]
ProofOutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the proof here (default: stdout).")
]
ProofVersionOpt = Annotated[
    int,
    typer.Option(
        "--proof-version",
        min=1,
        max=2,
        help="Proof format: 2 (compact, base64 paths) or 1 (for verifiers before 2).",
    ),
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
    run_dir: Annotated[Path, typer.Argument(help="A cleaned run folder.", callback=run_folder)],
    key: Annotated[Path, typer.Option("--key", "-k", help="The private key (clearset.key).")],
    name: Annotated[
        str | None,
        typer.Option(help="The data set's name in the receipt (default: the source name)."),
    ] = None,
    source_name: Annotated[
        str | None,
        typer.Option(
            "--source-name",
            help="How the receipt names the source (default: its last path part, e.g. "
            "'shards' for /home/alice/data/shards); never a path on this machine.",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(help="The receipt (or run folder) of the version this one replaces."),
    ] = None,
    previous_pubkey: Annotated[
        Path | None,
        typer.Option(
            "--previous-pubkey",
            help="Public key that signed --previous (default: the public half of --key).",
        ),
    ] = None,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Sign a receipt over the cleaned copy: RUN/receipt.dsse.json and RUN/tree.bin."""
    load_private_key(key)  # a public key or a folder given by mistake: say which file to give
    warning = insecure_key_warning(key)
    if warning:
        console.print(f"clearset: warning: {warning}", highlight=False, soft_wrap=True)
    previous_key = load_public_key(previous_pubkey) if previous_pubkey is not None else None
    with engine_for(engine, address, workers) as runner:
        envelope = issue_receipt(
            run_dir,
            key,
            dataset_name=name,
            source_name=source_name,
            previous=previous,
            previous_public_key=previous_key,
            engine=runner,
            retries=retries,
            show_progress=show_progress(progress),
            console=console,
        )
    statement = json.loads(envelope_payload(envelope))  # signed just now, by us
    predicate = statement["predicate"]
    tree, clean = predicate["tree"], predicate["clean"]
    members, leaves = statement_counts(statement)
    lines = [
        f"receipt: {run_dir / RECEIPT_FILE}",
        f"  digest {receipt_digest(envelope)}",
        f"  source {predicate['source']['name']!r}: {leaves.text()}, root {tree['root']}",
        f"  covers the cleaned copy {clean['destination']!r}, cleaned {clean['finished']}, "
        f"cleaned manifest sha256 {clean['manifest_digest']['sha256']}",
    ]
    if members is not None:
        lines.insert(3, f"  built from the cleaned copy's {members.text()}")
    if predicate.get("review") is not None:
        lines.append(f"  {review_text(predicate['review'])}")
    if predicate["previous"] is not None:
        lines.append(
            f"  replaces receipt {predicate['previous']['receipt_digest']} (signature checked)"
        )
    out.print("\n".join(lines), highlight=False, soft_wrap=True)


def _target_hash(sha256: str | None, file: Path | None) -> bytes:
    if (sha256 is None) == (file is None):
        raise InputError("give exactly one of --sha256 HEX or --file IMAGE")
    if file is not None:
        try:
            return hashlib.sha256(file.read_bytes()).digest()
        except OSError as exc:
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from None
    text = str(sha256).strip().lower()  # given: not None, as file is
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
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder with a receipt.", callback=run_folder)
    ],
    sha256: Sha256Opt = None,
    file: FileOpt = None,
    dest: ProofOutOpt = None,
    proof_version: ProofVersionOpt = PROOF_VERSION,
    answer: Annotated[
        Path | None,
        typer.Option(help="Prove, in one batch, that no member this applied answer matched is in."),
    ] = None,
) -> None:
    """Prove one item in the receipted set (inclusion) or not in it (non-inclusion)."""
    if answer is not None:
        digest, values = answer_matched_sha256(run_dir, answer)
        proofs = [prove_item(run_dir, v, version=proof_version) for v in values]
        batch = {"type": "exchange-batch", "answer": digest, "proofs": proofs}
        text = json.dumps(batch, indent=2) + "\n"
        if dest is None:
            sys.stdout.write(text)
        else:
            with atomic_path(dest) as tmp:
                tmp.write_text(text)
            out.print(f"{len(proofs)} proofs for answer {digest} written to {dest}")
        return
    _emit(prove_item(run_dir, _target_hash(sha256, file), version=proof_version), dest)


@app.command("diff-receipts")
def diff_receipts(
    old_run: Annotated[Path, typer.Argument(help="The earlier version's run folder.")],
    new_run: Annotated[Path, typer.Argument(help="The later version's run folder.")],
    sha256: Sha256Opt = None,
    file: FileOpt = None,
    dest: ProofOutOpt = None,
    proof_version: ProofVersionOpt = PROOF_VERSION,
) -> None:
    """Prove an item was in OLD and is not in NEW (one inclusion, one non-inclusion)."""
    target = _target_hash(sha256, file)
    _emit(prove_item_removed(old_run, new_run, target, version=proof_version), dest)


def _what_the_receipt_says(statement: dict[str, Any], digest: str) -> str:
    predicate = statement["predicate"]
    tree, clean = predicate["tree"], predicate.get("clean")
    members, leaves = statement_counts(statement)
    text = (
        f"receipt {digest}: {leaves.text()}, under root {tree['root']}, "
        f"source {predicate['source']['name']!r}"
    )
    if clean:
        text += f", cleaned copy {clean['destination']!r} (cleaned {clean['finished']})"
    if members is not None:
        text += f"; built from its {members.text()}"
    if predicate.get("review") is not None:
        text += f"; {review_text(predicate['review'])}"
    return text


def _what_the_proof_shows(proof: dict[str, Any], statement: dict[str, Any]) -> str:
    """What a verified proof shows, and what it does not: exact bytes only."""
    size, root = statement["predicate"]["tree"]["size"], statement["predicate"]["tree"]["root"]
    where = f"the set of {plural(size, 'leaf', 'leaves')} under root {root}"
    if proof["type"] == "inclusion":
        return (
            f"valid: an item with these exact bytes, SHA-256 {proof['sha256']}, is in {where} "
            f"(leaf {proof['index']}). It shows nothing about other items, nor about "
            "re-encoded or resized copies of this one (their SHA-256 differs)."
        )
    return (
        f"valid: no item with these exact bytes, SHA-256 {proof['sha256']}, is in {where}. "
        "Re-encoded, resized or otherwise altered copies have another SHA-256 and are not "
        "covered by this proof."
    )


@app.command("verify")
def verify_command(
    receipt_path: Annotated[Path, typer.Argument(help="receipt.dsse.json")],
    pubkey: Annotated[Path, typer.Option("--pubkey", help="The signer's public key (PEM).")],
    proof: Annotated[Path | None, typer.Option(help="A proof made by prove/diff-receipts.")] = None,
    old_receipt: Annotated[
        Path | None,
        typer.Option("--old-receipt", help="For a removal proof: the earlier receipt."),
    ] = None,
    answer: Annotated[
        list[Path] | None,
        typer.Option(help="A list holder's answer the receipt must cite (repeatable)."),
    ] = None,
    holder_pubkey: Annotated[
        list[Path] | None,
        typer.Option(
            "--holder-pubkey", help="Each --answer's holder public key (PEM), in the same order."
        ),
    ] = None,
    request: Annotated[
        Path | None, typer.Option(help="The request the answer answers (checks the root).")
    ] = None,
) -> None:
    """Check a receipt's signature, and a proof against it.

    Exit 0 valid, 1 invalid (anything that is not a valid receipt or proof), 2 a usage
    error (a file that cannot be read, a bad option).
    """
    if request is not None and not answer:
        raise InputError("--request goes with --answer ANS --holder-pubkey HOLDER.pub")
    key = load_public_key(pubkey)
    raw_proof = _read_bytes(proof) if proof is not None else None
    try:
        envelope = read_receipt(receipt_path)
        statement = verify_envelope(envelope, key)
        digest = receipt_digest(envelope)
        if answer:
            if len(holder_pubkey or []) != len(answer):
                raise InputError("give one --holder-pubkey HOLDER.pub for each --answer, in order")
            loaded_batch = parse_json(raw_proof, str(proof)) if raw_proof is not None else None
            pairs = [
                (a, load_public_key(k)) for a, k in zip(answer, holder_pubkey or [], strict=True)
            ]
            lines = verify_exchange(statement, pairs, proofs=loaded_batch, req=request)
            message = f"valid: receipt signed by key {key_id(key)}; " + "; ".join(lines)
        elif raw_proof is None:
            message = f"valid: receipt signed by key {key_id(key)}"
        else:
            loaded = load_proof(raw_proof, str(proof))
            if loaded.get("type") == "removed":
                check_removed_form(loaded)  # a malformed one is invalid, not a usage error
                if old_receipt is None:
                    raise InputError(f"{proof}: a removal proof needs --old-receipt OLD")
                old_envelope = read_receipt(old_receipt)
                old_statement = verify_envelope(old_envelope, key)
                verify_removed(loaded, old_statement, statement)
                old_tree = old_statement["predicate"]["tree"]
                new_tree = statement["predicate"]["tree"]
                old_size, new_size = (
                    plural(t["size"], "leaf", "leaves") for t in (old_tree, new_tree)
                )
                message = (
                    f"valid: an item with these exact bytes, SHA-256 {loaded['sha256']}, was "
                    f"in the old set and is not in the new: it is in the old set of "
                    f"{old_size} under root {old_tree['root']} (receipt "
                    f"{receipt_digest(old_envelope)}) and not in the new set of "
                    f"{new_size} under root {new_tree['root']}. Re-encoded or "
                    "resized copies have another SHA-256 and are not covered."
                )
            else:
                verify_proof(loaded, statement)
                message = _what_the_proof_shows(loaded, statement)
    except VerificationError as exc:
        print(f"invalid: {_one_line(str(exc))}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(message)
    print(f"  {_what_the_receipt_says(statement, digest)}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no reason given"
