"""The removal report: RUN/report.json and a single self-contained RUN/report.html.

Both are built from the run folder's tables alone (run.json, the manifest, match rows,
and the clean record when there is one): no item is ever read or decoded. Both are made
to be shared, so matched items are named by identifiers only (key, shard, SHA-256,
list, distance): no list entry, and no URL of a matched item unless the operator asks
for them (`show_urls`); the URLs stay in RUN/matches.parquet and RUN/removals.parquet.
The HTML page has its charts as inline SVG drawn here, its style and its one small
script inline, and a Content-Security-Policy that allows exactly that style and that
script (by hash) and nothing else, so it renders the same with no network and can never
load anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from clearset import storage
from clearset.atomic import atomic_path, write_json_atomic
from clearset.documents.counts import SetCounts, plural, run_counts
from clearset.errors import ClearsetError, RunFolderError
from clearset.formats import source_from_spec
from clearset.hashing.types import is_exact
from clearset.hashing.types import label as hash_label
from clearset.matching.review import review_lines, review_section
from clearset.receipts.issue import source_label
from clearset.records import RunInfo
from clearset.runfolder import RunFolder, clean_info, utc_now
from clearset.settings import PDQ_MATCH_THRESHOLD

REPORT_FORMAT = 1

#: Matched items listed by name in the HTML page; all of them are in report.json.
HTML_ITEM_ROWS = 500

#: Above this many shards, members per shard are drawn as a histogram, not one bar each,
#: and the shards with the most matched samples are listed instead.
SHARD_BARS_MAX = 60

#: Bars of that histogram at most, and shards listed by matched samples.
SHARD_HISTOGRAM_BINS = 20
SHARD_TABLE_ROWS = 20

QUALITY_BIN = 10


def build_report(run_dir: str | Path, *, show_urls: bool = False) -> dict[str, Any]:
    """The report's content as a JSON-able dict (what report.json holds).

    Matched items carry their URL only with `show_urls`: the report is for sharing.
    """
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    matching = info.matching or {}
    state = run_state(run, info, public=True)
    if state["partial"] and not state["shards_done"]:
        told = run_state(run, info)  # the operator's own line: the command with its paths
        raise RunFolderError(f"{run.path}: {told['problem']}; nothing to report yet: "
                             f"{told['to_finish']}")  # fmt: skip
    manifest = run.read_manifest(columns=["key", "shard", "status", "reason", "pdq_quality"])
    matches = _match_rows(run, gathered=state["matches_gathered"])
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
        # A list by identity, as a receipt names it: not by the path of its file.
        named = {k: v for k, v in record.items() if k != "source"}
        by_list[record["digest"]] = {**named, "matched_items": 0, "match_rows": 0}
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
        shard_list_keys.setdefault(match["shard"], {}).setdefault(match["list_digest"], set()).add(
            match["key"]
        )
        if match["hash_type"] == "pdq":
            distances[match["distance"]] += 1
        named = matched_keys.setdefault(
            item,
            {"key": match["key"], "shard": match["shard"],
             **({"url": match["url"]} if show_urls else {}),
             "sha256": match["sha256"].hex() if match["sha256"] else None, "matches": []},
        )  # fmt: skip
        named["matches"].append(
            {"list": match["list_name"], "hash_type": match["hash_type"],
             "field": match["field"], "distance": match["distance"],
             "rotation": match["rotation"], "allowed": bool(match.get("allowed")),
             # a match a list holder's answer gave (`clearset exchange apply`): its holder
             **({"holder": {"label": entry.get("holder"), "key_id": entry["holder_key_id"],
                            "answer": entry["answer"]}} if entry.get("answer") else {})},
        )  # fmt: skip
    for digest, keys in list_keys.items():
        by_list[digest]["matched_items"] = len(keys)
    for shard_name, lists in shard_list_keys.items():
        if shard_name in per_shard:
            per_shard[shard_name]["matched_by_list"] = dict(
                sorted((_list_label(by_list, by_list[d]), len(k)) for d, k in lists.items())
            )
            per_shard[shard_name]["matched_items"] = len(set().union(*lists.values()))

    threshold = matching.get("pdq_threshold", PDQ_MATCH_THRESHOLD)
    distance_lists = [r for r in by_list.values() if not is_exact(r.get("hash_type"))]
    thresholds = [r.get("threshold", 0) for r in distance_lists]
    top = max([threshold, *thresholds, *distances]) if (distances or thresholds) else threshold
    cleaned = clean_info(run.path)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "generated": utc_now(),
        # True when a figure below may fall short of the run's (a scan not finished, one
        # that failed its accounting, a match not gathered): see "state".
        "partial": state["partial"],
        "state": {k: v for k, v in state.items() if k != "matches_gathered"},
        "shows_urls": show_urls,
        "run": {
            # Places by their last part, as a receipt names them: the page is shared.
            "path": source_label(storage.url_of(run.path)),
            "source": _public_source(info.source),
            "tool": info.tool,
            "started": info.started,
            "finished": info.finished,
            "matched": info.matched,
            "scan_settings": info.scan_settings,
        },
        "thresholds": {
            "pdq_threshold": threshold,
            "min_quality": matching.get("min_quality"),
            "per_list": {_list_label(by_list, r): r.get("threshold", 0) for r in by_list.values()},
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
            "by_list": {_list_label(by_list, r): r["matched_items"] for r in by_list.values()},
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
        "review": review_section(matching, (info.counts or {}).get("matches") or {}),
        # samples, members by kind, kept and removed: the counts every command gives
        "counts": run_counts(run.path).to_dict(),
    }
    return report


def run_state(run: RunFolder, info: RunInfo, *, public: bool = False) -> dict[str, Any]:
    """Whether the run backs whole figures, and if not why and how to make it so.

    `public` words it for a shared page: the source, the run and a failed shard by their
    last part (as a receipt names them), where the operator's own lines give the command
    to run with their full paths.

    `partial` is True for a scan that has not finished (stopped, failed shards, or ranks
    still at work: only the marked shards count), for one that failed its accounting
    (too much left unread: a match may hide in what was not read), and for a finished run
    whose last match was not gathered into RUN/matches.parquet. `matches_gathered` says
    whether RUN/matches.parquet holds the run's matches (else the per-shard files do).
    """
    matching = info.matching or {}
    gathered = (run.path / "matches.parquet").exists()
    failed = info.failed_shards
    state: dict[str, Any] = {
        "partial": False,
        "scan": "finished",
        "shards": info.shards,
        "shards_done": len(run.done_markers()),
        "shards_failed": len(failed),
        "problem": None,
        "to_finish": None,
        "matches_gathered": gathered,
    }
    source_url = str(info.source_url or "SOURCE")
    run_url = storage.url_of(run.path)
    if not info.finished:
        total = state["shards"] or _shard_count(info)
        done = state["shards_done"]
        of = (
            f"{done:,} of {total:,} shards"
            if total
            else f"{done:,} shards (of a total not known now)"
        )
        first = str(failed[0].get("error")) if failed else ""
        if public:
            first = _public_error(first, source_url)
        why = f"; {len(failed):,} failed (first: {first})" if failed else ""
        if public:
            command = (
                f"the same `clearset scan` of {source_label(source_url)} into "
                f"{source_label(run_url)}"
            )
        else:
            command = f"`{shlex.join(['clearset', 'scan', source_url, '--out', run_url])}`"
        state.update(
            partial=True,
            scan="not finished",
            shards=total,
            matches_gathered=False,  # a matches.parquet here is an earlier finish's
            problem=f"the scan has not finished: {of} scanned{why}",
            to_finish=f"re-run {command} with the same --list and other options (it resumes "
            "from the shards done; `clearset status` names what is left)",
        )
    elif info.verdict == "failed":
        state.update(
            partial=True,
            scan="accounting failed",
            problem=f"the scan {info.accounting.get('problem')}",
            to_finish="fix the source and scan it again, or accept what was read by "
            "re-running the same scan command with --allow-missing",
        )
    elif matching.get("lists") and not gathered:
        state.update(
            partial=True,
            scan="match not finished",
            problem="the last `clearset match` did not finish gathering its matches",
            to_finish="re-run the same `clearset match "
            f"{shlex.quote(source_label(run_url) if public else run_url)} --list ...`",
        )
    return state


def _list_label(by_list: dict[str, dict[str, Any]], record: dict[str, Any]) -> str:
    """A list's key in the report's per-list counts: its name, or NAME/TYPE where lists of
    one name differ in hash type (one file of PDQ and MD5 lines loads as one list a type,
    under the file's name), so that no list's count overwrites another's."""
    name = str(record["name"])
    same = [r for r in by_list.values() if r["name"] == name]
    return f"{name}/{record.get('hash_type')}" if len(same) > 1 else name


def _public_error(error: str, source_url: str) -> str:
    """A failed shard's error as a shared page may say it: a location it opens with, and
    the source's path or URL anywhere in it, by their last part."""
    place, colon, rest = error.partition(": ")
    if colon and ("/" in place or "\\" in place):
        error = f"{source_label(place)}: {rest}"
    # The URL before its path alone: replacing the path first would leave "file://NAME".
    for where in dict.fromkeys((source_url, source_url.removeprefix("file://"))):
        if len(where) > 1:
            error = error.replace(where, source_label(where))
    return error


def _shard_count(info: RunInfo) -> int | None:
    """How many shards the source has now, or None where it cannot be listed."""
    try:
        return len(source_from_spec(info.source).shards())
    except (ClearsetError, OSError, KeyError, TypeError):
        return None  # the source moved or is out of reach: the run folder still speaks


def _match_rows(run: RunFolder, *, gathered: bool) -> list[dict[str, Any]]:
    """The run's match rows: RUN/matches.parquet, or before it is gathered, the per-shard
    files of the shards marked done (a shard's file is written before its marker)."""
    if gathered:
        return pq.read_table(run.path / "matches.parquet").to_pylist()
    rows: list[dict[str, Any]] = []
    for marker in run.done_markers():
        path = run.matches_file(marker["shard_id"])
        storage.fetch(path)  # a bucket run: read on first use
        if path.exists():
            rows += pq.read_table(path).to_pylist()
    return rows


def _public_source(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's source as a shared page may name it: its kind and the last part of its
    path or URL (a local path or a bucket's credentials never come through)."""
    if not source:
        return source
    return {"kind": source.get("kind"), "name": source_label(str(source.get("url") or ""))}


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
        "destination": source_label(str(cleaned.get("destination") or "cleaned")),
        "options": cleaned.get("options"),
        "started": cleaned.get("started"),
        "finished": cleaned.get("finished"),
        "counts": cleaned.get("counts"),
        "removal_list": f"{source_label(storage.url_of(run.path))}/removals.parquet"
        if removals_path.exists()
        else None,
        "dropped_undecodable": dropped,
        # After a `clearset match` with other lists the copy no longer reflects them.
        "stale": cleaned.get("identity", {}).get("matching")
        != run.read_info().get("settings", {}).get("matching"),
    }


def write_report(run_dir: str | Path, *, show_urls: bool = False) -> tuple[Path, Path]:
    """Write RUN/report.json and RUN/report.html (atomically); return their paths.

    With `show_urls` both name each matched item's URL too: for the operator, not to share.
    """
    run = RunFolder(Path(run_dir))
    report = build_report(run.path, show_urls=show_urls)
    json_path, html_path = run.path / "report.json", run.path / "report.html"
    write_json_atomic(json_path, report)
    with atomic_path(html_path) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


#: Longest category label a horizontal chart shows; longer ones keep their end (a
#: shard's number, a reason) behind an ellipsis, and the whole label is the bar's tooltip.
CHART_LABEL_CHARS = 34


def _short(label: str) -> str:
    return label if len(label) <= CHART_LABEL_CHARS else "…" + label[-(CHART_LABEL_CHARS - 1) :]


def bar_chart(
    title: str, labels: list[str], values: list[int], *, vertical: bool, x_title: str = ""
) -> str:
    """An inline SVG bar chart: horizontal bars for categories, vertical for histograms.

    A chart with nothing to count is only its title and a line saying so: an empty
    frame with a made-up scale would read as data.
    """
    if not any(values):
        return (
            f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
            '<p class="none">nothing to show</p></figure>'
        )
    peak = max(values)
    parts: list[str] = []
    if vertical:
        width, height, left, bottom, top = 640, 230, 46, 44, 16
        plot = height - bottom - top
        step = (width - left - 10) / len(values)
        # One gridline at the tallest bar, labelled with its count: the only scale needed.
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{top}" y2="{top}" class="grid"/>'
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:,}</text>'
            f'<line x1="{left}" x2="{width - 10}" y1="{top + plot}" y2="{top + plot}" '
            'class="axis"/>'
        )
        every = 1 if len(values) <= 16 else max(1, round(len(values) / 8))
        # Never closer than a label's width (about 6.5 px a character at 11 px).
        widest = max(len(label) for label in labels) * 6.5 + 8
        every = max(every, math.ceil(widest / step))
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            bar = plot * value / peak
            x = left + i * step
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot - bar:.1f}" width="{max(step - 1, 1):.1f}"'
                f' height="{bar:.1f}" class="bar"><title>{_e(label)}: {value:,}</title></rect>'
            )
            if i % every == 0:
                parts.append(
                    f'<text x="{x + step / 2:.1f}" y="{top + plot + 14}" '
                    f'text-anchor="middle">{_e(label)}</text>'
                )
        if x_title:
            parts.append(
                f'<text x="{left + (width - left - 10) / 2:.0f}" y="{height - 6}" '
                f'text-anchor="middle" class="axis-title">{_e(x_title)}</text>'
            )
    else:
        row, left = 22, 230
        width, height = 640, row * len(values) + 10
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            bar = (width - left - 70) * value / peak
            y = 5 + i * row
            parts.append(
                f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_e(_short(label))}'
                f"<title>{_e(label)}</title></text>"
                f'<rect x="{left}" y="{y}" width="{bar:.1f}" height="{row - 6}" class="bar">'
                f"<title>{_e(label)}: {value:,}</title></rect>"
                f'<text x="{left + bar + 4:.1f}" y="{y + 13}">{value:,}</text>'
            )
    return (
        f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
        f'<svg role="img" aria-label="{_e(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f"{''.join(parts)}</svg></figure>"
    )


