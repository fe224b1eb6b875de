"""The EU AI Act's public summary of training content (Art. 53(1)(d)), as a draft.

Follows the sections of the AI Office's template of July 2025: 1 general information
(provider, model, modality and the training data's size band), 2 the list of data
sources (public data sets, private third-party data, crawled and scraped data with its
collection period and top domain names, user data, synthetic data, other), and 3 data
processing (respect of text-and-data-mining reservations, removal of illegal content,
other). The summary covers all of a model's training content; this draft covers the one
data set clearset cleaned, and says so.
"""

from __future__ import annotations

from clearset.documents.counts import plural
from clearset.documents.facts import (
    TOP_DOMAIN_SHARE,
    RunFacts,
    figures_section,
    lists_table,
    marker_line,
    md_table,
    number,
    removal_paragraph,
    verify_paragraph,
)

FORMAT = "eu-ai-act"
DEFAULT_NAME = "eu-ai-act-summary.md"


def render(facts: RunFacts) -> str:
    a = facts.answers
    sections = [
        marker_line(FORMAT),
        "# Public summary of training content (draft)",
        (
            "> **Draft for the operator's legal review.** Made by "
            f"{facts.provenance()}, in the shape of the AI Office's template for the public "
            "summary of training content of general-purpose AI models (Art. 53(1)(d) AI Act, "
            "July 2025). It covers one training data set, the cleaned copy "
            f"{facts.destination_name!r}; the published summary must cover all of the "
            "model's training content. Every line marked GAP is for a person to complete; "
            "clearset fills only what the run records."
        ),
        "## 1. General information",
        "### 1.1 Provider identification",
        _items(
            [
                (
                    "Provider name and contact details",
                    f"{a.fill('provider.name')}; {a.fill('provider.contact')}",
                ),
                ("Authorised representative", a.fill("provider.representative")),
            ]
        ),  # fmt: skip
        "### 1.2 Model identification",
        _items(
            [
                ("Versioned model name(s)", a.fill("model.name")),
                ("Model dependencies", a.fill("model.dependencies")),
                ("Date of placement of the model on the Union market", a.fill("model.market_date")),
            ]
        ),  # fmt: skip
        "### 1.3 Modalities, overall training data size and other characteristics",
        _items(
            [
                (
                    "Modality",
                    ("Image, Video" if facts.kept.videos else "Image") + _caption_note(facts),
                ),
                (
                    "Training data size (images)",
                    f"{facts.size_band()} ({plural(facts.kept.images, 'image')} in the cleaned "
                    f"copy, in {facts.kept_text()})",
                ),
                *_video_size(facts),
                ("Types of content", _content_types(facts)),
                ("Latest date of data collection", _latest_collection(facts)),
                ("Other relevant characteristics", a.fill("dataset.description")),
            ]
        ),  # fmt: skip
        "## 2. List of data sources",
        "### 2.1 Publicly available datasets",
        _items([("Publicly available data sets used", a.fill("dataset.public_datasets"))]),
        "### 2.2 Private non-publicly available datasets obtained from third parties",
        _items(
            [
                (
                    "Data sets licensed or otherwise obtained from third parties",
                    a.fill("dataset.private_datasets"),
                ),
                ("Purchased or licensed", a.fill("dataset.purchased_or_licensed")),
            ]
        ),  # fmt: skip
        "### 2.3 Data crawled and scraped from online sources",
        _crawled(facts),
        "### 2.4 User data",
        _items([("Data from users of the provider's services", a.fill("dataset.user_data"))]),
        "### 2.5 Synthetic data",
        _items([("Synthetic data", a.fill("dataset.synthetic_data"))]),
        "### 2.6 Other sources of data",
        _items(
            [
                (
                    "This data set",
                    f"the source {facts.source_name!r} ({facts.source_kind}); "
                    f"its owners: {a.fill('dataset.owners')}",
                ),
                ("Other sources", a.fill("dataset.other_sources")),
            ]
        ),  # fmt: skip
        "## 3. Data processing aspects",
        "### 3.1 Respect of reservation of rights from text and data mining exception "
        "or limitation",
        _opt_out(facts),
        "### 3.2 Removal of illegal content",
        "Illegal content was screened for by matching every item against hash lists of "
        "known material supplied by the operator "
        f"({facts.answers.fill('dataset.lists_description')}). " + removal_paragraph(facts),
        lists_table(facts),
        verify_paragraph(facts),
        "### 3.3 Other information",
        _items([("Other processing", a.fill("dataset.other_processing"))]),
        figures_section(facts, "####"),
    ]
    return "\n\n".join(sections) + "\n"


