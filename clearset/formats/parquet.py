"""Parquet files: Hugging Face `datasets` image columns, raw bytes, or URLs only.

An image column is found by type: a `struct<bytes: binary, path: string>` (the Hugging
Face Image feature) or a binary column with an image-like name; `image_column` names it
outright. A parquet with no image column at all (LAION-style metadata: URL, caption,
md5) is still a source: its rows carry no bytes, and are screened by the hashes and URLs
they carry, which is how Re-LAION-5B was filtered. Rows are streamed in batches.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.atomic import atomic_path
from clearset.errors import InputError, OutputError
from clearset.formats.base import (
    Format,
    Item,
    OpenOptions,
    ShardRef,
    Source,
    absolute_url,
    as_text,
    file_shards,
    normalise_hex,
    original_size,
)
from clearset.formats.folder import is_local_fs, is_side_file, read_file
from clearset.formats.rewriting import (
    DropShard,
    ShardContents,
    WrittenShard,
    changed_since_scan,
    copy_file,
)

IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes",
                      "video", "mp4", "video_bytes")  # fmt: skip
KEY_COLUMN_NAMES = ("key", "__key__", "id", "uid", "image_id")
URL_COLUMN_NAMES = ("url", "URL", "image_url")
SHA256_COLUMN_NAMES = ("sha256", "SHA256")
MD5_COLUMN_NAMES = ("md5", "MD5")
STATUS_COLUMN_NAMES = ("status",)
ORIGINAL_SIZE_COLUMNS = ("original_width", "original_height")
BATCH_ROWS = 256


@dataclass
class ParquetSource:
    kind: ClassVar[str] = "parquet"
    url: str
    image_column: str | None = None
    # Where relative paths of path-only Image cells are resolved (default: the folder
    # of the parquet file that names them, as `datasets` resolves a repository's files).
    base_dir: str | None = None

    def spec(self) -> dict[str, Any]:
        spec = {"kind": self.kind, "url": self.url, "image_column": self.image_column}
        if self.base_dir is not None:
            spec["base_dir"] = self.base_dir
        return spec

    def shards(self) -> list[ShardRef]:
        refs = file_shards(self.url, (".parquet",), "parquet file")
        return [r for r in refs if not is_side_parquet(r.path)] or refs

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        if record is not None:
            record.update(file_digest(shard.path))
        base = self.base_dir or shard.path.rsplit("/", 1)[0]
        try:
            with fsspec.open(shard.path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                schema = parquet.schema_arrow
                image = find_image_column(schema, self.image_column, shard.path)
                key_col = _first_present(schema, KEY_COLUMN_NAMES)
                url_col = _first_present(schema, URL_COLUMN_NAMES)
                sha_col = _first_present(schema, SHA256_COLUMN_NAMES)
                md5_col = _first_present(schema, MD5_COLUMN_NAMES)
                status_col = _first_present(schema, STATUS_COLUMN_NAMES)
                wanted = [c for c in (image, key_col, url_col, sha_col, md5_col, status_col) if c]
                # img2dataset's parquet output records each picture's size before resizing.
                wanted += [c for c in ORIGINAL_SIZE_COLUMNS if image and c in schema.names]
                position = 0
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
                    for row in batch.to_pylist():
                        yield _item(
                            row,
                            shard,
                            position,
                            image,
                            key_col,
                            url_col,
                            sha_col,
                            md5_col,
                            status_col,
                            base,
                        )
                        position += 1
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{shard.path}: not a readable parquet file ({exc})") from None


def _item(
    row: dict[str, Any],
    shard: ShardRef,
    position: int,
    image: str | None,
    key_col: str | None,
    url_col: str | None,
    sha_col: str | None,
    md5_col: str | None,
    status_col: str | None,
    base: str,
) -> Item:
    key_value, _ = as_text(row.get(key_col)) if key_col else (None, False)
    key = key_value if key_value is not None else positional_key(shard.name, position)
    data: bytes | None = None
    member = image
    missing = None
    streamed = None
    if image is None:
        missing = "metadata_only: no image column"
    else:
        cell = row.get(image)
        if isinstance(cell, dict):
            data = cell.get("bytes")
            path = cell.get("path")
            if data is None and isinstance(path, str) and path:
                # A Hugging Face Image may point at a file instead of holding bytes: read
                # it where `datasets` would, so the picture is hashed all the same.
                member = f"{image}:{path}"
                data, streamed, missing = read_path_only(path, base)
        else:
            data = cell
        if isinstance(data, str):
            # A malformed cell (text where bytes belong) is still bytes in the file:
            # hash them so that nothing in a cleaned copy goes unhashed.
            data = data.encode("utf-8", "surrogateescape")
        if data is None and streamed is None and missing is None:
            missing = f"no_bytes: column {image!r} is empty"
    url, bad_url = as_text(row.get(url_col)) if url_col else (None, False)
    status, bad_status = as_text(row.get(status_col)) if status_col else (None, False)
    return Item(
        key=key,
        shard=shard.name,
        position=position,
        members=(image,) if image else (),
        member=member,
        data=data if streamed is None else None,
        url=url,
        upstream_sha256=normalise_hex(row.get(sha_col)) if sha_col else None,
        upstream_md5=normalise_hex(row.get(md5_col)) if md5_col else None,
        upstream_status=status,
        missing_reason=missing,
        streamed=streamed,
        note="bad_metadata: url or status is not text" if bad_url or bad_status else None,
        extra=original_size(row),
    )


def positional_key(shard_name: str, position: int) -> str:
    """The key of a row with no key of its own: its shard and position, so that keys stay
    unique across a run (positions repeat in every shard)."""
    return f"{shard_name}/{position:09d}"


def read_path_only(path: str, base: str) -> tuple[bytes | None, Any, str | None]:
    """(bytes, streamed hashes, missing reason) of the file a path-only cell names:
    an absolute path or URL as it is, a relative one against `base`."""
    url = path if "://" in path or path.startswith("/") else f"{base.rstrip('/')}/{path}"
    try:
        fs, local_path = fsspec.core.url_to_fs(url)
        data, streamed, kind = read_file(fs, local_path, is_local_fs(fs))
    except (InputError, OSError, ValueError, ImportError):
        return None, None, "path_only: the file the row names cannot be read"
    if kind != "file":
        return None, None, f"path_only: the row names a {kind}, not a file"
    return data, streamed, None


def is_side_parquet(url: str) -> bool:
    """img2dataset's per-shard metadata beside a `.tar` or a folder of the same stem."""
    fs, path = fsspec.core.url_to_fs(url)
    stem = path[: -len(".parquet")]
    if any(fs.exists(stem + suffix) for suffix in (".tar", ".tar.gz", ".tgz")):
        return True
    folder, _, name = path.rpartition("/")
    return is_side_file(fs, folder, name)


