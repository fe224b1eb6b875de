"""California AB 2013 training-data documentation (Cal. Civ. Code § 3111(a)), as a draft.

The twelve items of the high-level summary § 3111(a) requires of a generative AI
system's developer, in the statute's order: (1) sources or owners, (2) how the data
furthers the intended purpose, (3) number of data points, (4) types of data points,
(5) intellectual property, (6) purchased or licensed, (7) personal information, (8)
aggregate consumer information, (9) cleaning, processing or other modification and its
purpose, (10) collection period, (11) dates first used, (12) synthetic data. The run
answers (3), (4), (9) and, where the source records it, (10); the rest are the
developer's to state.
"""

from __future__ import annotations

from clearset.documents.counts import plural
from clearset.documents.facts import (
    RunFacts,
    figures_section,
    lists_table,
    marker_line,
    number,
    removal_paragraph,
    verify_paragraph,
)

FORMAT = "ab2013"
DEFAULT_NAME = "ab2013.md"

#: § 3111(a)'s items, shortened: the headings of the document.
ITEMS = (
    "The sources or owners of the datasets",
    "How the datasets further the intended purpose of the system or service",
    "The number of data points included in the datasets",
    "A description of the types of data points within the datasets",
    "Whether the datasets include data protected by copyright, trademark or patent, or are "
    "entirely in the public domain",
    "Whether the datasets were purchased or licensed by the developer",
    "Whether the datasets include personal information (§ 1798.140(v))",
    "Whether the datasets include aggregate consumer information (§ 1798.140(b))",
    "Whether there was any cleaning, processing or other modification to the datasets by "
    "the developer, including its intended purpose",
    "The time period during which the data in the datasets were collected, including a "
    "notice if the data collection is ongoing",
    "The dates the datasets were first used during the development of the system or service",
    "Whether the system or service used or continuously uses synthetic data generation in "
    "its development",
)


def render(facts: RunFacts) -> str:
    a = facts.answers
    bodies = [
        _sources(facts),
        a.fill("dataset.purpose"),
        _data_points(facts),
        _types(facts),
        a.fill("dataset.intellectual_property"),
        a.fill("dataset.purchased_or_licensed"),
        a.fill("dataset.personal_information"),
        a.fill("dataset.aggregate_consumer_information"),
        _cleaning(facts),
        f"{facts.collection_period()}. Collection ongoing: {a.fill('dataset.collection_ongoing')}",
        a.fill("model.first_used"),
        a.fill("dataset.synthetic_data"),
    ]
    items = [
        f"### ({number}) {heading}\n\n{body}"
        for number, (heading, body) in enumerate(zip(ITEMS, bodies, strict=True), 1)
    ]
    sections = [
        marker_line(FORMAT),
        "# Training data documentation, Cal. Civ. Code § 3111 (AB 2013) (draft)",
        (
            "> **Draft for the operator's legal review.** Made by "
            f"{facts.provenance()}. It gives the high-level summary of § 3111(a) for one "
            f"data set, the cleaned copy {facts.destination_name!r}, used to develop "
            f"{a.fill('model.name')} by {a.fill('provider.name')}. Every line marked GAP is "
            "for the developer to complete; clearset fills only what the run records."
        ),
        "## High-level summary of the datasets (§ 3111(a))",
        *items,
        figures_section(facts),
    ]
    return "\n\n".join(sections) + "\n"


def _sources(facts: RunFacts) -> str:
    text = (
        f"The data set is the cleaned copy of the source {facts.source_name!r} "
        f"({facts.source_kind}). Its owners: {facts.answers.fill('dataset.owners')}."
    )
    if facts.urls:
        top = facts.top_domains()
        hosts = ", ".join(f"{host} ({number(n)})" for host, n in top)
        text += (
            f" {number(facts.urls)} kept items carry the URL they were fetched from, on "
            f"{number(len(facts.domains))} host names; the most frequent: {hosts}."
        )
    public = facts.answers.get("dataset.public_datasets")
    if public:
        text += f" Publicly available data sets it comes from: {public}."
    return text


def _data_points(facts: RunFacts) -> str:
    return (
        f"{facts.kept_text()} in the cleaned copy, of {facts.scanned.text()} in the source "
        f"as scanned; {plural(facts.removed['samples'], 'sample')} "
        f"({plural(facts.removed['members'], 'member')}) were removed. The data set is a "
        "fixed copy, not a dynamic one: these are exact counts."
    )


def _types(facts: RunFacts) -> str:
    formats = ", ".join(f"{fmt} {number(n)}" for fmt, n in facts.image_formats.items())
    text = f"Images ({formats or 'none hashed'})"
    if facts.dimensions:
        w0, w1, h0, h1 = facts.dimensions
        text += f", {w0}-{w1} pixels wide and {h0}-{h1} high"
    text += "."
    if facts.member_kinds:
        kinds = ", ".join(f"{ext} {number(n)}" for ext, n in facts.member_kinds.items())
        text += f" Each item may come with side members (captions, metadata): {kinds}."
    text += f" Labels: {facts.answers.fill('dataset.labels')}"
    return text


def _cleaning(facts: RunFacts) -> str:
    return (
        "Yes. Purpose: to remove known illegal material before training, by matching every "
        "item against hash lists of it supplied by the operator "
        f"({facts.answers.fill('dataset.lists_description')}). "
        + removal_paragraph(facts)
        + "\n\n"
        + lists_table(facts)
        + "\n\n"
        + verify_paragraph(facts)
        + f"\n\nOther processing by the developer: {facts.answers.fill('dataset.other_processing')}"
    )
