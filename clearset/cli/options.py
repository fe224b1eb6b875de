"""Option groups: a command's options declared as the fields of the object they fill.

Typer reads a command's options from its function's parameters, one each. A command with
many options declares them here instead, a few at a time, as the fields of a small
dataclass (each field an `Annotated` Typer option, as a parameter would be) that knows
which settings object of the library it makes: `ScanOptions.settings()` is the
`ScanSettings` a scan records, `FetchOptions.settings()` the `FetchSettings` its fetcher
uses. `grouped` gives Typer the flat list of options and gives the command one object
per group, so the command reads as: parse, check, call `clearset.runs`.

A group's fields appear in `--help` where the group's parameter stands, in field order.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast, get_type_hints

import typer

from clearset.cli.app import (
    AddressOpt,
    EngineOpt,
    ExactPdqOpt,
    ListOpt,
    MinQualityOpt,
    RetriesOpt,
    SkipInvalidOpt,
    ThresholdOpt,
    TrimOpt,
    WorkersOpt,
    local_folder,
    match_job,
)
from clearset.errors import InputError
from clearset.formats import SOURCE_KINDS, FetchSettings
from clearset.formats.fetching.fetcher import (
    FETCH_BACKOFF,
    FETCH_CONCURRENCY,
    FETCH_CONNECT_TIMEOUT,
    FETCH_MAX_BYTES,
    FETCH_PER_HOST,
    FETCH_READ_TIMEOUT,
    FETCH_RETRIES,
    FETCH_USER_AGENT,
)
from clearset.formats.urls import FETCH_SHARD_ROWS
from clearset.matching.review import FLOOD_THRESHOLD, Review, load_allow_list
from clearset.runs import MatchJob, ScanSettings, Split
from clearset.runs.tasks import DEFAULT_RETRIES
from clearset.settings import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY

Command = TypeVar("Command", bound=Callable[..., Any])

#: The help panel of the options that only a URL list (`scan --fetch`) takes.
FETCH_PANEL = "Fetching URLs"


def grouped(command: Command) -> Command:
    """Let Typer see each option group parameter of `command` as the group's fields, and
    call `command` with one object per group built from them."""
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, type[Any]] = {}
    flat: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if not (isinstance(group, type) and is_dataclass(group)):
            flat.append(parameter)
            continue
        groups[parameter.name] = group
        hints = get_type_hints(group, include_extras=True)
        flat += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default
            )
            for f in fields(group)
        ]

    @functools.wraps(command)
    def parsed(**options: Any) -> Any:
        for name, group in groups.items():
            options[name] = group(**{f.name: options.pop(f.name) for f in fields(group)})
        return command(**options)

    parsed.__signature__ = signature.replace(parameters=flat)  # type: ignore[attr-defined]
    parsed.__annotations__ = {p.name: p.annotation for p in flat}
    return cast(Command, parsed)


@dataclass(frozen=True)
class SourceOptions:
    """How to read SOURCE: what `clearset.formats.open_source` takes beside it."""

    kind: Annotated[
        str | None, typer.Option(help=f"Source kind: {', '.join(SOURCE_KINDS)} (default: detect).")
    ] = None
    image_column: Annotated[
        str | None, typer.Option(help="Parquet column holding image bytes (default: detect).")
    ] = None
    base_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder that relative paths in path-only parquet Image cells are relative "
            "to (default: the parquet file's folder, as datasets reads them)."
        ),
    ] = None


@dataclass(frozen=True)
class EngineOptions:
    """Where the work runs, and this command's share of it in an array job."""

    workers: WorkersOpt = None
    engine: EngineOpt = "local"
    address: AddressOpt = None
    retries: RetriesOpt = DEFAULT_RETRIES
    rank: Annotated[
        int | None,
        typer.Option(
            help="In an array job: scan only every Nth shard (N = --world-size) from shard "
            "number RANK, counting from 0 (e.g. $SLURM_ARRAY_TASK_ID); the last rank to end "
            "finishes the run.",
        ),
    ] = None
    world_size: Annotated[
        int | None,
        typer.Option(help="In an array job: how many ranks share the shards (with --rank)."),
    ] = None

    def split(self) -> Split | None:
        if (self.rank is None) != (self.world_size is None):
            raise InputError("scan: --rank and --world-size go together")
        if self.rank is not None and self.world_size is not None:
            return Split(self.rank, self.world_size)
        return None


@dataclass(frozen=True)
class ScanOptions:
    """What changes the hashes a scan writes: `ScanSettings`, recorded in run.json."""

    exact_pdq: ExactPdqOpt = False
    trim_borders: TrimOpt = True
    dihedral: Annotated[
        bool, typer.Option(help="Also match the 7 other rotations/flips of each image.")
    ] = False

    def settings(self) -> ScanSettings:
        return ScanSettings(
            exact_pdq=self.exact_pdq, trim_borders=self.trim_borders, dihedral=self.dihedral
        )


