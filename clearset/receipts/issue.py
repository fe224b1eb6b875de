"""Issue a receipt for a run folder, and answer membership questions about it.

A receipt is issued over the cleaned copy's manifest (what remains after `clearset clean`),
because that is what a model is trained on. `issue_receipt` writes, in the run folder:

    RUN/tree.bin             the Merkle leaves and upper levels, for proofs
    RUN/receipt.dsse.json    the signed statement (DSSE envelope)
    RUN/receipt.salt         the salt of the removed-items commitment, mode 0600: keep it
                             private; with it the builder can later open the commitment

The run's manifest digest named in the statement is the SHA-256 of the canonical JSON
list of [shard id, manifest parquet SHA-256] pairs from the run's completion markers, so
anyone holding the run folder can recompute it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import InputError, RunFolderError
from clearset.lists.model import sort_unique
from clearset.receipts.dsse import load_private_key, receipt_digest, sign_statement
from clearset.receipts.merkle import MerkleTree
from clearset.receipts.proofs import prove, prove_removed
from clearset.receipts.statement import build_statement, canonical_json, commit_removed
from clearset.runfolder import RunFolder
from clearset.sinks.atomic import atomic_path

RECEIPT_FILE = "receipt.dsse.json"
TREE_FILE = "tree.bin"
SALT_FILE = "receipt.salt"
REMOVALS_FILE = "removals.parquet"


def manifest_digest(run: RunFolder) -> str:
    """SHA-256 over the run's shards and their manifest files' SHA-256 (see module doc)."""
    import hashlib

    pairs = [[m["shard_id"], m["manifest_sha256"]] for m in run.done_markers()]
    return hashlib.sha256(canonical_json(pairs)).hexdigest()


def _packed(column: pa.ChunkedArray) -> np.ndarray:
    """A binary(32) column's non-null values as uint8[N, 32], not via Python objects."""
    array = column.combine_chunks().drop_null()
    if not len(array):
        return np.empty((0, 32), np.uint8)
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    start = array.offset * 32
    return data[start : start + len(array) * 32].reshape(-1, 32)


def kept_hashes(run_dir: Path) -> np.ndarray:
    """Every kept item's SHA-256, unsorted, as one uint8[N, 32] array.

    Read shard by shard into an array sized from the parquet footers, so the peak is the
    32 bytes a leaf the tree needs anyway plus one shard, not a second copy of the set.
    """
    from clearset.sinks.clean import cleaned_manifest_files

    files = cleaned_manifest_files(run_dir)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    rows = np.empty((total, 32), np.uint8)
    filled = 0
    for path in files:
        packed = _packed(pq.read_table(path, columns=["sha256"]).column("sha256"))
        rows[filled : filled + len(packed)] = packed
        filled += len(packed)
    return rows[:filled]


def sorted_leaf_chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    """`rows` sorted and made unique, as chunks in order: one chunk per leading byte.

    Sorting the whole set at once would need a second full copy; a chunk per first byte
    needs 1/256 of one, and chunks of distinct leading bytes cannot share a value, so
    the chunks together are sorted and unique.
    """
    leading = rows[:, 0].copy()
    for value in range(256):
        where = np.flatnonzero(leading == value)
        if where.size:
            chunk, _ = sort_unique(rows[where])
            yield chunk


def removed_hashes(run_dir: Path) -> list[bytes]:
    path = run_dir / REMOVALS_FILE
    if not path.exists():
        return []
    values = pq.read_table(path, columns=["sha256"]).column("sha256").to_pylist()
    return [bytes.fromhex(v) for v in values if v]


def _list_identities(info: dict[str, Any]) -> list[dict[str, Any]]:
    lists = info.get("settings", {}).get("matching", {}).get("lists", [])
    return [
        {
            "name": entry["name"],
            "version": entry.get("version"),
            "digest": entry["digest"],
            "hash_type": entry["hash_type"],
            "threshold": entry["threshold"] if entry["hash_type"] == "pdq" else None,
        }
        for entry in lists
    ]


