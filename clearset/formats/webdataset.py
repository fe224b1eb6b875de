"""WebDataset tar shards, including img2dataset output with its side files.

Every member of a tar becomes a manifest row, whatever its name: `.jpg`, `.jpe`, `.ppm`,
a member with no extension, `__meta__/x.jpg` (which webdataset itself skips), a `.json`
caption file, a link or a folder entry. Whether a member is an image is decided by its
bytes when it is hashed. Members are grouped into keys exactly as webdataset groups
them (see `split_ext`); removal is by key.

Facts of the img2dataset layout we respect: tar members are in download-completion
order, not key order; failed downloads are absent from the tar but present in the shard's
`.parquet` with their status, and become manifest rows with no bytes; its `sha256`/`md5`
columns hash the original download and are kept as upstream columns, never as ours.

The tar is read once, as a stream, and the SHA-256 of the whole file is taken on the
way: `clean` compares it before copying so that a cleaned copy holds only bytes that
this scan read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.atomic import atomic_path
from clearset.errors import InputError
from clearset.formats.base import (
    Format,
    Item,
    ShardRef,
    StreamedHashes,
    as_text,
    display_name,
    file_shards,
    is_image_ext,
    metadata_json,
    normalise_hex,
    original_size,
    read_bounded,
    split_ext,
)
from clearset.formats.parquet import parquet_codec, parquet_row_group
from clearset.formats.rewriting import (
    DropShard,
    ShardContents,
    WrittenShard,
    changed_since_scan,
    copy_file,
)
from clearset.settings import MAX_MEMBER_BYTES

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SIDE_COLUMNS = (
    "key",
    "url",
    "status",
    "error_message",
    "sha256",
    "md5",
    "original_width",
    "original_height",
)
GZIP_SUFFIXES = (".tar.gz", ".tgz")
#: Side-parquet columns that hold text even when stored as bytes (a non-UTF-8 URL).
SIDE_TEXT_COLUMNS = frozenset({*SIDE_COLUMNS, "caption", "exif"})


@dataclass
class TarMember:
    """One member as read from the stream: its bytes for a regular file, else a kind."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "fifo", "device", "other"
    data: bytes | None = None
    streamed: StreamedHashes | None = None
    linkname: str | None = None


@dataclass
class HashingReader:
    """A read-only stream that hashes every byte read through it."""

    raw: Any
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        self.size += len(block)
        return block

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def member_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.isfifo():
        return "fifo"
    if info.ischr() or info.isblk():
        return "device"
    return "other"


def tar_members(url: str, record: dict[str, Any] | None = None) -> Iterator[TarMember]:
    """Every member of a tar (or .tar.gz) shard in order; with `record`, the file's
    size and SHA-256 are put there once the whole file has been read."""
    try:
        with fsspec.open(url, "rb") as raw:
            hashing = HashingReader(raw)
            stream: Any = hashing
            if url.endswith(GZIP_SUFFIXES):
                stream = gzip.GzipFile(fileobj=hashing, mode="rb")  # type: ignore[call-overload]  # read forward only: never seeks
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    member = TarMember(name=info.name, kind=member_kind(info))
                    plain = info.sparse is None and 0 < info.size <= MAX_MEMBER_BYTES
                    if member.kind == "file" and plain:
                        member.data = _file_bytes(tar, info)
                    elif member.kind == "file":
                        handle = tar.extractfile(info)
                        member.data, member.streamed = read_bounded(handle, size=info.size)
                    else:
                        member.linkname = info.linkname or None
                    yield member
            hashing.drain()  # the end-of-archive padding is part of the file too
            if record is not None:
                record.update(file_sha256=hashing.digest.hexdigest(), file_bytes=hashing.size)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{url}: not a readable tar shard ({exc})") from None


