"""The manifest: one parquet row per item a source holds, with every hash we computed.

A run's manifest is `RUN/manifest/<shard>.parquet`, one file per source shard, written
atomically; the folder holds nothing else (completion markers are in `RUN/markers/`), so
it loads as a parquet data set. Hashes are fixed-size binary columns (packed bytes, not
hex strings: outputs meant to leave the run, such as removals.parquet, use hex); query
them with DuckDB, e.g. `SELECT key, hex(pdq) FROM 'RUN/manifest/*.parquet'`. Columns
named `upstream_*` are hashes the source carried; they need not equal ours (img2dataset
hashes the original download, which differs from the stored bytes after re-encoding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import RunFolderError
from clearset.hashing import types

#: 2: the fetch columns (`http_status` ... `noai`), null for sources that are not fetched.
#: Version 1 files are read as version 2 with those columns null (`conform`).
#: 3: the video columns (`duration_s` ... `video_frames`), null for pictures; older files
#: are read with them null.
MANIFEST_VERSION = 3

# The columns before and after the hashes; the hashes' columns are the registry's
# (`clearset.hashing.types`), in its order: sha256, md5, sha1, then PDQ's.
_BEFORE_HASHES = (
    pa.field("key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("position", pa.int64(), nullable=False),
    pa.field("member", pa.string()),
    pa.field("members", pa.list_(pa.string())),
    pa.field("url", pa.string()),
    pa.field("size", pa.int64()),
)
_AFTER_HASHES = (
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("upstream_sha256", pa.string()),
        pa.field("upstream_md5", pa.string()),
        pa.field("upstream_status", pa.string()),
        # A fetched URL (`scan --fetch`): what the server answered, null otherwise. The
        # failure reason, when there is one, is in `reason` (`http_404`, `timeout`...).
        pa.field("http_status", pa.int16()),
        pa.field("content_type", pa.string()),
        pa.field("final_url", pa.string()),  # after redirects
        pa.field("fetch_attempts", pa.int16()),
        pa.field("fetch_ms", pa.int32()),  # first request to last byte, retries and waits in
        pa.field("first_byte_ms", pa.int32()),  # request to response headers, last attempt
        pa.field("noai", pa.bool_()),  # X-Robots-Tag said noai / noimageai
        # A video member (clearset.hashing.video), null otherwise; its vPDQ frames are
        # rows of RUN/frames/<shard>.parquet (FRAMES_SCHEMA), keyed by shard and position.
        pa.field("duration_s", pa.float64()),
        pa.field("frame_rate", pa.float64()),
        pa.field("codec", pa.string()),
        pa.field("rotation", pa.int16()),
        pa.field("video_frames", pa.int32()),  # frames hashed (vPDQ), not frames decoded
)  # fmt: skip

_schemas: dict[tuple[pa.Field, ...], pa.Schema] = {}

#: RUN/frames/<shard>.parquet: one row per hashed frame of every video of the shard (its
#: vPDQ), keyed to the video's manifest row by (`shard`, `position`, `member`).
FRAMES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("member", pa.string()),
        pa.field("sha256", pa.binary(32)),  # the video file's, as in its manifest row
        pa.field("frame_number", pa.int64(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("pdq", pa.binary(32), nullable=False),
        pa.field("quality", pa.int16(), nullable=False),
    ],
    metadata={"clearset.frames_version": "1"},
)


def manifest_schema() -> pa.Schema:
    """The manifest's schema, with a column set for every registered hash type."""
    hashes = types.manifest_fields()
    schema = _schemas.get(hashes)
    if schema is None:
        schema = pa.schema(
            [*_BEFORE_HASHES, *hashes, *_AFTER_HASHES],
            metadata={"clearset.manifest_version": str(MANIFEST_VERSION)},
        )
        _schemas[hashes] = schema
    return schema


def manifest_columns() -> tuple[str, ...]:
    return tuple(manifest_schema().names)


def __getattr__(name: str) -> Any:
    # MANIFEST_SCHEMA and COLUMNS follow the registry (a type registered after import
    # adds its column); `from ... import MANIFEST_SCHEMA` takes them as they are then.
    if name == "MANIFEST_SCHEMA":
        return manifest_schema()
    if name == "COLUMNS":
        return manifest_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Row statuses. `ok`: an image, every hash computed. `error`: bytes that should be an
#: image (by name or by content) but do not decode; crypto hashes still set. `missing`:
#: no bytes where an image should be (a failed download, a metadata-only row, a path
#: that cannot be read). `other`: a member that is no image (a caption, a .json, a link,
#: a folder entry): crypto hashes when it holds bytes, never decoded as a picture.
STATUS_OK, STATUS_ERROR, STATUS_MISSING, STATUS_OTHER = "ok", "error", "missing", "other"

#: How each row counts in a scan's accounting (`row_account`).
HASHED, UNREAD, UPSTREAM_FAILED, OTHER = "hashed", "unread", "upstream_failed", "other"


def row_account(row: dict[str, Any]) -> str:
    """`hashed` (an image, every hash), `unread` (an image we could not read or decode:
    these count against the scan), `upstream_failed` (a download the source itself
    records as failed: there never were bytes) or `other` (no image: accounted for by
    its crypto hashes or its kind)."""
    status = row["status"]
    if status == STATUS_OK:
        return HASHED
    if status == STATUS_OTHER:
        return OTHER
    if status == STATUS_MISSING and row.get("upstream_status") not in (None, "success"):
        return UPSTREAM_FAILED
    return UNREAD


class ManifestWriter:
    """Buffers rows and writes them to a parquet file in bounded row groups."""

    def __init__(self, path: Path, row_group: int) -> None:
        self._schema = manifest_schema()
        self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        # Rows as added, turned into columns once per row group (not once per row).
        self._rows: list[dict[str, Any]] = []
        self._row_group = row_group
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self._row_group:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            # Arrow reads each row's fields by the schema's names, absent ones as nulls.
            table = pa.Table.from_pylist(self._rows, schema=self._schema)
            self._writer.write_table(table)
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        self._writer.close()


def conform(table: pa.Table) -> pa.Table:
    """A manifest table in the current schema: columns an older version did not write
    (the fetch columns of version 1 files) are added as nulls."""
    schema = manifest_schema()
    for name in schema.names:
        if name not in table.column_names:
            field = schema.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)


def read_manifest_files(files: list[Path], columns: list[str] | None = None) -> pa.Table:
    """Manifest files concatenated in the order given (an empty table for none)."""
    if not files:
        schema = manifest_schema()
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()
    try:
        tables = [_read(f, columns) for f in files]
    except (OSError, pa.ArrowException) as exc:
        raise RunFolderError(f"unreadable manifest file ({exc})") from None
    return pa.concat_tables(tables)


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    """One manifest file, in the current schema whatever version wrote it."""
    present = pq.read_schema(path).names
    if columns is None:
        return conform(pq.read_table(path))
    table = pq.read_table(path, columns=[c for c in columns if c in present])
    for name in columns:
        if name not in present:
            field = manifest_schema().field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(columns)
