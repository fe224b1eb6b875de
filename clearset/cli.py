"""The `clearset` command: thin, it parses arguments and calls the library.

Every ClearsetError becomes one line on stderr and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.console import Console
from rich.table import Table

from clearset import __version__
from clearset.engines import ScanSettings, run_scan
from clearset.errors import ClearsetError, InputError
from clearset.hashing import hash_bytes
from clearset.sources import SOURCE_KINDS, open_source

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
        help="Compute PDQ with the reference pipeline, bit-equal to pdqhash.",
    ),
]


@app.command()
def scan(
    source: Annotated[str, typer.Argument(help="Folder, tar shards, parquet, or fsspec URL.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    kind: Annotated[
        str | None, typer.Option(help=f"Source kind: {', '.join(SOURCE_KINDS)} (default: detect).")
    ] = None,
    image_column: Annotated[
        str | None, typer.Option(help="Parquet column holding image bytes (default: detect).")
    ] = None,
    workers: WorkersOpt = None,
    exact_pdq: ExactPdqOpt = True,
    progress: Annotated[
        bool | None, typer.Option(help="Show a progress bar (default: when on a terminal).")
    ] = None,
) -> None:
    """Hash every item of SOURCE into the run folder OUT (re-running resumes)."""
    settings = ScanSettings(exact_pdq=exact_pdq)
    src = open_source(source, kind=kind, image_column=image_column)
    show = console.is_terminal if progress is None else progress
    result = run_scan(src, out_dir, settings, workers=workers, show_progress=show, console=console)
    _print_summary(out_dir, result.shards_skipped, result.seconds)


def _print_summary(run_dir: Path, skipped: int, seconds: float) -> None:
    pattern = str(run_dir / "manifest" / "*.parquet")
    rows = duckdb.sql(
        "SELECT status, coalesce(split_part(reason, ':', 1), '') AS why, count(*) AS n "
        f"FROM read_parquet('{_sql_literal(pattern)}') GROUP BY ALL ORDER BY status, why"
    ).fetchall()
    table = Table(title=f"scan of {run_dir}", show_lines=False)
    table.add_column("status")
    table.add_column("reason")
    table.add_column("items", justify="right")
    for status, why, count in rows:
        table.add_row(status, why, f"{count:,}")
    out.print(table)
    total = sum(r[2] for r in rows)
    note = f" ({skipped} shards already done)" if skipped else ""
    out.print(f"{total:,} items in {seconds:.1f}s{note}; manifest: {run_dir / 'manifest'}")


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


@app.command("hash")
def hash_files(
    files: Annotated[list[Path], typer.Argument(help="Image files to hash.")],
    exact_pdq: ExactPdqOpt = True,
) -> None:
    """Print each file's hashes on one line: PDQ hex as threatexchange lists use it."""
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        hashes = hash_bytes(data, exact_pdq=exact_pdq)
        pdq = hashes.pdq.hex() if hashes.pdq else "-"
        quality = hashes.pdq_quality if hashes.pdq_quality is not None else "-"
        line = (
            f"pdq={pdq} quality={quality} sha256={hashes.sha256.hex()} "
            f"md5={hashes.md5.hex()} sha1={hashes.sha1.hex()} status={hashes.status}"
        )
        if hashes.reason:
            line += f" reason={hashes.reason.split(':', 1)[0]}"
        print(f"{line} {path}")


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo data and runs.")
    ] = Path("clearset-demo"),
    workers: WorkersOpt = None,
) -> None:
    """Build the benign demo data set and scan it, end to end."""
    from clearset.demo import build_demo_data

    data_root = out_dir / "data"
    if not (data_root / ".complete").exists():
        console.print(f"building the benign demo data set in {data_root}")
        build_demo_data(data_root)
        (data_root / ".complete").write_text("demo data complete\n")
    run_dir = out_dir / "run"
    src = open_source(str(data_root / "webdataset"))
    result = run_scan(src, run_dir, ScanSettings(), workers=workers, console=console)
    _print_summary(run_dir, result.shards_skipped, result.seconds)


def main() -> None:
    try:
        app(standalone_mode=False)
    except ClearsetError as exc:
        console.print(f"[red]clearset: error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR if isinstance(exc, InputError) else 1)
    except KeyboardInterrupt:
        console.print("clearset: interrupted; re-run the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
