"""The default engine: local worker processes, one shard at a time each, with progress.

It lists the source's shards, skips those the run folder already has, and hands the rest
to `scan_shard` in a process pool (or in this process for one worker). A shard that fails
is reported and left without a marker, so a re-run retries it; the others still finish.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clearset.engines.shard import ScanSettings, ShardSummary, scan_shard
from clearset.errors import ClearsetError, InputError, OutputError, RunFolderError
from clearset.matching.matcher import (
    MATCH_SCHEMA,
    ListSpec,
    Matcher,
    MatchSettings,
    list_record,
)
from clearset.runfolder import (
    RunFolder,
    account_scan,
    accounting_line,
    lists_identity,
    utc_now,
)
from clearset.settings import PARENT_POLL_SECONDS, STOP_GRACE_SECONDS
from clearset.sinks.atomic import atomic_path, remove_pending_tmp, sweep_tmp, write_json_atomic
from clearset.sinks.clean import (
    CleanJob,
    dest_done_file,
    finish_clean,
    prepare_clean,
    refuse_overlap,
)
from clearset.sources.base import ShardRef, Source

_progress_queue: Any = None
_worker_matcher: tuple[Any, Matcher] | None = None


class ScanUnaccounted(RunFolderError):
    """The scan finished but hashed nothing, or left too much of its source unread."""


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
    accounting: dict[str, Any] = field(default_factory=dict)


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


#: Linux's prctl option that sends a signal to a process when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def _start_worker(
    parent: int,
    death_signal: bool,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
) -> None:
    # Ctrl-C goes to the whole process group; the parent alone decides what happens, so
    # a worker never dies half-way through writing a file or hangs a shutdown. (A worker
    # already starts with SIGINT ignored, see `_WorkerPool.submit`; this is for clarity.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_parent(parent, death_signal)
    if initializer is not None:
        initializer(*initargs)


def _die_with_parent(parent: int, death_signal: bool) -> None:
    """End this worker when `parent` dies (kill -9, OOM killer), so none is orphaned.

    On Linux the kernel does it at once (PR_SET_PDEATHSIG). That signal follows the
    *thread* that started us, so it is only asked for when that was the main thread; a
    thread polling getppid() covers that case and other systems within a second.
    """
    if death_signal and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still ends us
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the kernel was asked to tell us
    threading.Thread(
        target=_watch_parent, args=(parent,), name="clearset-parent-watch", daemon=True
    ).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # nothing to clean up: unfinished shards have no marker


class _Terminated(BaseException):
    """The parent stopped the pool (SIGTERM): raised where the task is, so that the
    temporary file it was writing is removed on the way out, as after any error."""


_task_running = False
_stopping = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _task_running:
        raise _Terminated
    remove_pending_tmp()
    os._exit(128 + signum)  # idle: nothing open


def _run_task(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one task in a worker; a SIGTERM ends the worker once the task has unwound."""
    global _task_running
    _task_running = True
    try:
        return fn(*args, **kwargs)
    except BaseException:
        if _stopping:  # _Terminated, or what a handler on the way made of it
            remove_pending_tmp()  # in case the stop landed inside a clean-up
            os._exit(128 + signal.SIGTERM)
        raise
    finally:
        _task_running = False


