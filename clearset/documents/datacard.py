"""A Hugging Face dataset card (README.md with a YAML header) for the cleaned copy.

The header carries what the Hub reads: `pretty_name`, `size_categories` from the number
of items kept, `license` when the operator gave one, and `configs` whose data files are
the cleaned copy's parquet (or its tar shards for a WebDataset copy). The body follows
the card's usual sections (description, structure, creation with source data and
processing, personal information, bias and limitations, licensing), with a section on the
removal of known material that cites the lists by identity and the receipt.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from clearset.documents.facts import (
    RunFacts,
    figures_section,
    lists_table,
    marker_line,
    md_table,
    number,
    removal_paragraph,
    verify_paragraph,
)
from clearset.formats import format_of

FORMAT = "datacard"
DEFAULT_NAME = "README.md"

#: The Hub's size categories: (upper bound, label), the last one open-ended.
SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"), (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
)  # fmt: skip
SIZE_CATEGORY_TOP = "n>1T"


def size_category(items: int) -> str:
    for bound, label in SIZE_CATEGORIES:
        if items < bound:
            return label
    return SIZE_CATEGORY_TOP


def data_files(facts: RunFacts) -> list[str]:
    """The files a `datasets` config loads: the cleaned parquet, or the tar shards."""
    fmt = format_of(facts.source_kind)
    wanted = fmt.data_files_suffix if fmt is not None else None
    if wanted is None:
        return []
    return [n for n in facts.files if PurePosixPath(n).suffix.lower() == wanted]


def header(facts: RunFacts) -> dict:
    meta: dict = {"pretty_name": facts.dataset_name}
    license_ = facts.answers.get("dataset.license")
    if license_ is not None:
        meta["license"] = license_
    meta["size_categories"] = [size_category(facts.kept.samples)]
    files = data_files(facts)
    if files:
        meta["configs"] = [
            {"config_name": "default", "data_files": [{"split": "train", "path": files}]}
        ]
    meta["tags"] = ["clearset", "hash-screened"]
    return meta


def render(facts: RunFacts) -> str:
    a = facts.answers
    front = yaml.safe_dump(header(facts), sort_keys=False, allow_unicode=True)
    files = data_files(facts)
    config = (
        f"The `default` config loads {number(len(files))} file(s) of the cleaned copy "
        "(split `train`)."
        if files
        else "No config is declared: the Hub detects a folder of images by itself."
    )
    sections = [
        f"---\n{front}---",
        marker_line(FORMAT),
        f"# Dataset Card for {facts.dataset_name}",
        (
            "> **Draft for the operator's legal review.** Made by "
            f"{facts.provenance()}. Every line marked GAP is for a person to complete."
        ),
        "## Dataset Description",
        _items(
            [
                ("Summary", a.fill("dataset.description")),
                ("Curated by", a.fill("provider.name")),
                ("License", a.fill("dataset.license")),
                ("Homepage", a.fill("dataset.url")),
                ("Version", _version_text(facts)),
            ]
        ),
        "## Uses",
        _items([("Intended use", a.fill("dataset.purpose"))]),
        "## Dataset Structure",
        f"The cleaned copy holds {facts.kept_text()} in "
        f"{number(len(facts.files))} files ({facts.source_kind}). {config}",
        _structure(facts),
        "## Dataset Creation",
        "### Source Data",
        "#### Data Collection and Processing",
        _items(
            [
                ("Source", f"{facts.source_name!r} ({facts.source_kind})"),
                ("Public data sets it comes from", a.fill("dataset.public_datasets")),
                ("Collected", facts.collection_period()),
                ("Crawlers", a.fill("dataset.crawler")),
                ("Domain names", _domains(facts)),
                ("Other processing", a.fill("dataset.other_processing")),
            ]
        ),
        "#### Who are the source data producers?",
        a.fill("dataset.owners"),
        "### Removal of known illegal material",
        f"Lists: {a.fill('dataset.lists_description')}. " + removal_paragraph(facts),
        lists_table(facts),
        verify_paragraph(facts),
        "### Personal and Sensitive Information",
        a.fill("dataset.personal_information"),
        "## Bias, Risks, and Limitations",
        _items(
            [
                ("Biases", a.fill("dataset.biases")),
                ("Limitations", a.fill("dataset.limitations")),
            ]
        ),
        "## Citation",
        a.fill("dataset.citation"),
        figures_section(facts),
    ]
    return "\n\n".join(sections) + "\n"


def _items(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"- **{label}:** {value}" for label, value in rows)


def _version_text(facts: RunFacts) -> str:
    source = facts.answers.get("dataset.source_version")
    if source is None:
        return facts.answers.fill("dataset.source_version")
    major = int(source.split(".")[0])
    if facts.removed["samples"]:
        return f"{major + 1}.0.0 (a new major version of {source}: samples were removed)"
    return f"{source} (nothing was removed)"


def _structure(facts: RunFacts) -> str:
    if len(facts.files) > 50:
        by_ext: dict[str, int] = {}
        for name in facts.files:
            ext = PurePosixPath(name).suffix.lower() or "(none)"
            by_ext[ext] = by_ext.get(ext, 0) + 1
        return md_table(["extension", "files"], [[e, number(n)] for e, n in sorted(by_ext.items())])
    return md_table(["file"], [[f"`{name}`"] for name in facts.files])


def _domains(facts: RunFacts) -> str:
    if not facts.urls:
        return "the run records no URL for the kept items"
    hosts = ", ".join(f"{h} ({number(n)})" for h, n in facts.top_domains())
    return (
        f"{number(facts.urls)} kept items carry a source URL on "
        f"{number(len(facts.domains))} host names; the most frequent: {hosts}"
    )
