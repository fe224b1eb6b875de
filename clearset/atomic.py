"""Write files so that a reader sees either nothing or the whole file.

Every output clearset writes goes to a temporary name in the destination folder and is
renamed into place when complete, so an interrupted run never leaves a half-written
file under a real name. Left-over temporary files are recognisable by their prefix and
are swept when a run resumes.

When the place itself refuses the file (disk full, quota, file size limit, read-only or
forbidden folder) the temporary file is removed and the failure is an `OutputError`
naming the file and the problem, which the CLI prints as one line: it is the operator's
to fix, and re-running the same command then resumes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clearset import storage
from clearset.errors import OutputError

TMP_PREFIX = ".tmp-"

#: OS errors that say the destination cannot take a file, as opposed to a bug.
OUTPUT_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,  # no space left on device
        getattr(errno, "EDQUOT", None),  # disk quota exceeded
        errno.EFBIG,  # file too large (ulimit -f, or the file system's own limit)
        errno.EROFS,  # read-only file system
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.ENOTDIR,  # a parent of the path is a file
        errno.EISDIR,  # the path is a folder
        errno.EIO,  # the device failed
    )
    if code is not None
)


def output_error(path: Path, exc: OSError) -> OutputError:
    """One line for an OS error writing `path`: the path, the problem, what to do."""
    problem = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    hint = {
        errno.ENOSPC: "free some space",
        getattr(errno, "EDQUOT", -1): "free some space",
        errno.EFBIG: "raise the file size limit (ulimit -f)",
    }.get(exc.errno or 0, "fix it")
    return OutputError(
        f"{path}: cannot write: {problem}; {hint} and re-run the same command to resume"
    )


def is_output_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS


#: Temporary files of writes under way in this process (see `remove_pending_tmp`).
_pending: set[Path] = set()


def remove_pending_tmp() -> None:
    """Remove the temporary files of the writes still under way in this process.

    For a process being stopped (a worker ended by its pool, a Ctrl-C): the stop may
    land anywhere, even inside atomic_path's own clean-up, before the file is removed.
    """
    for tmp in list(_pending):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _pending.discard(tmp)


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to `path`, on failure remove it.

    An OSError that means the destination cannot take the file becomes an OutputError.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_output_error(exc):
            raise output_error(path.parent, exc) from exc
        raise
    tmp = tmp_path_for(path)
    _pending.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
        _pending.discard(tmp)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # it may never have been made
            tmp.unlink(missing_ok=True)
        _pending.discard(tmp)  # only once removed: see remove_pending_tmp
        if is_output_error(exc):
            raise output_error(path, exc) from exc  # type: ignore[arg-type]
        raise
    try:
        # A run folder on an object store: upload it now, whole, under its final name
        # (a marker written next goes up only after what it vouches for).
        storage.publish(path)
    except BaseException:
        path.unlink(missing_ok=True)  # not in the bucket, so not written
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def sweep_tmp(folder: Path) -> int:
    """Remove temporary files an interrupted writer left in `folder` (not recursive)."""
    removed = 0
    if folder.is_dir():
        for leftover in folder.glob(f"{TMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
