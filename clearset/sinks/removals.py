"""Removal lists and keep lists: applying one data set's removals to another copy of it.

`RUN/removals.parquet` names each removed item by key, shard, URL, the SHA-256 of the
bytes we hashed and the SHA-256 and MD5 the source itself recorded (`upstream_*`: all
lowercase hex), with the reason (a list name, or "undecodable"): identifiers only. Others
holding a copy of the same data set apply it with `apply_removals`, which removes every
key whose URL, or whose bytes' SHA-256 or MD5, is any of these, and writes the rest in
the source's own format. The upstream hashes are what find a metadata-only scan's
removals in a copy that holds the images under other URLs.

The other direction is a keep list: a newer release's metadata (Re-LAION-5B was
published this way, with no removal list). `--keep-list` keeps only items whose URL, or
one of whose hashes, the newer metadata holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import InputError
from clearset.sources.base import find_files, normalise_hex

REMOVALS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("member", pa.string()),
        pa.field("url", pa.string()),
        pa.field("sha256", pa.string()),  # hex of the stored bytes; null when none
        pa.field("reason", pa.string(), nullable=False),
        # The hashes the source carried (hex), e.g. a LAION-style parquet's own columns:
        # for a metadata-only scan they are all there is to find the item elsewhere by.
        pa.field("upstream_sha256", pa.string()),
        pa.field("upstream_md5", pa.string()),
    ]
)

#: Reasons other than a list name.
REASON_UNDECODABLE = "undecodable"
REASON_NOT_IN_KEEP_LIST = "not_in_keep_list"
REASON_REMOVAL_LIST = "removal_list"
#: A fetched URL list's row whose image could not be fetched (so was never hashed).
REASON_NOT_FETCHED = "not_fetched"

URL_COLUMNS = ("url", "URL", "image_url")
HASH_COLUMNS = ("sha256", "SHA256", "md5", "MD5", "hash", "upstream_sha256", "upstream_md5")


@dataclass(frozen=True)
class HashSet:
    """URLs and hex hashes to look items up in (a keep list or a removal list)."""

    urls: frozenset[str]
    hashes: frozenset[str]

    def holds(self, url: str | None, hashes: Iterable[str | None]) -> bool:
        if url and url in self.urls:
            return True
        return any(h in self.hashes for h in hashes if h)

    def __len__(self) -> int:
        return len(self.urls) + len(self.hashes)


#: Hex digits a hash column's values have (bytes: half as many), by column name.
HEX_LENGTHS = {
    "sha256": (64,), "SHA256": (64,), "upstream_sha256": (64,),
    "md5": (32,), "MD5": (32,), "upstream_md5": (32,),
    "hash": (32, 40, 64),
}  # fmt: skip


def check_removal_column(path: str, name: str, column: pa.ChunkedArray) -> None:
    """InputError naming the file, the column and the first bad row (from 1) unless every
    value of a URL column is text and every value of a hash column is hex of its length.
    The value is never quoted: a removal list names removed items.

    Without this a removal list of integers, or of hashes in another encoding, matched
    nothing and removed nothing, quietly: the copy kept what it was meant to lose."""
    lengths = HEX_LENGTHS.get(name)
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    binary = pa.types.is_binary(column.type) or pa.types.is_fixed_size_binary(column.type)
    if not (text or (lengths is not None and binary)):
        row = next((i for i, v in enumerate(column.to_pylist(), 1) if v is not None), None)
        if row is not None:
            kind = "hex text" if lengths is not None else "text"
            raise InputError(
                f"{path}: column {name} holds {column.type} values, not {kind} (first at row "
                f"{row}); a removal list matches by URL and hex hash"
            )
        return
    if lengths is None:
        return
    for row, value in enumerate(column.to_pylist(), 1):
        if value is None or (text and not value.strip()):
            continue
        digits = value.hex() if binary else normalise_hex(value)
        if digits is None or len(digits) not in lengths:
            raise InputError(
                f"{path}: column {name}, row {row}: not a hex hash of "
                f"{' or '.join(str(n) for n in lengths)} digits"
            )


def _parquet_columns(
    url: str, wanted: tuple[str, ...], *, strict: bool = False
) -> dict[str, list[Any]]:
    fs, _, files = find_files(url, (".parquet",), "file")
    values: dict[str, list[Any]] = {}
    for path in files:
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                columns = [c for c in wanted if c in parquet.schema_arrow.names]
                if not columns:
                    raise InputError(
                        f"{path}: has none of the columns {', '.join(wanted)} to match items by"
                    )
                table = parquet.read(columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable parquet file ({exc})") from None
        for name in columns:
            if strict:
                check_removal_column(path, name, table.column(name))
            values.setdefault(name, []).extend(table.column(name).to_pylist())
    return values


def load_hash_set(url: str, *, strict: bool = False) -> HashSet:
    """URLs and hashes from parquet metadata (a newer release, or a removal list).

    `strict` (a removal list): every URL is text and every hash hex, or InputError. A keep
    list is newer metadata as published, whose other columns may hold anything (LAION's
    `hash` is an integer): values that are no hex hash are not looked up."""
    values = _parquet_columns(url, URL_COLUMNS + HASH_COLUMNS, strict=strict)
    urls = {str(v) for name in URL_COLUMNS for v in values.get(name, []) if v}
    hashes = {normalise_hex(v) for name in HASH_COLUMNS for v in values.get(name, []) if v}
    return HashSet(urls=frozenset(urls), hashes=frozenset(h for h in hashes if h))


def row_hashes(row: dict[str, Any]) -> list[str | None]:
    """A manifest row's hashes as hex, ours and upstream, to look up in a HashSet."""
    found: list[str | None] = []
    for name in ("sha256", "md5"):
        value = row.get(name)
        found.append(value.hex() if isinstance(value, bytes) else normalise_hex(value))
    found += [normalise_hex(row.get("upstream_sha256")), normalise_hex(row.get("upstream_md5"))]
    return found


