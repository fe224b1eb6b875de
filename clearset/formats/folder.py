"""A folder of files, searched recursively (img2dataset's "files" output included).

Every file becomes a manifest row, whatever its name: whether it is an image is decided
by its bytes. Files are grouped into keys as webdataset would group them
(`dir/000001.jpg` and `dir/000001.json` are key `dir/000001`), so a `.json` side file
gives its image a URL and upstream hashes. A folder has no shards, so its sorted file
list is cut into runs of `FOLDER_SHARD_SIZE` keys; the cut is deterministic, which is
what lets a scan resume.

A folder is read without leaving it: a symbolic link is recorded (`not_a_file: symlink`)
and never followed, FIFOs, sockets and devices are recorded and never opened, and every
read is bounded (`MAX_MEMBER_BYTES`; a larger file is hashed while streaming).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import InputError
from clearset.formats.base import (
    Format,
    Item,
    ShardRef,
    as_text,
    display_name,
    expand_paths,
    is_image_ext,
    metadata_json,
    normalise_hex,
    original_size,
    protocol_url,
    read_bounded,
    relative_name,
    split_ext,
)
from clearset.formats.rewriting import ShardContents, WrittenShard, copy_file
from clearset.settings import FOLDER_SHARD_SIZE

#: The folder `clearset clean` keeps its resume state in, inside a cleaned copy.
STATE_DIR_NAME = ".clearset-clean"


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def walk_local(root: str) -> list[str]:
    """Every entry under `root` that is not a folder, relative and sorted, without
    following a symbolic link anywhere (a link to a folder is an entry, not a folder)."""
    found: list[str] = []
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, prefix) if prefix else root))
        except OSError as exc:
            raise InputError(f"{root}/{prefix}: cannot list ({exc.strerror})") from None
        for entry in entries:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if name == STATE_DIR_NAME:
                continue  # a cleaned copy's own resume state (see stages.clean), not data
            if entry.is_dir(follow_symlinks=False):
                stack.append(name)
            else:
                found.append(name)
    return sorted(found)


def list_files(url: str) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """(filesystem, root, relative names of every non-folder entry) of a folder."""
    fs, paths = expand_paths(url)
    if len(paths) != 1 or not fs.isdir(paths[0]):
        raise InputError(f"{url}: not a folder")
    root = paths[0].rstrip("/") or "/"
    if is_local_fs(fs):
        return fs, root, walk_local(root)
    names = [relative_name(p, root) for p in sorted(fs.find(root))]
    return fs, root, [n for n in names if not n.startswith(STATE_DIR_NAME + "/")]


SIDE_SUFFIXES = (".parquet", "_stats.json")


def side_stem(name: str) -> str | None:
    """`NNNNN` of `NNNNN.parquet` or `NNNNN_stats.json`, else None."""
    for suffix in SIDE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def side_names(names: list[str], folders: set[str]) -> set[str]:
    """The names among `names` that are img2dataset's per-shard metadata of its "files"
    layout: `NNNNN.parquet` and `NNNNN_stats.json` beside the folder `NNNNN/` (`folders`
    holds every folder, empty ones too). A shard that downloaded nothing may have an
    empty folder or none: its parquet and stats pair, in a folder where another shard's
    parquet lies beside its own folder, is that layout's all the same."""
    present = set(names)
    stems = {stem for n in names if (stem := side_stem(n)) is not None}
    beside = {stem for stem in stems if stem in folders}
    parents = {stem.rsplit("/", 1)[0] if "/" in stem else "" for stem in beside}
    side = set(beside)
    for stem in stems - beside:
        parent = stem.rsplit("/", 1)[0] if "/" in stem else ""
        paired = f"{stem}.parquet" in present and f"{stem}_stats.json" in present
        if paired and parent in parents:
            side.add(stem)
    return {n for n in names if side_stem(n) in side}


