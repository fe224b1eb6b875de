"""URL-only data sets (LAION-style metadata): fetch each image into memory, keep nothing.

A `FetchSource` reads URL lists — parquet, CSV, TSV, JSON lines, or a plain list of one
URL a line — and its shards are runs of `shard_rows` rows of one file. Reading a shard
fetches its URLs (`clearset.formats.fetching.fetcher`) and yields each as an `Item` whose `data`
is the body the server sent, held in memory only until the scan has hashed it; no byte
of it is ever written. What the server answered goes into the manifest's fetch columns.

Row keys are the file's key column (`key`, `id`, ...) or the file's name and row number,
so they do not depend on the shard size, and a clean (`clearset.formats.rewriting`) finds
the same rows again.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
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
    as_text,
    check_unique,
    find_files,
    normalise_hex,
    protocol_url,
    relative_name,
    shard_id_for,
)
from clearset.formats.fetching.fetcher import FetchSettings, fetch_stream, url_host
from clearset.formats.folder import STATE_DIR_NAME
from clearset.formats.parquet import (
    KEY_COLUMN_NAMES,
    MD5_COLUMN_NAMES,
    SHA256_COLUMN_NAMES,
    URL_COLUMN_NAMES,
    file_digest,
    parquet_codec,
    parquet_keys,
    parquet_row_group,
    positional_key,
)
from clearset.formats.rewriting import ShardContents, WrittenShard, changed_since_scan
from clearset.formats.webdataset import TAR_SUFFIXES
from clearset.hashing import hash_bytes

#: Rows of a URL list in one shard: the unit of resume and of work across workers.
FETCH_SHARD_ROWS = 10_000

#: URL list formats by file suffix; any other file is a plain list of one URL a line.
FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".txt": "list",
}
TEXT_ENCODING = "utf-8"
# Undecodable bytes survive a read and a write unchanged, so a clean keeps them.
TEXT_ERRORS = "surrogateescape"


def url_format(path: str) -> str:
    lower = path.lower()
    return next((kind for suffix, kind in FORMATS.items() if lower.endswith(suffix)), "list")


@dataclass(frozen=True)
class UrlRow:
    """One row of a URL list: its number in the file, key, URL and upstream hashes."""

    position: int
    key: str
    url: str | None
    upstream_sha256: str | None = None
    upstream_md5: str | None = None
    note: str | None = None


@dataclass
class Columns:
    """Which columns of a URL list hold what (None where absent)."""

    url: str | None
    key: str | None = None
    sha256: str | None = None
    md5: str | None = None

    def wanted(self) -> list[str]:
        return [c for c in (self.url, self.key, self.sha256, self.md5) if c]


def _pick(names: list[str], given: str | None, where: str, need_url: bool = True) -> Columns:
    if not need_url:
        url = given if given in names else None
    elif given is not None:
        if given not in names:
            raise InputError(
                f"{where}: no column {given!r} for --url-column (columns: {', '.join(names)})"
            )
        url = given
    else:
        url = next((n for n in URL_COLUMN_NAMES if n in names), None)
        if url is None:
            raise InputError(
                f"{where}: no URL column (looked for {', '.join(URL_COLUMN_NAMES)}; columns: "
                f"{', '.join(names) or 'none'}); name it with --url-column"
            )
    return Columns(
        url=url,
        key=next((n for n in KEY_COLUMN_NAMES if n in names), None),
        sha256=next((n for n in SHA256_COLUMN_NAMES if n in names), None),
        md5=next((n for n in MD5_COLUMN_NAMES if n in names), None),
    )


class _Lines:
    """A text file's lines, remembering the raw text of the lines taken since the last
    `take()`: the csv reader asks for exactly the lines of one record, so this is that
    record's text as the file holds it (quoted newlines included). With `count_bytes`,
    `consumed` is the bytes read so far (the text encoded back: surrogateescape gives
    back every byte as the file holds it), so a record's byte offset can be kept."""

    def __init__(self, handle: Any, count_bytes: bool = False) -> None:
        self._handle = handle
        self._taken: list[str] = []
        self._count_bytes = count_bytes
        self.consumed = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._handle.readline()
        if not line:
            raise StopIteration
        self._taken.append(line)
        if self._count_bytes:
            self.consumed += len(line.encode(TEXT_ENCODING, TEXT_ERRORS))
        return line

    def take(self) -> str:
        raw = "".join(self._taken)
        self._taken.clear()
        return raw


def text_records(
    path: str,
    fmt: str,
    url_column: str | None,
    need_url: bool = True,
    offset: int | None = None,
) -> tuple[str, Columns | None, Iterator[tuple[str, dict[str, Any] | None]]]:
    """(header text, columns, records) of a text URL list. Each record is its raw text
    and its fields (None for a line that is no JSON object). A plain list's field is
    `url`; blank lines are no records. With `offset` (a record's byte offset, from
    `text_plan`), the records start there: the ones before it are not read."""
    header, columns, records, _ = _text_records(path, fmt, url_column, need_url, offset)
    return header, columns, records