def item_hashes(item: Any) -> list[str | None]:
    """Hex SHA-256 and MD5 of an item's stored bytes (streamed or held), or none."""
    if item.streamed is not None:
        return [item.streamed.sha256.hex(), item.streamed.md5.hex()]
    if item.data is None:
        return []
    data = item.data
    return [hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()]


def write_removals(table: pa.Table, path: Path) -> None:
    from clearset.sinks.atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table.cast(REMOVALS_SCHEMA), tmp, compression="zstd")


def read_removals(url: str) -> tuple[HashSet, int]:
    """The URLs and hashes (ours and upstream) of a removal list, checked to be one, and
    its number of rows."""
    try:
        with fsspec.open(url, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
    except FileNotFoundError:
        raise InputError(f"{url}: no such removal list") from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{url}: not a readable parquet file ({exc})") from None
    if not {"url", "sha256"} <= set(names):
        raise InputError(f"{url}: not a clearset removal list (needs url and sha256 columns)")
    return load_hash_set(url, strict=True), rows


def _url_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(url, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def apply_shard(source: Any, shard: Any, dest: str, removals_path: str | None, options: Any) -> Any:
    """Decide one shard's removals from its items' URLs and bytes, then clean it."""
    from clearset.sinks.clean import clean_shard, dest_done_file, done_summary, keep_set
    from clearset.sinks.writers import ShardContents

    if dest_done_file(Path(dest), shard.id).exists():
        return done_summary(Path(dest), shard)
    remove = keep_set(removals_path) if removals_path else None
    keep = keep_set(options.keep_list) if options.keep_list else None
    reasons: dict[str, set[str]] = {}
    held: dict[str, bool] = {}
    read: dict[str, Any] = {}
    contents = ShardContents()
    for item in source.read_shard(shard, read):
        own = item_hashes(item)
        hashes = own + [item.upstream_sha256, item.upstream_md5]
        if item.member is not None and (own or item.status):
            # What the writer may copy: exactly the members read here, with these bytes.
            sha256 = bytes.fromhex(own[0]) if own and own[0] else None
            contents.members.setdefault(item.member, []).append(sha256)
        if remove is not None and remove.holds(item.url, hashes):
            reasons.setdefault(item.key, set()).add(REASON_REMOVAL_LIST)
        if keep is not None:
            held[item.key] = held.get(item.key, False) or keep.holds(item.url, hashes)
    for key, present in held.items():
        if not present:
            reasons.setdefault(key, set()).add(REASON_NOT_IN_KEEP_LIST)
    removed = {key: ", ".join(sorted(names)) for key, names in reasons.items()}
    contents.file_sha256 = read.get("file_sha256")
    return clean_shard(source.kind, shard, Path(dest), removed, options, contents=contents)