AllowListOpt = Annotated[
    Path | None,
    typer.Option(
        "--allow-list",
        metavar="FILE",
        help="SHA-256 values reviewed as false positives (one hex value a line, # comments; "
        "or parquet with a sha256 column): their matches are recorded and counted, not removed.",
    ),
]
FloodThresholdOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Warn when one list entry matches at least this many images (often a benign "
        "image colliding with the entry).",
    ),
]


def review_job(
    job: MatchJob | None, allow_list: Path | None, flood_threshold: int
) -> MatchJob | None:
    """`job` with the review's allow list (read now: a bad file fails before any work)
    and flood threshold; None stays None (an allow list without --list is refused)."""
    if job is None:
        if allow_list is not None:
            raise InputError("--allow-list goes with --list (it allows matches of those lists)")
        return None
    allow = load_allow_list(allow_list) if allow_list is not None else None
    return replace(job, review=Review(allow, flood_threshold))


@dataclass(frozen=True)
class MatchOptions:
    """The lists to match against and how: a `MatchJob` (its `MatchSettings`), or None."""

    lists: ListOpt = None
    skip_invalid: SkipInvalidOpt = False
    threshold: ThresholdOpt = PDQ_MATCH_THRESHOLD
    min_quality: MinQualityOpt = PDQ_MIN_QUALITY
    allow_list: AllowListOpt = None
    flood_threshold: FloodThresholdOpt = FLOOD_THRESHOLD

    def job(self) -> MatchJob | None:
        job = match_job(self.lists, self.skip_invalid, self.threshold, self.min_quality)
        return review_job(job, self.allow_list, self.flood_threshold)


@dataclass(frozen=True)
class CleanToOptions:
    """`scan --clean-to`: the cleaned copy written in the same pass."""

    clean_to: Annotated[
        Path | None,
        typer.Option(
            help="Also write the source without matched items here, in the same pass.",
            callback=local_folder,
        ),
    ] = None
    drop_undecodable: Annotated[
        bool, typer.Option(help="With --clean-to: also remove undecodable items.")
    ] = False


@dataclass(frozen=True)
class UrlListOptions:
    """SOURCE as a list of URLs, and how to read that list."""

    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch",
            help="SOURCE is a list of URLs (parquet, CSV, TSV, JSON lines, or one URL a "
            "line): fetch each image into memory, hash it and drop it; nothing is stored.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = False
    url_column: Annotated[
        str | None,
        typer.Option(
            help="With --fetch: the column holding the URLs (default: url, URL, image_url).",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = None
    shard_rows: Annotated[
        int | None,
        typer.Option(
            help=f"With --fetch: URL rows per shard (default {FETCH_SHARD_ROWS:,}).",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = None


@dataclass(frozen=True)
class FetchOptions:
    """How each URL is fetched: `FetchSettings`."""

    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --fetch: requests in flight per worker.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_CONCURRENCY
    per_host: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --fetch: requests in flight to one host, over all workers on this machine.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_PER_HOST
    connect_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="With --fetch: seconds.", rich_help_panel=FETCH_PANEL),
    ] = FETCH_CONNECT_TIMEOUT
    read_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="With --fetch: longest wait in seconds for the next bytes of a response.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_READ_TIMEOUT
    fetch_retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --fetch: tries after the first on 429, 5xx and network errors.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_RETRIES
    backoff: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="With --fetch: first wait before a retry in seconds, doubled each time "
            "(a Retry-After header is honoured instead, up to 60 s).",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_BACKOFF
    max_bytes: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --fetch: largest body held in memory; larger ones are refused.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = FETCH_MAX_BYTES
    user_agent: Annotated[
        str,
        typer.Option(help="With --fetch: the User-Agent header.", rich_help_panel=FETCH_PANEL),
    ] = FETCH_USER_AGENT
    ignore_noai: Annotated[
        bool,
        typer.Option(
            "--ignore-noai",
            help="With --fetch: fetch images whose X-Robots-Tag says noai or noimageai "
            "(default: their bodies are not read, and the row says so).",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = False

    def settings(self) -> FetchSettings:
        return FetchSettings(
            concurrency=self.concurrency,
            per_host=self.per_host,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries=self.fetch_retries,
            backoff=self.backoff,
            max_bytes=self.max_bytes,
            user_agent=self.user_agent,
            respect_noai=not self.ignore_noai,
        )


#: URLs a dry run fetches for its estimate unless --sample says.
DRY_RUN_SAMPLE = 100


@dataclass(frozen=True)
class DryRunOptions:
    """`scan --fetch --dry-run`: an estimate from a sample, nothing written."""

    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="With --fetch: print the URLs' hosts and a time estimate from a sample "
            "(fetched, hashed, dropped); write nothing.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = False
    sample: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --dry-run: URLs to fetch for the estimate.",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = DRY_RUN_SAMPLE