def file_digest(url: str) -> dict[str, Any]:
    """SHA-256 and size of a whole file, read once in blocks.

    A URL list's shards are runs of rows of one file, so every shard asks for the same
    file's digest: a local file unchanged since this process last read it (same inode,
    size, modification and change times) is not read again."""
    protocol, path = fsspec.core.split_protocol(url)
    if protocol in (None, "file", "local"):
        try:
            st = os.stat(path)
        except OSError:
            pass  # said by the read below, as for any other file
        else:
            # As git treats a "racily clean" index entry: a file changed within the last
            # moments may change again within the file system's timestamp granularity
            # without its times moving, so only an older file is trusted by its stat.
            settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS
            if settled:
                key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                return dict(_local_digest(url, key))
    return _read_digest(url)


#: How long after its last change a file's stat is trusted to tell a change (see above).
_SETTLED_NS = 2_000_000_000


@functools.lru_cache(maxsize=16)
def _local_digest(url: str, key: tuple[Any, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple(_read_digest(url).items())


def _read_digest(url: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    try:
        with fsspec.open(url, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise InputError(f"{url}: cannot read ({exc})") from None
    return {"file_sha256": digest.hexdigest(), "file_bytes": size}


def _first_present(schema: pa.Schema, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in schema.names:
            return name
    return None


def _is_image_struct(field_type: pa.DataType) -> bool:
    return pa.types.is_struct(field_type) and any(
        field_type.field(i).name == "bytes" for i in range(field_type.num_fields)
    )


def _is_binary(field_type: pa.DataType) -> bool:
    return pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type)


def find_image_column(schema: pa.Schema, given: str | None, where: str) -> str | None:
    """The column holding image bytes, or None for a metadata-only parquet."""
    if given is not None:
        if given not in schema.names:
            raise InputError(f"{where}: no column {given!r} (columns: {', '.join(schema.names)})")
        field_type = schema.field(given).type
        if not (_is_image_struct(field_type) or _is_binary(field_type)):
            raise InputError(f"{where}: column {given!r} holds {field_type}, not image bytes")
        return given
    structs = [f.name for f in schema if _is_image_struct(f.type)]
    if structs:
        return structs[0]
    for name in IMAGE_COLUMN_NAMES:
        if name in schema.names and _is_binary(schema.field(name).type):
            return name
    return None


# How a shard is written again without removed keys (`clean`).


#: Row-group size used for a parquet that has no row groups to copy the size from.
DEFAULT_ROW_GROUP = 1_000

#: Parquet codec names as metadata reports them -> as pyarrow's writer accepts them.
_CODECS = {"UNCOMPRESSED": "none", "LZ4_RAW": "lz4"}


def parquet_codec(metadata: pq.FileMetaData) -> str:
    if metadata.num_row_groups == 0 or metadata.num_columns == 0:
        return "zstd"
    codec = str(metadata.row_group(0).column(0).compression).upper()
    return _CODECS.get(codec, codec.lower())


def parquet_row_group(metadata: pq.FileMetaData) -> int:
    if metadata.num_row_groups == 0:
        return DEFAULT_ROW_GROUP
    return max(1, metadata.row_group(0).num_rows)


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
                raise DropShard
    except DropShard:
        written.dropped_empty = True
        return written
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{shard.path}: not a readable parquet file ({exc})") from None
    written.files.append(shard.name)
    return written


class Parquet(Format):
    """Parquet files: image bytes in a column, path-only Image cells, or URLs only."""

    name = "parquet"
    reader = ParquetSource
    suffixes = (".parquet",)
    noun = "parquet file"
    rewriter = staticmethod(write_parquet_shard)
    carries_cards = True
    data_files_suffix = ".parquet"
    croissant_parquet = "the cleaned parquet"
    captions_in = "column"

    def open(self, url: str, options: OpenOptions) -> Source:
        base_dir = options.base_dir
        if base_dir is not None:
            base_dir = absolute_url(base_dir)
        return ParquetSource(url=url, image_column=options.image_column, base_dir=base_dir)
