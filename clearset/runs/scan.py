"""The scan command's orchestrator: plan the shards, run them on an engine, finish the run.

It lists the source's shards (with `rank`/`world_size`, only shards rank, rank + N, ...:
a static split for Slurm or Kubernetes array jobs), skips those the run folder already
has, and hands the rest to the engine as `scan_task`s. A shard that fails every try is
recorded in RUN/failed/ and left without a marker, so a re-run retries it; the others
still finish. The run is finished (accounting, RUN/matches.parquet, the clean's
removals, run.json's counts) by the command that sees every shard of the source done:
the single command, or the last rank of an array job to end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from clearset import storage
from clearset.atomic import atomic_path, sweep_tmp, write_json_atomic
from clearset.engines import Engine, Task
from clearset.errors import ClearsetError, InputError, RunFolderError
from clearset.formats.base import ShardRef, Source
from clearset.manifest import read_manifest_files
from clearset.matching.matcher import MATCH_SCHEMA, Matcher, list_record
from clearset.matching.review import review_of, summarise, with_allowed_column
from clearset.progress import Meter
from clearset.records import RunInfo
from clearset.runfolder import RunFolder, account_scan, accounting_line, utc_now
from clearset.runlock import run_lock
from clearset.runs.clean import (
    drop_state,
    finish_clean,
    prepare_clean,
    publish_cards,
    refuse_overlap,
)
from clearset.runs.tasks import DEFAULT_RETRIES, Failure, choose_engine, in_memory, run_tasks
from clearset.stages.clean import CleanJob, dest_done_file
from clearset.stages.match import MatchJob, drop_shared_index, shipped
from clearset.stages.scan import ScanSettings, hash_threads, scan_task

#: RUN/failed/<shard>.json: why a shard failed every try (removed once it is done).
FAILED_DIR = "failed"
#: RUN/ranks/<rank>-of-<n>.json: what each rank of an array job did, last.
RANKS_DIR = "ranks"
#: Held by the rank that finishes the run, so that two ranks ending together do not both.
FINISHING = ".finishing"


class ScanUnaccounted(RunFolderError):
    """The scan finished but hashed nothing, or left too much of its source unread."""


class ScanIncomplete(ClearsetError):
    """Some shards failed; the rest of the run is complete and a re-run retries them."""


@dataclass(frozen=True)
class Split:
    """This command's share of the shards in an array job: shards rank, rank + n, ..."""

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise InputError(f"--world-size {self.world_size}: must be 1 or more")
        if not 0 <= self.rank < self.world_size:
            raise InputError(
                f"--rank {self.rank}: must be 0 to {self.world_size - 1} for --world-size "
                f"{self.world_size}"
            )

    def take(self, shards: list[ShardRef]) -> list[ShardRef]:
        return shards[self.rank :: self.world_size]

    @property
    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


@dataclass
class ScanResult:
    run_dir: Path
    shards_total: int
    shards_skipped: int
    shards_done: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    accounting: dict[str, Any] = field(default_factory=dict)
    finished: bool = False  # the run as a whole (always, unless a rank left shards to others)
    shards_mine: int = 0  # this command's share of the shards (all of them, without --rank)
    retried: int = 0
    finishing_elsewhere: bool = False  # every shard is done; another rank holds the lock


def run_scan(
    source: Source, run_dir: str | Path, settings: ScanSettings, **options: Any
) -> ScanResult:
    """`_run_scan`, holding the run folder's lock until the scan ends (`clearset.runlock`):
    a second scan into the same run is refused while this one runs."""
    with contextlib.ExitStack() as held:
        return _run_scan(source, run_dir, settings, held=held, **options)


