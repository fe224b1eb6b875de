"""`clearset audit`: does a model reproduce items of its training set?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clearset.atomic import write_json_atomic
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
from clearset.errors import InputError
from clearset.matching.embeddings import EMBEDDING_THRESHOLD
from clearset.runs.audit import AuditSettings, run_audit
from clearset.runs.prompts import most_duplicated
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
    embeddings: Annotated[
        str | None,
        typer.Option(
            metavar="TRAIN.parquet,GEN.parquet",
            help="Also compare vectors you computed with your own descriptor (SSCD, CLIP): "
            "two parquet files of key (training: and shard) and embedding columns; cosine "
            "candidates are reported apart, in AUDIT/embeddings.parquet.",
        ),
    ] = None,
    similarity: Annotated[
        float,
        typer.Option(
            min=-1.0, max=1.0, help="With --embeddings: cosine similarity that is a candidate."
        ),
    ] = EMBEDDING_THRESHOLD,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Find near copies of training items among a model's generated images and videos.

    Writes AUDIT/audit.parquet (one row per generated image and training item found),
    AUDIT/audit.json (counts, distances, settings, the run's manifest digest), the page
    AUDIT/audit.html and the generated images' own run folder. Generated videos are matched
    to training videos by vPDQ: AUDIT/audit-videos.parquet, with both match percentages.
    Training items are named by key, shard and URL only: never their pixels or captions.
    """
    show = show_progress(progress)
    pair = None
    if embeddings is not None:
        files = [part.strip() for part in embeddings.split(",")]
        if len(files) != 2 or not all(files):
            raise InputError(f"--embeddings {embeddings}: give TRAIN.parquet,GEN.parquet")
        pair = (files[0], files[1])
    settings = AuditSettings(
        threshold=threshold, k=k, dihedral=dihedral, embeddings=pair,
        embedding_threshold=similarity,
    )  # fmt: skip
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
    if "embeddings" in summary:
        record = summary["embeddings"]
        out.print(
            f"embeddings (your descriptor, apart from PDQ): {record['generated_with_candidate']:,}"
            f" of {record['generated_vectors']:,} generated vectors have a candidate "
            f"(cosine >= {record['threshold']}); rows: {result.out / 'embeddings.parquet'}"
        )
    videos = summary.get("videos")
    if videos is not None:
        out.print(
            f"{videos['generated_reproducing']:,} of {videos['generated']:,} generated videos "
            f"reproduce one of the {videos['training']:,} training videos (vPDQ, >= 80 % of "
            f"their frames); every pair that shares a frame: {result.out / 'audit-videos.parquet'}"
        )
        for pair in videos["reproduced"]:
            out.print(
                f"  {pair['generated_file']} -> {pair['training_key']} ({pair['training_shard']}): "
                f"{pair['query_match_percent']:.0f} % of its frames, "
                f"{pair['target_match_percent']:.0f} % of the training video's"
            )
    for name in ("audit.parquet", "audit.json", "audit.html"):
        out.print(f"{name}: {result.out / name}")
    out.print(summary["limits"])
    if videos is not None:
        out.print(videos["limits"])


@app.command()
def prompts(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `clearset scan`.")],
    top: Annotated[int, typer.Option("--top", min=1, help="How many prompts to list.")] = 20,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also write them as JSON here.", callback=local_folder),
    ] = None,
) -> None:
    """The training set's most duplicated captions, to prompt a model with before an audit.

    Counted by exact caption and by exact image hash (PDQ); the captions are read again
    from the source the run scanned. Items the run matched against a list are left out.
    Then generate M images per prompt with the model and `clearset audit` them.
    """
    found = most_duplicated(run_dir, top)
    by_caption = Table(title="most duplicated captions")
    by_caption.add_column("items", justify="right")
    by_caption.add_column("caption")
    for entry in found.by_caption:
        by_caption.add_row(f"{entry['items']:,}", entry["caption"])
    out.print(by_caption)
    by_image = Table(title="most duplicated images (same PDQ hash), with their commonest caption")
    by_image.add_column("items", justify="right")
    by_image.add_column("captions", justify="right")
    by_image.add_column("caption")
    for entry in found.by_image:
        by_image.add_row(
            f"{entry['items']:,}", f"{entry['distinct_captions']:,}", entry["caption"] or "—"
        )
    out.print(by_image)
    out.print(
        f"{found.captions:,} captions read from {found.where}; left out, as matched "
        f"against a list: {found.matched_left_out:,} items"
    )
    if out_file is not None:
        write_json_atomic(out_file, found.to_dict())
        out.print(f"prompts: {out_file}")
