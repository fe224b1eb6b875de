"""Read items (key, shard, members, bytes, metadata) out of wherever a data set lies.

`open_source(url)` picks the reader: WebDataset tar shards, parquet files, or a plain
folder, on local disk or any fsspec URL. A new kind of source is one class with `kind`,
`spec`, `shards` and `read_shard`, plus one line in `SOURCE_KINDS`.
"""

from __future__ import annotations

from typing import Any

from clearset.errors import InputError
from clearset.sources.base import Item, ShardRef, Source, expand_paths
from clearset.sources.folder import FolderSource
from clearset.sources.parquet import ParquetSource
from clearset.sources.webdataset import TAR_SUFFIXES, WebDatasetSource

SOURCE_KINDS: dict[str, type] = {
    WebDatasetSource.kind: WebDatasetSource,
    ParquetSource.kind: ParquetSource,
    FolderSource.kind: FolderSource,
}

__all__ = [
    "SOURCE_KINDS",
    "FolderSource",
    "Item",
    "ParquetSource",
    "ShardRef",
    "Source",
    "WebDatasetSource",
    "detect_kind",
    "open_source",
    "source_from_spec",
]


def detect_kind(url: str) -> str:
    """Guess the source kind from what lies at `url`."""
    fs, paths = expand_paths(url)
    if not paths:
        raise InputError(f"{url}: matches no files")
    if all(p.endswith(TAR_SUFFIXES) for p in paths):
        return WebDatasetSource.kind
    if all(p.endswith(".parquet") for p in paths):
        return ParquetSource.kind
    if len(paths) == 1 and fs.isdir(paths[0]):
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(paths[0], detail=False)]
        if any(n.endswith(TAR_SUFFIXES) for n in names):
            return WebDatasetSource.kind
        if names and all(n.endswith(".parquet") or n.startswith(".") for n in names):
            return ParquetSource.kind
        return FolderSource.kind
    if len(paths) == 1 and not fs.exists(paths[0]):
        raise InputError(f"{url}: no such file or folder")
    raise InputError(f"{url}: cannot tell what kind of data set this is (use --kind)")


def open_source(url: str, *, kind: str | None = None, image_column: str | None = None) -> Source:
    """The source at `url`, of the given kind or of the kind found there."""
    kind = kind or detect_kind(url)
    if kind not in SOURCE_KINDS:
        raise InputError(f"{url}: unknown source kind {kind!r} (known: {', '.join(SOURCE_KINDS)})")
    if kind == ParquetSource.kind:
        return ParquetSource(url=url, image_column=image_column)
    if image_column is not None:
        raise InputError(f"{url}: --image-column applies to parquet sources only")
    return SOURCE_KINDS[kind](url=url)


def source_from_spec(spec: dict[str, Any]) -> Source:
    """Rebuild a source from what run.json recorded (for resume and later stages)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    return SOURCE_KINDS[kind](**spec)
