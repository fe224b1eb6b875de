"""Progress on the driver: a rich bar on a terminal, plain lines in a log.

The orchestrator of a command owns one `Meter`; the engine feeds it the counts its
workers `report` (items, unread/errors, bytes since the last call) and the orchestrator
marks each shard done. Per-shard functions call `report`, which goes to whatever the
engine running them installed with `set_reporter` (nothing, when no one listens).
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, cast

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clearset import storage
from clearset.errors import InputError

#: Console settings that print text as given: no markup (`[b]`), no emoji codes (`:100:`),
#: no highlighting. Every console clearset prints through is made with them.
LITERAL: dict[str, Any] = {"markup": False, "emoji": False, "highlight": False, "soft_wrap": True}


def plural(count: int, word: str, words: str | None = None) -> str:
    """A count and the noun that fits it: "1 sample", "2 samples", "3 leaves"."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"


class ShownStream(io.TextIOBase):
    """sys.stdout or sys.stderr, looked up at each write (so pytest's capture and click's
    CliRunner still see it), with every path inside a bucket's local mirror written as
    its URL (`storage.shown`): the mirror is this machine's working copy, never what the
    user typed or may share. Unchanged text where no bucket is attached."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def stream(self) -> Any:
        found = getattr(sys, self._name)
        # rich's Live swaps in a FileProxy that prints through the console: write past it
        return getattr(found, "rich_proxied_file", found)

    def write(self, text: str) -> int:
        if self.stream is not None:  # None: no stream at all (pythonw), as rich allows
            self.stream.write(storage.shown(text))
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def isatty(self) -> bool:
        return self.stream is not None and bool(self.stream.isatty())

    def fileno(self) -> int:
        return int(self.stream.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", None) or "utf-8")

    def writable(self) -> bool:
        return True


def literal_console(stderr: bool = False) -> Console:
    """A console that prints text as given (`LITERAL`) through a `ShownStream`."""
    stream = ShownStream("stderr" if stderr else "stdout")
    return Console(file=cast("IO[str]", stream), **LITERAL)  # rich wants a typing.IO


ProgressFn = Callable[[int, int, int], None]  # (items, errors, bytes) since the last call

_reporter: ProgressFn | None = None


def set_reporter(reporter: ProgressFn | None) -> None:
    """Where `report` sends counts in this process (an engine sets it in each worker)."""
    global _reporter
    _reporter = reporter


def report(items: int, errors: int, nbytes: int) -> None:
    """Counts from a per-shard function to the driver's progress, if anyone listens."""
    if _reporter is not None:
        _reporter(items, errors, nbytes)


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


class Meter:
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
        self.finished = 0  # shards finished (or failed for good) in this session
        self.failed = 0  # shards that failed every try
        self.retried = 0  # tries beyond a shard's first
        self.per_shard = 0.0  # estimated items per shard, once one has finished
        self.workers = max(1, workers)
        self.items = self.errors = self.bytes = 0
        self.label, self.errors_label = label, errors_label
        self.start = time.monotonic()
        self.fraction = 0.0  # of this session's shards; never moves back
        console = console or literal_console(stderr=True)
        self.as_lines = enabled and not console.is_terminal
        self.stream = console.file
        self.progress: Any
        if self.as_lines:
            self.interval = progress_interval() if interval is None else interval
            self.progress = _LogLines(self)
            return
        self.progress = Progress(
            TextColumn(label, style="bold", markup=False),
            BarColumn(),
            TextColumn("{task.fields[shards]}", markup=False),
            TextColumn("{task.fields[stats]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}", markup=False),
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
            "shards": f"{self.skipped + self.finished - self.failed:,}/{self.total:,} shards"
            + (f" ({self.failed:,} failed)" if self.failed else "")
            + (f" ({self.retried:,} retried)" if self.retried else ""),
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

    def shard_failed(self) -> None:
        self.failed += 1
        self.shard_done()

    def shard_done(self) -> None:
        # The items counted so far are those of the finished shards plus part of the
        # ones still running, which are taken to be half done on average.
        others = min(self.workers, self.pending - self.finished) - 1
        self.finished += 1
        self.per_shard = self.items / (self.finished + max(others, 0) / 2)
        self._refresh()


class _LogLines:
    """Writes the meter's line every interval from a thread, and once more at the end."""

    def __init__(self, meter: Meter) -> None:
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
