"""Where a run stands: shards done, failed (and why), not yet done; what to re-run.

Read from the run folder alone (markers, RUN/failed/, RUN/ranks/) and the source's list of
shards, so it works while ranks of an array job are still writing, and after any crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clearset import storage
from clearset.documents.counts import LeafCounts, RunCounts, SetCounts, run_counts, statement_counts
from clearset.errors import ClearsetError
from clearset.exchange.run import matched_text
from clearset.formats import source_from_spec
from clearset.matching.review import review_lines, review_section
from clearset.receipts.dsse import envelope_payload
from clearset.receipts.issue import read_receipt
from clearset.receipts.statement import parse_json
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import RECEIPT_FILE, RunFolder
from clearset.runlock import RunBusy, holder, run_lock
from clearset.runs.scan import RANKS_DIR, failed_shards, scanned_shards, summarise_markers
from clearset.stages.match import SHARED_INDEX_DIR, drop_shared_index

#: Shards named one by one in the status; the rest are counted.
NAMED = 20


def run_status(run_dir: str | Path) -> dict[str, Any]:
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    counts = summarise_markers(run)
    counts.pop("account")
    status: dict[str, Any] = {
        "run": storage.url_of(run.path),
        "source": info.source_url,
        "finished": info.finished,
        "shards_done": counts["shards_done"],
        "items": counts["items"],
        "bytes": counts["bytes"],
        "item_status": counts["status"],
        # samples, members and leaves in the words every command uses (see documents/counts.py)
        "counts": _counts(run),
        "ranks": _ranks(run),
        **_list_index(run),
        # list holders' answers applied (`clearset exchange apply`): digest, holder, matched
        "answers": (run.read_info().get("exchange") or {}).get("answers", []),
        "review": review_section(info.matching or {}, info.counts.get("matches") or {}),
        # The cleaned copy was made against other lists than the last match or apply names.
        "clean_stale": (clean := CleanRecord.read(run.path)) is not None
        and clean.identity.get("matching") != info.matching,
    }
    try:
        shards = source_from_spec(info.source).shards()
    except ClearsetError as exc:
        # The source is gone or unreachable: what the run folder says still stands.
        status.update(shards=None, failed=[], not_done=[], source_problem=str(exc))
        return status
    failed = failed_shards(run, shards)
    failed_ids = {f["shard_id"] for f in failed}
    done_ids = {s.id for s in scanned_shards(run, shards)}
    status["shards_done"] = len(done_ids)  # as a resume counts the shards it skips
    not_done = [
        {"shard_id": s.id, "shard": s.name, "index": i}
        for i, s in enumerate(shards)
        if s.id not in failed_ids and s.id not in done_ids
    ]
    index = {s.id: i for i, s in enumerate(shards)}
    for entry in failed:
        entry["index"] = index.get(entry["shard_id"])
    status.update(shards=len(shards), failed=failed, not_done=not_done)
    world = _world_size(status["ranks"])
    if world and (failed or not_done):
        owners = {e["index"] % world for e in [*failed, *not_done] if e.get("index") is not None}
        status["rerun_ranks"] = {"world_size": world, "ranks": sorted(owners)}
    return status


def _counts(run: RunFolder) -> dict[str, Any]:
    """The run's counts, and the receipt's leaves when its receipt covers the current
    cleaned copy (``receipt_covers_clean`` says whether it does)."""
    counts = run_counts(run.path)
    found = counts.to_dict()
    found["leaves"] = None
    found["receipt_covers_clean"] = None
    receipt = run.path / RECEIPT_FILE
    if receipt.exists():
        try:
            statement = parse_json(envelope_payload(read_receipt(receipt)), str(receipt))
        except ClearsetError:
            return found  # `clearset verify` says what is wrong with it
        _, leaves = statement_counts(statement)
        covered = ((statement["predicate"].get("clean") or {}).get("manifest_digest") or {}).get(
            "sha256"
        )
        found["leaves"] = {
            "total": leaves.total,
            "images": leaves.images,
            "other_members": leaves.other_members,
        }
        found["receipt_covers_clean"] = bool(
            counts.clean and covered == counts.clean["manifest_digest"]
        )
    return found


def _list_index(run: RunFolder) -> dict[str, Any]:
    """The lists' index a scan or match on Ray keeps in the run folder while it runs: in
    use (by whom), or left by a killed one, which is removed now (it holds the lists'
    entries, and no command is left to remove it)."""
    folder = run.path / SHARED_INDEX_DIR
    found: dict[str, Any] = {"list_index": folder.exists(), "list_index_removed": False}
    if not found["list_index"]:
        return found
    try:
        with run_lock(run.path, "status") as alone:
            if alone:
                drop_shared_index(run.path)
                found.update(list_index=folder.exists(), list_index_removed=True)
    except RunBusy:
        found["list_index_in_use_by"] = holder(run.path)
    return found


def _ranks(run: RunFolder) -> list[dict[str, Any]]:
    found = []
    for path in sorted((run.path / RANKS_DIR).glob("[!.]*.json")):  # not a .tmp- one
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            continue  # a record of what a rank did; the markers are what count
    return found


def _world_size(ranks: list[dict[str, Any]]) -> int | None:
    if not ranks:
        return None
    latest = max(ranks, key=lambda r: r.get("ended") or "")
    return int(latest["world_size"])


def status_lines(status: dict[str, Any]) -> list[str]:
    """The status as plain lines for a person."""
    total = status["shards"]
    lines = [f"run {status['run']}: source {status['source']}"]
    if total is None:
        lines.append(f"source not readable now: {status['source_problem']}")
        lines.append(f"shards done: {status['shards_done']:,}")
    else:
        lines.append(
            f"shards: {status['shards_done']:,} done, {len(status['failed']):,} failed, "
            f"{len(status['not_done']):,} not done, of {total:,}"
        )
    counts = status["counts"]
    scanned = SetCounts(**counts["scanned"])
    lines.append(f"scanned so far: {scanned.text()}, {status['bytes'] / 1e9:,.2f} GB")
    if counts["kept"] is not None:
        kept = RunCounts(scanned, SetCounts(**counts["kept"]))
        clean = counts["clean"]
        lines.append(
            f"cleaned copy {clean['destination']!r} (cleaned {clean['finished']}): "
            f"{kept.clean_text()}"
        )
        if status.get("clean_stale"):
            lines.append(
                "cleaned copy is stale: made before the last `clearset match` or `clearset "
                "exchange apply`; clean again (`clearset clean RUN --to NEW_OUTPUT`)"
            )
    if counts["leaves"] is not None:
        leaves = LeafCounts(**counts["leaves"])
        covers = (
            "covers this cleaned copy"
            if counts["receipt_covers_clean"]
            else "covers an earlier cleaned copy, not the current one: sign a new one"
        )
        lines.append(f"receipt: {leaves.text()}; {covers}")
    lines.append(f"finished: {status['finished']}" if status["finished"] else "finished: no")
    for answer in status.get("answers", []):
        lines.append(
            f"applied answer {answer['answer_digest']} from holder "
            f"{answer.get('label') or 'unnamed'} (key {answer['holder_key_id']}): "
            f"{matched_text(answer['matched'])}"
        )
    lines += review_lines(status.get("review") or {})
    for rank in status["ranks"]:
        lines.append(
            f"rank {rank['rank']} of {rank['world_size']} on {rank.get('host')}: last ended "
            f"{rank.get('ended')}, {rank.get('shards_done_now', 0):,} shards scanned, "
            f"{rank.get('shards_failed', 0):,} failed"
        )
    for entry in status["failed"][:NAMED]:
        lines.append(
            f"failed: {entry['shard']}: {entry['error']} (after {entry.get('attempts', '?')} tries)"
        )
    if len(status["failed"]) > NAMED:
        lines.append(f"failed: ... and {len(status['failed']) - NAMED:,} more")
    for entry in status["not_done"][:NAMED]:
        lines.append(f"not done: {entry['shard']}")
    if len(status["not_done"]) > NAMED:
        lines.append(f"not done: ... and {len(status['not_done']) - NAMED:,} more")
    if status["failed"] or status["not_done"]:
        rerun = status.get("rerun_ranks")
        if rerun:
            ranks = ", ".join(str(r) for r in rerun["ranks"])
            lines.append(
                f"to finish: re-run the same scan for --world-size {rerun['world_size']} "
                f"--rank {ranks} (each resumes; the last to end finishes the run)"
            )
        else:
            lines.append("to finish: re-run the same scan command (it resumes)")
    elif total is not None and not status["finished"]:
        lines.append("to finish: every shard is done; re-run the same scan command to finish")
    folder = Path(status["run"]) / SHARED_INDEX_DIR
    if status.get("list_index_removed"):
        lines.append(
            f"list index: removed {folder}, a copy of the lists' entries that a killed scan "
            "or match left"
        )
    elif status.get("list_index_in_use_by"):
        lines.append(
            f"list index: {folder} holds a copy of the lists' entries (owner-only) while "
            f"{status['list_index_in_use_by']} runs; it is removed when that ends, or by the "
            "next command on this run if it is killed"
        )
    elif status["list_index"]:
        lines.append(
            f"list index: {folder} holds a copy of the lists' entries, which a killed scan or "
            f"match left; delete it (rm -r {folder}), or let the next scan or match do it"
        )
    return lines