def text_plan(
    path: str, fmt: str, url_column: str | None, shard_rows: int
) -> tuple[int, list[int]]:
    """A text URL list's number of records, and the byte offset of every `shard_rows`-th
    record (0, shard_rows, ...): one pass, so that each shard seeks to its own rows."""
    _, _, records, lines = _text_records(path, fmt, url_column, True, None, count_bytes=True)
    offsets = [lines.consumed]
    count = 0
    for _ in records:
        count += 1
        if count % shard_rows == 0:
            offsets.append(lines.consumed)  # where the next record's lines begin
    return count, offsets


def _open_text(path: str, offset: int | None, header: bool) -> Any:
    """The file as text; with `offset`, placed there (after the header, when `header`
    says the caller reads one first: the caller then calls `_seek_text`)."""
    try:
        raw = fsspec.open(path, "rb").open()
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the URL list ({exc})") from None
    if offset and not header:
        raw = _seek(raw, path, offset)
    return io.TextIOWrapper(raw, encoding=TEXT_ENCODING, errors=TEXT_ERRORS, newline="")


def _seek(raw: Any, path: str, offset: int) -> Any:
    """`raw` at `offset`, which must follow a line end (else the file changed since the
    shards were planned, and the offset falls inside a record)."""
    try:
        raw.seek(offset - 1)
        before = raw.read(1)
    except (OSError, ValueError) as exc:
        raw.close()
        raise InputError(f"{path}: cannot read the URL list ({exc})") from None
    if before not in (b"\n", b"\r"):
        raw.close()
        raise InputError(
            f"{path}: changed while it was being scanned (a shard's rows no longer start "
            "at a line); run the same command again"
        )
    return raw


def _text_records(
    path: str,
    fmt: str,
    url_column: str | None,
    need_url: bool,
    offset: int | None,
    count_bytes: bool = False,
) -> tuple[str, Columns | None, Iterator[tuple[str, dict[str, Any] | None]], _Lines]:
    opened = _open_text(path, offset, header=fmt in ("csv", "tsv"))
    lines = _Lines(opened, count_bytes)
    if fmt in ("csv", "tsv"):
        reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")
        try:
            names = next(reader)
        except StopIteration:
            opened.close()
            raise InputError(f"{path}: empty URL list (no header row)") from None
        except csv.Error as exc:
            opened.close()
            raise InputError(f"{path}: not a readable {fmt.upper()} file ({exc})") from None
        header = lines.take()
        try:
            columns = _pick(names, url_column, path, need_url)
        except InputError:
            opened.close()
            raise
        if offset:
            # The header is read from the top; the records from the shard's offset. The
            # text layer reads ahead, so a new one is made at the offset.
            opened = io.TextIOWrapper(
                _seek(opened.detach(), path, offset),
                encoding=TEXT_ENCODING,
                errors=TEXT_ERRORS,
                newline="",
            )
            lines = _Lines(opened, count_bytes)
            reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")

        def csv_records() -> Iterator[tuple[str, dict[str, Any] | None]]:
            try:
                for values in reader:
                    raw = lines.take()
                    if not values:
                        continue  # a blank line is no record
                    yield raw, dict(zip(names, values, strict=False))
            except csv.Error as exc:
                raise InputError(f"{path}: not a readable {fmt.upper()} file ({exc})") from None
            finally:
                opened.close()

        return header, columns, csv_records(), lines
    if fmt == "list" and url_column is not None:
        opened.close()
        raise InputError(f"{path}: --url-column applies to parquet, CSV, TSV and JSON lines")

    def line_records() -> Iterator[tuple[str, dict[str, Any] | None]]:
        try:
            for line in lines:
                raw = lines.take()
                if not line.strip():
                    continue
                if fmt == "list":
                    yield raw, {"url": line.strip()}
                    continue
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError):
                    value = None
                yield raw, value if isinstance(value, dict) else None
        finally:
            opened.close()

    return "", None, line_records(), lines


def json_columns(path: str, url_column: str | None, need_url: bool = True) -> Columns:
    """A JSON lines file's columns, from its first object."""
    _, _, records = text_records(path, "jsonl", None)
    try:
        first = next((fields for _, fields in records if fields is not None), None)
    finally:
        records.close()  # type: ignore[attr-defined]
    if first is None:
        raise InputError(f"{path}: no JSON object on any line")
    return _pick(list(first), url_column, path, need_url)