class _WorkerPool(ProcessPoolExecutor):
    """ProcessPoolExecutor whose workers never see a Ctrl-C meant for the parent.

    Workers are spawned on `submit`. A spawned child starts a fresh interpreter, which
    takes a while to import what a shard needs; a Ctrl-C in that time would end it with
    a KeyboardInterrupt traceback before `_start_worker` could ignore SIGINT. A
    disposition of SIG_IGN survives exec, and Python leaves an ignored SIGINT ignored, so
    the parent ignores SIGINT for the moment it takes to start the child. (A Ctrl-C in
    exactly that moment is lost; the next one is not.)
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with _sigint_ignored():
            return super().submit(_run_task, fn, *args, **kwargs)

    def stop(self) -> None:
        """End the workers now: each removes the temporary file it was writing and
        exits; one that does not within STOP_GRACE_SECONDS (stuck in a long C call) is
        killed, and the resume sweeps its file."""
        processes = list((self._processes or {}).values())
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
        self.shutdown(wait=True, cancel_futures=True)


@contextmanager
def worker_pool(
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A spawn process pool that an interrupt or error in the parent stops at once.

    Its workers ignore Ctrl-C (the parent handles it) and end when the parent dies.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    pool = _WorkerPool(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), in_main_thread, initializer, initargs),
    )
    try:
        yield pool
    except BaseException:
        # Unfinished shards have no marker; their workers remove their temporary files.
        # A second Ctrl-C during this would leave the pool half shut down (a hang, or a
        # death by signal), so it waits the moment it takes to stop the workers.
        with _sigint_ignored():
            pool.stop()
        raise
    pool.shutdown(wait=True)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _report(items: int, errors: int, nbytes: int) -> None:
    if _progress_queue is not None:
        _progress_queue.put((items, errors, nbytes))


def _matcher_in_worker(job: MatchJob | None) -> Matcher | None:
    """Each worker loads the lists and builds their indexes once, not once per shard."""
    global _worker_matcher
    if job is None:
        return None
    if _worker_matcher is None or _worker_matcher[0] != job:
        _worker_matcher = (job, job.matcher())
    return _worker_matcher[1]


def _scan_shard_in_worker(
    source: Source,
    shard: ShardRef,
    run_dir: str,
    settings: ScanSettings,
    job: MatchJob | None,
    clean: CleanJob | None = None,
) -> ShardSummary:
    matcher = _matcher_in_worker(job)
    return scan_shard(
        source, shard, run_dir, settings, progress=_report, matcher=matcher, clean=clean
    )


@dataclass(frozen=True)
class MatchJob:
    """Which lists to match and how: small, picklable, loaded where it is used."""

    lists: tuple[ListSpec, ...]
    settings: MatchSettings

    def matcher(self) -> Matcher:
        return Matcher([hl for spec in self.lists for hl in spec.load()], self.settings)


#: Seconds between plain progress lines when stderr is not a terminal (a batch job's log).
PROGRESS_LOG_INTERVAL = 10.0

#: Environment variable that overrides PROGRESS_LOG_INTERVAL (seconds, > 0).
PROGRESS_INTERVAL_ENV = "CLEARSET_PROGRESS_INTERVAL"


def progress_interval() -> float:
    """Seconds between progress lines in a log: $CLEARSET_PROGRESS_INTERVAL or the default."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return PROGRESS_LOG_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        raise InputError(f"{PROGRESS_INTERVAL_ENV}={text!r}: not a number of seconds") from None
    if not seconds > 0:
        raise InputError(f"{PROGRESS_INTERVAL_ENV}={text!r}: must be more than 0 seconds")
    return seconds


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Meter:
    """Progress over shards and items: a rich bar on a terminal, plain lines in a log.

    The bar moves by items, not only by whole shards. The number of items is not known
    before the shards are read, so it is estimated from the items per finished shard
    (counting the shards still running as half done when one finishes); until a first
    shard finishes the bar only pulses. Where stderr is not a terminal (Slurm, nohup, CI)
    one plain line is written every `interval` seconds instead: no escape codes, never
    wrapped; a run shorter than one interval prints none. `with meter.progress:` shows
    it for the duration of the work.
    """

    def __init__(
        self,
        total: int,
        done: int,
        enabled: bool,
        console: Console | None,
        label: str = "scan",
        errors_label: str = "unread",
        *,
        workers: int = 1,
        interval: float | None = None,
    ) -> None:
        self.total, self.skipped = total, done
        self.finished = 0  # shards finished in this session
        self.per_shard = 0.0  # estimated items per shard, once one has finished
        self.workers = max(1, workers)
        self.items = self.errors = self.bytes = 0
        self.label, self.errors_label = label, errors_label
        self.start = time.monotonic()
        self.fraction = 0.0  # of this session's shards; never moves back
        console = console or Console(stderr=True)
        self.as_lines = enabled and not console.is_terminal
        self.stream = console.file
        self.progress: Any
        if self.as_lines:
            self.interval = progress_interval() if interval is None else interval
            self.progress = _LogLines(self)
            return
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            TextColumn("{task.fields[shards]}"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        fraction = self._estimate()  # 1.0 when every shard was done before; else None
        self.task = self.progress.add_task(
            label,
            total=None if fraction is None else 1.0,
            completed=fraction or 0,
            **self._fields(),
        )

    @property
    def pending(self) -> int:
        return self.total - self.skipped

    def _estimate(self) -> float | None:
        """Fraction of this session's work done, or None before any shard finished."""
        if self.pending <= 0 or self.finished >= self.pending:
            return 1.0
        if not self.per_shard:
            return None
        running = min(self.workers, self.pending - self.finished)
        estimate = self.items / (self.per_shard * self.pending)
        # Never past what the finished and running shards can amount to; never backwards.
        ceiling = (self.finished + running) / self.pending
        self.fraction = max(self.fraction, min(estimate, ceiling, 0.999))
        return self.fraction

    def _fields(self) -> dict[str, str]:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        fraction = self._estimate()
        if fraction is None or not self.items:
            eta = "ETA ?"
        elif fraction >= 1:
            eta = ""
        else:
            eta = f"ETA {_clock(elapsed * (1 - fraction) / max(fraction, 1e-6))}"
        return {
            "shards": f"{self.skipped + self.finished:,}/{self.total:,} shards",
            "stats": f"{self.items:,} items  {self.items / elapsed:,.0f} items/s  "
            f"{self.bytes / elapsed / 1e6:,.1f} MB/s  {self.errors:,} {self.errors_label}",
            "eta": eta,
        }

    def line(self) -> str:
        """The plain progress line a log gets: one line, no escape codes."""
        fields = self._fields()
        elapsed = _clock(time.monotonic() - self.start)
        parts = [fields["shards"], fields["stats"].replace("  ", ", "), f"elapsed {elapsed}"]
        if fields["eta"]:
            parts.append(fields["eta"])
        return f"clearset {self.label}: " + ", ".join(parts)

    def _refresh(self) -> None:
        if self.as_lines:
            return
        fields = self._fields()
        fraction = self._estimate()
        if fraction is None:
            self.progress.update(self.task, total=None, **fields)
        else:
            self.progress.update(self.task, total=1.0, completed=fraction, **fields)

    def add(self, items: int, errors: int, nbytes: int) -> None:
        self.items += items
        self.errors += errors
        self.bytes += nbytes
        self._refresh()

    def shard_done(self) -> None:
        # The items counted so far are those of the finished shards plus part of the
        # ones still running, which are taken to be half done on average.
        others = min(self.workers, self.pending - self.finished) - 1
        self.finished += 1
        self.per_shard = self.items / (self.finished + max(others, 0) / 2)
        self._refresh()


class _LogLines:
    """Writes the meter's line every interval from a thread, and once more at the end."""

    def __init__(self, meter: _Meter) -> None:
        self.meter = meter
        self.last = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="clearset-progress", daemon=True)

    def _write(self) -> None:
        line = self.meter.line()
        if line == self.last:
            return
        self.last = line
        try:
            self.meter.stream.write(line + "\n")
            self.meter.stream.flush()
        except (OSError, ValueError):  # a closed or broken log must not stop the work
            pass

    def _run(self) -> None:
        while not self.stop.wait(self.meter.interval):
            self._write()

    def __enter__(self) -> _LogLines:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        # Close a log that has had progress lines with the final count; a run shorter
        # than one interval (or one that failed) adds nothing to what the command prints.
        if exc[0] is None and self.last:
            self._write()