def _file_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A regular member's bytes straight from the tar stream: what `extractfile(info)
    .read()` returns (and the same error for a cut-off member), without its two file
    objects per member."""
    stream: Any = tar.fileobj
    stream.seek(info.offset_data)
    data: bytes = stream.read(info.size)
    if len(data) != info.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


@dataclass
class WebDatasetSource:
    kind: ClassVar[str] = "webdataset"
    url: str

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    def shards(self) -> list[ShardRef]:
        return file_shards(self.url, TAR_SUFFIXES, "shard")

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        side = _read_side_parquet(shard.path)
        seen: set[str] = set()
        position = 0
        for key, members in _grouped(tar_members(shard.path, record)):
            seen.add(key)
            meta, note = _member_json(members)
            row = side.get(key, {})
            url, bad_url = as_text(row.get("url") or meta.get("url"))
            status, bad_status = as_text(row.get("status") or meta.get("status"))
            if bad_url or bad_status:
                note = note or "bad_metadata: url or status is not text"
            names = tuple(display_name(m.name) for m in members)
            # The same for every member of the key: worked out once.
            shown_key = display_name(key)
            sha256 = normalise_hex(row.get("sha256") or meta.get("sha256"))
            md5 = normalise_hex(row.get("md5") or meta.get("md5"))
            extra = original_size(row) or original_size(meta)
            for member, shown in zip(members, names, strict=True):
                _, ext = split_ext(member.name)
                yield Item(
                    key=shown_key,
                    shard=shard.name,
                    position=position,
                    members=names,
                    member=shown,
                    data=member.data,
                    url=url,
                    upstream_sha256=sha256,
                    upstream_md5=md5,
                    upstream_status=status,
                    missing_reason=_kind_reason(member),
                    status="other" if member.kind != "file" else None,
                    expect_image=is_image_ext(ext),
                    image_data=_gunzipped(member),
                    streamed=member.streamed,
                    note=note,
                    extra=dict(extra),
                )
                position += 1
        # Keys the side file knows but the tar lacks: failed downloads, mostly.
        for key, row in side.items():
            if key in seen:
                continue
            status, _ = as_text(row.get("status"))
            why, _ = as_text(row.get("error_message"))
            url, _ = as_text(row.get("url"))
            yield Item(
                key=display_name(key),
                shard=shard.name,
                position=position,
                members=(),
                member=None,
                data=None,
                url=url,
                upstream_sha256=normalise_hex(row.get("sha256")),
                upstream_md5=normalise_hex(row.get("md5")),
                upstream_status=status,
                missing_reason=_not_in_shard(status, why),
            )
            position += 1


def _not_in_shard(status: str | None, why: str | None) -> str:
    return f"not_in_shard: upstream status {status}, {why or 'absent from the tar'}"[:200]


def member_key(name: str) -> str:
    """The key a member belongs to: webdataset's, or the whole name when it has no
    extension (such a member is its own key, and is still hashed and accounted for)."""
    key, _ = split_ext(name)
    return key if key is not None else name


def _grouped(members: Iterator[TarMember]) -> Iterator[tuple[str, list[TarMember]]]:
    """(key, members) for consecutive members sharing a key, in tar order."""
    current_key: str | None = None
    current: list[TarMember] = []
    for member in members:
        key = member_key(member.name)
        if key != current_key and current:
            yield current_key or "", current
            current = []
        current_key = key
        current.append(member)
    if current:
        yield current_key or "", current


def _kind_reason(member: TarMember) -> str | None:
    if member.kind == "file":
        return None
    target = f" to {display_name(member.linkname)}" if member.linkname else ""
    return f"not_a_file: {member.kind}{target}"[:200]


def _gunzipped(member: TarMember) -> bytes | None:
    """A `.gz` member's content, as webdataset's reader yields it before decoding."""
    if member.data is None or not member.name.endswith(".gz"):
        return None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(member.data)) as handle:
            data, streamed = read_bounded(handle, MAX_MEMBER_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    return data if streamed is None else None


def _member_json(members: list[TarMember]) -> tuple[dict[str, Any], str | None]:
    """The key's `.json` member as a dict, and a note when it is unusable."""
    raw = next((m.data for m in members if m.name.endswith(".json") and m.data), None)
    return metadata_json(raw, ".json member")


def _holds_bytes(field_type: pa.DataType) -> bool:
    if pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
        return True
    if pa.types.is_struct(field_type):
        return any(_holds_bytes(field_type.field(i).type) for i in range(field_type.num_fields))
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type):
        return _holds_bytes(field_type.value_type)
    return False


def _read_side_parquet(tar_url: str) -> dict[str, dict[str, Any]]:
    """img2dataset's per-shard parquet, keyed by key; empty when there is none."""
    for suffix in TAR_SUFFIXES:
        if tar_url.endswith(suffix):
            side_url = tar_url[: -len(suffix)] + ".parquet"
            break
    else:
        return {}
    fs, path = fsspec.core.url_to_fs(side_url)
    if not fs.exists(path):
        return {}
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            # A side file is copied into a cleaned copy as metadata, unhashed: it may hold
            # no bytes (image or otherwise) that nobody scanned.
            binary = [
                f.name
                for f in parquet.schema_arrow
                if _holds_bytes(f.type) and f.name not in SIDE_TEXT_COLUMNS
            ]
            if binary:
                raise InputError(
                    f"{side_url}: side parquet has a bytes column ({binary[0]}); a cleaned "
                    "copy would carry it unscanned: scan it as a parquet source of its own"
                )
            columns = [c for c in SIDE_COLUMNS if c in parquet.schema_arrow.names]
            if "key" not in columns:
                return {}
            table = parquet.read(columns=columns)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{side_url}: unreadable side parquet ({exc})") from None
    rows = table.to_pylist()
    found = {}
    for row in rows:
        key, _ = as_text(row.get("key"))
        if key is not None:
            found[key] = row
    return found


# How a shard is written again without removed keys (`clean`).


def side_urls(tar_url: str) -> tuple[str, str] | None:
    """img2dataset's side files for a tar: (`NNNNN.parquet`, `NNNNN_stats.json`)."""
    for suffix in TAR_SUFFIXES:
        if tar_url.endswith(suffix):
            stem = tar_url[: -len(suffix)]
            return f"{stem}.parquet", f"{stem}_stats.json"
    return None


def _exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))


def _sibling(target: Path, url: str) -> Path:
    return target.with_name(url.rsplit("/", 1)[-1])


def write_webdataset_shard(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    """The tar without the removed keys' members, and its side files to match.

    A tar is copied whole only when nothing goes and it holds nothing but files and
    folders, and only when its bytes are those the scan hashed; otherwise it is
    rewritten member by member, each member checked against the manifest."""
    target = dest_root / shard.name
    written = WrittenShard()
    sides = side_urls(shard.path)
    side_parquet, side_stats = sides if sides else (None, None)
    present = [u for u in (side_parquet, side_stats) if u and _exists(u)]
    plain = all(None not in hashes for hashes in contents.members.values())
    if not any_removed and not drop_empty and plain and contents.file_sha256:
        copy_file(shard.path, target, link=link, sha256=contents.file_sha256)
        written.files.append(shard.name)
        for url in present:
            copy_file(url, _sibling(target, url), link=link)
            written.files.append(str(_sibling(target, url).relative_to(dest_root)))
        written.copied_whole = True
        return written
    try:
        with atomic_path(target) as tmp:
            _filter_tar(shard, tmp, removed, written, contents)
            if drop_empty and written.keys_kept == 0:
                raise DropShard
    except DropShard:
        written.dropped_empty = True
        return written
    written.files.append(shard.name)
    removed_rows: list[dict[str, Any]] = []
    if side_parquet in present:
        removed_rows = _filter_side_parquet(side_parquet, _sibling(target, side_parquet), removed)
        written.files.append(str(_sibling(target, side_parquet).relative_to(dest_root)))
    if side_stats in present:
        _rewrite_stats(side_stats, _sibling(target, side_stats), removed_rows, written)
        written.files.append(str(_sibling(target, side_stats).relative_to(dest_root)))
    return written


def _filter_tar(
    shard: ShardRef,
    tmp: Path,
    removed: Container[str],
    written: WrittenShard,
    contents: ShardContents,
) -> None:
    """Stream members from source to output, skipping whole removed keys.

    Each kept member keeps its tar header (name, mode, mtime, owner) and its bytes, so a
    training reader sees exactly what it saw before, minus the removed samples. Every
    member must have a manifest row and its bytes the SHA-256 that row holds. Links are
    kept only when they point at a member already kept; FIFOs and devices never are."""

    src_url = shard.path
    gz = src_url.endswith(GZIP_SUFFIXES)
    kept_keys: set[str] = set()
    removed_keys: set[str] = set()
    kept_files: set[str] = set()
    try:
        with (
            fsspec.open(src_url, "rb") as raw,
            open(tmp, "wb") as out_raw,
            # mtime=0: the same input always gives the same bytes, so a resume is identical
            gzip.GzipFile(filename="", mode="wb", fileobj=out_raw, mtime=0)
            if gz
            else out_raw as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            hashing = HashingReader(raw)
            stream: Any = gzip.GzipFile(fileobj=hashing, mode="rb") if gz else hashing  # type: ignore[call-overload]  # read forward only: never seeks
            with tarfile.open(fileobj=stream, mode="r|") as source:
                for member in source:
                    scanned = contents.take(shard, member.name)
                    key = display_name(member_key(member.name))
                    if key in removed:
                        written.members_removed += 1
                        removed_keys.add(key)
                        continue
                    if not _keep_member(member, kept_files):
                        written.members_dropped += 1
                        continue
                    kept_keys.add(key)
                    if member.isreg():
                        reader = HashingReader(source.extractfile(member))
                        tar.addfile(member, reader)
                        if reader.digest.digest() != scanned:
                            raise changed_since_scan(
                                f"{src_url} (member {display_name(member.name)})"
                            )
                        kept_files.add(member.name)
                    else:
                        tar.addfile(member)
            hashing.drain()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InputError(f"{src_url}: not a readable tar shard ({exc})") from None
    if contents.file_sha256 and hashing.digest.hexdigest() != contents.file_sha256:
        raise changed_since_scan(src_url)
    written.keys_kept = len(kept_keys)
    written.keys_removed = len(removed_keys)


def _gzip_writer(raw: Any) -> gzip.GzipFile:
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)


def _keep_member(member: tarfile.TarInfo, kept_files: set[str]) -> bool:
    """Folders and files are kept; a link only when it points at a file already kept
    in this tar (so it can never reach a removed member or anything outside)."""
    if member.isreg() or member.isdir():
        return True
    if member.islnk():
        return member.linkname in kept_files
    if member.issym():
        if member.linkname.startswith("/"):
            return False
        target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
        return target in kept_files
    return False  # FIFOs, devices and anything else: no bytes of ours to hand out


def _filter_side_parquet(
    src_url: str, target: Path, removed: Container[str]
) -> list[dict[str, Any]]:
    """img2dataset's per-shard parquet without the removed keys' rows (one row per key,
    small): returns the removed rows' status columns so the stats can be corrected."""
    try:
        with fsspec.open(src_url, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            table = parquet.read()
            codec, row_group = parquet_codec(parquet.metadata), parquet_row_group(parquet.metadata)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{src_url}: unreadable side parquet ({exc})") from None
    if "key" not in table.column_names:
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, row_group_size=row_group, compression=codec)
        return []
    keys = table.column("key").to_pylist()
    drop = [k is not None and str(k) in removed for k in keys]
    columns = [c for c in ("status", "error_message") if c in table.column_names]
    removed_rows = table.filter(pa.array(drop)).select(columns).to_pylist()
    with atomic_path(target) as tmp:
        kept = table.filter(pc.invert(pa.array(drop)))
        pq.write_table(kept, tmp, row_group_size=row_group, compression=codec)
    return removed_rows


def _rewrite_stats(
    src_url: str, target: Path, removed_rows: list[dict[str, Any]], written: WrittenShard
) -> None:
    """img2dataset's `_stats.json` with its counts corrected for the removed keys.

    Without a side parquet we know only that removed tar keys were successes."""
    try:
        with fsspec.open(src_url, "rb") as handle:
            stats = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise InputError(f"{src_url}: unreadable stats file ({exc})") from None
    if not isinstance(stats, dict):
        raise InputError(f"{src_url}: stats file is not a JSON object")
    rows = removed_rows or [{"status": "success"}] * written.keys_removed
    status_dict = stats.get("status_dict")
    for row in rows:
        status = row.get("status") or "success"
        _decrement(stats, "count")
        if status == "success":
            _decrement(stats, "successes")
        elif status in ("failed_to_download", "failed_to_resize"):
            _decrement(stats, status)
        if isinstance(status_dict, dict):
            label = "success" if status == "success" else row.get("error_message") or status
            _decrement(status_dict, label)
            if status_dict.get(label) == 0:
                del status_dict[label]
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(stats, indent=4))


def _decrement(counts: dict[str, Any], name: str) -> None:
    if isinstance(counts.get(name), int) and counts[name] > 0:
        counts[name] -= 1


class WebDataset(Format):
    """WebDataset tar shards (img2dataset's output, side files and all)."""

    name = "webdataset"
    reader = WebDatasetSource
    suffixes = TAR_SUFFIXES
    noun = "tar shard"
    rewriter = staticmethod(write_webdataset_shard)
    carries_cards = True
    data_files_suffix = ".tar"
    croissant_parquet = "img2dataset's side parquet beside each tar"
