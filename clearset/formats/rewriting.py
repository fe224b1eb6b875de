"""Write one shard of a data set again, in its own format, without the removed keys.

One writer per source kind: WebDataset tar shards (with img2dataset's `.parquet` and
`_stats.json` side files rewritten to match), parquet files (rows removed, schema,
schema metadata, compression and row-group size kept), and folders (files copied or
hard-linked). A shard that loses nothing is copied (or linked) whole, byte for byte,
which is the common case and the fast one. Every file goes to a temporary name in the
destination and is renamed when complete. Kept bytes are never decoded: a cleaned copy
is the source's own bytes, minus whole keys.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa

from clearset.atomic import atomic_path
from clearset.errors import InputError, OutputError
from clearset.formats.base import ShardRef, display_name
from clearset.runfolder import file_sha256


@dataclass
class WrittenShard:
    """What a writer put in the destination for one shard."""

    files: list[str] = field(default_factory=list)  # paths relative to the destination
    members_removed: int = 0
    keys_removed: int = 0
    keys_kept: int = 0
    copied_whole: bool = False
    dropped_empty: bool = False
    # Links to nothing kept, FIFOs and devices: never copied into a cleaned copy.
    members_dropped: int = 0


@dataclass
class ShardContents:
    """What a scan read of one shard: a writer copies these bytes and nothing else.

    `file_sha256` is the whole shard file's SHA-256 (tar and parquet shards); `members`
    maps each member's name (as the manifest writes it) to the SHA-256 of each of its
    occurrences, in order (None for a member that holds no bytes: a link, a folder)."""

    file_sha256: str | None = None
    members: dict[str, list[bytes | None]] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: pa.Table, file_sha256: str | None) -> ShardContents:
        members: dict[str, list[bytes | None]] = {}
        rows = manifest.select(["member", "sha256", "status", "reason"]).to_pylist()
        for row in rows:
            if row["member"] is None or (row["status"] == "missing" and row["sha256"] is None):
                continue  # a row without a member: a failed download, a metadata row
            members.setdefault(row["member"], []).append(row["sha256"])
        return cls(file_sha256=file_sha256, members=members)

    def take(self, shard: ShardRef, name: str) -> bytes | None:
        """The scanned SHA-256 of the next occurrence of member `name`; refuses a member
        the scan never saw (it would put unhashed bytes into the cleaned copy)."""
        shown = display_name(name)
        found = self.members.get(shown)
        if not found:
            raise OutputError(
                f"{shard.path}: member {shown} has no row in the scan's manifest; refusing "
                "to copy bytes the scan did not hash (scan the source again into a new run)"
            )
        return found.pop(0)


def changed_since_scan(url: str) -> OutputError:
    return OutputError(
        f"{url}: changed since it was scanned (its bytes differ from those the scan "
        "hashed); scan it again into a new run before cleaning"
    )


class DropShard(Exception):
    """Raised inside an atomic write to discard an empty shard (the temp file goes)."""


def _is_local(url: str) -> bool:
    fs, _ = fsspec.core.url_to_fs(url)
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def copy_file(src_url: str, target: Path, *, link: bool, sha256: bytes | str | None = None) -> None:
    """Copy (or hard-link) one whole file into place atomically; bytes are untouched.

    With `sha256` (raw or hex), the bytes are hashed on the way and the copy is refused,
    leaving nothing behind, unless they are exactly the bytes the scan hashed."""
    with atomic_path(target) as tmp:
        if link:
            if not _is_local(src_url):
                raise OutputError(f"{src_url}: --link needs a source on local disk")
            _, path = fsspec.core.url_to_fs(src_url)
            try:
                os.link(path, tmp)
            except OSError as exc:
                raise OutputError(
                    f"{target}: cannot hard-link {path} ({exc.strerror}); "
                    "--link needs the destination on the same filesystem as the source"
                ) from None
            if sha256 is not None and bytes.fromhex(file_sha256(tmp)) != _raw(sha256):
                raise changed_since_scan(src_url)
            return
        digest = hashlib.sha256()
        try:
            with fsspec.open(src_url, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
        except FileNotFoundError:
            raise InputError(f"{src_url}: no such file (was the source moved?)") from None
        if sha256 is not None and digest.digest() != _raw(sha256):
            raise changed_since_scan(src_url)


def _raw(sha256: bytes | str) -> bytes:
    return bytes.fromhex(sha256) if isinstance(sha256, str) else sha256
