"""Parquet files: Hugging Face `datasets` image columns, raw bytes, or URLs only.

An image column is found by type: a `struct<bytes: binary, path: string>` (the Hugging
Face Image feature) or a binary column with an image-like name; `image_column` names it
outright. A parquet with no image column at all (LAION-style metadata: URL, caption,
md5) is still a source: its rows carry no bytes, and are screened by the hashes and URLs
they carry, which is how Re-LAION-5B was filtered. Rows are streamed in batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import InputError
from clearset.sources.base import (
    Item,
    ShardRef,
    file_shards,
    normalise_hex,
)

IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")
KEY_COLUMN_NAMES = ("key", "__key__", "id", "uid", "image_id")
URL_COLUMN_NAMES = ("url", "URL", "image_url")
SHA256_COLUMN_NAMES = ("sha256", "SHA256")
MD5_COLUMN_NAMES = ("md5", "MD5")
STATUS_COLUMN_NAMES = ("status",)
BATCH_ROWS = 256


@dataclass
class ParquetSource:
    kind: ClassVar[str] = "parquet"
    url: str
    image_column: str | None = None

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "image_column": self.image_column}

    def shards(self) -> list[ShardRef]:
        return file_shards(self.url, (".parquet",), "parquet file")

    def read_shard(self, shard: ShardRef) -> Iterator[Item]:
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
) -> Item:
    key = str(row[key_col]) if key_col and row.get(key_col) is not None else f"{position:09d}"
    data: bytes | None = None
    member = image
    missing = None
    if image is None:
        missing = "metadata_only: no image column"
    else:
        cell = row.get(image)
        if isinstance(cell, dict):
            data = cell.get("bytes")
            if data is None:
                # A Hugging Face Image may point at a file instead of holding bytes.
                missing = f"path_only: column {image!r} holds a path but no bytes"
                member = f"{image}:{cell.get('path')}" if cell.get("path") else image
        else:
            data = cell
        if data is None and missing is None:
            missing = f"no_bytes: column {image!r} is empty"
    return Item(
        key=key,
        shard=shard.name,
        position=position,
        members=(image,) if image else (),
        member=member,
        data=data,
        url=row.get(url_col) if url_col else None,
        upstream_sha256=normalise_hex(row.get(sha_col)) if sha_col else None,
        upstream_md5=normalise_hex(row.get(md5_col)) if md5_col else None,
        upstream_status=row.get(status_col) if status_col else None,
        missing_reason=missing,
    )


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
