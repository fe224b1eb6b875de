"""AUDIT/audit.html: the audit's findings as one self-contained page, like the scan report.

The page may show the generated images, small, as data: URIs (the user supplied them);
it never shows a training item's pixels, thumbnail, caption or URL: a training item is
named by its key and shard only (its URL is in AUDIT/audit.parquet). It opens with what
an audit can and cannot show. As the report's page, its chart is inline SVG and its
Content-Security-Policy allows its own inline style and script by hash, and images only
from data: URIs, so it loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any

from PIL import Image

from clearset.documents.report import (
    _SCRIPT,
    _STYLE,
    _e,
    _Html,
    _path,
    _table,
    _when,
    bar_chart,
    csp_hash,
)
from clearset.hashing.decode import DecodeFailure, open_image, to_display_rgb

#: Generated images listed (with a thumbnail) on the page; all of them are in audit.parquet.
HTML_IMAGE_ROWS = 200

#: Longest side of a generated image's thumbnail on the page, in pixels.
THUMBNAIL_PIXELS = 96

_AUDIT_STYLE = _STYLE + "img.thumb{max-width:96px;max-height:96px;display:block}\n"

_CSP = (
    f"default-src 'none'; style-src {csp_hash(_AUDIT_STYLE)}; script-src {csp_hash(_SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)


def thumbnail(data: bytes) -> str | None:
    """A generated image as a small JPEG data: URI, or None if it does not decode."""
    try:
        image = to_display_rgb(open_image(data).image)
    except DecodeFailure:
        return None
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_audit_html(
    summary: dict[str, Any],
    rows: Iterable[dict[str, Any]],
    thumbnails: dict[tuple[str, str], str],
    candidates: list[dict[str, Any]] | None = None,
) -> str:
    """The page for `summary` (audit.json), the audit rows within the threshold (closest
    first per generated image), the generated images' thumbnails by (shard, key), and the
    embedding candidates within their threshold, if there are any."""
    settings, results = summary["settings"], summary["results"]
    generated, training = summary["generated"], summary["training"]
    closest: dict[tuple[str, str], dict[str, Any]] = {}
    copies: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["generated_shard"], row["generated_key"])
        copies[key] = copies.get(key, 0) + 1
        if key not in closest or row["distance"] < closest[key]["distance"]:
            closest[key] = row
    ordered = sorted(closest.values(), key=lambda r: (r["distance"], r["generated_file"]))
    image_rows = []
    for row in ordered[:HTML_IMAGE_ROWS]:
        uri = thumbnails.get((row["generated_shard"], row["generated_key"]))
        picture = _Html(f'<img class="thumb" alt="" src="{_e(uri)}">') if uri else "—"
        image_rows.append(
            [
                picture,
                row["generated_file"],
                row["distance"],
                row["rotation"] or "",
                row["training_key"],
                row["training_shard"],
                copies[(row["generated_shard"], row["generated_key"])],
            ]
        )
    more = (
        f'<p class="note">{len(ordered) - HTML_IMAGE_ROWS:,} more in audit.parquet.</p>'
        if len(ordered) > HTML_IMAGE_ROWS
        else ""
    )
    histogram = {h["distance"]: h["count"] for h in results["closest_distance_histogram"]}
    labels = [str(d) for d in range(settings["threshold"] + 1)]
    values = [histogram.get(d, 0) for d in range(settings["threshold"] + 1)]
    found, searched = results["generated_with_copy"], generated["searched"]
    sections = [
        "<h1>clearset audit: near copies of training items among generated images</h1>",
        '<p class="stale"><strong>What this can and cannot show.</strong> '
        f"{_e(summary['limits'])}</p>",
        f"<p><strong>{found:,} of {searched:,}</strong> generated images searched have a "
        f"near copy in the training set (PDQ distance ≤ {settings['threshold']}"
        f"{', any rotation or flip' if settings['dihedral'] else ''}).</p>",
        _table(
            None,
            [
                ["generated images", _path(generated.get("source"))],
                ["images hashed", generated["images"]],
                ["images searched", generated["searched"]],
                [
                    f"not searched (PDQ quality below {settings['min_quality']})",
                    generated["low_quality"],
                ],
                ["training run", _path(training["run"])],
                ["training shards", training["shards"]],
                ["training items searched", training["searched"]],
                ["run manifest digest (SHA-256)", training["manifest_digest"]],
                ["receipt digest (SHA-256)", training.get("receipt_digest") or "no receipt"],
                ["threshold", f"{settings['threshold']} bits of 256"],
                ["nearest listed per image", settings["k"] or "none (--k)"],
                ["rotations and flips", "yes" if settings["dihedral"] else "no (--dihedral)"],
                ["tool", f"{summary['tool']['name']} {summary['tool']['version']}"],
                ["audit made", _when(summary["created"])],
            ],
            ["label", "hash"],
        ),  # fmt: skip
        "<h2>Charts</h2>"
        + bar_chart(
            "generated images with a copy, by the distance of the closest copy",
            labels,
            values,
            vertical=True,
            x_title="PDQ distance (bits)",
        ),
        "<h2>Generated images with a near copy</h2>"
        '<p class="note">The generated image as supplied; the training item by key and '
        "shard only (its URL is in audit.parquet). Never a training item's picture or "
        "caption.</p>"
        + (
            _table(
                [
                    "generated",
                    "file",
                    "distance",
                    "rotation",
                    "training key",
                    "training shard",
                    "copies",
                ],
                image_rows,
                ["", "", "num", "", "", "", "num"],
            )  # fmt: skip
            if image_rows
            else "<p>None at these settings.</p>"
        )
        + more,
        _embeddings_html(summary.get("embeddings"), candidates),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>clearset audit</title><style>{_AUDIT_STYLE}</style></head><body>"
        + "".join(sections)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _embeddings_html(record: dict[str, Any] | None, candidates: list[dict[str, Any]] | None) -> str:
    """The embedding stage, apart from PDQ's findings, with the threshold it used."""
    if record is None:
        return ""
    facts = _table(
        None,
        [
            ["vectors", f"{record['training_file']} (training, {record['training_vectors']:,}), "
             f"{record['generated_file']} (generated, {record['generated_vectors']:,})"],
            ["dimensions", record["dimensions"]],
            ["similarity", record["similarity"]],
            ["threshold", f"cosine ≥ {record['threshold']}"],
            ["generated images with a candidate", record["generated_with_candidate"]],
            ["pairs at or above the threshold", record["pairs_within_threshold"]],
        ],
        ["label", "text"],
    )  # fmt: skip
    rows = [
        [c["generated_key"], c["training_key"], c["training_shard"] or "", f"{c['similarity']:.3f}"]
        for c in (candidates or [])[:HTML_IMAGE_ROWS]
    ]
    listing = (
        _table(
            ["generated key", "training key", "training shard", "similarity"],
            rows,
            ["", "", "", "num"],
        )  # fmt: skip
        if rows
        else "<p>None at this threshold.</p>"
    )
    return (
        "<h2>Embedding candidates (your descriptor, not PDQ)</h2>"
        f'<p class="note">{_e(record["note"])}. A candidate is for a person to look at: '
        "a high cosine similarity is not a copy by itself.</p>" + facts + listing
    )