def run_scan(
    source: Source,
    run_dir: str | Path,
    settings: ScanSettings,
    *,
    workers: int | None = None,
    show_progress: bool = True,
    console: Console | None = None,
    match: MatchJob | None = None,
    clean: CleanJob | None = None,
    allow_missing: bool = False,
) -> ScanResult:
    """Scan every shard of `source` into `run_dir`, resuming what is already there.

    Every scan ends with its accounting (`RUN/run.json` "accounting"): one that hashed no
    image, or could not read more than `MAX_UNREAD_SHARE` of its items, raises
    `ScanUnaccounted` after writing its run folder, unless `allow_missing`.

    With `match`, each shard is also matched against the lists as it is hashed, and
    RUN/matches.parquet gathers the match rows at the end. With `clean` too, each shard
    is written to the clean destination without its matched keys as soon as it is
    matched (see `clearset.sinks.clean`), and RUN/removals.parquet is gathered at the end.
    """
    run = RunFolder(Path(run_dir))
    shards = source.shards()
    refuse_overlap(source.url, shards, run.path, what="--out")
    matcher = match.matcher() if match is not None else None  # fail early on a bad list
    recorded = settings.to_dict()
    if matcher is not None:
        recorded["matching"] = matching_record(matcher)
    created = not run.run_json.exists()
    info = run.prepare(source.spec(), recorded)
    if clean is not None:
        try:
            prepare_clean(run, info, clean, shards)
        except ClearsetError:
            if created:
                shutil.rmtree(run.path, ignore_errors=True)  # refused before any work
            raise
    pending = [s for s in shards if not run.is_done(s.id) or not _cleaned(run, s, clean)]
    workers = workers or default_workers()
    in_memory = [source.url] + [spec.path for spec in (match.lists if match else ())]
    if any(url.startswith("memory://") for url in in_memory):
        workers = 1  # an in-memory filesystem is not shared with other processes
    started = time.monotonic()
    result = ScanResult(
        run_dir=run.path,
        shards_total=len(shards),
        shards_skipped=len(shards) - len(pending),
        shards_done=0,
    )
    meter = _Meter(len(shards), result.shards_skipped, show_progress, console, workers=workers)
    try:
        with meter.progress:
            if workers == 1 or len(pending) <= 1:
                for shard in pending:
                    try:
                        scan_shard(source, shard, run.path, settings, meter.add, matcher, clean)
                        result.shards_done += 1
                    except OutputError:
                        raise  # the disk is full or read-only: every shard after would fail
                    except ClearsetError as exc:
                        result.failures.append((shard.name, str(exc)))
                    meter.shard_done()
            else:
                _run_pool(source, pending, run, settings, workers, meter, result, match, clean)
    except BaseException:
        # The workers are stopped by now and each removed its own temporary file, unless
        # it was killed inside a long call; this scan is the run folder's only writer, so
        # what is left under a temporary name is swept here rather than on the resume.
        for folder in (run.manifest_dir, run.markers_dir, run.matches_dir):
            sweep_tmp(folder)
        raise
    result.seconds = time.monotonic() - started
    result.counts = summarise_markers(run)
    accounting = account_scan(result.counts.pop("account"), allow_missing)
    unaccounted = not result.failures and accounting["verdict"] == "failed"
    if matcher is not None and not result.failures:
        result.counts["matches"] = gather_matches(run, matcher)
    if clean is not None and not result.failures and not unaccounted:
        result.counts["clean"] = finish_clean(run)
    info.update(
        accounting=accounting,
        finished=utc_now() if not result.failures else None,
        counts=result.counts,
        failed_shards=[{"shard": name, "error": why} for name, why in result.failures],
        shards=len(shards),
    )
    run.write_info(info)
    run.record_scan(info)
    if result.failures and created and not result.counts["shards_done"]:
        # Nothing was scanned and the folder is ours alone: leave no husk behind.
        shutil.rmtree(run.path, ignore_errors=True)
    result.accounting = accounting
    if unaccounted:
        left = " (the clean is left unfinished)" if clean is not None else ""
        raise ScanUnaccounted(
            f"{run.path}: the scan {accounting['problem']}{left} ({accounting_line(accounting)}); "
            "fix the source, or re-run the same command with --allow-missing to accept it"
        )
    if result.failures:
        name, why = result.failures[0]
        raise ScanIncomplete(
            f"{len(result.failures)} of {len(shards)} shards failed (first: {why}); "
            "the others are complete; fix the input and re-run the same command to retry"
        )
    return result


