"""The `document` command: training-data documents from a run, and their gaps."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from clearset.cli.app import app, out, run_folder
from clearset.documents import FORMATS, check_document, write_documents
from clearset.errors import InputError

#: `document --check` exit codes: complete, gaps left (2 is a usage error, as elsewhere).
CHECK_COMPLETE, CHECK_GAPS = 0, 1


@app.command("document")
def document(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="RUN", help="A cleaned run folder (receipt recommended).", callback=run_folder
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}."),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The file to write (default: RUN/documents/<format's name>)."
        ),
    ] = None,
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers",
            help="YAML with what clearset cannot know (provider:, model:, dataset: keys; "
            "`document --check` names the keys a document still lacks).",
        ),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check",
            help="List the gaps left in a document instead; exit 0 when there are none, "
            "1 when some are left, 2 for a file that is not a document.",
        ),
    ] = None,
) -> None:
    """Write a training-data document for a run's cleaned copy, or list a document's gaps.

    Formats: the EU AI Act's public summary (eu-ai-act), California's AB 2013 items
    (ab2013), Croissant JSON-LD (croissant) and a Hugging Face data card (datacard), each a
    draft for the operator's legal review. Numbers come from the run's report, with the
    receipt and the lists by identity; what clearset cannot know comes from --answers or
    is written as a `GAP:` line saying what a person must supply.
    """
    if check is not None:
        if run_dir is not None or fmt is not None or dest is not None or answers is not None:
            raise InputError("document --check FILE takes no RUN, --format, --out or --answers")
        _check(check)
        return
    if run_dir is None or fmt is None:
        raise InputError("document: give RUN and --format FORMAT (or --check FILE)")
    (path,) = write_documents(run_dir, [fmt], out=dest, answers=answers)
    _, gaps = check_document(path)
    left = f"; {len(gaps)} gaps left (clearset document --check {path})" if gaps else ""
    out.print(f"{fmt}: {path}{left}")


def _check(path: Path) -> None:
    kind, gaps = check_document(path)
    for found in gaps:
        how = f"answers key {found.key}" if found.how == "answers" else f"run: {found.key}"
        out.print(f"{path}:{found.line}: GAP ({how}): {found.what}")
    if not gaps:
        out.print(f"{path}: {kind} document, no gaps left")
        return
    keys = sorted({g.key for g in gaps if g.how == "answers"})
    out.print(
        f"{path}: {kind} document, {len(gaps)} gaps left"
        + (f"; answer {', '.join(keys)} in --answers and write it again" if keys else "")
    )
    raise typer.Exit(CHECK_GAPS)


def demo_documents(run_dir: Path) -> list[Path]:
    """The demo's four documents, with no answers (every gap shows); prints each path
    after the command that writes it by hand."""
    paths = write_documents(run_dir, list(FORMATS))
    for fmt, path in zip(FORMATS, paths, strict=True):
        out.print("\n$ " + shlex.join(["clearset", "document", str(run_dir), "--format", fmt]))
        out.print(f"{fmt}: {path} (a draft for legal review: GAP lines are for a person)")
    return paths