class _Html(str):
    """Markup built here from escaped parts: a table cell takes it as it is."""


def _nowrap(text: str) -> _Html:
    return _Html(f'<span class="nw">{_e(text)}</span>')


def _path(text: str | None) -> _Html:
    """A path that may wrap after a `/` but never inside a name (`tx-demo` stays whole)."""
    if not text:
        return _Html("—")
    segments = [s + "/" for s in text.split("/")[:-1]] + [text.split("/")[-1]]
    return _Html("<code>" + "".join(_nowrap(s) for s in segments if s) + "</code>")


def _cell(value: Any, kind: str) -> str:
    text = "—" if value is None or value == "" else value
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text:,}"
    body = text if isinstance(text, _Html) else _e(text)
    return f'<td class="{kind}">{body}</td>' if kind else f"<td>{body}</td>"


def _table(headers: list[str] | None, rows: list[list[Any]], kinds: list[str] | None = None) -> str:
    """A table; `kinds` gives each column's class: "hash" may break anywhere, "text"
    wraps at spaces, "label" is a row's name, "num" aligns right, and the rest (names,
    keys) never wrap. With no headers, a table of name-value rows."""
    kinds = kinds or [""] * len(rows[0] if rows else headers or [])
    head = (
        "<thead><tr>"
        + "".join(f'<th class="{k}">{_e(h)}</th>' for h, k in zip(headers, kinds, strict=True))
        + "</tr></thead>"
        if headers
        else ""
    )
    body = "".join(
        "<tr>" + "".join(_cell(c, k) for c, k in zip(r, kinds, strict=True)) + "</tr>" for r in rows
    )
    return f'<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>'


