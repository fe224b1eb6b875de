"""Issue a receipt for a run folder, and answer membership questions about it.

A receipt is issued over the cleaned copy's manifest (what remains after `clearset clean`),
because that is what a model is trained on. `issue_receipt` writes, in the run folder:

    RUN/tree.bin             the Merkle leaves and upper levels, for proofs
    RUN/receipt.dsse.json    the signed statement (DSSE envelope)
    RUN/receipt.salt         the salt of the removed-items commitment, mode 0600: keep it
                             private; with it the builder can later open the commitment

The run's manifest digest named in the statement is the SHA-256 of the canonical JSON
list of [shard id, manifest parquet SHA-256] pairs from the run's completion markers, so
anyone holding the run folder can recompute it. The cleaned copy's manifest digest is the
same rule over RUN/cleaned/markers/: with the copy's name and its clean's finish
time it says which cleaned copy the receipt covers (`clearset.documents.counts`).

This is the run-level half of receipts: it reads the run folder and hands the facts to
the library in `clearset.receipts` (statement, Merkle tree, DSSE, proofs), which knows no
run folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from clearset.atomic import atomic_path
from clearset.documents.counts import clean_identity, kept_counts, manifest_digest
from clearset.engines import Engine
from clearset.errors import InputError, RunFolderError, VerificationError
from clearset.exchange.run import exchange_record
from clearset.matching.review import allowed_kept
from clearset.receipts.dsse import (
    key_id,
    load_private_key,
    receipt_digest,
    sign_statement,
    verify_envelope,
)
from clearset.receipts.issue import list_identities, one_line_name, read_receipt, source_label
from clearset.receipts.merkle import MerkleTree
from clearset.receipts.proofs import PROOF_VERSION, prove, prove_removed
from clearset.receipts.statement import build_statement, commit_removed
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import (
    RECEIPT_FILE,
    REMOVALS_FILE,
    SALT_FILE,
    TREE_FILE,
    RunFolder,
    cleaned_manifest_files,
    refuse_unaccounted,
)
from clearset.runs.receipts import build_kept_tree
from clearset.runs.tasks import DEFAULT_RETRIES
from clearset.stages.receipts import packed_sha256


def kept_hashes(run_dir: Path) -> np.ndarray:
    """Every kept item's SHA-256, unsorted, as one uint8[N, 32] array.

    The in-memory twin of the out-of-core build's extract step (`issue_receipt` uses
    that one): with `sorted_leaf_chunks` and `MerkleTree.build` it gives the same tree.

    Read shard by shard into an array sized from the parquet footers, so the peak is the
    32 bytes a leaf the tree needs anyway plus one shard, not a second copy of the set.
    """
    files = cleaned_manifest_files(run_dir)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    rows = np.empty((total, 32), np.uint8)
    filled = 0
    for path in files:
        packed = packed_sha256(pq.read_table(path, columns=["sha256"]).column("sha256"))
        rows[filled : filled + len(packed)] = packed
        filled += len(packed)
    return rows[:filled]


def removed_hashes(run_dir: Path) -> list[bytes]:
    path = run_dir / REMOVALS_FILE
    if not path.exists():
        return []
    values = pq.read_table(path, columns=["sha256"]).column("sha256").to_pylist()
    return [bytes.fromhex(v) for v in values if v]


def _previous_record(previous: Path, public_key: Ed25519PublicKey) -> dict[str, str]:
    """{receipt_digest, root} of a --previous receipt whose signature verifies."""
    path = previous / RECEIPT_FILE if previous.is_dir() else previous
    try:
        envelope = read_receipt(path)
        statement = verify_envelope(envelope, public_key)
    except VerificationError as error:
        raise InputError(
            f"--previous {path}: refusing to chain to a receipt that does not verify with "
            f"key {key_id(public_key)} ({error}); give its signer's key with --previous-pubkey"
        ) from None
    root = statement["predicate"]["tree"]["root"]
    return {"receipt_digest": receipt_digest(envelope), "root": root}


def issue_receipt(
    run_dir: Path,
    key_path: Path,
    *,
    dataset_name: str | None = None,
    source_name: str | None = None,
    previous: Path | None = None,
    previous_public_key: Ed25519PublicKey | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    retries: int | None = None,
    show_progress: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Build the tree over the cleaned copy, sign the statement; returns the envelope.

    The tree is built out of core by tasks on ``engine`` (default: ``workers`` local
    processes), see `clearset.runs.receipts`; an interrupted build resumes.

    ``source_name`` (default: the source's last path part) and ``dataset_name`` (default:
    the source name) are what the receipt calls them. A ``previous`` receipt must verify
    with ``previous_public_key`` (default: the signing key's own public key). Everything
    that can be refused is checked before tree.bin, the salt or the receipt is written.
    """
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(f"{run.path}: the scan is not finished; re-run it first")
    refuse_unaccounted(run, info)  # before "no cleaned copy": cleaning it is refused too
    _check_clean_is_current(run, info)
    clean = clean_identity(run.path)
    key = load_private_key(key_path)
    source = info.source
    if source_name is None:
        source_name = source_label(str(source.get("url") or ""))
    source_name = one_line_name(source_name, "--source-name")
    dataset_name = one_line_name(dataset_name or source_name, "--name")
    previous_record = None
    if previous is not None:
        previous_record = _previous_record(previous, previous_public_key or key.public_key())

    kept = kept_counts(run)
    tree, image_leaves = build_kept_tree(
        run.path,
        run.path / TREE_FILE,
        engine=engine,
        workers=workers,
        retries=DEFAULT_RETRIES if retries is None else retries,
        show_progress=show_progress,
        console=console,
    )
    commitment, salt, count = commit_removed(removed_hashes(run.path))
    statement = build_statement(
        dataset_name=dataset_name,
        tree_size=tree.size,
        root=tree.root,
        source_name=source_name,
        manifest_digest=manifest_digest(run),
        lists=list_identities(info),
        scan_started=str(info.started)[:19] + "Z",
        scan_finished=info.finished[:19] + "Z",
        removed_count=count,
        removed_commitment=commitment,
        previous=previous_record,
        clean=clean,
        kept={
            **kept.receipt_dict(),
            "leaves": {"images": image_leaves, "other_members": tree.size - image_leaves},
        },
        exchange=exchange_record(run.path),
        review=review_record(run.path, info.matching),
    )
    envelope = sign_statement(statement, key)
    with atomic_path(run.path / SALT_FILE) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(salt.hex() + "\n")
    with atomic_path(run.path / RECEIPT_FILE) as tmp:
        tmp.write_text(json.dumps(envelope, indent=2) + "\n")
    return envelope