def is_side_file(fs: fsspec.AbstractFileSystem, root: str, name: str) -> bool:
    """Whether `name` is img2dataset's per-shard metadata in its "files" layout (see
    `side_names`). They describe every sample, removed ones too, so a cleaned copy never
    carries them (they are hashed all the same, and their failed downloads accounted)."""
    stem = side_stem(name)
    if stem is None:
        return False
    if fs.isdir(f"{root}/{stem}"):
        return True
    parent = stem.rsplit("/", 1)[0] if "/" in stem else ""
    folder = f"{root}/{parent}" if parent else root
    try:
        entries = fs.ls(folder, detail=True)
    except OSError:
        return False
    names, folders = [], set()
    for entry in entries:
        relative = relative_name(entry["name"].rstrip("/"), root)
        if entry["type"] == "directory":
            folders.add(relative)
        else:
            names.append(relative)
    return name in side_names(names, folders)


def file_key(name: str) -> str:
    key, _ = split_ext(name)
    return key if key is not None else name


def group_keys(files: list[str]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for name in files:
        by_key.setdefault(file_key(name), []).append(name)
    return by_key


@dataclass
class FolderSource:
    kind: ClassVar[str] = "folder"
    url: str
    shard_size: int = FOLDER_SHARD_SIZE

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "shard_size": self.shard_size}

    def shards(self) -> list[ShardRef]:
        fs, root, files = list_files(self.url)
        # Keep whole keys together: a shard boundary never splits a key's files, even
        # where sorting puts another key between them (`a.b.jpg`, `a.d/x.jpg`, `a.txt`).
        groups = list(group_keys(files).values())
        refs = []
        root_url = protocol_url(fs, root)
        for number, start in enumerate(range(0, len(groups), self.shard_size)):
            chunk = [name for group in groups[start : start + self.shard_size] for name in group]
            shard_name = f"part-{number:05d}"
            refs.append(ShardRef(id=shard_name, name=shard_name, path=root_url, files=tuple(chunk)))
        if not refs:
            raise InputError(f"{self.url}: the folder holds no files")
        return refs

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        fs, root = fsspec.core.url_to_fs(shard.path)
        local = is_local_fs(fs)
        position = 0
        for key, names in group_keys(list(shard.files)).items():
            meta: dict[str, Any] = {}
            note = None
            side = next((n for n in names if split_ext(n)[1] == "json"), None)
            if side is not None:
                meta, note = _read_json(fs, f"{root}/{side}", local)
            url, bad_url = as_text(meta.get("url"))
            status, bad_status = as_text(meta.get("status"))
            if bad_url or bad_status:
                note = note or "bad_metadata: url or status is not text"
            # A files-layout side parquet records the downloads that failed: they have no
            # file, so they are accounted here, as the failures the source records.
            failed: list[tuple[str, list[dict[str, Any]]]] = []
            for name in names:
                if name.endswith(".parquet") and is_side_file(fs, root, name):
                    rows, side_note = failed_downloads(fs, f"{root}/{name}")
                    note = note or side_note
                    failed.append((name[: -len(".parquet")], rows))
            shown = tuple(display_name(n) for n in names)
            for name in names:
                path = f"{root}/{name}"
                data, streamed, kind = read_file(fs, path, local)
                yield Item(
                    key=display_name(key),
                    shard=shard.name,
                    position=position,
                    members=shown,
                    member=display_name(name),
                    data=data,
                    url=url,
                    upstream_sha256=normalise_hex(meta.get("sha256")),
                    upstream_md5=normalise_hex(meta.get("md5")),
                    upstream_status=status,
                    missing_reason=None if kind == "file" else f"not_a_file: {kind}",
                    status=None if kind == "file" else "other",
                    expect_image=is_image_ext(split_ext(name)[1]),
                    streamed=streamed,
                    note=note,
                    extra=original_size(meta),
                )
                position += 1
            for folder, rows in failed:
                for row in rows:
                    yield _failed_item(row, folder, shard.name, position)
                    position += 1


#: What a files-layout side parquet says of each sample (the rest is never read).
SIDE_COLUMNS = ("key", "url", "status", "error_message", "sha256", "md5")


