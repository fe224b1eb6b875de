"""The removal report: RUN/report.json and a single self-contained RUN/report.html.

Both are built from the run folder's tables alone (run.json, the manifest, match rows,
and the clean record when there is one): no item is ever read or decoded. Matched items
are named by identifiers only (key, shard, URL as plain text, SHA-256, list, distance);
no list entry appears. The HTML page has its charts as inline SVG drawn here, its style
and its one small script inline, and a Content-Security-Policy that forbids every
fetch, so it renders the same with no network and can never load a matched URL.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from clearset.runfolder import RunFolder, utc_now
from clearset.settings import PDQ_MATCH_THRESHOLD
from clearset.sinks.atomic import atomic_path, write_json_atomic
from clearset.sinks.clean import clean_info

REPORT_FORMAT = 1

#: Matched items listed by name in the HTML page; all of them are in report.json.
HTML_ITEM_ROWS = 500

#: Above this many shards, "items per shard" is drawn as a histogram, not one bar each.
SHARD_BARS_MAX = 60

QUALITY_BIN = 10


def build_report(run_dir: str | Path) -> dict[str, Any]:
    """The report's content as a JSON-able dict (what report.json holds)."""
    run = RunFolder(Path(run_dir))
    info = run.read_info()
    matching = info.get("settings", {}).get("matching") or {}
    manifest = run.read_manifest(columns=["key", "shard", "status", "reason", "pdq_quality"])
    matches_path = run.path / "matches.parquet"
    matches = pq.read_table(matches_path).to_pylist() if matches_path.exists() else []
    rows = manifest.to_pylist()

    per_shard: dict[str, dict[str, Any]] = {}
    errors: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    quality: Counter[int] = Counter()
    for row in rows:
        shard = per_shard.setdefault(
            row["shard"], {"items": 0, "matched_items": 0, "matched_by_list": {}}
        )
        shard["items"] += 1
        why = (row["reason"] or "").split(":", 1)[0] or "unknown"
        if row["status"] == "error":
            errors[why] += 1
        elif row["status"] == "missing":
            missing[why] += 1
        if row["pdq_quality"] is not None:
            quality[min(row["pdq_quality"] // QUALITY_BIN, 100 // QUALITY_BIN - 1)] += 1

    by_list: dict[str, dict[str, Any]] = {}
    for record in matching.get("lists", []):
        by_list[record["digest"]] = {**record, "matched_items": 0, "match_rows": 0}
    by_type: dict[str, set[tuple[str, str]]] = {}
    matched_keys: dict[tuple[str, str], dict[str, Any]] = {}
    shard_list_keys: dict[str, dict[str, set[str]]] = {}
    distances: Counter[int] = Counter()
    list_keys: dict[str, set[tuple[str, str]]] = {}
    for match in matches:
        item = (match["shard"], match["key"])
        entry = by_list.setdefault(
            match["list_digest"],
            {"name": match["list_name"], "digest": match["list_digest"], "matched_items": 0,
             "match_rows": 0, "hash_type": match["hash_type"]},
        )  # fmt: skip
        entry["match_rows"] += 1
        list_keys.setdefault(match["list_digest"], set()).add(item)
        by_type.setdefault(match["hash_type"], set()).add(item)
        shard_list_keys.setdefault(match["shard"], {}).setdefault(match["list_name"], set()).add(
            match["key"]
        )
        if match["hash_type"] == "pdq":
            distances[match["distance"]] += 1
        named = matched_keys.setdefault(
            item,
            {"key": match["key"], "shard": match["shard"], "url": match["url"],
             "sha256": match["sha256"].hex() if match["sha256"] else None, "matches": []},
        )  # fmt: skip
        named["matches"].append(
            {"list": match["list_name"], "hash_type": match["hash_type"],
             "field": match["field"], "distance": match["distance"],
             "rotation": match["rotation"]},
        )  # fmt: skip
    for digest, keys in list_keys.items():
        by_list[digest]["matched_items"] = len(keys)
    for shard, lists in shard_list_keys.items():
        if shard in per_shard:
            per_shard[shard]["matched_by_list"] = {n: len(k) for n, k in sorted(lists.items())}
            per_shard[shard]["matched_items"] = len(set().union(*lists.values()))

    threshold = matching.get("pdq_threshold", PDQ_MATCH_THRESHOLD)
    thresholds = [r.get("threshold", 0) for r in by_list.values() if r.get("hash_type") == "pdq"]
    top = max([threshold, *thresholds, *distances]) if (distances or thresholds) else threshold
    cleaned = clean_info(run.path)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "generated": utc_now(),
        "run": {
            "path": str(run.path),
            "source": info.get("source"),
            "tool": info.get("tool"),
            "started": info.get("started"),
            "finished": info.get("finished"),
            "matched": info.get("matched"),
            "scan_settings": {k: v for k, v in info.get("settings", {}).items() if k != "matching"},
        },
        "thresholds": {
            "pdq_threshold": threshold,
            "min_quality": matching.get("min_quality"),
            "per_list": {r["name"]: r.get("threshold", 0) for r in by_list.values()},
        },
        "lists": list(by_list.values()),
        "items": {
            "total": len(rows),
            "status": dict(sorted(Counter(r["status"] for r in rows).items())),
            "matched": len(matched_keys),
        },
        "matches": {
            "rows": len(matches),
            "items": len(matched_keys),
            "by_list": {r["name"]: r["matched_items"] for r in by_list.values()},
            "by_hash_type": {t: len(k) for t, k in sorted(by_type.items())},
        },
        "per_shard": dict(sorted(per_shard.items())),
        # Index = Hamming distance in bits, value = PDQ match rows at that distance.
        "distance_histogram": [distances.get(d, 0) for d in range(top + 1)],
        "pdq_quality_histogram": {
            f"{b * QUALITY_BIN}-{b * QUALITY_BIN + QUALITY_BIN - 1 if b < 9 else 100}": quality[b]
            for b in range(100 // QUALITY_BIN)
        },
        "errors_by_reason": dict(sorted(errors.items())),
        "missing_by_reason": dict(sorted(missing.items())),
        "matched_items": sorted(matched_keys.values(), key=lambda m: (m["shard"], m["key"])),
        "clean": _clean_section(run, cleaned),
    }
    return report


def _clean_section(run: RunFolder, cleaned: dict[str, Any] | None) -> dict[str, Any] | None:
    if cleaned is None:
        return None
    removals_path = run.path / "removals.parquet"
    dropped: list[dict[str, Any]] = []
    if removals_path.exists():
        for row in pq.read_table(removals_path).to_pylist():
            if "undecodable" in row["reason"]:
                dropped.append({k: row[k] for k in ("key", "shard", "member", "sha256")})
    return {
        "destination": cleaned.get("destination"),
        "options": cleaned.get("options"),
        "started": cleaned.get("started"),
        "finished": cleaned.get("finished"),
        "counts": cleaned.get("counts"),
        "removal_list": str(removals_path) if removals_path.exists() else None,
        "dropped_undecodable": dropped,
        # After a `clearset match` with other lists the copy no longer reflects them.
        "stale": cleaned.get("identity", {}).get("matching")
        != run.read_info().get("settings", {}).get("matching"),
    }


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN/report.json and RUN/report.html (atomically); return their paths."""
    run = RunFolder(Path(run_dir))
    report = build_report(run.path)
    json_path, html_path = run.path / "report.json", run.path / "report.html"
    write_json_atomic(json_path, report)
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def bar_chart(title: str, labels: list[str], values: list[int], *, vertical: bool) -> str:
    """An inline SVG bar chart: horizontal bars for categories, vertical for histograms."""
    peak = max(values, default=0) or 1
    parts: list[str] = []
    if vertical:
        width, height, left, bottom = 640, 220, 40, 30
        step = (width - left - 10) / max(len(values), 1)
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            bar = (height - bottom - 20) * value / peak
            x = left + i * step
            parts.append(
                f'<rect x="{x:.1f}" y="{height - bottom - bar:.1f}" width="{max(step - 1, 1):.1f}"'
                f' height="{bar:.1f}" class="bar"><title>{_e(label)}: {value}</title></rect>'
            )
            if len(values) <= 16 or i % max(1, len(values) // 8) == 0:
                parts.append(
                    f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14}" '
                    f'text-anchor="middle">{_e(label)}</text>'
                )
        parts.append(f'<text x="4" y="14">{peak}</text>')
    else:
        row, left = 22, 220
        width, height = 640, max(40, row * len(values) + 10)
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            bar = (width - left - 60) * value / peak
            y = 5 + i * row
            parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>')
            parts.append(
                f'<rect x="{left}" y="{y}" width="{bar:.1f}" height="{row - 6}" class="bar">'
                f"<title>{_e(label)}: {value}</title></rect>"
            )
            parts.append(f'<text x="{left + bar + 4:.1f}" y="{y + 14}">{value:,}</text>')
    empty = "" if values and any(values) else '<p class="none">nothing to show</p>'
    return (
        f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
        f'<svg role="img" aria-label="{_e(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f"{''.join(parts)}</svg>{empty}</figure>"
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
td{font-family:ui-monospace,monospace;word-break:break-all}
.chart{margin:1em 0}.chart figcaption{font-weight:600}.bar{fill:#3a6ea5}
svg text{font:11px system-ui,sans-serif;fill:#333}.none{color:#888}
.note{color:#555;font-size:12px}
"""

# The only script: it marks the page as rendered (a test looks for this marker) and
# counts what it finds. It fetches nothing; the CSP below would forbid it anyway.
_SCRIPT = """
document.body.setAttribute('data-charts-rendered',
  String(document.querySelectorAll('figure.chart svg').length));
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def render_html(report: dict[str, Any]) -> str:
    """The report page: identifiers and counts only, every chart inline SVG."""
    lists = report["lists"]
    shards = report["per_shard"]
    shard_names = list(shards)
    shard_items = [shards[s]["items"] for s in shard_names]
    if len(shard_names) > SHARD_BARS_MAX:
        shard_chart = _shard_histogram(shard_items)
    else:
        shard_chart = bar_chart("items per shard", shard_names, shard_items, vertical=False)
    charts = [
        bar_chart(
            "matched items per list",
            [f"{r['name']} ({r.get('hash_type', '?')})" for r in lists],
            [r["matched_items"] for r in lists],
            vertical=False,
        ),
        bar_chart(
            "PDQ distance of matches (Hamming bits)",
            [str(d) for d in range(len(report["distance_histogram"]))],
            list(report["distance_histogram"]),
            vertical=True,
        ),
        bar_chart(
            "PDQ quality of scanned items",
            list(report["pdq_quality_histogram"]),
            list(report["pdq_quality_histogram"].values()),
            vertical=True,
        ),
        shard_chart,
        bar_chart(
            "items not hashed as images, by reason",
            [f"error: {k}" for k in report["errors_by_reason"]]
            + [f"missing: {k}" for k in report["missing_by_reason"]],
            list(report["errors_by_reason"].values()) + list(report["missing_by_reason"].values()),
            vertical=False,
        ),
    ]
    run = report["run"]
    items = report["items"]
    thresholds = report["thresholds"]
    list_rows = [
        [r["name"], r.get("version"), r.get("hash_type"), r.get("digest"), r.get("threshold"),
         r["matched_items"], _skipped_cell(r)]
        for r in lists
    ]  # fmt: skip
    matched = report["matched_items"]
    item_rows = [
        [m["shard"], m["key"], m["url"], m["sha256"],
         "; ".join(f"{x['list']} {x['hash_type']} d={x['distance']}" for x in m["matches"])]
        for m in matched[:HTML_ITEM_ROWS]
    ]  # fmt: skip
    more = (
        f'<p class="note">{len(matched) - HTML_ITEM_ROWS:,} more in report.json.</p>'
        if len(matched) > HTML_ITEM_ROWS
        else ""
    )
    sections = [
        f"<h1>clearset removal report</h1><p>Run <code>{_e(run['path'])}</code> of "
        f"<code>{_e((run['source'] or {}).get('url'))}</code> "
        f"({_e((run['source'] or {}).get('kind'))}), scanned {_e(run['started'])} to "
        f"{_e(run['finished'])} by {_e((run['tool'] or {}).get('name'))} "
        f"{_e((run['tool'] or {}).get('version'))}. Generated {_e(report['generated'])}.</p>",
        f"<p>{items['total']:,} items; {items['matched']:,} matched a list. "
        f"PDQ threshold {_e(thresholds['pdq_threshold'])} bits, minimum quality "
        f"{_e(thresholds['min_quality'])}. This page names items by identifiers only.</p>",
        "<h2>Lists (by identity)</h2>"
        + _table(
            ["name", "version", "type", "digest", "threshold", "matched items", "skipped"],
            list_rows,
        ),
        "<h2>Charts</h2>" + "".join(charts),
        _clean_html(report.get("clean")),
        "<h2>Matched items</h2>"
        + _table(["shard", "key", "url (text)", "sha256", "matches"], item_rows)
        + more,
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>clearset report</title><style>{_STYLE}</style></head><body>"
        + "".join(sections)
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )


def _skipped_cell(record: dict[str, Any]) -> str:
    """What loading a list skipped, by kind; the digest then covers the accepted entries."""
    skipped = record.get("skipped") or {}
    if not skipped:
        return "0"
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(skipped.items()))
    return f"{sum(skipped.values()):,} ({kinds}); digest over the accepted entries"


def _shard_histogram(counts: list[int]) -> str:
    top = max(counts, default=0)
    width = max(1, (top + 19) // 20)
    bins = Counter(c // width for c in counts)
    labels = [f"{b * width}-{b * width + width - 1}" for b in range(top // width + 1)]
    values = [bins.get(b, 0) for b in range(top // width + 1)]
    return bar_chart("shards by number of items", labels, values, vertical=True)


def _clean_html(clean: dict[str, Any] | None) -> str:
    if not clean:
        hint = "<code>clearset clean RUN --to OUT</code>"
        return f"<h2>Clean</h2><p>No cleaned copy yet ({hint}).</p>"
    counts = clean.get("counts") or {}
    rows = [[k, v] for k, v in counts.items() if not isinstance(v, dict)]
    rows += [[f"keys removed: {k}", v] for k, v in counts.get("keys_removed_by_reason", {}).items()]
    dropped = clean.get("dropped_undecodable") or []
    dropped_rows = [[d["shard"], d["key"], d["member"], d["sha256"]] for d in dropped]
    stale = (
        "<p><strong>Stale:</strong> this run was matched again after the copy was cleaned; "
        "the counts above come from the new match, the copy from the old one. Clean again.</p>"
        if clean.get("stale")
        else ""
    )
    return (
        stale + f"<h2>Clean</h2><p>Cleaned copy in <code>{_e(clean['destination'])}</code>, "
        f"finished {_e(clean['finished'])}; options <code>{_e(json.dumps(clean['options']))}"
        f"</code>. Removal list: <code>{_e(clean['removal_list'])}</code>.</p>"
        + _table(["count", "value"], rows)
        + "<h3>Dropped as undecodable</h3>"
        + (
            _table(["shard", "key", "member", "sha256"], dropped_rows)
            if dropped_rows
            else "<p>none (undecodable items are kept unless --drop-undecodable)</p>"
        )
    )
