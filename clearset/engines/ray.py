"""The Ray engine: one Ray task per shard, on a local Ray instance or a cluster.

`pip install 'clearset[ray]'`. Without an address it starts a Ray instance on this
machine (how the tests run it) and stops it when done; with `--address auto` or
`ray://HOST:PORT` it joins a running cluster, whose every node must have clearset
installed and see the source and the run folder at the same paths (shared storage).

Ray's own retries are off: the orchestrator retries failed shards the same way for every
engine. A worker or node that dies mid-task makes its task `lost`. Progress counts travel
from the tasks to the driver through a small queue actor, a batch at most every half
second per task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from clearset import storage
from clearset.engines.base import Outcome, Task
from clearset.engines.local import default_workers
from clearset.errors import InputError
from clearset.progress import ProgressFn, set_reporter

#: Seconds between progress batches a task sends to the driver.
REPORT_EVERY = 0.5
#: Seconds the driver waits for a task to end before it reads the progress queue again.
POLL = 0.2
#: Seconds a cluster's --address has to accept a connection. Ray itself retries a wrong
#: address for minutes, printing its own warnings, before it gives up.
CONNECT_TIMEOUT = 5.0

#: HOST:PORT or ray://HOST:PORT (an IPv6 host in brackets); other forms (auto) are Ray's.
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[^\]]+\]|[^:/\[\]\s]+):(?P<port>\d{1,5})$")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(
            "--engine ray: Ray is not installed; install it with pip install 'clearset[ray]'"
        ) from None
    return ray


class _Reporter:
    """In a Ray worker: progress counts summed, sent to the driver's queue now and then."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.counts = [0, 0, 0]
        self.sent = time.monotonic()

    def __call__(self, items: int, errors: int, nbytes: int) -> None:
        self.counts = [self.counts[0] + items, self.counts[1] + errors, self.counts[2] + nbytes]
        if time.monotonic() - self.sent >= REPORT_EVERY:
            self.flush()

    def flush(self) -> None:
        if any(self.counts):
            # A full or gone queue costs progress, never the shard.
            with contextlib.suppress(Exception):
                self.queue.put_nowait(tuple(self.counts))
            self.counts = [0, 0, 0]
        self.sent = time.monotonic()


def _run_in_ray(
    fn: Callable[..., Any], args: tuple[Any, ...], queue: Any, buckets: dict[str, str]
) -> Any:
    reporter = _Reporter(queue)
    set_reporter(reporter)
    try:
        # Outputs on an object store: this task works its own mirror on whatever node it
        # runs, fetches the few files it reads and uploads what it writes (`storage`).
        with storage.task_mirrors(buckets) as moved:
            try:
                return fn(*storage.translate(args, moved))
            except BaseException as exc:
                storage.with_urls(exc)  # read on the driver: by URL, not this node's folder
                raise
    finally:
        reporter.flush()
        set_reporter(None)


@dataclass(frozen=True)
class Shipped:
    """A value put once into Ray's object store: each node holds one copy, which its
    workers read (numpy arrays without a copy each, from the node's shared memory)."""

    ref: Any

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)


class RayEngine:
    """Tasks as Ray tasks, one CPU each."""

    name = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None) -> None:
        ray = self.ray = _import_ray()
        self.started = False
        # A driver that `ray job submit` started has its cluster in RAY_ADDRESS.
        address = address or None
        shown = f"--address {address}"
        if address is None and os.environ.get("RAY_ADDRESS"):
            address = os.environ["RAY_ADDRESS"]
            shown = f"RAY_ADDRESS={address}"
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.ERROR,
                "log_to_driver": False,
            }
            try:
                if address is None:
                    # "local": a Ray of its own even where `ray start` (or another
                    # command's cluster) left an address file behind, which a bare
                    # init would join, and refuse for the num_cpus given.
                    ray.init(address="local", num_cpus=workers or default_workers(), **options)
                else:
                    check_reachable(address, shown)
                    with _quiet_core():
                        ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "on this machine"
                problem = " ".join(str(exc).split())
                raise InputError(f"--engine ray: cannot start Ray {where}: {problem}") from None
            self.started = True
        cluster = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(workers, cluster) if workers else cluster
        self.lost_errors = tuple(
            getattr(ray.exceptions, name)
            for name in (
                "WorkerCrashedError",
                "NodeDiedError",
                "ObjectLostError",
                "OwnerDiedError",
                "TaskCancelledError",
                "LocalRayletDiedError",
            )
            if hasattr(ray.exceptions, name)
        )

    def ship(self, value: Any) -> Shipped:
        """`value` for the tasks of this engine on every node (see `Shipped`); freed
        when the driver drops the last reference."""
        return Shipped(self.ray.put(value))

    def run(self, tasks: Sequence[Task], on_progress: ProgressFn) -> Iterator[Outcome]:
        ray = self.ray
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})
        remote = ray.remote(_run_in_ray).options(num_cpus=1, max_retries=0, retry_exceptions=False)
        waiting = list(reversed(tasks))
        running: dict[Any, Task] = {}
        buckets = storage.task_context()
        try:
            while waiting or running:
                # No more in flight than the workers asked for: a cluster may be shared.
                while waiting and len(running) < self.workers:
                    task = waiting.pop()
                    running[remote.remote(task.fn, task.args, queue, buckets)] = task
                ended, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
                _drain(queue, on_progress)
                for ref in ended:
                    task = running.pop(ref)
                    yield self._outcome(task, ref)
            _drain(queue, on_progress)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            ray.kill(queue.actor)

    def _outcome(self, task: Task, ref: Any) -> Outcome:
        ray = self.ray
        try:
            return Outcome(task, result=ray.get(ref))
        except self.lost_errors:
            return Outcome(task, lost=True)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return Outcome(task, error=cause if isinstance(cause, BaseException) else exc)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False


@contextlib.contextmanager
def _quiet_core() -> Iterator[None]:
    """Ray's core prints a warning a second while it retries an address that answers
    but is no Ray cluster; the one line we print says it. Left as set by the user."""
    if "RAY_BACKEND_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "error"
    try:
        yield
    finally:
        os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def check_reachable(
    address: str, shown: str | None = None, timeout: float = CONNECT_TIMEOUT
) -> None:
    """InputError, in one line, unless something accepts connections at a HOST:PORT or
    ray://HOST:PORT address within `timeout` seconds (other forms are left to Ray).
    `shown`: where the address came from, as the error names it (`--address ADDRESS`)."""
    found = _HOST_PORT.match(address.strip())
    if found is None:
        return
    host, port = found["host"].strip("[]"), int(found["port"])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror:
        problem = f"no host named {host}"
    except TimeoutError:
        problem = f"no answer within {timeout:g} s"
    except OSError as exc:
        problem = (exc.strerror or type(exc).__name__).lower()
    raise InputError(
        f"--engine ray {shown or f'--address {address}'}: no Ray cluster there ({problem}); "
        "start one with `ray start --head` and give the address it prints, or --address auto "
        "on a node of the cluster"
    )


def _drain(queue: Any, on_progress: ProgressFn) -> None:
    try:
        size = queue.qsize()
        batch = queue.get_nowait_batch(size) if size else []
    except Exception:  # progress is best effort
        return
    for counts in batch:
        on_progress(*counts)
