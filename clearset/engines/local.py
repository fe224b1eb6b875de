"""The default engine: local worker processes, one shard at a time each, with progress.

It lists the source's shards, skips those the run folder already has, and hands the rest
to `scan_shard` in a process pool (or in this process for one worker). A shard that fails
is reported and left without a marker, so a re-run retries it; the others still finish.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from clearset.engines.shard import ScanSettings, ShardSummary, scan_shard
from clearset.errors import ClearsetError
from clearset.runfolder import RunFolder, utc_now
from clearset.sources.base import ShardRef, Source

_progress_queue: Any = None


class ScanIncomplete(ClearsetError):
    """Some shards failed; the rest of the run is complete and a re-run retries them."""


@dataclass
class ScanResult:
    run_dir: Path
    shards_total: int
    shards_skipped: int
    shards_done: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _report(items: int, errors: int, nbytes: int) -> None:
    if _progress_queue is not None:
        _progress_queue.put((items, errors, nbytes))


def _scan_shard_in_worker(
    source: Source, shard: ShardRef, run_dir: str, settings: ScanSettings
) -> ShardSummary:
    return scan_shard(source, shard, run_dir, settings, progress=_report)


class _Meter:
    """Rich progress over shards, with items, items/s, MB/s and errors alongside."""

    def __init__(self, total: int, done: int, enabled: bool, console: Console | None) -> None:
        self.items = self.errors = self.bytes = 0
        self.start = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]scan"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task("scan", total=total, completed=done, stats="")

    def add(self, items: int, errors: int, nbytes: int) -> None:
        self.items += items
        self.errors += errors
        self.bytes += nbytes
        elapsed = max(time.monotonic() - self.start, 1e-6)
        self.progress.update(
            self.task,
            stats=f"{self.items:,} items  {self.items / elapsed:,.0f} items/s  "
            f"{self.bytes / elapsed / 1e6:,.1f} MB/s  {self.errors:,} not ok",
        )

    def shard_done(self) -> None:
        self.progress.advance(self.task)


def run_scan(
    source: Source,
    run_dir: str | Path,
    settings: ScanSettings,
    *,
    workers: int | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> ScanResult:
    """Scan every shard of `source` into `run_dir`, resuming what is already there."""
    run = RunFolder(Path(run_dir))
    shards = source.shards()
    created = not run.run_json.exists()
    info = run.prepare(source.spec(), settings.to_dict())
    pending = [s for s in shards if not run.is_done(s.id)]
    workers = workers or default_workers()
    if source.url.startswith("memory://"):
        workers = 1  # an in-memory filesystem is not shared with other processes
    started = time.monotonic()
    result = ScanResult(
        run_dir=run.path,
        shards_total=len(shards),
        shards_skipped=len(shards) - len(pending),
        shards_done=0,
    )
    meter = _Meter(len(shards), result.shards_skipped, show_progress, console)
    with meter.progress:
        if workers == 1 or len(pending) <= 1:
            for shard in pending:
                try:
                    scan_shard(source, shard, run.path, settings, progress=meter.add)
                    result.shards_done += 1
                except ClearsetError as exc:
                    result.failures.append((shard.name, str(exc)))
                meter.shard_done()
        else:
            _run_pool(source, pending, run, settings, workers, meter, result)
    result.seconds = time.monotonic() - started
    result.counts = summarise_markers(run)
    info.update(
        finished=utc_now() if not result.failures else None,
        counts=result.counts,
        failed_shards=[{"shard": name, "error": why} for name, why in result.failures],
        shards=len(shards),
    )
    run.write_info(info)
    if result.failures and created and not result.counts["shards_done"]:
        # Nothing was scanned and the folder is ours alone: leave no husk behind.
        shutil.rmtree(run.path, ignore_errors=True)
    if result.failures:
        name, why = result.failures[0]
        raise ScanIncomplete(
            f"{len(result.failures)} of {len(shards)} shards failed (first: {why}); "
            "the others are complete; fix the input and re-run the same command to retry"
        )
    return result


def _run_pool(
    source: Source,
    pending: list[ShardRef],
    run: RunFolder,
    settings: ScanSettings,
    workers: int,
    meter: _Meter,
    result: ScanResult,
) -> None:
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    with ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(progress_queue,),
    ) as pool:
        futures: dict[Future[ShardSummary], ShardRef] = {
            pool.submit(_scan_shard_in_worker, source, shard, str(run.path), settings): shard
            for shard in pending
        }
        remaining = set(futures)
        try:
            while remaining:
                finished, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, meter)
                for future in finished:
                    shard = futures[future]
                    try:
                        future.result()
                        result.shards_done += 1
                    except ClearsetError as exc:
                        result.failures.append((shard.name, str(exc)))
                    meter.shard_done()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    _drain(progress_queue, meter)


def _drain(progress_queue: Any, meter: _Meter) -> None:
    while True:
        try:
            meter.add(*progress_queue.get_nowait())
        except queue.Empty:
            return


def summarise_markers(run: RunFolder) -> dict[str, Any]:
    """Totals over the completed shards of a run."""
    status: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rows = nbytes = 0
    markers = run.done_markers()
    for marker in markers:
        rows += marker["rows"]
        nbytes += marker["bytes"]
        status.update(marker["status"])
        reasons.update(marker["reasons"])
    return {
        "shards_done": len(markers),
        "items": rows,
        "bytes": nbytes,
        "status": dict(sorted(status.items())),
        "reasons": dict(sorted(reasons.items())),
    }