def file_columns(path: str, url_column: str | None) -> tuple[Columns, int]:
    """The columns of a URL list and its number of rows; an InputError naming the file
    when it cannot be read or has no URL column."""
    fmt = url_format(path)
    if fmt == "parquet":
        try:
            with fsspec.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                return _pick(parquet.schema_arrow.names, url_column, path), (
                    parquet.metadata.num_rows
                )
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    columns = json_columns(path, url_column) if fmt == "jsonl" else Columns(url="url")
    _, found, records = text_records(path, fmt, url_column)
    return found or columns, sum(1 for _ in records)


def _row(position: int, fields: dict[str, Any] | None, columns: Columns, file_name: str) -> UrlRow:
    if fields is None:
        return UrlRow(
            position,
            positional_key(file_name, position),
            None,
            note="bad_metadata: line is not a JSON object",
        )
    key = row_key(fields, columns.key, file_name, position)
    url, bad = as_text(fields.get(columns.url)) if columns.url else (None, False)
    return UrlRow(
        position=position,
        key=key,
        url=url.strip() if url else None,
        upstream_sha256=normalise_hex(fields.get(columns.sha256)) if columns.sha256 else None,
        upstream_md5=normalise_hex(fields.get(columns.md5)) if columns.md5 else None,
        note="bad_metadata: url is not text" if bad else None,
    )


def row_key(
    fields: dict[str, Any] | None, key_column: str | None, file_name: str, position: int
) -> str:
    """A row's key: its key column's text, else the file's name and the row's number."""
    key, _ = as_text(fields.get(key_column)) if fields and key_column else (None, False)
    return key if key not in (None, "") else positional_key(file_name, position)


def read_rows(
    path: str,
    file_name: str,
    url_column: str | None,
    start: int,
    end: int,
    offset: int | None = None,
) -> list[UrlRow]:
    """Rows [start, end) of a URL list (a shard's worth: held in memory). For a text
    list, `offset` is the byte where row `start` begins (`text_plan`): read from there."""
    fmt = url_format(path)
    rows: list[UrlRow] = []
    if fmt == "parquet":
        try:
            with fsspec.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                columns = _pick(parquet.schema_arrow.names, url_column, path)
                # Only the row groups that hold rows [start, end) are read and decoded:
                # a shard of a large list costs its own rows, not the rows before it.
                groups, position, first = [], 0, None
                for group in range(parquet.metadata.num_row_groups):
                    size = parquet.metadata.row_group(group).num_rows
                    if position + size > start and position < end:
                        groups.append(group)
                        first = position if first is None else first
                    position += size
                position = first if first is not None else position
                batches = (
                    parquet.iter_batches(
                        batch_size=4096, columns=columns.wanted(), row_groups=groups
                    )
                    if groups
                    else iter(())
                )
                for batch in batches:
                    if position + batch.num_rows <= start:
                        position += batch.num_rows
                        continue
                    for fields in batch.to_pylist():
                        if start <= position < end:
                            rows.append(_row(position, fields, columns, file_name))
                        position += 1
                    if position >= end:
                        break
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable parquet file ({exc})") from None
        return rows
    columns = json_columns(path, url_column) if fmt == "jsonl" else None  # type: ignore[assignment]  # set below
    _, found, records = text_records(path, fmt, url_column, offset=offset)
    columns = found or columns or Columns(url="url")
    first = start if offset is not None else 0
    for position, (_, fields) in enumerate(records, first):
        if position >= end:
            records.close()  # type: ignore[attr-defined]
            break
        if position >= start:
            rows.append(_row(position, fields, columns, file_name))
    return rows


def shard_file_name(shard: ShardRef) -> str:
    """The URL list file a shard is a run of rows of, relative to the source."""
    return shard.name.rsplit("[", 1)[0] if shard.rows is not None else shard.name