def _run_scan(
    source: Source,
    run_dir: str | Path,
    settings: ScanSettings,
    *,
    held: contextlib.ExitStack,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    match: MatchJob | None = None,
    clean: CleanJob | None = None,
    allow_missing: bool = False,
    retries: int = DEFAULT_RETRIES,
    split: Split | None = None,
) -> ScanResult:
    """Scan every shard of `source` (or this rank's share) into `run_dir`, resuming.

    Every finished scan ends with its accounting (`RUN/run.json` "accounting"): one that
    hashed no image, or could not read more than `MAX_UNREAD_SHARE` of its items, raises
    `ScanUnaccounted` after writing its run folder, unless `allow_missing`.

    With `match`, each shard is also matched against the lists as it is hashed, and
    RUN/matches.parquet gathers the match rows at the end. With `clean` too, each shard
    is written to the clean destination without its matched keys as soon as it is
    matched (see `clearset.stages.clean`), and RUN/removals.parquet is gathered at the end.
    """
    hash_threads()  # a bad CLEARSET_HASH_THREADS refused here, not in every shard's task
    run = RunFolder(Path(run_dir))
    shards = source.shards()
    refuse_overlap(source.url, shards, run.path, what="--out")
    if split is not None and clean is not None:
        raise InputError(
            "--clean-to with --rank: clean once every rank is done, with `clearset clean`"
        )
    matcher = match.matcher() if match is not None else None  # fail early on a bad list
    if held.enter_context(run_lock(run.path, "scan", shared=split is not None)):
        drop_shared_index(run.path)  # what a killed command left: none other uses the run
    recorded = settings.to_dict()
    if matcher is not None:
        recorded["matching"] = matching_record(matcher)
    created = not run.run_json.exists()
    info = run.prepare(source.spec(), recorded, shared=split is not None)
    if clean is not None:
        # This scan decides its accounting again when it ends (and cleans only if that
        # passes): a verdict an earlier run of it recorded does not bar a clean that
        # --allow-missing now accepts, as it does not bar `scan --allow-missing`, `clean`.
        recorded_info = {**info, "accounting": None} if allow_missing else info
        try:
            if prepare_clean(run, RunInfo.of(recorded_info), clean, shards):
                clean = replace(clean, finished=True)  # this clean is done: no shard redone
        except ClearsetError:
            if created:
                shutil.rmtree(run.path, ignore_errors=True)  # refused before any work
            raise
    urls = [source.url] + [spec.path for spec in (match.lists if match else ())]
    owner = f"rank-{split.rank}-of-{split.world_size}" if split is not None else None
    engine = choose_engine(engine, workers, *urls)
    if match is not None and not in_memory(*urls):
        # Every worker maps one built index instead of loading the lists again.
        same_machine = getattr(engine, "name", None) == "local"  # not Ray: workers anywhere
        match, matcher = match.share(run.path, matcher, owner, same_machine=same_machine)  # type: ignore[arg-type]  # matcher is set when match is
        if storage.is_mirror(run.path):
            match = shipped(match, engine)  # Ray on a bucket: the index is on no shared disk
    mine = split.take(shards) if split is not None else shards
    scanned = scanned_shards(run, mine)
    # A shard scanned before but not yet cleaned (--clean-to) is done, as `clearset
    # status` says, and is still a task: it is cleaned now.
    scanned_ids = {s.id for s in scanned}
    pending = [s for s in mine if s.id not in scanned_ids or not _cleaned(s, clean)]
    started = time.monotonic()
    result = ScanResult(
        run_dir=run.path,
        shards_total=len(shards),
        shards_skipped=len(scanned),
        shards_done=0,
        shards_mine=len(mine),
    )
    meter = Meter(
        len(mine), len(mine) - len(pending), show_progress, console, workers=engine.workers
    )
    tasks = [
        Task(s.id, s.name, scan_task, (source, s, str(run.path), settings, match, clean))
        for s in pending
    ]
    try:
        with meter.progress:
            done = run_tasks(
                engine,
                tasks,
                meter,
                retries=retries,
                on_done=lambda task, _: _forget_failure(run, task.id),
                on_failed=lambda failure: _remember_failure(run, failure, split),
            )
    except BaseException:
        drop_shared_index(run.path, owner)
        if split is None:
            # The workers are stopped by now and each removed its own temporary file,
            # unless it was killed inside a long call; this scan is the run folder's only
            # writer, so what is left under a temporary name is swept here.
            for folder in (run.manifest_dir, run.markers_dir, run.matches_dir):
                sweep_tmp(folder)
        raise
    if getattr(engine, "name", None) != "local":
        # Outputs on an object store: tasks on other nodes uploaded what they wrote.
        storage.pull_all(run.path)
        if clean is not None:
            storage.pull_all(Path(clean.dest))
    result.shards_done = len(done.done)
    result.retried = done.retried
    result.failures = [(f.task.name, f.error) for f in done.failures]
    result.seconds = time.monotonic() - started
    if split is not None:
        drop_shared_index(run.path, owner)
        _record_rank(run, split, result)
        run.refresh()
        if not all(run.is_done(s.id) for s in shards):
            result.counts = summarise_markers(run)
            result.counts.pop("account")
            _raise_failures(result, len(mine))
            return result  # another rank is still at work, or must be re-run
        with _finishing(run) as ours:
            if not ours:
                result.finishing_elsewhere = True  # the rank ending beside us finishes it
                result.counts = summarise_markers(run)
                result.counts.pop("account")
                return result
            return finish_scan(run, source, shards, matcher, clean, allow_missing, result)
    return finish_scan(run, source, shards, matcher, clean, allow_missing, result, created)