def _cleaned(run: RunFolder, shard: ShardRef, clean: CleanJob | None) -> bool:
    if clean is None:
        return True
    return dest_done_file(Path(clean.dest), shard.id).exists()


def _run_pool(
    source: Source,
    pending: list[ShardRef],
    run: RunFolder,
    settings: ScanSettings,
    workers: int,
    meter: _Meter,
    result: ScanResult,
    match: MatchJob | None,
    clean: CleanJob | None = None,
) -> None:
    progress_queue = multiprocessing.get_context("spawn").Queue()
    with worker_pool(min(workers, len(pending)), _init_worker, (progress_queue,)) as pool:
        futures: dict[Future[ShardSummary], ShardRef] = {
            pool.submit(
                _scan_shard_in_worker, source, shard, str(run.path), settings, match, clean
            ): shard
            for shard in pending
        }
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, meter)
            for future in finished:
                shard = futures[future]
                try:
                    future.result()
                    result.shards_done += 1
                except OutputError:
                    # The disk is full or read-only: the other shards would fail too, so
                    # the pool is stopped; the finished shards keep their markers.
                    raise
                except ClearsetError as exc:
                    result.failures.append((shard.name, str(exc)))
                meter.shard_done()
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


def matching_record(matcher: Matcher) -> dict[str, Any]:
    """What run.json records of a match: the lists by identity, and the settings."""
    return {
        **matcher.settings.to_dict(),
        "lists": [list_record(hl, matcher.settings) for hl in matcher.lists],
    }


