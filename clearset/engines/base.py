"""What an engine is: it runs tasks and brings back their outcomes and progress.

A task is one shard's work for one stage: a plain function of picklable arguments
(`Task.fn(*Task.args)`) that lives with its stage (`clearset.stages.scan.scan_task`,
`clearset.stages.clean.clean_run_shard`, `clearset.stages.clean.apply_shard`, ...). The
orchestrator of a command (`clearset.runs`) plans the tasks, skips what is done, hands
the rest to an engine, retries what failed and gathers the results: the same code
whatever the engine. An engine decides nothing: it yields each task's `Outcome` as the
task ends, and passes the counts the tasks `report` (see `clearset.progress`) to the
driver's progress. A new engine (Spark, Dask) is one module with one such class, named in
`clearset.engines.ENGINES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clearset.progress import ProgressFn


@dataclass(frozen=True)
class Task:
    """One shard's work: `fn(*args)`, named for messages by `name`."""

    id: str  # unique among the tasks of one call (the shard id)
    name: str  # what messages call it (the shard's name)
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass
class Outcome:
    """How a task ended: its result, the error it raised, or `lost` with its worker."""

    task: Task
    result: Any = None
    error: BaseException | None = None
    # The process or node running it died (killed, out of memory, node lost): the task
    # said nothing about its shard, and left no marker.
    lost: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.lost


class Engine(Protocol):
    name: str
    workers: int  # tasks it runs at once (for the progress estimate)

    def run(self, tasks: Sequence[Task], on_progress: ProgressFn) -> Iterator[Outcome]:
        """Run `tasks`, yielding each one's outcome as it ends (in any order).

        Closing the iterator early (the orchestrator stops on a fatal error, or Ctrl-C)
        stops the tasks still running; each removes its temporary files."""
        ...

    def close(self) -> None:
        """Release what the engine started (processes, a local cluster)."""
        ...