def failed_downloads(
    fs: fsspec.AbstractFileSystem, path: str
) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, note) of a files-layout side parquet: the rows of samples whose download
    failed (img2dataset wrote no file for them, only this row), and a note when the
    file cannot be read as a side parquet."""
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns = [c for c in SIDE_COLUMNS if c in parquet.schema_arrow.names]
            if "key" not in columns or "status" not in columns:
                return [], None
            rows = parquet.read(columns=columns).to_pylist()
    except (OSError, ValueError, pa.ArrowException):
        return [], "bad_metadata: side parquet is unreadable"
    return [r for r in rows if as_text(r.get("status"))[0] not in (None, "success")], None


def _failed_item(row: dict[str, Any], folder: str, shard: str, position: int) -> Item:
    """A failed download of a files-layout shard: a sample with no member, accounted as
    the failure its side parquet records."""
    key, _ = as_text(row.get("key"))
    status, _ = as_text(row.get("status"))
    why, _ = as_text(row.get("error_message"))
    url, _ = as_text(row.get("url"))
    return Item(
        key=display_name(f"{folder}/{key}"),
        shard=shard,
        position=position,
        members=(),
        member=None,
        data=None,
        url=url,
        upstream_sha256=normalise_hex(row.get("sha256")),
        upstream_md5=normalise_hex(row.get("md5")),
        upstream_status=status,
        missing_reason=f"not_in_shard: upstream status {status}, {why or 'no file'}"[:200],
    )


def entry_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


def read_file(
    fs: fsspec.AbstractFileSystem, path: str, local: bool
) -> tuple[bytes | None, Any, str]:
    """(bytes or None, streamed hashes or None, kind) of one folder entry.

    On local disk the entry is opened without following a link and without blocking
    (a FIFO swapped in after listing cannot hang the scan), then checked to be a regular
    file before a byte is read."""
    if not local:
        try:
            with fs.open(path, "rb") as handle:
                data, streamed = read_bounded(handle)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc})") from None
        return data, streamed, "file"
    try:
        kind = entry_kind(os.lstat(path).st_mode)
    except OSError as exc:
        raise InputError(f"{display_name(path)}: cannot read ({exc.strerror})") from None
    if kind != "file":
        return None, None, kind
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"{display_name(path)}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(fd)
        kind = entry_kind(found.st_mode)
        if kind != "file":
            return None, None, kind
        data, streamed = read_bounded(handle, size=found.st_size)
    return data, streamed, "file"


def _read_json(
    fs: fsspec.AbstractFileSystem, path: str, local: bool
) -> tuple[dict[str, Any], str | None]:
    try:
        data, _, kind = read_file(fs, path, local)
    except InputError:
        return {}, "bad_metadata: .json side file is unreadable"
    return metadata_json(data, ".json side file")


# How a shard is written again without removed keys (`clean`).


def write_folder_shard(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    """Every file of the shard's kept keys, at the same relative path, copied or linked,
    each one checked to hold the bytes the scan hashed. Links, FIFOs and devices are
    never copied (the scan did not follow or open them)."""

    written = WrittenShard()
    kept_keys: set[str] = set()
    root = shard.path.rstrip("/")
    fs, root_path = fsspec.core.url_to_fs(root)
    for name in shard.files:
        scanned = contents.take(shard, name)
        key = display_name(file_key(name))
        if key in removed:
            written.members_removed += 1
            continue
        if scanned is None or is_side_file(fs, root_path, name):
            written.members_dropped += 1
            continue
        kept_keys.add(key)
        copy_file(f"{root}/{name}", dest_root / name, link=link, sha256=scanned)
        written.files.append(display_name(name))
    written.keys_kept = len(kept_keys)
    written.copied_whole = not any_removed and not written.members_dropped
    return written


class Folder(Format):
    """A folder of files, searched recursively: what a folder is when it holds no shards."""

    name = "folder"
    reader = FolderSource
    rewriter = staticmethod(write_folder_shard)
    croissant_images = True
