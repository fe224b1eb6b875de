"""The data-set formats clearset reads and rewrites, and the registry that names them.

Each format is one module here (`webdataset`, `parquet`, `folder`, `urls`) holding how
it is detected, read and written again without removed keys: a `Format` subclass (see
`clearset.formats.base`). `FORMATS` names them; a new format is one module and one
`register(...)` line. `open_source(url)` opens a location with the format given or
the one found there, on local disk or any fsspec URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from clearset.errors import InputError, OutputError
from clearset.formats.base import (
    Format,
    Item,
    OpenOptions,
    Rewriter,
    ShardRef,
    Source,
    absolute_url,
    display_name,
    expand_paths,
)
from clearset.formats.fetching.fetcher import FetchSettings
from clearset.formats.folder import Folder, FolderSource, list_files, side_names, side_stem
from clearset.formats.parquet import Parquet, ParquetSource
from clearset.formats.urls import FetchSource, UrlList
from clearset.formats.webdataset import WebDataset, WebDatasetSource

#: Every format by name, in the order detection asks them.
FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Name `fmt` in the registry (a later format of the same name replaces it)."""
    FORMATS[fmt.name] = fmt
    return fmt


register(WebDataset())
register(Parquet())
register(Folder())
register(UrlList())

#: The source kinds `--kind` takes: the registry itself, by its older name.
SOURCE_KINDS = FORMATS

__all__ = [
    "FORMATS",
    "SOURCE_KINDS",
    "FetchSettings",
    "FetchSource",
    "FolderSource",
    "Format",
    "Item",
    "OpenOptions",
    "ParquetSource",
    "ShardRef",
    "Source",
    "WebDatasetSource",
    "Survey",
    "absolute_url",
    "detect",
    "detect_kind",
    "format_of",
    "is_folder",
    "open_source",
    "register",
    "rewriter_for",
    "source_from_spec",
]


def format_of(kind: str | None) -> Format | None:
    """The registered format of this name, or None (a run of a format no longer known)."""
    return FORMATS.get(kind) if kind is not None else None


def rewriter_for(kind: str, where: str) -> Rewriter:
    """How a `kind` source is written again; one line naming `where` when it cannot be."""
    fmt = format_of(kind)
    if fmt is None or fmt.rewriter is None:
        raise OutputError(
            f"{where}: cannot clean a {kind} source: the {kind} format has no rewriter "
            "(scan and match work; clean and apply-removals need one)"
        )
    return fmt.rewriter


#: Files that describe a data set rather than hold its items: never read as items.
METADATA_NAMES = frozenset({"README.md", ".gitattributes", "dataset_infos.json", "LICENSE"})


@dataclass
class Survey:
    """What a folder holds, and which kind of source that makes it."""

    kind: str
    #: Files that are shards of `kind` (tar shards, parquet files...).
    files: int = 0
    side_files: int = 0
    metadata_files: int = 0
    other_files: int = 0
    other_examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        fmt = format_of(self.kind)
        detected = fmt is not None and bool(fmt.suffixes)
        if detected:
            parts.append(counted(self.files, fmt.noun))  # type: ignore[union-attr]
        else:
            parts.append(counted(self.other_files, "file"))
        if self.side_files:
            parts.append(counted(self.side_files, "img2dataset side file"))
        if self.metadata_files:
            parts.append(counted(self.metadata_files, "metadata file"))
        if self.other_files and detected:
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
    # Each format that is detected by its files claims them, in registry order; a file
    # beside an earlier format's shard of the same stem is img2dataset's side file
    # (`NNNNN.parquet` beside `NNNNN.tar`), as is one beside a shard folder.
    claimed: dict[str, list[str]] = {}
    shard_stems: set[str] = set()
    side, metadata, other = [], [], []
    taken: set[str] = set()
    for fmt in FORMATS.values():
        if not fmt.suffixes:
            continue
        found, stems = [], set()
        for name in names:
            if name in taken or not fmt.claims(name):
                continue
            taken.add(name)
            stem = _stem(name, fmt.suffixes)
            if name in files_side or stem in shard_stems:
                side.append(name)
            else:
                found.append(name)
                stems.add(stem)
        if found:
            claimed[fmt.name] = found
        shard_stems |= stems
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if name in taken:
            continue
        if name.endswith("_stats.json") and (
            name[: -len("_stats.json")] in shard_stems or name in files_side
        ):
            side.append(name)
        elif base in METADATA_NAMES or base.startswith("."):
            metadata.append(name)
        else:
            other.append(name)
    if len(claimed) > 1:
        (first, a), (second, b) = list(claimed.items())[:2]
        raise InputError(
            f"holds both {FORMATS[first].noun}s ({len(a):,}) and {FORMATS[second].noun}s "
            f"({len(b):,}); scan each as its own source, or choose one with --kind"
        )
    if not claimed:
        return Survey(
            kind=Folder.name,
            side_files=len(files_side),
            other_files=len(names) - len(files_side),
        )
    [(kind, found)] = claimed.items()
    return Survey(
        kind=kind,
        files=len(found),
        side_files=len(side),
        metadata_files=len(metadata),
        other_files=len(other),
        other_examples=other[:3],
    )


def _stem(name: str, suffixes: tuple[str, ...]) -> str:
    return next(name[: -len(s)] for s in suffixes if name.endswith(s))


def detect(url: str) -> Survey:
    """The kind of source at `url`, with what was found there."""
    fs, paths = expand_paths(url)
    if not paths:
        raise InputError(f"{url}: matches no files")
    for fmt in FORMATS.values():
        if fmt.suffixes and all(fmt.claims(p) for p in paths):
            return Survey(kind=fmt.name, files=len(paths))
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
    options = OpenOptions(image_column, base_dir, url_column, shard_rows, fetch)
    fmt = format_of(kind)
    if fmt is not None and fmt.fetches:
        return fmt.open(url, options)
    if url_column is not None or shard_rows is not None:
        raise InputError(f"{url}: --url-column and --shard-rows apply to --fetch only")
    kind = kind or detect_kind(url)
    if kind not in FORMATS:
        raise InputError(f"{url}: unknown source kind {kind!r} (known: {', '.join(FORMATS)})")
    return FORMATS[kind].open(url, options)


def source_from_spec(spec: dict[str, Any]) -> Source:
    """Rebuild a source from what run.json recorded (for resume and later stages)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    return FORMATS[kind].reader(**spec)
