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

import gzip
import hashlib
import json
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.errors import InputError, OutputError
from clearset.runfolder import file_sha256
from clearset.sinks.atomic import atomic_path
from clearset.sources.base import ShardRef, display_name
from clearset.sources.parquet import KEY_COLUMN_NAMES, positional_key
from clearset.sources.webdataset import TAR_SUFFIXES

#: Row-group size used for a parquet that has no row groups to copy the size from.
DEFAULT_ROW_GROUP = 1_000

#: Parquet codec names as metadata reports them -> as pyarrow's writer accepts them.
_CODECS = {"UNCOMPRESSED": "none", "LZ4_RAW": "lz4"}


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


class _DropShard(Exception):
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
                raise _DropShard
    except _DropShard:
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
    from clearset.sources.webdataset import GZIP_SUFFIXES, HashingReader, member_key

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


def parquet_codec(metadata: pq.FileMetaData) -> str:
    if metadata.num_row_groups == 0 or metadata.num_columns == 0:
        return "zstd"
    codec = str(metadata.row_group(0).column(0).compression).upper()
    return _CODECS.get(codec, codec.lower())


def parquet_row_group(metadata: pq.FileMetaData) -> int:
    if metadata.num_row_groups == 0:
        return DEFAULT_ROW_GROUP
    return max(1, metadata.row_group(0).num_rows)


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


def parquet_keys(
    table: pa.Table, key_column: str | None, offset: int, shard_name: str
) -> list[str]:
    """Row keys exactly as `ParquetSource` names items: the key column, else the shard
    and position."""
    if key_column is None:
        return [positional_key(shard_name, offset + i) for i in range(table.num_rows)]
    values = table.column(key_column).to_pylist()
    return [
        str(v) if v is not None else positional_key(shard_name, offset + i)
        for i, v in enumerate(values)
    ]


