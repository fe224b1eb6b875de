"""`clearset exchange`: request (builder), answer (holder), apply (builder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearset.cli.app import (
    AddressOpt,
    EngineOpt,
    ListOpt,
    MinQualityOpt,
    ProgressOpt,
    RetriesOpt,
    SkipInvalidOpt,
    ThresholdOpt,
    WorkersOpt,
    app,
    console,
    engine_for,
    match_job,
    out,
    show_progress,
)
from clearset.cli.options import FloodThresholdOpt, review_job
from clearset.errors import InputError
from clearset.exchange import format as fmt
from clearset.exchange.run import (
    answer_request,
    answer_review_lines,
    apply_answer,
    make_request,
    matched_text,
)
from clearset.matching.review import (
    FLOOD_THRESHOLD,
    load_allow_list,
    review_lines,
    review_section,
)
from clearset.receipts import load_public_key
from clearset.records import RunInfo
from clearset.runfolder import RunFolder
from clearset.runs.tasks import DEFAULT_RETRIES
from clearset.settings import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY

exchange_app = typer.Typer(
    help="Match by the list's holder: a signed hash exchange (docs/guides/exchange.md).",
    no_args_is_help=True,
)
app.add_typer(exchange_app, name="exchange")


@exchange_app.command("request")
def request_command(
    run_dir: Annotated[Path, typer.Argument(help="A scanned run folder.")],
    dest: Annotated[Path, typer.Option("--out", help="The request folder to write (new).")],
    hashes: Annotated[
        str,
        typer.Option("--hash", help="Hash types to send, comma-separated: sha256,md5,sha1,pdq."),
    ] = ",".join(fmt.DEFAULT_TYPES),
    key: Annotated[
        Path | None, typer.Option("--key", help="Sign the request with this private key.")
    ] = None,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Write a request for a list holder: hashes only."""
    hash_types = fmt.parse_hash_types(hashes)
    with engine_for(engine, address, workers) as runner:
        index = make_request(
            run_dir,
            dest,
            hash_types=hash_types,
            key_path=key,
            engine=runner,
            retries=retries,
            show_progress=show_progress(progress),
            console=console,
        )
    out.print(
        f"request: {dest} ({index['rows']:,} rows (members), {', '.join(index['hash_types'])}), "
        f"digest {index['digest']}" + ("" if index["signed"] else " (not signed: no --key)"),
        highlight=False,
        soft_wrap=True,
    )


@exchange_app.command("answer")
def answer_command(
    request: Annotated[Path, typer.Argument(help="A request folder.")],
    key: Annotated[Path, typer.Option("--key", help="The holder's private key.")],
    dest: Annotated[Path, typer.Option("--out", help="The answer folder to write (new).")],
    lists: ListOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    threshold: ThresholdOpt = PDQ_MATCH_THRESHOLD,
    min_quality: MinQualityOpt = PDQ_MIN_QUALITY,
    requester_pubkey: Annotated[
        Path | None,
        typer.Option("--requester-pubkey", help="Refuse a request not signed by this key."),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="The holder's name in the answer.")
    ] = None,
    commit_salts: Annotated[
        Path | None,
        typer.Option(
            "--commit-lists",
            help="Disclose each list by a salted commitment, not its digest; the salts go "
            "to this (private) file.",
        ),
    ] = None,
    allow_list: Annotated[
        Path | None,
        typer.Option(
            "--allow-list",
            metavar="FILE",
            help="SHA-256 values the holder reviewed as false positives (one hex value a "
            "line, # comments; or parquet with a sha256 column): their matches are held back "
            "from the answer, and the signed statement gives the list's digest and how many "
            "rows it held back.",
        ),
    ] = None,
    flood_threshold: FloodThresholdOpt = FLOOD_THRESHOLD,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Answer a request from the holder's lists, signed."""
    job = review_job(
        match_job(lists, skip_invalid, threshold, min_quality), allow_list, flood_threshold
    )
    if job is None:
        raise InputError("exchange answer: give at least one --list")
    if label is not None and (not label.strip() or "\n" in label):
        raise InputError(f"--label {label!r}: give a non-empty name on one line")
    requester = load_public_key(requester_pubkey) if requester_pubkey is not None else None
    with engine_for(engine, address, workers) as runner:
        predicate = answer_request(
            request,
            job,
            key,
            dest,
            requester_key=requester,
            label=label,
            commit_salts=commit_salts,
            engine=runner,
            retries=retries,
            show_progress=show_progress(progress),
            console=console,
        )
    out.print(
        f"answer: {dest} ({predicate['matched']['row_ids']:,} of "
        f"{predicate['rows_searched']:,} request rows (members) matched), "
        f"digest {predicate['digest']}",
        highlight=False,
        soft_wrap=True,
    )
    for line in answer_review_lines(predicate["review"]):
        said = console if line.startswith("warning:") else out
        said.print(line, markup=False, highlight=False, soft_wrap=True)


@exchange_app.command("apply")
def apply_command(
    run_dir: Annotated[Path, typer.Argument(help="The run folder the request came from.")],
    answer: Annotated[Path, typer.Argument(help="The holder's answer folder.")],
    holder_pubkey: Annotated[
        Path, typer.Option("--holder-pubkey", help="The holder's public key (PEM).")
    ],
    allow_list: Annotated[
        Path | None,
        typer.Option(
            "--allow-list",
            metavar="FILE",
            help="SHA-256 values the builder reviewed as false positives (as for `match "
            "--allow-list`): every match of the run whose member it holds is marked allowed, "
            "kept by clean and counted in the receipt.",
        ),
    ] = None,
) -> None:
    """Check a holder's answer and record its matches in the run."""
    allow = load_allow_list(allow_list) if allow_list is not None else None
    applied = apply_answer(run_dir, answer, load_public_key(holder_pubkey), allow)
    out.print(
        f"applied answer {applied['answer_digest']} (holder key {applied['holder_key_id']}): "
        f"{matched_text(applied['matched'])}; run `clearset clean` next",
        highlight=False,
        soft_wrap=True,
    )
    review = review_section(RunInfo.read(RunFolder(run_dir)).matching or {},
                            RunFolder(run_dir).read_info()["counts"]["matches"])  # fmt: skip
    for line in review_lines(review):
        said = console if line.startswith("warning:") else out
        said.print(line, markup=False, highlight=False, soft_wrap=True)
