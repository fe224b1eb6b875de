"""The default engine: local worker processes, one task at a time each.

With one worker (or one task) the tasks run in this process. Otherwise they run in a
pool of spawned processes that ignore Ctrl-C (the parent decides), die with the parent,
and remove their temporary files when stopped. A worker that dies mid-task (kill -9, the
out-of-memory killer) breaks the pool: the tasks it was running come back `lost` (the
orchestrator retries them), and those not yet started run in a new pool.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from types import FrameType
from typing import Any

from clearset.atomic import remove_pending_tmp
from clearset.engines.base import Outcome, Task
from clearset.progress import ProgressFn, set_reporter
from clearset.settings import PARENT_POLL_SECONDS, STOP_GRACE_SECONDS

_progress_queue: Any = None
_started: Any = None  # shared flags: which tasks of this pool a worker began


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
    # starts with SIGINT blocked, see `_WorkerPool.submit`; ignoring it also drops one
    # that arrived while it was blocked.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # what it starts: as usual
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _on_unraisable
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


def _on_unraisable(unraisable: Any) -> None:
    """A stop that landed where Python swallows exceptions (a weakref callback, such as
    importlib's module-lock one mid-import, or a __del__) ends the worker there, as it
    would have ended the task, instead of printing "Exception ignored" with a traceback
    to the user's terminal and running on."""
    if isinstance(unraisable.exc_value, _Terminated):
        remove_pending_tmp()
        os._exit(128 + signal.SIGTERM)
    sys.__unraisablehook__(unraisable)


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
    a KeyboardInterrupt traceback before `_start_worker` could ignore SIGINT. A blocked
    signal mask survives exec, so the parent blocks SIGINT for the moment it takes to
    start the child: the child never receives it (and `_start_worker` then ignores it),
    while a Ctrl-C in that moment stays pending in the parent and is raised as soon as
    the child is started. (Ignoring it instead, as this once did, lost that Ctrl-C: a
    scan pressed to stop while its workers started ran to the end and exited 0.)
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with sigint_held():
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
def sigint_held() -> Iterator[None]:
    """Hold back SIGINT for the duration: a child started meanwhile never receives it,
    and a Ctrl-C that arrives meanwhile is raised here when the block ends, not lost.

    Two things are needed. The calling thread blocks SIGINT, and a child inherits that
    mask across exec. But the kernel hands a process-wide signal to any thread that does
    not block it (the pool's own threads), and Python would then raise KeyboardInterrupt
    in this thread mid-start, leaving a half-started child; so for the moment the
    handler only records the signal."""
    if not hasattr(signal, "pthread_sigmask") or (
        threading.current_thread() is not threading.main_thread()
    ):
        with _sigint_ignored():  # no signal masks (Windows), or not ours to handle
            yield
        return
    pending: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a held Ctrl-C lands now
        signal.signal(signal.SIGINT, handler)
    if pending:  # as if it came now
        if callable(handler):
            handler(signal.SIGINT, None)  # Python's default raises KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


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


def _init_worker(progress_queue: Any, started: Any) -> None:
    global _progress_queue, _started
    _progress_queue, _started = progress_queue, started
    set_reporter(_report)


def _report(items: int, errors: int, nbytes: int) -> None:
    if _progress_queue is not None:
        _progress_queue.put((items, errors, nbytes))


def _run_numbered(number: int, fn: Callable[..., Any], *args: Any) -> Any:
    if _started is not None:
        _started[number] = 1  # shared memory, no lock: still true if we die next
    return fn(*args)


class LocalEngine:
    """Tasks in this process (one worker) or in a pool of local worker processes."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()

    def run(self, tasks: Sequence[Task], on_progress: ProgressFn) -> Iterator[Outcome]:
        if self.workers == 1 or len(tasks) <= 1:
            yield from self._run_here(tasks, on_progress)
            return
        pending = list(tasks)
        while pending:
            pending = yield from self._run_pool(pending, on_progress)

    def close(self) -> None:
        pass

    def _run_here(self, tasks: Sequence[Task], on_progress: ProgressFn) -> Iterator[Outcome]:
        set_reporter(on_progress)
        try:
            for task in tasks:
                try:
                    result = task.fn(*task.args)
                except Exception as exc:  # the orchestrator decides what it means
                    yield Outcome(task, error=exc)
                    continue
                yield Outcome(task, result=result)
        finally:
            set_reporter(None)

    def _run_pool(
        self, tasks: list[Task], on_progress: ProgressFn
    ) -> Generator[Outcome, None, list[Task]]:
        """One pool's worth: yields outcomes, returns the tasks a broken pool never began."""
        context = multiprocessing.get_context("spawn")
        progress_queue = context.Queue()
        started = context.Array("b", len(tasks), lock=False)
        not_begun: list[Task] = []
        workers = min(self.workers, len(tasks))
        with worker_pool(workers, _init_worker, (progress_queue, started)) as pool:
            futures: dict[Future[Any], int] = {
                pool.submit(_run_numbered, number, task.fn, *task.args): number
                for number, task in enumerate(tasks)
            }
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, on_progress)
                for future in finished:
                    number = futures[future]
                    task = tasks[number]
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        if started[number]:
                            yield Outcome(task, lost=True)
                        else:
                            not_begun.append(task)
                        continue
                    except Exception as exc:
                        yield Outcome(task, error=exc)
                        continue
                    yield Outcome(task, result=result)
        _drain(progress_queue, on_progress)
        return not_begun


def _drain(progress_queue: Any, on_progress: ProgressFn) -> None:
    while True:
        try:
            on_progress(*progress_queue.get_nowait())
        except queue.Empty:
            return
        except (OSError, ValueError, EOFError):
            return  # a worker died while writing: its counts are lost, not its shard
