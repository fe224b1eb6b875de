"""One writer at a time in a run folder: a lock held for the whole command.

A scan, match or clean holds an exclusive `fcntl.flock` on RUN/.lock while it runs; the
ranks of an array job hold it shared (they write one run together on purpose), so a
rank and a plain scan exclude each other but ranks do not. The kernel drops a lock when
the process that held it dies, however it dies, so a kill -9 never leaves a stale lock
behind: the file itself stays, unlocked, and says nothing but who held it last. A second
command is refused at once in one line naming the holder (its command, pid and host).

Holding the lock exclusively also tells a command that nothing else uses the run folder,
so it may remove what a killed command left there (`RUN/.list-index/`).

Where flock is missing (Windows) or the folder cannot take the file (read-only), nothing
is locked: the command then fails or runs as it did before.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from clearset.errors import RunFolderError

#: RUN/.lock: flock'd by the command writing the run; holds "clearset COMMAND PID HOST".
RUN_LOCK = ".lock"

# The holder's record is written at offset 0 padded to this size, so that ranks writing
# it at once leave one whole record, never a mix.
_RECORD_BYTES = 512


class RunBusy(RunFolderError):
    """Another clearset command is writing this run folder now."""


@contextlib.contextmanager
def run_lock(
    run_dir: Path,
    command: str,
    *,
    shared: bool = False,
    advice: str = "wait for it or choose another --out",
) -> Iterator[bool]:
    """Hold RUN/.lock for the duration (shared: beside other ranks); yields whether this
    command holds it alone. `RunBusy` names the holder when another command has it.

    The run folder is made if it is missing; a lock file this command made in a folder
    that is still no run on the way out (the command was refused) is removed again, and
    so is the folder it made."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield False
        return
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    lock_made = made or not (run_dir / RUN_LOCK).exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False  # not a folder, read-only: the command says so in its own words
        return
    try:
        locked = True
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(
                f"{run_dir}: another {_holder(fd)} is writing this run; {advice}"
            ) from None
        except OSError:
            locked = False  # a file system without locks (some FUSE mounts): as before
        if locked:
            record = f"clearset {command} {os.getpid()} {socket.gethostname()}"
            with contextlib.suppress(OSError):
                os.pwrite(fd, record.encode()[:_RECORD_BYTES].ljust(_RECORD_BYTES) + b"\n", 0)
        yield locked and not shared
    finally:
        if lock_made and not (run_dir / "run.json").exists():
            # Refused before it began: leave the folder as it was (a user's folder
            # given as --out by mistake gets no stray file).
            with contextlib.suppress(OSError):
                (run_dir / RUN_LOCK).unlink()
                if made:
                    run_dir.rmdir()
        os.close(fd)


def holder(run_dir: Path) -> str:
    """Who holds or last held the run's lock, as the refusal names it."""
    try:
        fd = os.open(Path(run_dir) / RUN_LOCK, os.O_RDONLY)
    except OSError:
        return "clearset command"
    try:
        return _holder(fd)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        words = os.pread(fd, _RECORD_BYTES, 0).decode(errors="replace").split()
    except OSError:
        words = []
    if len(words) == 4 and words[0] == "clearset" and words[2].isdigit():
        return f"clearset {words[1]} (pid {words[2]} on {words[3]})"
    return "clearset command"
