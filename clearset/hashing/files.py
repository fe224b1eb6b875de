"""Hash a file named on the command line (`clearset hash`): regular files only, bounded.

A path can name anything: a FIFO (reading it waits for a writer that may never come), a
device (`/dev/zero` never ends), a folder, a socket. Only regular files are read, and
they are opened without blocking and checked on the open handle, so a path swapped for
a FIFO after the check cannot hang the command. A file larger than the scan's member cap
(`settings.MAX_MEMBER_BYTES`) is hashed while streaming and never decoded, exactly as a
scan treats such a member: its row says `too_large`, and it has no PDQ.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from clearset.errors import InputError
from clearset.hashing.item import STATUS_ERROR, ItemHashes, hash_bytes
from clearset.hashing.types import ByteDigests
from clearset.settings import MAX_MEMBER_BYTES

_BLOCK = 1 << 20

# What a path is when it is not a regular file, in the words `ls -l` users know.
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> InputError | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((word for test, word in _KINDS if test(mode)), "not a file")
    return InputError(f"{path}: {kind}, not a regular file: only image files are hashed")


def _chain(held: list[bytes], handle: BinaryIO) -> Iterator[bytes]:
    """The blocks already read (dropped as they are used), then the rest of `handle`."""
    while held:
        yield held.pop(0)
    while block := handle.read(_BLOCK):
        yield block


def check_regular_file(path: Path) -> None:
    """Raise InputError (one line naming `path`) unless it is a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    problem = _not_regular(path, mode)
    if problem is not None:
        raise problem


def hash_file(
    path: Path, *, exact_pdq: bool = False, max_bytes: int = MAX_MEMBER_BYTES
) -> ItemHashes:
    """All hashes of the regular file `path`; memory stays within `max_bytes` + a block."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer; a regular file
        # ignores the flag.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        problem = _not_regular(path, os.fstat(fd).st_mode)
        if problem is not None:
            raise problem
        try:
            # In blocks, not read(max_bytes + 1): that would allocate the whole cap for
            # every small picture.
            blocks: list[bytes] = []
            held = 0
            while held <= max_bytes and (block := handle.read(_BLOCK)):
                blocks.append(block)
                held += len(block)
            if held <= max_bytes:
                return hash_bytes(b"".join(blocks), exact_pdq=exact_pdq)
            digests = ByteDigests()
            for block in _chain(blocks, handle):
                digests.update(block)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    size = digests.size
    return ItemHashes(
        digests=digests.result(),
        size=size,
        status=STATUS_ERROR,
        reason=f"too_large: {size} bytes, over the {max_bytes}-byte cap",
    )
