"""The Typer app every command module registers on, and the options they share.

Everything the user typed (paths, list names, keys) is printed literally: the consoles
interpret no rich markup and no emoji codes, so `run[1]`, a list named `[/]x` or a
document's gap at `croissant.json:100:` prints as given.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from clearset import __version__, storage
from clearset.engines import Engine, make_engine
from clearset.errors import InputError
from clearset.hashing import types as hash_types
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.progress import literal_console, progress_interval
from clearset.runfolder import COMMAND_READS
from clearset.stages.match import MatchJob

#: `clearset --help` lists commands in the order of the work, not alphabetically; a
#: command not named here comes after these, in the order it was registered, before demo.
COMMAND_ORDER = (
    "scan", "match", "clean", "report", "keygen", "receipt", "prove", "verify",
    "diff-receipts", "document", "audit", "prompts", "apply-removals", "status", "hash",
)  # fmt: skip
LAST_COMMANDS = ("demo",)


class WorkOrderGroup(TyperGroup):
    """Commands in the order of the work, each with its whole first sentence."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # type: ignore[override]  # typer vendors click
        names = list(self.commands)
        first = [n for n in COMMAND_ORDER if n in self.commands]
        last = [n for n in LAST_COMMANDS if n in self.commands]
        return first + [n for n in names if n not in first and n not in last] + last

    # typer vendors click (typer._click): its classes are not click's, as these say
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # type: ignore[override]
        # click cuts each summary to fit one line ("...and..."); wrap it whole instead.
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)  # type: ignore[arg-type]  # see above
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=WorkOrderGroup,
    # Plain click help: it wraps every text at the terminal's width, where rich panels cut
    # option names and help texts short with an ellipsis at 80 columns.
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    help="Scan training data sets against hash lists, clean them, and issue receipts.",
)
# No markup, no emoji codes, no highlighting: user text (paths, list names) must print as
# typed, a `[` in a path must never be read as a style tag, and `FILE:100:` must not
# become an emoji (`:100:` is one). soft_wrap: a long path or hash stays on one line,
# also in a log file where the width would otherwise be 80 columns.
console = literal_console(stderr=True)
out = literal_console()

EXIT_ERROR = 2


def _version(value: bool) -> None:
    if value:
        print(f"clearset {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", "-w", min=1, help="Worker processes (default: one per core)."),
]
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def local_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An output folder argument (see `_folder`): a bucket's is fetched whole."""
    return _folder(ctx, param, value, None)


def _folder(
    ctx: click.Context, param: click.Parameter, value: Path | None, reads: tuple[str, ...] | None
) -> Path | None:
    """Outputs go to a local or shared POSIX path, or to an object store's URL (`s3://`,
    `gs://`, `az://`): that is worked in a local mirror and uploaded object by object
    (`clearset.storage`). Other URLs are refused (a Path would quietly make a local
    folder named `s3:`)."""
    if value is not None and _URL.match(str(value)):
        url = _URL_SLASHES.sub(r"\1://", str(value))
        if url.split("://", 1)[0] in storage.OUTPUT_PROTOCOLS:
            return bucket_folder(ctx, url, reads)
        option = (param.opts or [param.name or "path"])[0]
        raise InputError(
            f"{option} {value}: outputs must be a local or shared folder (NFS, Lustre, a "
            f"mounted bucket) or an object store ({', '.join(storage.OUTPUT_PROTOCOLS)}://), "
            "not this URL; sources may be any URL"
        )
    return value


_URL_SLASHES = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+")


#: The command that attached a bucket (what `storage.refuse_engine` judges).
_bucket_command: list[str] = []


def bucket_folder(ctx: click.Context, url: str, reads: tuple[str, ...] | None = None) -> Path:
    """The local mirror of an object-store folder, filled from the bucket now and pushed
    back when the command ends, however it ends (`clearset.storage`)."""
    _bucket_command.append(ctx.info_name or "")
    try:
        local = storage.attach(url, reads)
    except OSError as exc:
        raise InputError(f"{url}: cannot read the bucket: {exc}") from None

    def push() -> None:
        shared = ctx.params.get("rank") is not None or "--rank" in sys.argv
        storage.push(local, delete=not shared)

    ctx.call_on_close(push)
    return local


