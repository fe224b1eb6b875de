"""Commands that write a cleaned copy and the removal report: clean, report, apply-removals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearset.cli.app import (
    AddressOpt,
    EngineOpt,
    ProgressOpt,
    RetriesOpt,
    WorkersOpt,
    app,
    console,
    engine_for,
    local_folder,
    out,
    run_folder,
    show_progress,
)
from clearset.documents.counts import plural, run_counts
from clearset.documents.report import run_state, write_report
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import RunFolder
from clearset.runs import apply_removals, clean_run
from clearset.runs.clean import card_lines
from clearset.runs.tasks import DEFAULT_RETRIES

ToOpt = Annotated[
    Path,
    typer.Option("--to", help="Destination folder for the cleaned copy.", callback=local_folder),
]
LinkOpt = Annotated[
    bool, typer.Option(help="Hard-link unchanged files instead of copying (same filesystem).")
]
DropEmptyOpt = Annotated[
    bool, typer.Option(help="Leave out shards that lose every item (default: write them empty).")
]
KeepUnfetchedOpt = Annotated[
    bool,
    typer.Option(
        "--keep-unfetched",
        help="A URL list scanned with --fetch: keep rows whose image could not be fetched "
        "(default: they are removed, since nothing they serve was hashed).",
    ),
]
KeepListOpt = Annotated[
    str | None,
    typer.Option(
        help="Newer metadata (parquet): keep only items whose URL or hash it holds.",
    ),
]


@app.command()
def clean(
    run_dir: Annotated[
        Path, typer.Argument(help="A scanned and matched run folder.", callback=run_folder)
    ],
    to: ToOpt,
    link: LinkOpt = False,
    drop_undecodable: Annotated[
        bool, typer.Option(help="Also remove items that are not decodable images (reported).")
    ] = False,
    drop_empty_shards: DropEmptyOpt = False,
    keep_list: KeepListOpt = None,
    keep_unfetched: KeepUnfetchedOpt = False,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Write the run's source again to --to without its matched items.

    The copy has the source's format and shard names; re-running resumes. A clean to
    another --to keeps the run's record of the earlier one in RUN/history/clean-N/.
    """
    with engine_for(engine, address, workers) as runner:
        counts = clean_run(
            run_dir,
            to,
            link=link,
            drop_undecodable=drop_undecodable,
            drop_empty_shards=drop_empty_shards,
            keep_list=keep_list,
            keep_unfetched=keep_unfetched,
            engine=runner,
            show_progress=show_progress(progress),
            console=console,
            retries=retries,
        )
    print_clean(counts, run_dir, to)
    record = CleanRecord.read(run_dir)
    replaced = record.replaced if record else None
    if replaced:
        out.print(f"the run's record of its earlier clean is kept in {run_dir / replaced}")


def print_clean(counts: dict, run_dir: Path, to: Path) -> None:
    out.print(
        f"{run_counts(run_dir).clean_text()}; "
        f"undecodable kept {counts.get('undecodable_kept', 0):,}, "
        f"dropped {counts.get('undecodable_dropped', 0):,}"
    )
    for reason, number in counts.get("keys_removed_by_reason", {}).items():
        out.print(f"  {reason}: {plural(number, 'sample')}")
    out.print(f"cleaned copy: {to}; removal list: {run_dir / 'removals.parquet'}")

    record = CleanRecord.read(run_dir)
    for line in card_lines(record.card_files if record else None):
        out.print(line)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder made by `clearset scan`.", callback=run_folder)
    ],
    show_urls: Annotated[
        bool,
        typer.Option(
            help="Also name each matched item's URL: for the operator, not for sharing "
            "(the URLs are in RUN/matches.parquet either way).",
        ),
    ] = False,
) -> None:
    """Write RUN/report.json and RUN/report.html, made to be shared (identifiers and counts).

    No image, caption or list entry appears, and no URL of a matched item unless
    --show-urls. A run whose scan has not finished, or failed its accounting, gets a
    report marked partial throughout, saying how to finish.
    """
    import json

    json_path, html_path = write_report(run_dir, show_urls=show_urls)
    out.print(f"report: {html_path} (data: {json_path})")
    state = json.loads(json_path.read_text()).get("state") or {}
    if state.get("partial"):
        # The page names places by their last part; the operator gets the full command.
        run = RunFolder(Path(run_dir))
        state = run_state(run, RunInfo.read(run))
        out.print(f"  PARTIAL: {state['problem']}; every figure is a lower bound")
        out.print(f"  to finish: {state['to_finish']}; then run `clearset report` again")
    if show_urls:
        out.print("  it names the URLs of matched items: keep it to yourself")


@app.command("apply-removals")
def apply_removals_command(
    source: Annotated[str, typer.Argument(help="Your copy of the data set (as for scan).")],
    removals: Annotated[
        str | None, typer.Argument(help="A removal list (removals.parquet) published for it.")
    ] = None,
    to: ToOpt = Path("cleaned"),
    keep_list: KeepListOpt = None,
    kind: Annotated[str | None, typer.Option(help="Source kind (default: detect).")] = None,
    image_column: Annotated[str | None, typer.Option(help="Parquet image column.")] = None,
    link: LinkOpt = False,
    drop_empty_shards: DropEmptyOpt = False,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Remove a published removal list's items (by URL or SHA-256) from your copy of a data set.

    With --keep-list, keep only the items newer metadata holds. What is kept is written
    to --to in the source's format.
    """
    with engine_for(engine, address, workers) as runner:
        counts = apply_removals(
            source,
            removals,
            to,
            keep_list=keep_list,
            kind=kind,
            image_column=image_column,
            link=link,
            drop_empty_shards=drop_empty_shards,
            engine=runner,
            show_progress=show_progress(progress),
            console=console,
            retries=retries,
        )
    out.print(
        f"removed {plural(counts['keys_removed'], 'key')} "
        f"({plural(counts['members_removed'], 'member')}) "
        f"from {plural(counts['shards'] - counts['shards_copied_whole'], 'shard')}, keeping "
        f"{plural(counts['keys_kept_in_rewritten_shards'], 'key')} there; "
        f"{plural(counts['shards_copied_whole'], 'shard')} with nothing to remove copied "
        f"whole; cleaned copy: {to}"
    )

    for line in card_lines(counts.get("card_files")):
        out.print(line)
    if (
        removals is not None
        and counts["removal_rows"]
        and not counts["keys_removed_by_removal_list"]
    ):
        # A warning, not an error: a copy made after the takedown, or a part of the data
        # set, may hold none of the listed items, and is then right as written.
        console.print(
            f"clearset: warning: 0 of {counts['removal_rows']:,} rows of the removal list "
            f"{removals} matched anything in {source} (by URL, SHA-256 or MD5): nothing was "
            "removed for it; check that it is the removal list of this data set"
        )