def gather_matches(run: RunFolder, matcher: Matcher) -> dict[str, Any]:
    """Write RUN/matches.parquet from the per-shard files; count matches per list."""
    files = [run.matches_file(m["shard_id"]) for m in run.done_markers()]
    tables = [pq.read_table(f) for f in files if f.exists()]
    table = pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()
    with atomic_path(run.path / "matches.parquet") as tmp:
        pq.write_table(table.cast(MATCH_SCHEMA), tmp, compression="zstd")
    digests = table.column("list_digest").to_pylist()
    types = table.column("hash_type").to_pylist()
    keys = set(zip(table.column("shard").to_pylist(), table.column("key").to_pylist(), strict=True))
    per_list = []
    for hash_list in matcher.lists:
        digest, kind = hash_list.identity.digest, hash_list.hash_type
        count = sum(1 for d, t in zip(digests, types, strict=True) if d == digest and t == kind)
        per_list.append({"name": hash_list.identity.name, "hash_type": kind, "matches": count})
    return {"rows": table.num_rows, "items": len(keys), "per_list": per_list}


def run_match(run_dir: str | Path, match: MatchJob) -> dict[str, Any]:
    """Match an existing run's manifest against (new) lists, reading no image.

    The new matches replace the old ones as a whole: they are written to a temporary
    folder which is swapped in when every shard is done. The old ones are kept: the
    per-shard files, matches.parquet and the lists' record move to
    RUN/history/match-<n>/, and RUN/history.jsonl gets a line naming both.
    """
    run = RunFolder(Path(run_dir))
    info = run.read_info()
    if not info.get("finished"):
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same `clearset scan` first"
        )
    matcher = match.matcher()
    staging = RunFolder(run.path / f".tmp-match-{os.getpid()}")
    shutil.rmtree(staging.path, ignore_errors=True)
    staging.matches_dir.mkdir(parents=True)
    try:
        for marker in run.done_markers():
            manifest = pq.read_table(run.manifest_file(marker["shard_id"]))
            matches = matcher.match_table(manifest)
            with atomic_path(staging.matches_file(marker["shard_id"])) as tmp:
                pq.write_table(matches.cast(MATCH_SCHEMA), tmp, compression="zstd")
        previous = info.get("settings", {}).get("matching")
        replaced = run.archive("match", [run.matches_dir, run.path / "matches.parquet"])
        if replaced is not None:
            write_json_atomic(run.path / replaced / "matching.json", previous)
        os.replace(staging.matches_dir, run.matches_dir)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
    summary = gather_matches(run, matcher)
    info["settings"]["matching"] = matching_record(matcher)
    info.setdefault("counts", {})["matches"] = summary
    info["matched"] = utc_now()
    run.write_info(info)
    run.record(
        "match",
        lists=lists_identity(info["settings"]["matching"]),
        replaced_lists=lists_identity(previous),
        matched_items=summary["items"],
        match_rows=summary["rows"],
        replaced=replaced,
    )
    return summary
