"""The Typer app every command module registers on, and the options they share."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from clearset import __version__
from clearset.engines import MatchJob
from clearset.errors import InputError
from clearset.matching.matcher import ListSpec, MatchSettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Scan training data sets against hash lists, clean them, and issue receipts.",
)
console = Console(stderr=True)
out = Console()

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
    "Hash list to match: PATH, or PATH,K=V,... with each K=V one of type=T (pdq, md5, "
    "sha1, sha256, url, url_md5), name=N, version=V, threshold=T (PDQ bits), column=C "
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
    bool | None, typer.Option(help="Show a progress bar (default: when on a terminal).")
]


def show_progress(progress: bool | None) -> bool:
    """--progress/--no-progress as given, else a bar only where a person watches."""
    return console.is_terminal if progress is None else progress


def sql_literal(text: str) -> str:
    return text.replace("'", "''")