def read_receipt(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such receipt") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable receipt ({exc})") from None


def issue_receipt(
    run_dir: Path,
    key_path: Path,
    *,
    dataset_name: str | None = None,
    previous: Path | None = None,
) -> dict[str, Any]:
    """Build the tree over the cleaned copy, sign the statement; returns the envelope."""
    run = RunFolder(Path(run_dir))
    info = run.read_info()
    if not info.get("finished"):
        raise RunFolderError(f"{run.path}: the scan is not finished; re-run it first")
    _check_clean_is_current(run, info)
    key = load_private_key(key_path)
    leaves = kept_hashes(run.path)
    previous_record = None
    if previous is not None:
        previous_path = previous / RECEIPT_FILE if previous.is_dir() else previous
        old = read_receipt(previous_path)
        statement = json.loads(_payload(old, previous_path))
        previous_record = {
            "receipt_digest": receipt_digest(old),
            "root": statement["predicate"]["tree"]["root"],
        }
    tree = MerkleTree.build(sorted_leaf_chunks(leaves), run.path / TREE_FILE)
    del leaves
    commitment, salt, count = commit_removed(removed_hashes(run.path))
    source = info["source"]
    statement = build_statement(
        dataset_name=dataset_name or source.get("url", "dataset"),
        tree_size=tree.size,
        root=tree.root,
        source_name=source.get("url", ""),
        manifest_digest=manifest_digest(run),
        lists=_list_identities(info),
        scan_started=info["started"][:19] + "Z",
        scan_finished=info["finished"][:19] + "Z",
        removed_count=count,
        removed_commitment=commitment,
        previous=previous_record,
    )
    envelope = sign_statement(statement, key)
    with atomic_path(run.path / SALT_FILE) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(salt.hex() + "\n")
    with atomic_path(run.path / RECEIPT_FILE) as tmp:
        tmp.write_text(json.dumps(envelope, indent=2) + "\n")
    return envelope


def _check_clean_is_current(run: RunFolder, info: dict[str, Any]) -> None:
    """Refuse to sign a cleaned copy made against other lists than run.json now names
    (after a `clearset match`): the receipt would claim lists the copy was not cleaned by."""
    from clearset.sinks.clean import clean_info

    record = clean_info(run.path)
    if record is None:
        return  # kept_hashes says what to do
    cleaned_with = record.get("identity", {}).get("matching")
    if cleaned_with != info.get("settings", {}).get("matching"):
        raise RunFolderError(
            f"{run.path}: the cleaned copy was made before the last `clearset match`; "
            "clean again (`clearset clean RUN --to NEW_OUTPUT`) before issuing a receipt"
        )


def _payload(envelope: dict[str, Any], where: Path) -> bytes:
    import base64

    try:
        return base64.b64decode(envelope["payload"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{where}: not a DSSE envelope") from None


def open_tree(run_dir: Path) -> tuple[MerkleTree, dict[str, Any]]:
    """The run's tree and receipt, or a clear error if it has none."""
    receipt_path = Path(run_dir) / RECEIPT_FILE
    if not receipt_path.exists():
        raise RunFolderError(f"{run_dir}: no receipt; run `clearset receipt {run_dir} --key KEY`")
    return MerkleTree.open(Path(run_dir) / TREE_FILE), read_receipt(receipt_path)


def prove_item(run_dir: Path, sha256: bytes) -> dict[str, Any]:
    tree, envelope = open_tree(run_dir)
    return prove(tree, sha256, receipt_digest(envelope))


def prove_item_removed(old_run: Path, new_run: Path, sha256: bytes) -> dict[str, Any]:
    old_tree, old_envelope = open_tree(old_run)
    new_tree, new_envelope = open_tree(new_run)
    return prove_removed(
        old_tree, new_tree, sha256, receipt_digest(old_envelope), receipt_digest(new_envelope)
    )