def finish_scan(
    run: RunFolder,
    source: Source,
    shards: list[ShardRef],
    matcher: Matcher | None,
    clean: CleanJob | None,
    allow_missing: bool,
    result: ScanResult,
    created: bool = False,
) -> ScanResult:
    """Gather what the shards wrote, account for the scan, and write run.json."""
    drop_shared_index(run.path)
    info = run.read_info()
    failed = failed_shards(run, shards)
    result.counts = summarise_markers(run)
    accounting = account_scan(result.counts.pop("account"), allow_missing)
    unaccounted = not failed and accounting["verdict"] == "failed"
    if matcher is not None and not failed:
        result.counts["matches"] = gather_matches(run, matcher)
    if clean is not None and not failed and not unaccounted:
        # The copy is finished: the card joins it, and its bookkeeping leaves it (last).
        cards = publish_cards(Path(clean.dest), RunInfo.of(info).source)
        result.counts["clean"] = finish_clean(run, cards)
        drop_state(Path(clean.dest))
    result.finished = not failed
    info.update(
        accounting=accounting,
        finished=utc_now() if not failed else None,
        counts=result.counts,
        failed_shards=[{"shard": f["shard"], "error": f["error"]} for f in failed],
        shards=len(shards),
    )
    run.write_info(info)
    run.record_scan(info)
    if failed and created and not result.counts["shards_done"]:
        # Nothing was scanned and the folder is ours alone: leave no husk behind.
        shutil.rmtree(run.path, ignore_errors=True)
    result.accounting = accounting
    if unaccounted:
        left = " (the clean is left unfinished)" if clean is not None else ""
        raise ScanUnaccounted(
            f"{run.path}: the scan {accounting['problem']}{left} ({accounting_line(accounting)}); "
            "fix the source, or re-run the same command with --allow-missing to accept it"
        )
    _raise_failures(result, len(shards))
    if failed:  # shards another rank failed and this one did not touch
        raise ScanIncomplete(
            f"{len(failed)} of {len(shards)} shards failed (first: {failed[0]['error']}); "
            f"see `clearset status {run.path}` for what to re-run"
        )
    return result


def _raise_failures(result: ScanResult, planned: int) -> None:
    if result.failures:
        name, why = result.failures[0]
        raise ScanIncomplete(
            f"{len(result.failures)} of {planned} shards failed (first: {why}); "
            "the others are complete; fix the input and re-run the same command to retry"
        )


def scanned_shards(run: RunFolder, shards: list[ShardRef]) -> list[ShardRef]:
    """The shards whose scan is done: what a resume skips scanning and `clearset status`
    counts as done (one function, so the two never differ)."""
    return [s for s in shards if run.is_done(s.id)]


def _cleaned(shard: ShardRef, clean: CleanJob | None) -> bool:
    if clean is None or clean.finished:
        return True
    return dest_done_file(Path(clean.dest), shard.id).exists()


# ---------------------------------------------------------------- failures and ranks


def failed_file(run: RunFolder, shard_id: str) -> Path:
    return run.path / FAILED_DIR / f"{shard_id}.json"


def _remember_failure(run: RunFolder, failure: Failure, split: Split | None) -> None:
    write_json_atomic(
        failed_file(run, failure.task.id),
        {
            "shard_id": failure.task.id,
            "shard": failure.task.name,
            "error": failure.error,
            "attempts": failure.attempts,
            "time": utc_now(),
            "rank": split.rank if split else None,
            "world_size": split.world_size if split else None,
        },
    )


def _forget_failure(run: RunFolder, shard_id: str) -> None:
    failed_file(run, shard_id).unlink(missing_ok=True)


def failed_shards(run: RunFolder, shards: list[ShardRef]) -> list[dict[str, Any]]:
    """The shards that failed every try and are still not done, in shard order."""
    found = []
    for shard in shards:
        path = failed_file(run, shard.id)
        if path.exists() and not run.is_done(shard.id):
            try:
                found.append(json.loads(path.read_text()))
            except ValueError:
                found.append({"shard_id": shard.id, "shard": shard.name, "error": "unknown"})
    return found


def _record_rank(run: RunFolder, split: Split, result: ScanResult) -> None:
    write_json_atomic(
        run.path / RANKS_DIR / f"{split.rank}-of-{split.world_size}.json",
        {
            "rank": split.rank,
            "world_size": split.world_size,
            "host": socket.gethostname(),
            "ended": utc_now(),
            "shards": result.shards_mine,
            "shards_done_now": result.shards_done,
            "shards_done_before": result.shards_skipped,
            "shards_failed": len(result.failures),
            "seconds": round(result.seconds, 3),
        },
    )


