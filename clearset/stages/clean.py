"""Clean: write a scanned data set again without its matched items, shard by shard.

Removal is decided by key within a shard: if any member of a key matched a list (or is
undecodable with `drop_undecodable`, or is absent from a `keep_list`), every member of
that key goes; a match the review allowed (its item is on the match's allow list,
`clearset.matching.review`) removes nothing.
`clean_run_shard` is the unit of work any engine runs; the clean command's
orchestrator (`clearset.runs.clean.clean_run`) drives it over a run, and `scan
--clean-to` calls it right after each shard is hashed and matched. Layout:

    DEST/...                           the cleaned copy, same names as the source
    DEST/README.md, LICENSE, ...       the data set's card and licence files, as they are
    DEST/.clearset-clean/clean.state   which run and options this destination belongs to
    DEST/.clearset-clean/<shard>.done  per-shard completion markers (resume)
    RUN/cleaned/manifest/<shard>.parquet   the kept rows (receipts use them)
    RUN/cleaned/markers/<shard>.done.json  their completion markers
    RUN/cleaned/removals/<shard>.parquet   the removed rows, per shard
    RUN/cleaned/clean.json             destination, options, counts, times, matching
    RUN/removals.parquet               every removed item: key, shard, url, hashes, reason

A clean of the same run to another destination, or with other options or lists, keeps
the one before: its cleaned/, removals.parquet and the receipt and report made from
them move to RUN/history/clean-<n>/, and RUN/history.jsonl gets a line per finished clean.

The state files use extensions no source reads as items (`.state`, `.done`), so a scan of
the cleaned copy sees only the data. The source is never written to.

`DEST/.clearset-clean/` is the sign of a clean in progress: it names local paths (the
source, the run, the lists) and holds a URL list's kept rows until the file is written,
so it lives only until the clean finishes. The last step copies the data set's card and
licence files (`publish_cards`) and then removes it (`drop_state`), `clean.state` last, so
that a stop anywhere before leaves a destination that still says it is unfinished and
resumes. A finished destination holds the data and the card, nothing hidden, and can be
uploaded as it is; the run's `cleaned/clean.json` remembers it, so the same clean run
again finds it finished.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset import storage
from clearset.atomic import atomic_path, write_json_atomic
from clearset.errors import InputError, RunFolderError
from clearset.formats import FORMATS, rewriter_for
from clearset.formats.base import ShardRef, Source, shard_fingerprint
from clearset.formats.folder import STATE_DIR_NAME
from clearset.formats.rewriting import ShardContents
from clearset.manifest import STATUS_OTHER, conform
from clearset.matching.review import ALLOWED_COLUMN, not_allowed
from clearset.runfolder import RunFolder, file_sha256
from clearset.stages.removals import (
    REASON_NOT_FETCHED,
    REASON_NOT_IN_KEEP_LIST,
    REASON_REMOVAL_LIST,
    REASON_UNDECODABLE,
    REMOVALS_SCHEMA,
    HashSet,
    item_hashes,
    load_hash_set,
    row_hashes,
    write_removals,
)

STATE_DIR = STATE_DIR_NAME
STATE_FILE = "clean.state"
DEST_DONE_SUFFIX = ".done"


@dataclass(frozen=True)
class CleanOptions:
    """How to clean. Everything but `link` changes what the copy holds."""

    link: bool = False
    drop_undecodable: bool = False
    drop_empty_shards: bool = False
    keep_list: str | None = None
    # A fetched URL list (`scan --fetch`): keep rows whose image could not be fetched
    # (by default they go: nobody hashed what their URL serves).
    keep_unfetched: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        # Linking or copying gives the same bytes: a resume may switch between them.
        found = self.to_dict()
        del found["link"]
        if not found["keep_unfetched"]:
            del found["keep_unfetched"]  # as cleans recorded it before the option existed
        return found


@dataclass(frozen=True)
class CleanJob:
    """Where and how to clean: small and picklable, for worker processes."""

    dest: str
    options: CleanOptions = CleanOptions()
    # Set by the scan when `dest` already holds this clean, finished (no shard is redone).
    finished: bool = False


@dataclass
class CleanShardSummary:
    shard_id: str
    shard: str
    skipped: bool = False
    rows: int = 0  # kept manifest rows (the name completion markers use)
    rows_removed: int = 0
    samples_kept: int = 0  # distinct keys among the kept rows
    items_kept: int = 0  # image rows kept and removed (status other is not an item)
    items_removed: int = 0
    keys_removed: int = 0
    members_removed: int = 0
    removed_by_reason: dict[str, int] = field(default_factory=dict)  # keys per reason
    undecodable_kept: int = 0
    undecodable_dropped: int = 0
    kept_without_bytes: int = 0
    path_only_kept: int = 0
    members_dropped: int = 0  # links to nothing kept, FIFOs, devices: never copied
    copied_whole: bool = False
    dropped_empty: bool = False
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- destination


def state_dir(dest: Path) -> Path:
    return dest / STATE_DIR


def dest_done_file(dest: Path, shard_id: str) -> Path:
    return state_dir(dest) / f"{shard_id}{DEST_DONE_SUFFIX}"


# ---------------------------------------------------------------- deciding removals

_set_cache: dict[str, HashSet] = {}


def keep_set(url: str) -> HashSet:
    """A keep (or removal) list, loaded once per process: workers clean many shards."""
    if url not in _set_cache:
        if len(_set_cache) >= 2:
            _set_cache.clear()
        _set_cache[url] = load_hash_set(url)
    return _set_cache[url]


def shard_removals(
    manifest: pa.Table, matches: pa.Table | None, options: CleanOptions, *, fetched: bool = False
) -> dict[str, str]:
    """{key: reason} for the keys of one shard that go; reasons joined by ", ".

    `fetched`: the shard is a URL list scanned by fetching, so a row without bytes is a
    URL whose image nobody hashed: it goes (`not_fetched`) unless `keep_unfetched`."""
    reasons: dict[str, set[str]] = {}
    if matches is not None:
        matches = not_allowed(matches)  # reviewed false positives are kept
        for key, name in zip(
            matches.column("key").to_pylist(), matches.column("list_name").to_pylist(), strict=True
        ):
            reasons.setdefault(key, set()).add(name)
    rows = manifest.select(
        ["key", "url", "sha256", "md5", "upstream_sha256", "upstream_md5", "status"]
    ).to_pylist()
    if fetched and not options.keep_unfetched:
        for row in rows:
            if row["status"] == "missing":
                reasons.setdefault(row["key"], set()).add(REASON_NOT_FETCHED)
    if options.drop_undecodable:
        for row in rows:
            if row["status"] == "error":
                reasons.setdefault(row["key"], set()).add(REASON_UNDECODABLE)
    if options.keep_list:
        keep = keep_set(options.keep_list)
        present: dict[str, bool] = {}
        for row in rows:
            held = keep.holds(row["url"], row_hashes(row))
            present[row["key"]] = present.get(row["key"], False) or held
        for key, held in present.items():
            if not held:
                reasons.setdefault(key, set()).add(REASON_NOT_IN_KEEP_LIST)
    return {key: ", ".join(sorted(names)) for key, names in reasons.items()}


def _removal_rows(manifest: pa.Table, removed: dict[str, str]) -> pa.Table:
    """One row per removed image item. A removed key's captions and side files go with
    it but are not listed: their hashes (an empty caption, a common .json) would make
    `apply-removals` remove unrelated items elsewhere."""
    columns = ["key", "shard", "member", "url", "sha256", "upstream_sha256", "upstream_md5"]
    rows = manifest.select([*columns, "status"]).to_pylist()
    # The source's own hashes travel too: a metadata-only row has no bytes of ours, and
    # another copy of the data set under other URLs is found by them alone.
    found = [
        {**row, "sha256": row["sha256"].hex() if row["sha256"] else None, "reason": removed[key]}
        for row in rows
        if (key := row["key"]) in removed and row.pop("status") != STATUS_OTHER
    ]
    return pa.Table.from_pylist(found, schema=REMOVALS_SCHEMA)


# ---------------------------------------------------------------- the unit of work


def done_summary(dest: Path, shard: ShardRef) -> CleanShardSummary:
    """A shard an earlier run finished: its marker holds the counts, so totals stay true."""
    summary = CleanShardSummary(shard_id=shard.id, shard=shard.name)
    try:
        recorded = json.loads(dest_done_file(dest, shard.id).read_text())
        known = {f.name for f in fields(CleanShardSummary)}
        summary = CleanShardSummary(**{k: v for k, v in recorded.items() if k in known})
    except (OSError, ValueError, TypeError):
        pass  # an unreadable marker still means done; only the counts are lost
    summary.skipped = True
    return summary


def clean_shard(
    source_kind: str,
    shard: ShardRef,
    dest: Path,
    removed: dict[str, str],
    options: CleanOptions,
    *,
    contents: ShardContents,
    manifest: pa.Table | None = None,
    cleaned: RunFolder | None = None,
) -> CleanShardSummary:
    """Write one shard without the `removed` keys into `dest`, then its markers.

    With a run's `manifest` and `cleaned` folder, also write the kept rows (the cleaned
    copy's manifest) and the removed rows, before the destination's marker: a marker
    always names a shard whose every output is complete."""
    summary = CleanShardSummary(shard_id=shard.id, shard=shard.name)
    marker = dest_done_file(dest, shard.id)
    if marker.exists() and (cleaned is None or cleaned.is_done(shard.id)):
        return done_summary(dest, shard)
    writer = rewriter_for(source_kind, shard.path)
    written = writer(
        shard,
        dest,
        removed,
        any_removed=bool(removed),
        contents=contents,
        link=options.link,
        drop_empty=options.drop_empty_shards,
    )
    summary.members_removed = written.members_removed
    summary.members_dropped = written.members_dropped
    summary.copied_whole = written.copied_whole
    summary.dropped_empty = written.dropped_empty
    summary.files = written.files
    summary.keys_removed = len(removed)
    summary.removed_by_reason = dict(Counter(removed.values()))
    if manifest is not None and cleaned is not None:
        gone = pa.array([k in removed for k in manifest.column("key").to_pylist()], pa.bool_())
        kept = manifest.filter(pc.invert(gone))
        if written.dropped_empty:
            # The shard's files are gone, so nothing of it remains in the copy.
            kept = kept.slice(0, 0)
        _count_kept(summary, manifest, kept, removed)
        with atomic_path(cleaned.manifest_file(shard.id)) as tmp:
            pq.write_table(conform(kept), tmp, compression="zstd")
        write_removals(_removal_rows(manifest, removed), cleaned.removals_file(shard.id))
        done = summary.to_dict()
        done["manifest_sha256"] = file_sha256(cleaned.manifest_file(shard.id))
        write_json_atomic(cleaned.done_file(shard.id), done)
    else:
        summary.rows = written.keys_kept
    write_json_atomic(marker, summary.to_dict())
    return summary


def _count_kept(
    summary: CleanShardSummary, manifest: pa.Table, kept: pa.Table, removed: dict[str, str]
) -> None:
    summary.rows = kept.num_rows
    summary.samples_kept = len(pc.unique(kept.column("key")))
    summary.rows_removed = manifest.num_rows - kept.num_rows
    # Items are the image rows: a caption or .json member goes with its key, uncounted.
    summary.items_kept = sum(s != STATUS_OTHER for s in kept.column("status").to_pylist())
    summary.items_removed = (
        sum(s != STATUS_OTHER for s in manifest.column("status").to_pylist()) - summary.items_kept
    )
    for row in kept.select(["status", "reason"]).to_pylist():
        if row["status"] == "error":
            summary.undecodable_kept += 1
        elif row["status"] == "missing":
            summary.kept_without_bytes += 1
            if (row["reason"] or "").startswith("path_only"):
                summary.path_only_kept += 1
    for row in manifest.select(["key", "status"]).to_pylist():
        if row["status"] == "error" and REASON_UNDECODABLE in removed.get(row["key"], ""):
            summary.undecodable_dropped += 1


def _check_unchanged(run: RunFolder, shard: ShardRef) -> None:
    marker = json.loads(run.done_file(shard.id).read_text())
    recorded = marker.get("source_fingerprint")
    if recorded is not None and recorded != shard_fingerprint(shard):
        raise InputError(
            f"{shard.path}: changed since it was scanned into {run.path}; "
            "scan it again into a new run before cleaning"
        )


def clean_run_shard(
    source: Source,
    shard: ShardRef,
    run_dir: str | Path,
    job: CleanJob,
    *,
    check_source: bool = True,
) -> CleanShardSummary:
    """Clean one shard of a scanned, matched run (what every engine calls).

    With `check_source`, a shard whose files changed since the scan is refused: copying
    it would put bytes nobody scanned into the cleaned copy and under its receipt."""
    run = RunFolder(Path(run_dir))
    cleaned = run.cleaned
    dest = Path(job.dest)
    run.fetch_shard(shard.id)  # a Ray task's own mirror of a bucket: what it reads
    storage.fetch(
        dest_done_file(dest, shard.id), cleaned.done_file(shard.id), cleaned.manifest_file(shard.id)
    )
    if dest_done_file(dest, shard.id).exists() and cleaned.is_done(shard.id):
        return CleanShardSummary(shard_id=shard.id, shard=shard.name, skipped=True)
    if not run.is_done(shard.id):
        raise RunFolderError(f"{run.path}: shard {shard.name} is not scanned; scan it first")
    if check_source:
        _check_unchanged(run, shard)
    manifest = pq.read_table(run.manifest_file(shard.id))
    matches_file = run.matches_file(shard.id)
    matches = None
    if matches_file.exists():
        wanted = ["key", "list_name", ALLOWED_COLUMN]
        matches = pq.read_table(
            matches_file, columns=[c for c in wanted if c in pq.read_schema(matches_file).names]
        )
    if matches is None and run.read_info().get("settings", {}).get("matching"):
        raise RunFolderError(
            f"{run.path}: no match rows for shard {shard.name}; re-run `clearset match`"
        )
    removed = shard_removals(manifest, matches, job.options, fetched=FORMATS[source.kind].fetches)
    marker = json.loads(run.done_file(shard.id).read_text())
    scanned = ShardContents.from_manifest(
        manifest, (marker.get("source_file") or {}).get("file_sha256")
    )
    return clean_shard(
        source.kind,
        shard,
        dest,
        removed,
        job.options,
        contents=scanned,
        manifest=manifest,
        cleaned=cleaned,
    )


# ---------------------------------------------------------------- a whole run


def apply_shard(source: Any, shard: Any, dest: str, removals_path: str | None, options: Any) -> Any:
    """Decide one shard's removals from its items' URLs and bytes, then clean it."""
    if dest_done_file(Path(dest), shard.id).exists():
        return done_summary(Path(dest), shard)
    remove = keep_set(removals_path) if removals_path else None
    keep = keep_set(options.keep_list) if options.keep_list else None
    reasons: dict[str, set[str]] = {}
    held: dict[str, bool] = {}
    read: dict[str, Any] = {}
    contents = ShardContents()
    for item in source.read_shard(shard, read):
        own = item_hashes(item)
        hashes = own + [item.upstream_sha256, item.upstream_md5]
        if item.member is not None and (own or item.status):
            # What the writer may copy: exactly the members read here, with these bytes.
            sha256 = bytes.fromhex(own[0]) if own and own[0] else None
            contents.members.setdefault(item.member, []).append(sha256)
        if remove is not None and remove.holds(item.url, hashes):
            reasons.setdefault(item.key, set()).add(REASON_REMOVAL_LIST)
        if keep is not None:
            held[item.key] = held.get(item.key, False) or keep.holds(item.url, hashes)
    for key, present in held.items():
        if not present:
            reasons.setdefault(key, set()).add(REASON_NOT_IN_KEEP_LIST)
    removed = {key: ", ".join(sorted(names)) for key, names in reasons.items()}
    contents.file_sha256 = read.get("file_sha256")
    return clean_shard(source.kind, shard, Path(dest), removed, options, contents=contents)


__all__ = [
    "CleanJob",
    "CleanOptions",
    "CleanShardSummary",
    "apply_shard",
    "clean_run_shard",
    "clean_shard",
    "dest_done_file",
    "done_summary",
    "keep_set",
    "shard_removals",
]