def _when(stamp: str | None) -> str:
    """`2026-11-30T13:54:21.789529Z` as `2026-11-30 13:54:21 UTC`."""
    if not stamp:
        return "—"
    return stamp.replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;padding:0 1.25em;max-width:980px;
color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
h3{font-size:1em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{white-space:nowrap}
td{font-family:ui-monospace,monospace;white-space:nowrap}
td.text{font-family:inherit;white-space:normal;min-width:12em}
td.hash{word-break:break-all;white-space:normal;min-width:16em}
td.num,th.num{text-align:right}
td.label{font-family:inherit;color:#555}
.nw{white-space:nowrap}code .nw{font:inherit}
.chart{margin:1em 0}.chart figcaption{font-weight:600}
.chart svg{max-width:100%;height:auto}
.bar{fill:#3a6ea5}.grid{stroke:#ccc;stroke-dasharray:3 3}.axis{stroke:#888}
svg text{font:11px system-ui,sans-serif;fill:#333}.axis-title{fill:#555}
.none{color:#888}.note{color:#555;font-size:12px}
.stale{background:#fff4d6;border:1px solid #e0c060;padding:.5em .75em}
.partial{background:#fde2e1;border:2px solid #c0392b;padding:.25em 1em;font-size:1.1em}
"""

# The only script: it marks the page as rendered (a test looks for this marker) and
# counts the charts drawn. It fetches nothing; the CSP allows this script alone, by hash.
_SCRIPT = """
document.body.setAttribute('data-charts-rendered',
  String(document.querySelectorAll('figure.chart svg').length));
"""


def csp_hash(text: str) -> str:
    """A CSP source expression for an inline <script> or <style> with exactly `text`."""
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


# Everything is denied but the page's own inline style and script, named by hash; no
# base URL may be set and no form submitted. (frame-ancestors cannot be set in a meta tag.)
_CSP = (
    f"default-src 'none'; style-src {csp_hash(_STYLE)}; script-src {csp_hash(_SCRIPT)}; "
    "base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'; "
    "trusted-types 'none'"
)

#: What each count of a clean means, in the report's words.
CLEAN_COUNT_LABELS = {
    "samples_kept": "samples kept",
    "keys_removed": "samples removed",
    "rows_kept": "members kept (images, captions, metadata members)",
    "rows_removed": "members removed",
    "items_kept": "image members kept (readable or not)",
    "items_removed": "image members removed (readable or not)",
    "members_removed": "files removed (all members of removed samples)",
    "undecodable_kept": "unreadable images kept",
    "undecodable_dropped": "unreadable images removed",
    "kept_without_bytes": "members kept that had no bytes (failed download, no file)",
    "path_only_kept": "members kept whose image column held only a path",
    "members_dropped": "links, FIFOs, devices and side files not copied",
    "shards": "shards cleaned",
    "shards_copied_whole": "shards copied whole (nothing to remove)",
    "shards_dropped_empty": "shards left out (every sample removed)",
}


def _clean_options_text(options: dict[str, Any] | None) -> str:
    options = options or {}
    parts = [
        "undecodable items removed"
        if options.get("drop_undecodable")
        else "undecodable items kept",
        "shards that lose every item left out"
        if options.get("drop_empty_shards")
        else "shards that lose every item written empty",
        "unchanged files hard-linked" if options.get("link") else "unchanged files copied",
    ]
    if options.get("keep_list"):
        parts.append(f"only items in the keep list {options['keep_list']} kept")
    return "; ".join(parts)


def _hash_label(kind: str | None) -> str:
    return hash_label(kind)


def _match_text(match: dict[str, Any]) -> _Html:
    """`watch-pdq (PDQ, distance 2, borders trimmed)`: which list, and how it matched."""
    kind = match["hash_type"]
    how = [f"{_hash_label(kind)}, exact" if is_exact(kind) else f"{_hash_label(kind)}, "
           f"distance {match['distance']}"]  # fmt: skip
    if kind == "pdq" and (match.get("field") or "").endswith("_trimmed"):
        how.append("borders trimmed")
    if kind == "pdq" and match.get("rotation") not in (None, "original"):
        how.append(str(match["rotation"]).replace("_", " "))
    holder = match.get("holder")
    if holder:  # matched by a list holder, from its signed answer
        how.append(f"by holder {holder.get('label') or 'unnamed'}, key {holder['key_id']}")
    if match.get("allowed"):
        how.append("allowed by review: kept")
    return _Html(f"{_nowrap(match['list'])} ({_e(', '.join(how))})")


def render_html(report: dict[str, Any]) -> str:
    """The report page: identifiers and counts only, every chart inline SVG."""
    lists = report["lists"]
    state = report.get("state") or {}
    partial = bool(report.get("partial"))
    scope = _scope(state) if partial else ""
    charts = [
        bar_chart(
            "Matched samples per list" + scope,
            [f"{r['name']} ({_hash_label(r.get('hash_type'))})" for r in lists],
            [r["matched_items"] for r in lists],
            vertical=False,
        ),
        bar_chart(
            "PDQ matches by distance" + scope,
            [str(d) for d in range(len(report["distance_histogram"]))],
            list(report["distance_histogram"]),
            vertical=True,
            x_title="Hamming distance to the list entry (bits; 0 = same hash)",
        ),
        bar_chart(
            "Scanned images by PDQ quality" + scope,
            list(report["pdq_quality_histogram"]),
            list(report["pdq_quality_histogram"].values()),
            vertical=True,
            x_title="PDQ quality (0-100; below the minimum an item is only exact-matched)",
        ),
        _shard_view(report["per_shard"], scope),
        bar_chart(
            "Members not hashed as images, by reason" + scope,
            [f"error: {k}" for k in report["errors_by_reason"]]
            + [f"missing: {k}" for k in report["missing_by_reason"]],
            list(report["errors_by_reason"].values()) + list(report["missing_by_reason"].values()),
            vertical=False,
        ),
    ]
    run = report["run"]
    items = report["items"]
    thresholds = report["thresholds"]
    source = run["source"] or {}
    tool = run["tool"] or {}
    list_rows = [
        [r["name"], r.get("version"), _hash_label(r.get("hash_type")), r.get("digest"),
         "exact" if is_exact(r.get("hash_type")) else r.get("threshold"), r["matched_items"],
         _skipped_cell(r)]
        for r in lists
    ]  # fmt: skip
    matched = report["matched_items"]
    show_urls = report.get("shows_urls", False)
    item_headers = ["shard", "key", *(["URL"] if show_urls else []), "SHA-256", "matched"]
    item_kinds = ["", "", *(["hash"] if show_urls else []), "hash", "text"]
    item_rows = [
        [m["shard"], m["key"], *([m.get("url")] if show_urls else []), m["sha256"],
         _Html("; ".join(_match_text(x) for x in m["matches"]))]
        for m in matched[:HTML_ITEM_ROWS]
    ]  # fmt: skip
    more = (
        f'<p class="note">{len(matched) - HTML_ITEM_ROWS:,} more in report.json.</p>'
        if len(matched) > HTML_ITEM_ROWS
        else ""
    )
    urls_note = (
        "URLs of matched items are shown: this copy is for the operator, not for sharing."
        if show_urls
        else "URLs of matched items are left out (they are in the run's matches.parquet; "
        '<code class="nw">clearset report RUN --show-urls</code> adds them).'
    )
    settings = run.get("scan_settings") or {}
    setting_text = "; ".join(
        [
            f"rotations and flips {'matched' if settings.get('dihedral') else 'not matched'}",
            f"letterbox borders {'trimmed' if settings.get('trim_borders') else 'not trimmed'}",
            f"PDQ by the {'reference' if settings.get('exact_pdq') else 'fast'} pipeline",
        ]
    )
    scanned_text = SetCounts(**report["counts"]["scanned"]).text()
    if partial:
        matched_line = (
            f"at least {plural(items['matched'], 'sample')} matched a list" if lists
            else "not matched against any list"
        )  # fmt: skip
        scanned = (
            f"So far {scanned_text} scanned in {_shards_scanned(state)}"
            if state.get("scan") == "not finished"
            else f"{scanned_text} listed, not all of them read"
        )
        headline = f"Partial: {scanned}; {matched_line}."
    else:
        matched_line = (
            f"{plural(items['matched'], 'sample')} matched a list" if lists
            else "not matched against any list"
        )  # fmt: skip
        headline = f"{scanned_text} scanned; {matched_line}."
    match_rows = (
        [
            ["PDQ threshold", f"{thresholds['pdq_threshold']} bits (per list below)"],
            ["PDQ minimum quality", thresholds["min_quality"]],
        ]
        if lists
        else []
    )
    lists_html = (
        _table(
            [
                "name",
                "version",
                "type",
                "digest (SHA-256 of the list)",
                "threshold",
                "matched samples" + (" (at least)" if partial else ""),
                "skipped lines",
            ],
            list_rows,
            ["", "", "", "hash", "num", "num", ""],
        )  # fmt: skip
        if lists
        else "<p>None: the run was not matched "
        '(<code class="nw">clearset match RUN --list LIST</code>).</p>'
    )
    title = "clearset removal report" + (" (PARTIAL)" if partial else "")
    sections = [
        f"<h1>{_e(title)}</h1>",
        _partial_banner(state) if partial else "",
        _stale_notice() if (report.get("clean") or {}).get("stale") else "",
        f"<p><strong>{_e(headline)}</strong> This page names samples by identifiers only: "
        f"no image, caption or list entry. {urls_note}</p>",
        _table(
            None,
            [
                [
                    "data set",
                    _Html(f"{_path(source.get('name'))} ({_e(source.get('kind') or '?')})"),
                ],
                ["run folder", _path(run["path"])],
                [
                    "scanned",
                    f"{_when(run['started'])} to "
                    + (_when(run["finished"]) if run["finished"] else "(not finished)"),
                ],
                *([["matched again", _when(run["matched"])]] if run.get("matched") else []),
                ["scan settings", setting_text],
                *match_rows,
                ["tool", f"{tool.get('name') or '?'} {tool.get('version') or ''}".strip()],
                ["report made", _when(report["generated"])],
            ],
            ["label", "text"],
        ),
        "<h2>Lists (by identity, never by content)</h2>" + lists_html,
        "<h2>Charts</h2>" + "".join(charts),
        _review_html(report.get("review")),
        _clean_html(report.get("clean")),
        f"<h2>Matched samples{_e(scope)}</h2>"
        + (_table(item_headers, item_rows, item_kinds) if item_rows else "<p>None.</p>")
        + more,
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
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


def _scope(state: dict[str, Any]) -> str:
    """What a partial page's figures cover, for each title."""
    if state.get("scan") == "not finished":
        return f" (partial: {_shards_scanned(state)} only)"
    return f" (partial: {state.get('scan')})"


def _shards_scanned(state: dict[str, Any]) -> str:
    done, total = state.get("shards_done", 0), state.get("shards")
    return f"{done:,} of {total:,} shards" if total else f"{done:,} shards"


def _partial_banner(state: dict[str, Any]) -> str:
    """The notice a partial page opens with: what is missing, and how to finish."""
    return (
        '<div class="partial" role="alert"><p><strong>PARTIAL REPORT: '
        f"{_e(state.get('problem'))}.</strong> Every figure on this page covers only what "
        "the run holds so far and may fall short of the whole data set: counts of matched "
        "samples are lower bounds, and no figure here says that anything is absent.</p>"
        f"<p>To finish: {_e(state.get('to_finish'))}; then run "
        f"<code>clearset report</code> again.</p></div>"
    )


def _stale_notice() -> str:
    return (
        '<p class="stale"><strong>The cleaned copy this page describes is stale:</strong> it '
        "was made before the last <code>clearset match</code>, so it was not cleaned against "
        "the lists named below. Clean again (<code>clearset clean RUN --to NEW_OUTPUT</code>) "
        "before sharing it.</p>"
    )


def _shard_view(per_shard: dict[str, dict[str, Any]], scope: str) -> str:
    """Members per shard: a bar each for a few shards; for many, a histogram of shards by
    members and the shards with the most matched samples, so the page stays one screen
    whatever the shard count (every shard is in report.json's per_shard)."""
    names = list(per_shard)
    members = [per_shard[name]["items"] for name in names]
    if len(names) <= SHARD_BARS_MAX:
        return bar_chart("Members per shard" + scope, names, members, vertical=False)
    matched = sorted(
        ((name, entry) for name, entry in per_shard.items() if entry.get("matched_items")),
        key=lambda kv: (-kv[1]["matched_items"], kv[0]),
    )
    note = (
        f'<p class="note">{len(names):,} shards: too many for a bar each, so the chart '
        "counts shards by how many members they hold (one bar per range) and the table "
        f"names the {min(SHARD_TABLE_ROWS, len(matched)):,} shards with the most matched "
        f"samples; {len(matched):,} of the {len(names):,} shards hold a match. Every shard "
        "is in report.json (per_shard).</p>"
    )
    rows = [
        [name, entry["items"], entry["matched_items"],
         "; ".join(f"{n} {k:,}" for n, k in entry.get("matched_by_list", {}).items())]
        for name, entry in matched[:SHARD_TABLE_ROWS]
    ]  # fmt: skip
    table = (
        _table(
            ["shard", "members", "matched samples", "by list"], rows, ["", "num", "num", "text"]
        )  # fmt: skip
        if rows
        else "<p>No shard holds a match.</p>"
    )
    return (
        _shard_histogram(members, scope)
        + note
        + f"<h3>Shards with the most matched samples{_e(scope)}</h3>"
        + table
    )


def _shard_histogram(counts: list[int], scope: str = "") -> str:
    """Shards by members, in at most SHARD_HISTOGRAM_BINS ranges between the smallest
    shard and the largest (not from 0: shards of one size would be one bar at the end)."""
    low, high = min(counts), max(counts)
    width = max(1, -(-(high - low + 1) // SHARD_HISTOGRAM_BINS))
    bins = Counter((c - low) // width for c in counts)
    starts = [low + b * width for b in range((high - low) // width + 1)]
    labels = [f"{a:,}" if width == 1 else f"{a:,}-{a + width - 1:,}" for a in starts]
    values = [bins.get(b, 0) for b in range(len(starts))]
    return bar_chart(
        f"{len(counts):,} shards by number of members" + scope,
        labels,
        values,
        vertical=True,
        x_title=f"members in the shard (ranges of {width:,})"
        if width > 1
        else "members in the shard",
    )


def _review_html(review: dict[str, Any] | None) -> str:
    """The review aids: what the allow list kept, and entries that flooded."""
    if not review or (review["allow_list"] is None and not review["floods"]):
        return ""
    lines = review_lines(review)
    return "<h2>Review</h2>" + "".join(f"<p>{_e(line)}</p>" for line in lines)


def _clean_html(clean: dict[str, Any] | None) -> str:
    if not clean:
        hint = "<code>clearset clean RUN --to OUT</code>"
        return f"<h2>Clean</h2><p>No cleaned copy yet ({hint}).</p>"
    counts = clean.get("counts") or {}
    # In the order of CLEAN_COUNT_LABELS; a count it does not know yet comes last.
    order = {key: n for n, key in enumerate(CLEAN_COUNT_LABELS)}
    rows = [
        [CLEAN_COUNT_LABELS.get(k, k.replace("_", " ")), v]
        for k, v in sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        if not isinstance(v, dict)
    ]
    rows += [[f"samples removed as matches of {k}", v]
             for k, v in counts.get("keys_removed_by_reason", {}).items()]  # fmt: skip
    dropped = clean.get("dropped_undecodable") or []
    dropped_rows = [[d["shard"], d["key"], d["member"], d["sha256"]] for d in dropped]
    stale = (
        '<p class="stale"><strong>Stale:</strong> this run was matched again after the copy '
        "was cleaned; the counts above come from the new match, the copy from the old one. "
        "Clean again.</p>"
        if clean.get("stale")
        else ""
    )
    return (
        "<h2>Clean</h2>" + stale + f"<p>Cleaned copy in {_path(clean['destination'])}, finished "
        f"{_e(_when(clean['finished']))}: {_e(_clean_options_text(clean.get('options')))}. "
        f"Removal list (with URLs, for the operator): {_path(clean['removal_list'])}.</p>"
        + _table(["count", "number"], rows, ["text", "num"])
        + "<h3>Removed as undecodable</h3>"
        + (
            _table(["shard", "key", "member", "SHA-256"], dropped_rows, ["", "", "", "hash"])
            if dropped_rows
            else "<p>None (undecodable items are kept unless --drop-undecodable).</p>"
        )
    )