def review_record(run_dir: Path, matching: dict[str, Any] | None) -> dict[str, Any] | None:
    """The receipt's review field: the allow list the clean honoured (None without one)
    and the matched samples it kept because of it."""
    allow = (matching or {}).get("allow_list")
    if allow is None:
        return None
    matches = pq.read_table(run_dir / "matches.parquet")
    removed: set[tuple[str, str]] = set()
    if (run_dir / REMOVALS_FILE).exists():
        table = pq.read_table(run_dir / REMOVALS_FILE, columns=["shard", "key"])
        removed = set(zip(*(table.column(c).to_pylist() for c in ("shard", "key")), strict=True))
    return {"allow_list": allow, "allowed_kept": allowed_kept(matches, removed)}


def _check_clean_is_current(run: RunFolder, info: RunInfo) -> None:
    """Refuse to sign a cleaned copy made against other lists than run.json now names
    (after a `clearset match`): the receipt would claim lists the copy was not cleaned by."""
    record = CleanRecord.read(run.path)
    if record is None:
        return  # kept_hashes says what to do
    cleaned_with = record.identity.get("matching")
    if cleaned_with != info.matching:
        raise RunFolderError(
            f"{run.path}: the cleaned copy was made before the last `clearset match` or "
            "`clearset exchange apply`; "
            "clean again (`clearset clean RUN --to NEW_OUTPUT`) before issuing a receipt"
        )


def open_tree(run_dir: Path) -> tuple[MerkleTree, dict[str, Any]]:
    """The run's tree and receipt, or a clear error if it has none."""
    receipt_path = Path(run_dir) / RECEIPT_FILE
    if not receipt_path.exists():
        raise RunFolderError(f"{run_dir}: no receipt; run `clearset receipt {run_dir} --key KEY`")
    return MerkleTree.open(Path(run_dir) / TREE_FILE), read_receipt(receipt_path)


def prove_item(run_dir: Path, sha256: bytes, *, version: int = PROOF_VERSION) -> dict[str, Any]:
    tree, envelope = open_tree(run_dir)
    return prove(tree, sha256, receipt_digest(envelope), version=version)


def prove_item_removed(
    old_run: Path, new_run: Path, sha256: bytes, *, version: int = PROOF_VERSION
) -> dict[str, Any]:
    old_tree, old_envelope = open_tree(old_run)
    new_tree, new_envelope = open_tree(new_run)
    return prove_removed(
        old_tree,
        new_tree,
        sha256,
        receipt_digest(old_envelope),
        receipt_digest(new_envelope),
        version=version,
    )
