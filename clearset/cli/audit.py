"""`clearset audit`: does a model reproduce items of its training set?"""

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
    show_progress,
)
from clearset.runs.audit import AuditSettings, run_audit
from clearset.runs.tasks import DEFAULT_RETRIES
from clearset.settings import PDQ_MATCH_THRESHOLD


@app.command()
def audit(
    generated: Annotated[
        str,
        typer.Argument(help="Images the model generated: a folder, tar shards, parquet or URL."),
    ],
    run_dir: Annotated[
        Path, typer.Option("--run", help="The training set's run folder (`clearset scan`).")
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="New folder for the audit's outputs.", callback=local_folder
        ),
    ] = Path("audit"),
    threshold: Annotated[
        int, typer.Option(min=0, max=256, help="PDQ Hamming distance that counts as a copy.")
    ] = PDQ_MATCH_THRESHOLD,
    k: Annotated[
        int,
        typer.Option(
            "--k", min=0, help="Also list each generated image's K nearest training items."
        ),
    ] = 0,
    dihedral: Annotated[
        bool,
        typer.Option(help="Also compare the 7 other rotations/flips of each generated image."),
    ] = False,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Find near copies of training items among a model's generated images, by PDQ.

    Writes AUDIT/audit.parquet (one row per generated image and training item found),
    AUDIT/audit.json (counts, distances, settings, the run's manifest digest), the page
    AUDIT/audit.html and the generated images' own run folder. Training items are named by
    key, shard and URL only: never their pixels or captions.
    """
    show = show_progress(progress)
    settings = AuditSettings(threshold=threshold, k=k, dihedral=dihedral)
    with engine_for(engine, address, workers) as runner:
        result = run_audit(
            generated, run_dir, out_dir, settings, engine=runner, show_progress=show,
            console=console, retries=retries,
        )  # fmt: skip
    summary = result.summary
    found, searched = summary["results"]["generated_with_copy"], summary["generated"]["searched"]
    out.print(
        f"{found:,} of {searched:,} generated images have a near copy in the training set "
        f"(PDQ distance <= {threshold}{', any rotation or flip' if dihedral else ''})"
    )
    skipped = summary["generated"]["low_quality"]
    if skipped:
        out.print(
            f"{skipped:,} generated images were not searched: PDQ quality below "
            f"{summary['settings']['min_quality']}"
        )
    for name in ("audit.parquet", "audit.json", "audit.html"):
        out.print(f"{name}: {result.out / name}")
    out.print(summary["limits"])