@contextlib.contextmanager
def _finishing(run: RunFolder):
    """Whether this command holds RUN/.finishing (created exclusively) while it lasts."""
    lock = run.path / FINISHING
    said = f"{socket.gethostname()} {os.getpid()} {utc_now()}\n".encode()
    ours = storage.finishing_claim(run.path, FINISHING, said)  # a bucket: If-None-Match
    if ours is not None:
        try:
            yield ours
        finally:
            if ours:
                storage.finishing_release(run.path, FINISHING)
        return
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        yield False
        return
    os.write(fd, f"{socket.gethostname()} {os.getpid()} {utc_now()}\n".encode())
    os.close(fd)
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)


# ---------------------------------------------------------------- gathering


def summarise_markers(run: RunFolder) -> dict[str, Any]:
    """Totals over the completed shards of a run."""
    status: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    account: dict[str, Counter[str]] = {}
    rows = nbytes = 0
    markers = run.done_markers()
    for marker in markers:
        rows += marker["rows"]
        nbytes += marker["bytes"]
        status.update(marker["status"])
        reasons.update(marker["reasons"])
        for name, by_reason in marker.get("account", {}).items():
            account.setdefault(name, Counter()).update(by_reason)
    return {
        "shards_done": len(markers),
        "items": rows,
        "bytes": nbytes,
        "status": dict(sorted(status.items())),
        "reasons": dict(sorted(reasons.items())),
        "account": {name: dict(counts) for name, counts in account.items()},
    }


def status_reasons(run: RunFolder) -> Counter[tuple[str, str]]:
    """Rows of the completed shards by (status, first word of the reason), from their
    completion markers: at 10^5 shards, opening every parquet would take minutes. Only a
    marker written before markers held this (no "by_status") has its parquet read."""
    counts: Counter[tuple[str, str]] = Counter()
    for marker in run.done_markers():
        by_status = marker.get("by_status")
        if by_status is None:
            table = read_manifest_files(
                [run.manifest_file(marker["shard_id"])], ["status", "reason"]
            )
            by_status = {}
            for status, reason in zip(
                table.column("status").to_pylist(), table.column("reason").to_pylist(), strict=True
            ):
                why = (reason or "").split(":", 1)[0]
                by_status.setdefault(status, Counter())[why] += 1
        for status, by_reason in by_status.items():
            for why, count in by_reason.items():
                counts[(status, why)] += count
    return counts


def matching_record(matcher: Matcher) -> dict[str, Any]:
    """What run.json records of a match: the lists by identity, and the settings."""
    return {
        **matcher.settings.to_dict(),
        "lists": [list_record(hl, matcher.settings) for hl in matcher.lists]
        + matcher.video_records(),
        **review_of(matcher).record(),
    }


def gather_matches(run: RunFolder, matcher: Matcher) -> dict[str, Any]:
    """Write RUN/matches.parquet from the per-shard files; count matches per list."""
    files = [run.matches_file(m["shard_id"]) for m in run.done_markers()]
    tables = [with_allowed_column(pq.read_table(f)) for f in files if f.exists()]
    table = pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()
    with atomic_path(run.path / "matches.parquet") as tmp:
        pq.write_table(table.cast(MATCH_SCHEMA), tmp, compression="zstd")
    digests = table.column("list_digest").to_pylist()
    types = table.column("hash_type").to_pylist()
    rows_keys = list(
        zip(table.column("shard").to_pylist(), table.column("key").to_pylist(), strict=True)
    )
    keys = set(rows_keys)
    per_list = []
    for hash_list in matcher.lists:
        digest, kind = hash_list.identity.digest, hash_list.hash_type
        count = sum(1 for d, t in zip(digests, types, strict=True) if d == digest and t == kind)
        samples = {k for k, d, t in zip(rows_keys, digests, types, strict=True)
                   if d == digest and t == kind}  # fmt: skip
        per_list.append({"name": hash_list.identity.name, "hash_type": kind, "matches": count,
                         "samples": len(samples)})  # fmt: skip
    for identity, _ in matcher.video_indexes:
        digest = identity["digest"]
        hits = {k for k, d in zip(rows_keys, digests, strict=True) if d == digest}
        count = sum(1 for d in digests if d == digest)
        per_list.append({"name": identity["name"], "hash_type": "vpdq", "matches": count,
                         "samples": len(hits)})  # fmt: skip
    review = summarise(table, matcher.lists, review_of(matcher))
    return {"rows": table.num_rows, "items": len(keys), "per_list": per_list, **review}
