"""Read items (key, shard, members, bytes, metadata) out of wherever a data set lies.

`open_source(url)` picks the reader: WebDataset tar shards, parquet files, or a plain
folder, on local disk or any fsspec URL. A new kind of source is one class with `kind`,
`spec`, `shards` and `read_shard`, plus one line in `SOURCE_KINDS`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from clearset.errors import InputError
from clearset.sources.base import Item, ShardRef, Source, display_name, expand_paths
from clearset.sources.fetch import FetchSource
from clearset.sources.fetcher import FetchSettings
from clearset.sources.folder import FolderSource, list_files, side_names, side_stem
from clearset.sources.parquet import ParquetSource
from clearset.sources.webdataset import TAR_SUFFIXES, WebDatasetSource

SOURCE_KINDS: dict[str, type] = {
    WebDatasetSource.kind: WebDatasetSource,
    ParquetSource.kind: ParquetSource,
    FolderSource.kind: FolderSource,
    FetchSource.kind: FetchSource,
}

__all__ = [
    "SOURCE_KINDS",
    "FetchSettings",
    "FetchSource",
    "FolderSource",
    "Item",
    "ParquetSource",
    "ShardRef",
    "Source",
    "WebDatasetSource",
    "Survey",
    "absolute_url",
    "detect",
    "detect_kind",
    "is_folder",
    "open_source",
    "source_from_spec",
]


#: Files that describe a data set rather than hold its items: never read as items.
METADATA_NAMES = frozenset({"README.md", ".gitattributes", "dataset_infos.json", "LICENSE"})


@dataclass
class Survey:
    """What a folder holds, and which kind of source that makes it."""

    kind: str
    tars: int = 0
    parquets: int = 0
    side_files: int = 0
    metadata_files: int = 0
    other_files: int = 0
    other_examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.kind == WebDatasetSource.kind:
            parts.append(counted(self.tars, "tar shard"))
        elif self.kind == ParquetSource.kind:
            parts.append(counted(self.parquets, "parquet file"))
        else:
            parts.append(counted(self.other_files, "file"))
        if self.side_files:
            parts.append(counted(self.side_files, "img2dataset side file"))
        if self.metadata_files:
            parts.append(counted(self.metadata_files, "metadata file"))
        if self.other_files and self.kind != FolderSource.kind:
            shown = ", ".join(display_name(n) for n in self.other_examples)
            parts.append(f"{counted(self.other_files, 'other file')} NOT read (e.g. {shown})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["other_examples"] = [display_name(n) for n in self.other_examples]
        return found


def counted(n: int, noun: str) -> str:
    """`1 tar shard`, `3 tar shards`."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def survey_folder(names: list[str], is_dir: Callable[[str], bool] | None = None) -> Survey:
    """Decide by what a folder holds at any depth: tar shards (with img2dataset's side
    files), parquet shards (a Hugging Face repository's `data/*.parquet`, img2dataset's
    parquet output), or else a folder of files (img2dataset's files layout: its side
    files beside its shard folders, an empty one or none where a shard downloaded
    nothing). `is_dir` says whether a relative name is a folder (an empty folder holds
    no name). Side and metadata files are never items."""
    folders = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    stems = {stem for n in names if (stem := side_stem(n)) is not None}
    if is_dir is not None:
        folders |= {stem for stem in stems - folders if is_dir(stem)}
    files_side = side_names(names, folders)
    tars = [n for n in names if n.endswith(TAR_SUFFIXES)]
    tar_stems = {n[: -len(s)] for n in tars for s in TAR_SUFFIXES if n.endswith(s)}
    parquet_stems = {n[: -len(".parquet")] for n in names if n.endswith(".parquet")}
    parquets: list[str] = []
    side: list[str] = []
    metadata, other = [], []
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if name.endswith(TAR_SUFFIXES):
            continue
        if name.endswith(".parquet"):
            # img2dataset writes NNNNN.parquet beside NNNNN.tar, or beside folder NNNNN/.
            is_side = name[: -len(".parquet")] in tar_stems or name in files_side
            (side if is_side else parquets).append(name)
        elif name.endswith("_stats.json") and (
            name[: -len("_stats.json")] in tar_stems | parquet_stems or name in files_side
        ):
            side.append(name)
        elif base in METADATA_NAMES or base.startswith("."):
            metadata.append(name)
        else:
            other.append(name)
    if tars and parquets:
        raise InputError(
            f"holds both tar shards ({len(tars):,}) and parquet files ({len(parquets):,}); "
            "scan each as its own source, or choose one with --kind"
        )
    if tars:
        kind = WebDatasetSource.kind
    elif parquets:
        kind = ParquetSource.kind
    else:
        return Survey(
            kind=FolderSource.kind,
            side_files=len(files_side),
            other_files=len(names) - len(files_side),
        )
    return Survey(
        kind=kind,
        tars=len(tars),
        parquets=len(parquets),
        side_files=len(side),
        metadata_files=len(metadata),
        other_files=len(other),
        other_examples=other[:3],
    )