def run_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A run folder argument: a path, or an object store's URL (see `local_folder`), of
    which the command fetches what it declares it reads (`COMMAND_READS`)."""
    return _folder(ctx, param, value, COMMAND_READS.get(ctx.info_name or ""))


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="What runs the shards: local (worker processes here) or ray (a Ray cluster; "
        "pip install 'clearset[ray]').",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --engine ray: the cluster, auto or ray://HOST:PORT (default: start Ray "
        "on this machine).",
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries", min=0, help="Times a failed shard is tried again before it is reported."
    ),
]


@contextmanager
def engine_for(name: str, address: str | None, workers: int | None) -> Iterator[Engine]:
    """The engine a command asked for, released when the command ends."""
    storage.refuse_engine(name, _bucket_command[-1] if _bucket_command else None)
    engine = make_engine(name, workers=workers, address=address)
    try:
        yield engine
    finally:
        engine.close()


ExactPdqOpt = Annotated[
    bool,
    typer.Option(
        "--exact-pdq/--fast-pdq",
        help="Compute PDQ with the reference pipeline, bit-equal to pdqhash "
        "(default: the fast path, within a few bits of it, for JPEGs).",
    ),
]
TrimOpt = Annotated[
    bool,
    typer.Option(
        "--trim-borders/--no-trim-borders",
        help="Also hash each image without black/white letterbox or pillarbox borders.",
    ),
]


# The --list syntax is written as short words, never one long token: rich gives the help
# column about 17 characters at COLUMNS=80 and cuts a longer word with "…".
LIST_SYNTAX_HELP = (
    "Hash list to match: PATH, or PATH,K=V[,K=V] with each K=V one of type=T "
    f"({', '.join(hash_types.list_type_names())}), name=N, version=V, threshold=T (PDQ "
    "bits), column=C "
    "(CSV column or JSON field), format=F (text, threatexchange, checksums, csv, tsv, "
    "json, jsonl). E.g. l.txt,type=pdq. Repeat for several lists."
)

ListOpt = Annotated[
    list[str] | None,
    typer.Option("--list", "-l", metavar="PATH[,K=V]", help=LIST_SYNTAX_HELP),
]
SkipInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Skip malformed list entries instead of failing; how many, of which kinds, "
        "is printed (one line per list) and recorded with the list in run.json.",
    ),
]
ThresholdOpt = Annotated[
    int,
    typer.Option(min=0, max=256, help="PDQ Hamming distance that matches (per list: threshold=)."),
]
MinQualityOpt = Annotated[
    int, typer.Option(min=0, max=100, help="PDQ quality below which an item is not near-matched.")
]

LIST_OPTIONS = {"type": "hash_type", "name": "name", "version": "version",
                "threshold": "threshold", "column": "column", "format": "fmt"}  # fmt: skip


def parse_list_spec(text: str, skip_invalid: bool) -> ListSpec:
    """`PATH[,key=value...]` as given to --list."""
    path, *options = text.split(",")
    values: dict[str, object] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key.strip() not in LIST_OPTIONS:
            known = ", ".join(LIST_OPTIONS)
            raise InputError(f"--list {text}: bad option {option!r} (known: {known})")
        field = LIST_OPTIONS[key.strip()]
        if field == "threshold":
            try:
                values[field] = int(value)
            except ValueError:
                raise InputError(f"--list {text}: threshold must be a whole number") from None
        else:
            values[field] = value.strip()
    if not path:
        raise InputError(f"--list {text!r}: no path")
    return ListSpec(path=path, skip_invalid=skip_invalid, **values)  # type: ignore[arg-type]


def match_job(
    lists: list[str] | None, skip_invalid: bool, threshold: int, min_quality: int
) -> MatchJob | None:
    if not lists:
        return None
    specs = tuple(parse_list_spec(text, skip_invalid) for text in lists)
    return MatchJob(specs, MatchSettings(pdq_threshold=threshold, min_quality=min_quality))


ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        help="Show progress: a bar on a terminal, else a plain line every 10 s "
        "(CLEARSET_PROGRESS_INTERVAL=SECONDS to change).",
    ),
]


def show_progress(progress: bool | None) -> bool:
    """--progress/--no-progress as given, else on: a bar where a person watches, and
    plain lines at an interval in a log (see `clearset.progress.Meter`)."""
    show = True if progress is None else progress
    if show:
        progress_interval()  # a bad CLEARSET_PROGRESS_INTERVAL fails before any work
    return show


def sql_literal(text: str) -> str:
    return text.replace("'", "''")