def _items(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"- **{label}:** {value}" for label, value in rows)


def _video_size(facts: RunFacts) -> list[tuple[str, str]]:
    """The video size band (hours), for a copy that holds videos."""
    kept = facts.kept
    if not kept.videos:
        return []
    return [
        (
            "Training data size (video)",
            f"{facts.video_band()} ({kept.video_hours:,.2f} hours in "
            f"{plural(kept.videos, 'video')}, {plural(kept.video_frames, 'frame')} hashed, in "
            "the cleaned copy)",
        )
    ]


def _caption_note(facts: RunFacts) -> str:
    if ".txt" in facts.member_kinds:
        return (
            f" (the copy also holds {number(facts.member_kinds['.txt'])} text members, "
            f"e.g. captions: {facts.answers.fill('dataset.labels')})"
        )
    return ""


def _content_types(facts: RunFacts) -> str:
    parts = [f"{fmt} {number(n)}" for fmt, n in facts.image_formats.items()]
    text = "images by format: " + (", ".join(parts) if parts else "none hashed")
    status = facts.report["items"]["status"]
    if status.get("missing"):
        text += (
            f"; {number(status['missing'])} items without bytes in the source "
            "(failed downloads or URL-only rows)"
        )
    if facts.member_kinds:
        kinds = ", ".join(f"{ext} {number(n)}" for ext, n in facts.member_kinds.items())
        text += f"; other members kept beside the images: {kinds}"
    return text


def _latest_collection(facts: RunFacts) -> str:
    if facts.collection.end is not None:
        return (
            f"{facts.collection.end:%Y-%m-%d} (the last download time recorded by "
            f"{facts.collection.recorded_by})"
        )
    return facts.answers.fill("dataset.collection_period")


def _crawled(facts: RunFacts) -> str:
    a = facts.answers
    rows = [
        ("Crawlers used and their behaviour", a.fill("dataset.crawler")),
        ("Period of data collection", facts.collection_period()),
        ("Collection ongoing", a.fill("dataset.collection_ongoing")),
    ]
    if not facts.urls:
        rows.append(
            ("Domain names", "the run records no URL for the kept items, so clearset lists "
             "no domain name")
        )  # fmt: skip
        return _items(rows)
    top = facts.top_domains()
    rows.append(
        ("Domain names", f"{number(facts.urls)} kept items carry a source URL, from "
         f"{number(len(facts.domains))} host names. The {number(len(top))} with the most "
         f"items (the top {TOP_DOMAIN_SHARE:.0%} the template asks for, by number of items: "
         "the run does not record the size of what each URL served):")
    )  # fmt: skip
    table = md_table(["host name", "kept items"], [[host, number(n)] for host, n in top])
    return _items(rows) + "\n\n" + table


def _opt_out(facts: RunFacts) -> str:
    a = facts.answers
    collection = facts.collection
    if collection.x_robots_skipped is None:
        recorded = (
            "The source records no opt-out handling clearset can read (img2dataset's "
            "`_stats.json` files are the record it reads)."
        )
    else:
        recorded = (
            f"The source's {collection.recorded_by} record "
            f"{number(collection.x_robots_skipped)} images that img2dataset did not download "
            "because an X-Robots-Tag header reserved them (its --disallowed_header_directives, "
            "by default noai, noimageai, noindex and noimageindex); which directives that run "
            "honoured is not recorded."
        )
    return _items(
        [
            ("What the source recorded", recorded),
            ("Measures taken to honour reservations", a.fill("dataset.opt_out")),
        ]
    )
