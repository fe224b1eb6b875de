"""`--per-host` for every clearset process of one user on one machine, not per process.

A fetch scan's workers are separate processes, each with its own asyncio loop: a limit
kept in one process's memory lets N workers send N times `per_host` requests to one host.
Here a request to a host first takes one of `per_host` slots that all processes share:
byte-range locks (POSIX `fcntl` record locks) on one lock file, one byte per slot, at
offsets derived from a hash of the host. The kernel is the only bookkeeper, so a worker
that is killed holding slots frees them at once (no count is left too high), nothing is
written to the file, and a run needs no helper process. A slot is taken without blocking
the loop: a try that finds every slot taken sleeps a few milliseconds and tries again.

What it holds: on one machine, for one user, at most `per_host` requests in flight to a
host over every worker of a scan (the local engine's workers, array-job ranks on one
node, Ray workers on one node), and over concurrent scans too: each takes slots below its
own `per_host`, so together they stay within the largest. Across machines (a Ray cluster,
ranks on several nodes) each machine has its own slots: K machines send up to K times
`per_host` to one host. A cluster-wide limiter (one Ray actor every request asks) would put
a round trip and one process in the path of every request; on a cluster divide instead:
give `--per-host` the host's budget divided by the number of machines.

Where `fcntl` is missing (Windows), the limit is per process, as before.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path

from clearset.errors import OutputError

#: Slots per host that can be shared: a larger `per_host` is shared up to this many.
SLOT_BITS = 16
MAX_SHARED_SLOTS = (1 << SLOT_BITS) - 1
#: Bits of the host's hash in a slot's offset (offset = hash << SLOT_BITS | slot < 2^63).
HOST_BITS = 40
#: First and longest wait between tries when every slot of a host is taken.
FIRST_WAIT = 0.002
LONGEST_WAIT = 0.05
LOCK_FILE = "fetch-hosts.lock"


def slot_base(host: str) -> int:
    """Where a host's slots start in the lock file: a 40-bit hash of the host, so two
    hosts share slots only by a 1-in-10^12 chance (they would then share one limit)."""
    digest = hashlib.sha256(host.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[: HOST_BITS // 8], "big") << SLOT_BITS


def lock_folder() -> Path:
    """This user's folder for the lock file: made owner-only, and refused when another
    user owns it (someone else could then hold our slots)."""
    folder = Path(tempfile.gettempdir()) / f"clearset-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        found = folder.lstat()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot make the per-host limit's folder ({exc})") from None
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or found.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ):
        raise OutputError(
            f"{folder}: not a folder only you can use; remove it (or set TMPDIR elsewhere) "
            "so that --per-host can be shared by this scan's workers"
        )
    return folder


class HostSlots:
    """This process's handle on the shared slots: the open lock file and the slots it
    holds (record locks belong to the process, so it must itself not take one twice)."""

    def __init__(self, path: Path) -> None:
        import fcntl

        self._fcntl = fcntl
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise OutputError(
                f"{path}: cannot open the per-host limit's lock file ({exc})"
            ) from None
        self._held: set[int] = set()
        self._guard = threading.Lock()  # several fetch loops may run in one process

    def try_take(self, host: str, per_host: int) -> int | None:
        """A free slot of `host` (its offset), now held by this process; None if all
        `per_host` are held, by this process or others."""
        fcntl = self._fcntl
        base = slot_base(host)
        with self._guard:
            for offset in range(base, base + min(per_host, MAX_SHARED_SLOTS)):
                if offset in self._held:
                    continue
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        continue
                    raise
                self._held.add(offset)
                return offset
        return None

    async def take(self, host: str, per_host: int) -> int:
        """Wait, without blocking the loop, for a free slot of `host`."""
        wait = FIRST_WAIT
        while (offset := self.try_take(host, per_host)) is None:
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT)
        return offset

    def give(self, offset: int) -> None:
        with self._guard:
            self._fcntl.lockf(self._fd, self._fcntl.LOCK_UN, 1, offset)
            self._held.discard(offset)


_process: tuple[int, HostSlots | None] | None = None
_made = threading.Lock()


def host_slots() -> HostSlots | None:
    """This process's `HostSlots` (None where there is no `fcntl`). Made again in a
    forked child: record locks are not inherited, so the parent's count would be wrong.
    The file is never closed while the process lives: closing any descriptor of it would
    drop every lock the process holds on it."""
    global _process
    with _made:
        if _process is None or _process[0] != os.getpid():
            try:
                import fcntl  # noqa: F401
            except ImportError:
                _process = (os.getpid(), None)
            else:
                _process = (os.getpid(), HostSlots(lock_folder() / LOCK_FILE))
        return _process[1]