@dataclass
class FetchSource:
    """A URL list (a file, a folder or a pattern of files), scanned by fetching."""

    kind: ClassVar[str] = "fetch"
    url: str
    url_column: str | None = None
    shard_rows: int = FETCH_SHARD_ROWS
    settings: dict[str, Any] = field(default_factory=lambda: FetchSettings().to_dict())

    def __post_init__(self) -> None:
        if self.shard_rows < 1:
            raise InputError(f"--shard-rows {self.shard_rows}: must be 1 or more")

    @property
    def fetch_settings(self) -> FetchSettings:
        return FetchSettings(**self.settings)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "url_column": self.url_column,
            "shard_rows": self.shard_rows,
            "settings": dict(self.settings),
        }

    def files(self) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
        fs, root, paths = find_files(self.url, tuple(FORMATS), "URL list")
        for path in paths:
            if path.lower().endswith((*TAR_SUFFIXES, ".zip", ".gz")):
                raise InputError(
                    f"{protocol_url(fs, path)}: not a URL list (parquet, CSV, TSV, JSON lines "
                    "or one URL a line); scan shards without --fetch"
                )
        return fs, root, paths

    def shards(self) -> list[ShardRef]:
        fs, root, paths = self.files()
        refs = []
        for path in paths:
            name = relative_name(path, root)
            url = protocol_url(fs, path)
            fmt = url_format(url)
            offsets: list[int | None]
            if fmt == "parquet":
                _, count = file_columns(url, self.url_column)
                offsets = [None] * (count // self.shard_rows + 1)
            else:
                if fmt == "jsonl":
                    json_columns(url, self.url_column)  # refuse a list with no URL column
                count, found = text_plan(url, fmt, self.url_column, self.shard_rows)
                offsets = list(found)
            for number, start in enumerate(range(0, count, self.shard_rows)):
                end = min(start + self.shard_rows, count)
                shard_name = f"{name}[{start}:{end}]"
                refs.append(
                    ShardRef(
                        id=shard_id_for(shard_name),
                        name=shard_name,
                        path=url,
                        rows=(start, end),
                        offset=offsets[number],
                        file_rows=count if fmt != "parquet" else None,
                    )
                )
        check_unique(refs, self.url)
        return refs

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        if record is not None:
            record.update(file_digest(shard.path))
        start, end = shard.rows or (0, 0)
        rows = read_rows(
            shard.path, shard_file_name(shard), self.url_column, start, end, shard.offset
        )
        wanted = [(i, row.url) for i, row in enumerate(rows) if row.url]
        for row in rows:
            if not row.url:
                yield self._item(shard, row, None, row.note or "no_url: the row has no URL")
        for fetched in fetch_stream(wanted, self.fetch_settings):
            row = rows[fetched.index]
            item = self._item(shard, row, fetched.data, fetched.reason)
            item.extra["fetch"] = fetched.columns()
            del fetched
            yield item

    def _item(self, shard: ShardRef, row: UrlRow, data: bytes | None, reason: str | None) -> Item:
        return Item(
            key=row.key,
            shard=shard.name,
            position=row.position,
            members=(),
            member=None,
            data=data,
            url=row.url,
            upstream_sha256=row.upstream_sha256,
            upstream_md5=row.upstream_md5,
            missing_reason=reason if data is None else None,
            note=row.note,
        )


# ---------------------------------------------------------------- dry run


@dataclass
class DryRun:
    """What a fetch scan would do: URLs, hosts, and the time a sample took."""

    urls: int = 0
    rows_without_url: int = 0
    hosts: Counter[str] = field(default_factory=Counter)
    sampled: int = 0
    sample_ok: int = 0
    sample_seconds: float = 0.0
    sample_reasons: Counter[str] = field(default_factory=Counter)

    def estimate_seconds(self, workers: int) -> float | None:
        """The whole set's time at the sample's rate, spread over `workers` processes."""
        if not self.sampled or self.sample_seconds <= 0:
            return None
        return self.urls * self.sample_seconds / self.sampled / max(1, workers)


def dry_run(source: FetchSource, sample: int) -> DryRun:
    """Count the URLs and hosts, and time fetching and hashing `sample` of them (spread
    over the list), writing nothing. The bytes are hashed and dropped as in a scan."""
    import time

    found = DryRun()
    every: list[str] = []
    for shard in source.shards():
        start, end = shard.rows or (0, 0)
        name = shard_file_name(shard)
        for row in read_rows(shard.path, name, source.url_column, start, end, shard.offset):
            if not row.url:
                found.rows_without_url += 1
                continue
            found.urls += 1
            found.hosts[url_host(row.url) or "(not an http URL)"] += 1
            if len(every) < 1_000_000:
                every.append(row.url)
    if sample > 0 and every:
        step = max(1, len(every) // sample)
        picked = every[::step][:sample]
        started = time.monotonic()
        for fetched in fetch_stream(list(enumerate(picked)), source.fetch_settings):
            if fetched.data is not None:
                found.sample_ok += 1
                hash_bytes(fetched.data)
            else:
                found.sample_reasons[(fetched.reason or "unknown").split(":", 1)[0]] += 1
        found.sample_seconds = time.monotonic() - started
        found.sampled = len(picked)
    return found


# How a shard is written again without removed keys (`clean`).


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


class UrlList(Format):
    """A URL list (parquet, CSV, TSV, JSON lines, one URL a line), read by fetching
    every URL (`scan --fetch`); recorded as kind `fetch`."""

    name = "fetch"
    reader = FetchSource
    rewriter = staticmethod(write_url_shard)
    fetches = True
    captions_in = "column"

    def open(self, url: str, options: OpenOptions) -> Source:
        if options.image_column is not None or options.base_dir is not None:
            raise InputError(f"{url}: --image-column and --base-dir do not apply to --fetch")
        return FetchSource(
            url=url,
            url_column=options.url_column,
            shard_rows=options.shard_rows or FetchSource.shard_rows,
            settings=(options.fetch or FetchSettings()).to_dict(),
        )
