"""WebDataset tar shards, including img2dataset output with its side files.

Facts of the img2dataset layout we respect: tar members are in download-completion
order, not key order; failed downloads are absent from the tar but present in the shard's
`.parquet` with their status, and become manifest rows with no bytes; its `sha256`/`md5`
columns hash the original download and are kept as upstream columns, never as ours.
Members are grouped into keys exactly as webdataset groups them (see `split_ext`).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import pyarrow.parquet as pq
from webdataset.tariterators import tar_file_iterator

from clearset.errors import InputError
from clearset.sources.base import (
    Item,
    ShardRef,
    file_shards,
    is_image_ext,
    normalise_hex,
    split_ext,
)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SIDE_COLUMNS = ("key", "url", "status", "error_message", "sha256", "md5")


def _raise(exc: Exception) -> bool:
    raise exc


@dataclass
class WebDatasetSource:
    kind: ClassVar[str] = "webdataset"
    url: str

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    def shards(self) -> list[ShardRef]:
        return file_shards(self.url, TAR_SUFFIXES, "shard")

    def read_shard(self, shard: ShardRef) -> Iterator[Item]:
        side = _read_side_parquet(shard.path)
        seen: set[str] = set()
        position = 0
        for key, members in _grouped_members(shard.path):
            seen.add(key)
            meta = _member_json(members)
            row = side.get(key, {})
            names = tuple(f"{key}.{ext}" for ext in members)
            images = [ext for ext in members if is_image_ext(ext)]
            common = {
                "key": key,
                "shard": shard.name,
                "members": names,
                "url": row.get("url") or meta.get("url"),
                "upstream_sha256": normalise_hex(row.get("sha256") or meta.get("sha256")),
                "upstream_md5": normalise_hex(row.get("md5") or meta.get("md5")),
                "upstream_status": row.get("status") or meta.get("status"),
            }
            if not images:
                yield Item(
                    position=position,
                    member=None,
                    data=None,
                    missing_reason="no_image: no image member for this key",
                    **common,
                )
                position += 1
            for ext in images:
                yield Item(position=position, member=f"{key}.{ext}", data=members[ext], **common)
                position += 1
        # Keys the side file knows but the tar lacks: failed downloads, mostly.
        for key, row in side.items():
            if key in seen:
                continue
            status = row.get("status")
            why = row.get("error_message") or "absent from the tar"
            yield Item(
                key=key,
                shard=shard.name,
                position=position,
                members=(),
                member=None,
                data=None,
                url=row.get("url"),
                upstream_sha256=normalise_hex(row.get("sha256")),
                upstream_md5=normalise_hex(row.get("md5")),
                upstream_status=status,
                missing_reason=f"not_in_shard: upstream status {status}, {why}"[:200],
            )
            position += 1


def _grouped_members(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for consecutive members sharing a key, in tar order."""
    current_key: str | None = None
    current: dict[str, bytes] = {}
    try:
        with fsspec.open(url, "rb", compression="infer") as stream:
            for member in tar_file_iterator(stream, handler=_raise):
                key, ext = split_ext(member["fname"])
                if key is None or ext is None:
                    continue
                if key != current_key:
                    if current_key is not None:
                        yield current_key, current
                    current_key, current = key, {}
                if ext in current:
                    # webdataset would refuse this sample; we keep the first copy and
                    # hash the second as its own member so nothing goes unscanned.
                    ext = f"dup{len(current)}.{ext}"
                current[ext] = member["data"]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{url}: not a readable tar shard ({exc})") from None
    if current_key is not None:
        yield current_key, current


def _member_json(members: dict[str, bytes]) -> dict[str, Any]:
    raw = members.get("json")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


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
            columns = [c for c in SIDE_COLUMNS if c in parquet.schema_arrow.names]
            if "key" not in columns:
                return {}
            table = parquet.read(columns=columns)
    except (OSError, ValueError) as exc:
        raise InputError(f"{side_url}: unreadable side parquet ({exc})") from None
    rows = table.to_pylist()
    return {str(row["key"]): row for row in rows if row.get("key") is not None}