def detect(url: str) -> Survey:
    """The kind of source at `url`, with what was found there."""
    fs, paths = expand_paths(url)
    if not paths:
        raise InputError(f"{url}: matches no files")
    if all(p.endswith(TAR_SUFFIXES) for p in paths):
        return Survey(kind=WebDatasetSource.kind, tars=len(paths))
    if all(p.endswith(".parquet") for p in paths):
        return Survey(kind=ParquetSource.kind, parquets=len(paths))
    if len(paths) == 1 and fs.isdir(paths[0]):
        fs, root, names = list_files(url)
        if not names:
            raise InputError(f"{url}: the folder holds no files")
        try:
            return survey_folder(names, lambda name: bool(fs.isdir(f"{root}/{name}")))
        except InputError as exc:
            raise InputError(f"{url}: {exc}") from None
    if len(paths) == 1 and not fs.exists(paths[0]):
        raise InputError(f"{url}: no such file or folder")
    raise InputError(f"{url}: cannot tell what kind of data set this is (use --kind)")


def is_folder(url: str) -> bool:
    """Whether `url` names one folder (not a file or a pattern of files)."""
    try:
        fs, paths = expand_paths(url)
        return len(paths) == 1 and bool(fs.isdir(paths[0]))
    except InputError:
        return False


def detect_kind(url: str) -> str:
    """Guess the source kind from what lies at `url`."""
    return detect(url).kind


def absolute_url(url: str) -> str:
    """A local path as an absolute path (a run may be resumed or cleaned from another
    folder); URLs with a protocol as they are."""
    protocol, _ = fsspec.core.split_protocol(url)
    if protocol not in (None, "file", "local"):
        return url
    _, path = fsspec.core.split_protocol(url)
    if "{" in path or any(c in path for c in "*?["):
        head = path.split("{")[0]
        head = re.split(r"[*?\[]", head)[0]
        folder = head.rsplit("/", 1)[0] if "/" in head else ""
        rest = path[len(folder) :]
        return os.path.abspath(folder or ".") + (rest if folder else "/" + rest)
    return os.path.abspath(path)


def open_source(
    url: str,
    *,
    kind: str | None = None,
    image_column: str | None = None,
    base_dir: str | None = None,
    url_column: str | None = None,
    shard_rows: int | None = None,
    fetch: FetchSettings | None = None,
) -> Source:
    """The source at `url`, of the given kind or of the kind found there. Kind `fetch`
    (`scan --fetch`) reads `url` as a list of URLs and fetches every image."""
    url = absolute_url(url)
    if kind == FetchSource.kind:
        if image_column is not None or base_dir is not None:
            raise InputError(f"{url}: --image-column and --base-dir do not apply to --fetch")
        return FetchSource(
            url=url,
            url_column=url_column,
            shard_rows=shard_rows or FetchSource.shard_rows,
            settings=(fetch or FetchSettings()).to_dict(),
        )
    if url_column is not None or shard_rows is not None:
        raise InputError(f"{url}: --url-column and --shard-rows apply to --fetch only")
    kind = kind or detect_kind(url)
    if kind not in SOURCE_KINDS:
        raise InputError(f"{url}: unknown source kind {kind!r} (known: {', '.join(SOURCE_KINDS)})")
    if kind == ParquetSource.kind:
        if base_dir is not None:
            base_dir = absolute_url(base_dir)
        return ParquetSource(url=url, image_column=image_column, base_dir=base_dir)
    if image_column is not None or base_dir is not None:
        raise InputError(f"{url}: --image-column and --base-dir apply to parquet sources only")
    return SOURCE_KINDS[kind](url=url)


def source_from_spec(spec: dict[str, Any]) -> Source:
    """Rebuild a source from what run.json recorded (for resume and later stages)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    return SOURCE_KINDS[kind](**spec)
