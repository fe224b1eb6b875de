"""The loop every orchestrator runs its tasks through, whatever the engine.

A task that fails for a reason that may pass (a worker lost mid-task: killed, out of
memory, node gone; an I/O error, or one of our errors raised on one) is tried again, up
to `retries` more times, then reported as failed: the other tasks still finish, and the
failed shard keeps no marker, so a re-run of the same command tries it again. A task that
fails on bad input (one of our errors, raised on what it read: a corrupt file, a file that
disagrees with its marker) fails the same way every time: it is not tried again, and a
command that needs every shard names the file and the problem, not "re-run". An
`OutputError` (disk full, read-only destination) stops everything at once: every other
shard would fail the same way. Anything else a task raises that is neither a clearset
error nor an I/O error is a bug, and is raised here with its traceback rather than
hidden as a failed shard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from clearset import storage
from clearset.engines.base import Engine, Outcome, Task
from clearset.engines.local import LocalEngine
from clearset.errors import ClearsetError, OutputError
from clearset.progress import Meter

#: How many more times a failed shard is tried, by default (`--retries`).
DEFAULT_RETRIES = 2


@dataclass
class Failure:
    task: Task
    error: str  # one line: why it failed the last time
    attempts: int
    bad_input: ClearsetError | None = None  # the error, when it was bad input (not retried)


@dataclass
class TaskResults:
    done: dict[str, Any] = field(default_factory=dict)  # task id -> result
    failures: list[Failure] = field(default_factory=list)
    retried: int = 0  # tries beyond the first, over all tasks


def choose_engine(engine: Engine | None, workers: int | None, *urls: str | None) -> Engine:
    """The engine asked for (default: local processes), or this process alone when a
    source or list is on an in-memory filesystem, which other processes do not share."""
    if in_memory(*urls):
        return LocalEngine(1)
    return engine or LocalEngine(workers)


def in_memory(*urls: str | None) -> bool:
    return any((url or "").startswith("memory://") for url in urls)


def retryable(error: BaseException) -> bool:
    """Whether a task's error is about its shard or its I/O (tried again, then reported)
    rather than a bug in clearset (raised)."""
    return isinstance(error, ClearsetError | OSError | TimeoutError | ConnectionError)


def bad_input(error: BaseException | None) -> ClearsetError | None:
    """`error` when it says the task's input is bad, so that another try would fail the
    same way: one of our errors that was not raised on an I/O error (`ClearsetError`
    records that where it is made; the flag travels with the error from the worker)."""
    if isinstance(error, ClearsetError) and not getattr(error, "transient", False):
        return error
    return None


def why(outcome: Outcome) -> str:
    if outcome.lost:
        return (
            f"{outcome.task.name}: the worker running it died (killed, out of memory or node lost)"
        )
    error = outcome.error
    # recorded (RUN/failed/) and printed: a mirror's file by its URL
    text = storage.shown(" ".join(str(error).split())) if error is not None else ""
    if isinstance(error, ClearsetError):
        return text
    return (
        f"{outcome.task.name}: {type(error).__name__}: {text}"
        if text
        else f"{outcome.task.name}: {type(error).__name__}"
    )


def run_tasks(
    engine: Engine,
    tasks: Sequence[Task],
    meter: Meter,
    *,
    retries: int = DEFAULT_RETRIES,
    counts: Callable[[Any], tuple[int, int, int]] | None = None,
    on_done: Callable[[Task, Any], None] | None = None,
    on_failed: Callable[[Failure], None] | None = None,
) -> TaskResults:
    """Run `tasks` on `engine` to the end; `counts(result)` feeds the meter for stages
    whose tasks report no progress of their own while they run."""
    results = TaskResults()
    attempts: Counter[str] = Counter()
    todo = list(tasks)
    while todo:
        again: list[Task] = []
        for outcome in engine.run(todo, meter.add):
            task = outcome.task
            attempts[task.id] += 1
            if outcome.ok:
                results.done[task.id] = outcome.result
                if counts is not None:
                    meter.add(*counts(outcome.result))
                meter.shard_done()
                if on_done is not None:
                    on_done(task, outcome.result)
                continue
            error = outcome.error
            if isinstance(error, OutputError):
                raise error
            if error is not None and not retryable(error):
                raise error
            if attempts[task.id] <= retries and bad_input(error) is None:
                again.append(task)
                results.retried += 1
                meter.retried += 1
                continue
            failure = Failure(task, why(outcome), attempts[task.id], bad_input(error))
            results.failures.append(failure)
            meter.shard_failed()
            if on_failed is not None:
                on_failed(failure)
        todo = again
    return results


def run_or_fail(
    engine: Engine,
    tasks: Sequence[Task],
    *,
    label: str,
    show_progress: bool,
    console: Console | None,
    retries: int,
    counts: Callable[[Any], tuple[int, int, int]],
    errors_label: str = "errors",
    on_done: Callable[[Task, Any], None] | None = None,
    error: type[ClearsetError] = OutputError,
    after: str = "the others are complete",
) -> TaskResults:
    """`run_tasks` with its own progress meter, for a command that needs every shard: once
    the others are done, a shard that failed every try is raised as `error`, saying what
    became of the rest (`after`) and to re-run."""
    meter = Meter(
        len(tasks), 0, show_progress, console, label=label, errors_label=errors_label,
        workers=engine.workers,
    )  # fmt: skip
    with meter.progress:
        done = run_tasks(engine, tasks, meter, retries=retries, counts=counts, on_done=on_done)
    bad = next((f for f in done.failures if f.bad_input is not None), None)
    if bad is not None and bad.bad_input is not None:
        # Bad input fails every try: name the file and the problem, and no "re-run".
        others = f"{len(done.failures) - 1} more failed; " if len(done.failures) > 1 else ""
        raise type(bad.bad_input)(f"{bad.error} ({others}{after})" if after else bad.error)
    if done.failures:
        raise error(
            f"{len(done.failures)} of {len(tasks)} shards failed to {label} "
            f"(first: {done.failures[0].error}); {after}; re-run the same command to retry"
        )
    return done