def write_parquet_shard(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    """The parquet file without the removed rows, streamed one row group at a time.

    The schema (with its `huggingface` metadata, so `datasets` still sees an Image
    feature), the codec and the row-group size are the source's own. The file must
    still be the one the scan hashed, byte for byte."""
    target = dest_root / shard.name
    written = WrittenShard()
    if not contents.file_sha256:
        raise OutputError(f"{shard.path}: the scan recorded no digest of this file; scan again")
    if not any_removed and not drop_empty:
        copy_file(shard.path, target, link=link, sha256=contents.file_sha256)
        written.files.append(shard.name)
        written.copied_whole = True
        return written
    from clearset.sources.parquet import file_digest

    if file_digest(shard.path)["file_sha256"] != contents.file_sha256:
        raise changed_since_scan(shard.path)
    try:
        with fsspec.open(shard.path, "rb") as handle, atomic_path(target) as tmp:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            key_column = next((c for c in KEY_COLUMN_NAMES if c in schema.names), None)
            row_group = parquet_row_group(parquet.metadata)
            writer = pq.ParquetWriter(tmp, schema, compression=parquet_codec(parquet.metadata))
            pending: list[pa.Table] = []
            buffered = offset = 0
            try:
                for index in range(parquet.num_row_groups):
                    table = parquet.read_row_group(index)
                    keys = parquet_keys(table, key_column, offset, shard.name)
                    offset += table.num_rows
                    keep = pa.array([k not in removed for k in keys], pa.bool_())
                    kept = table.filter(keep)
                    written.members_removed += table.num_rows - kept.num_rows
                    written.keys_kept += kept.num_rows
                    pending.append(kept)
                    buffered += kept.num_rows
                    # Re-cut into the source's row-group size after removals.
                    while buffered >= row_group:
                        merged = pa.concat_tables(pending)
                        writer.write_table(merged.slice(0, row_group), row_group_size=row_group)
                        rest = merged.slice(row_group)
                        pending, buffered = [rest], rest.num_rows
                if buffered:
                    writer.write_table(pa.concat_tables(pending), row_group_size=row_group)
            finally:
                writer.close()
            if drop_empty and written.keys_kept == 0:
                raise _DropShard
    except _DropShard:
        written.dropped_empty = True
        return written
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{shard.path}: not a readable parquet file ({exc})") from None
    written.files.append(shard.name)
    return written


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
    from clearset.sources.folder import file_key, is_side_file

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


#: Where a URL list's shards leave their kept rows until every shard of the file is in.
URL_PARTS_DIR = "parts"
#: A finished part of a URL list's cleaned copy: its first and end row.
_PART_NAME = re.compile(r"(\d{12})-(\d{12})\.part")


def finished_parts(parts: Path) -> list[tuple[int, int, Path]]:
    """(first row, end row, file) of each finished part in ``parts``, in order: not
    another worker's part still being written under an atomic write's temporary name."""
    found = ((_PART_NAME.fullmatch(p.name), p) for p in parts.iterdir())
    return sorted((int(m[1]), int(m[2]), p) for m, p in found if m)


def write_url_shard(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    """A URL list's rows [start, end) without the removed keys, in the list's format.

    A fetched URL list's shard is a run of rows of one file, so each shard writes its
    kept rows as a part (parquet rows, or the records' own text) under the destination's
    state folder, and the shard that finds every part of its file present writes the
    file: the source's schema and codec, or its header and records byte for byte."""
    from clearset.sources.base import shard_id_for
    from clearset.sources.fetch import (
        TEXT_ENCODING,
        TEXT_ERRORS,
        json_columns,
        row_key,
        shard_file_name,
        text_records,
        url_format,
    )
    from clearset.sources.folder import STATE_DIR_NAME
    from clearset.sources.parquet import file_digest

    del link  # rows are rewritten, never linked
    if not contents.file_sha256 or shard.rows is None:
        raise OutputError(f"{shard.path}: the scan recorded no digest of this file; scan again")
    if file_digest(shard.path)["file_sha256"] != contents.file_sha256:
        raise changed_since_scan(shard.path)
    name = shard_file_name(shard)
    fmt = url_format(shard.path)
    start, end = shard.rows
    # Kept rows (metadata, never image bytes) wait here for the file's other shards.
    parts = dest_root / STATE_DIR_NAME / URL_PARTS_DIR / shard_id_for(name)
    parts.mkdir(parents=True, exist_ok=True)
    part = parts / f"{start:012d}-{end:012d}.part"
    written = WrittenShard()
    if fmt == "parquet":
        with fsspec.open(shard.path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
            key_column = next((c for c in KEY_COLUMN_NAMES if c in schema.names), None)
            taken: list[pa.Table] = []
            offset = 0
            for batch in parquet.iter_batches(batch_size=4096):
                lo, hi = max(start, offset), min(end, offset + batch.num_rows)
                if lo < hi:
                    table = pa.Table.from_batches([batch.slice(lo - offset, hi - lo)], schema)
                    keys = parquet_keys(table, key_column, lo, name)
                    kept = table.filter(pa.array([k not in removed for k in keys], pa.bool_()))
                    written.keys_kept += kept.num_rows
                    written.members_removed += table.num_rows - kept.num_rows
                    taken.append(kept)
                offset += batch.num_rows
                if offset >= end:
                    break
        with atomic_path(part) as tmp:
            pq.write_table(pa.concat_tables(taken) if taken else schema.empty_table(), tmp)
    else:
        # From the shard's own offset where the plan has one: not every row before it.
        header, columns, records = text_records(
            shard.path, fmt, None, need_url=False, offset=shard.offset
        )
        first = start if shard.offset is not None else 0
        key_column = columns.key if columns else None
        if fmt == "jsonl":
            key_column = json_columns(shard.path, None, need_url=False).key
        with (
            atomic_path(part) as tmp,
            open(tmp, "w", encoding=TEXT_ENCODING, errors=TEXT_ERRORS, newline="") as out,
        ):
            for position, (raw, fields) in enumerate(records, first):
                if position >= end:
                    records.close()  # type: ignore[attr-defined]
                    break
                if position < start:
                    continue
                if row_key(fields, key_column, name, position) in removed:
                    written.members_removed += 1
                    continue
                written.keys_kept += 1
                out.write(raw)
    written.keys_removed = written.members_removed
    if fmt == "parquet":
        with fsspec.open(shard.path, "rb") as handle:
            total = pq.ParquetFile(handle).metadata.num_rows
    elif shard.file_rows is not None:
        total = shard.file_rows
    else:
        total = sum(1 for _ in text_records(shard.path, fmt, None, need_url=False)[2])
    found = finished_parts(parts)
    covered = 0
    for lo, hi, _ in found:
        if lo != covered:
            return written  # another shard of this file is not written yet
        covered = hi
    if covered != total:
        return written
    target = dest_root / name
    if fmt == "parquet":
        with fsspec.open(shard.path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
        with atomic_path(target) as tmp:
            writer = pq.ParquetWriter(tmp, schema, compression=parquet_codec(meta))
            try:
                for _, _, path in found:
                    writer.write_table(pq.read_table(path).cast(schema), parquet_row_group(meta))
            finally:
                writer.close()
    else:
        with (
            atomic_path(target) as tmp,
            open(tmp, "w", encoding=TEXT_ENCODING, errors=TEXT_ERRORS, newline="") as out,
        ):
            out.write(header)
            for _, _, path in found:
                with open(path, encoding=TEXT_ENCODING, errors=TEXT_ERRORS, newline="") as src:
                    while block := src.read(1 << 20):
                        out.write(block)
    written.files.append(name)
    return written


WRITERS = {
    "webdataset": write_webdataset_shard,
    "parquet": write_parquet_shard,
    "folder": write_folder_shard,
    "fetch": write_url_shard,
}
