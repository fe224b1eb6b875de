"""What every source yields, and the small registry that picks a reader for a location.

A source is a data set where it lies: a folder, WebDataset tar shards, or parquet files,
on local disk or behind any fsspec URL. It is split into shards, the unit of work that
any engine (local processes, Ray) hands to `clearset.engines.shard.scan_shard`. Reading
a shard streams items one at a time so memory stays flat however large the shard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import fsspec
from braceexpand import braceexpand

from clearset.errors import InputError
from clearset.settings import IMAGE_EXTENSIONS


@dataclass(frozen=True, slots=True)
class ShardRef:
    """One unit of work. `id` names the shard's files in a run folder; `name` is what
    users see in the manifest's `shard` column (the shard's path relative to the source)."""

    id: str
    name: str
    path: str
    # A folder has no shards of its own: its shards are runs of its sorted file list.
    files: tuple[str, ...] = ()


@dataclass(slots=True)
class Item:
    """One image (or one row that should have held one) as read from a source."""

    key: str
    shard: str
    position: int
    members: tuple[str, ...]
    member: str | None
    data: bytes | None
    url: str | None = None
    # Hashes and status the source already carries (img2dataset's sha256/md5 of the
    # original download, LAION's md5). Kept apart from ours: they need not equal them.
    upstream_sha256: str | None = None
    upstream_md5: str | None = None
    upstream_status: str | None = None
    # Why `data` is None, when it is.
    missing_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    kind: ClassVar[str]
    url: str

    def shards(self) -> list[ShardRef]: ...

    def read_shard(self, shard: ShardRef) -> Iterator[Item]: ...

    def spec(self) -> dict[str, Any]:
        """What run.json records to say which source a run read, and to check a resume."""
        ...


def split_ext(name: str) -> tuple[str | None, str | None]:
    """Key and extension the way webdataset groups tar members.

    Everything after the first dot of the file name is the extension, so `a.b.jpg` is key
    `a` with extension `b.jpg`. We group exactly as webdataset will when training reads
    the shard, even where that surprises.
    """
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def is_image_ext(ext: str | None) -> bool:
    """True for extensions we hash as images (`jpg`, `b.jpg`, `JPEG`...)."""
    if not ext:
        return False
    return ext.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


def normalise_hex(value: Any) -> str | None:
    """Upstream hash columns as lower-case hex, or None when empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    text = str(value).strip().lower()
    return text or None


def expand_paths(url: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The filesystem and the concrete paths for a URL, a brace pattern or a glob."""
    try:
        fs, _ = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: cannot open this location ({exc})") from None
    patterns = list(braceexpand(url)) if "{" in url else [url]
    paths: list[str] = []
    for pattern in patterns:
        _, path = fsspec.core.url_to_fs(pattern)
        if any(ch in path for ch in "*?["):
            paths.extend(sorted(fs.glob(path)))
        else:
            paths.append(path)
    return fs, paths


def find_files(
    url: str, suffixes: tuple[str, ...], what: str
) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """(filesystem, root folder or "", sorted files) for a file, folder or pattern of files
    ending in `suffixes`; `what` names them in errors ("parquet file", "shard")."""
    fs, paths = expand_paths(url)
    files: list[str] = []
    root = ""
    for path in paths:
        if fs.isdir(path):
            root = path
            files.extend(p for p in sorted(fs.find(path)) if p.endswith(suffixes))
        elif fs.exists(path):
            files.append(path)
        else:
            raise InputError(f"{protocol_url(fs, path)}: no such {what}")
    if not files:
        raise InputError(f"{url}: no {' or '.join(suffixes)} files found")
    return fs, root, files


def file_shards(url: str, suffixes: tuple[str, ...], what: str) -> list[ShardRef]:
    """One shard per file: the shards of tar and parquet sources."""
    fs, root, files = find_files(url, suffixes, what)
    refs = []
    for path in files:
        name = relative_name(path, root)
        refs.append(ShardRef(id=shard_id_for(name), name=name, path=protocol_url(fs, path)))
    return refs


def shard_fingerprint(shard: ShardRef) -> dict[str, Any]:
    """Size and modification stamp of a shard's files, recorded at scan time so that a
    later clean can refuse a source that changed since (it would copy unscanned bytes)."""
    fs, root = fsspec.core.url_to_fs(shard.path)
    paths = [f"{root}/{name}" for name in shard.files] if shard.files else [root]
    digest = hashlib.sha256()
    total = 0
    for path in paths:
        try:
            info = fs.info(path)
        except (OSError, FileNotFoundError):
            raise InputError(f"{protocol_url(fs, path)}: no longer readable") from None
        stamp = next((str(info[k]) for k in _STAMP_KEYS if info.get(k) is not None), "")
        size = int(info.get("size") or 0)
        total += size
        digest.update(f"{path}\0{size}\0{stamp}\n".encode())
    return {"files": len(paths), "bytes": total, "stamp": digest.hexdigest()}


# What filesystems call a file's version: local mtime, S3/GCS/Azure etags and times.
_STAMP_KEYS = ("mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "created")


def shard_id_for(name: str) -> str:
    """A file-name-safe id for a shard's run-folder files, unique per relative name."""
    stem = re.sub(r"\.(tar(\.gz)?|parquet)$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]+", "__", stem).strip("_") or "shard"


def relative_name(path: str, root: str) -> str:
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.rsplit("/", 1)[-1]


def protocol_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path back as a URL fsspec can reopen in another process."""
    return fs.unstrip_protocol(path)
