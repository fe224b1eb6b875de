"""Training-data documents filled from a run: drafts for the operator's legal review.

    eu-ai-act   the EU AI Act's public summary of training content (AI Office template)
    ab2013      California's training-data documentation (Cal. Civ. Code § 3111(a))
    croissant   MLCommons Croissant 1.0 JSON-LD with its Responsible-AI fields
    datacard    a Hugging Face dataset card (README.md with a YAML header)

Each is built from one `RunFacts` (see `facts`): numbers from the run's report, the
receipt and the lists by identity; what the run cannot know comes from an answers file or
is left as a marked gap. A document is written atomically, never inside the cleaned copy
(which holds only what the scan hashed); `check_document` lists the gaps left in one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clearset.atomic import atomic_path
from clearset.documents import ab2013, croissant, datacard, eu_ai_act
from clearset.documents.facts import (
    QUESTIONS,
    Answers,
    Gap,
    RunFacts,
    find_gaps,
    gather,
    load_answers,
)
from clearset.errors import InputError, OutputError

#: Format name -> (render, default file name).
FORMATS: dict[str, tuple[Callable[[RunFacts], str], str]] = {
    module.FORMAT: (module.render, module.DEFAULT_NAME)
    for module in (eu_ai_act, ab2013, croissant, datacard)
}

#: Where documents go by default: RUN/documents/<default name>.
DOCUMENTS_DIR = "documents"


def render_document(facts: RunFacts, fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: unknown (known: {', '.join(FORMATS)})")
    return FORMATS[fmt][0](facts)


def default_path(run_dir: str | Path, fmt: str) -> Path:
    return Path(run_dir) / DOCUMENTS_DIR / FORMATS[fmt][1]


def write_documents(
    run_dir: str | Path,
    formats: list[str],
    *,
    out: str | Path | None = None,
    answers: str | Path | Answers | None = None,
) -> list[Path]:
    """Write each format's document for RUN; returns their paths.

    `out` is the file for a single format (default RUN/documents/<name>). Everything is
    gathered and rendered before the first file is written, so a refused run or a bad
    answers file leaves nothing behind.
    """
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r}: unknown (known: {', '.join(FORMATS)})")
    if out is not None and len(formats) != 1:
        raise InputError("--out names one file: give one --format with it")
    loaded = answers if isinstance(answers, Answers) else load_answers(answers)
    facts = gather(run_dir, loaded)
    texts = [(fmt, render_document(facts, fmt)) for fmt in formats]
    paths = []
    for fmt, text in texts:
        path = Path(out) if out is not None else default_path(run_dir, fmt)
        _refuse_inside_copy(path, facts.destination)
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; give --out a file name")
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _refuse_inside_copy(path: Path, destination: Path) -> None:
    """A document inside the cleaned copy would be a file the scan never hashed."""
    try:
        path.resolve().relative_to(destination.resolve())
    except ValueError:
        return
    raise OutputError(
        f"{path}: is inside the cleaned copy {destination}, which holds only what the scan "
        "hashed; write the document elsewhere and publish it beside the copy"
    )


def check_document(path: str | Path) -> tuple[str, list[Gap]]:
    """(format, gaps left) of a document; InputError for a file that is not one."""
    return find_gaps(path)


__all__ = [
    "FORMATS",
    "QUESTIONS",
    "Answers",
    "Gap",
    "RunFacts",
    "check_document",
    "default_path",
    "gather",
    "load_answers",
    "render_document",
    "write_documents",
]
