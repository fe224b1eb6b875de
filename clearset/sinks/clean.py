"""Clean: write a scanned data set again without its matched items, shard by shard.

Removal is decided by key within a shard: if any member of a key matched a list (or is
undecodable with `drop_undecodable`, or is absent from a `keep_list`), every member of
that key goes. `clean_run_shard` is the unit of work any engine runs; the clean command's
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

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.errors import InputError, OutputError, RunFolderError
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import RunFolder, file_sha256, lists_identity, utc_now
from clearset.sinks.atomic import TMP_PREFIX, atomic_path, sweep_tmp, write_json_atomic
from clearset.sinks.counts import marker_samples
from clearset.sinks.manifest import STATUS_OTHER, conform
from clearset.sinks.removals import (
    REASON_NOT_FETCHED,
    REASON_NOT_IN_KEEP_LIST,
    REASON_UNDECODABLE,
    REMOVALS_SCHEMA,
    HashSet,
    load_hash_set,
    row_hashes,
    write_removals,
)
from clearset.sinks.writers import WRITERS, ShardContents
from clearset.sources.base import ShardRef, Source, shard_fingerprint
from clearset.sources.folder import STATE_DIR_NAME

STATE_DIR = STATE_DIR_NAME
STATE_FILE = "clean.state"
DEST_DONE_SUFFIX = ".done"
#: 2: RUN/cleaned/ keeps its markers in markers/, as the run does.
CLEAN_FORMAT = 2

#: What belongs to one clean of a run, and moves to RUN/history/clean-<n>/ when a clean
#: to another destination (or with other options or lists) replaces it.
CLEAN_OUTPUTS = (
    "cleaned",
    "removals.parquet",
    "receipt.dsse.json",
    "receipt.salt",
    "tree.bin",
    "report.json",
    "report.html",
    "documents",  # `clearset document` drafts describe one clean and cite its receipt
)


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


def prepare_destination(dest: Path, identity: dict[str, Any]) -> None:
    """Start or resume writing into `dest`; refuse a destination that is not ours."""
    state = state_dir(dest) / STATE_FILE
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder")
    if state.exists():
        try:
            recorded = json.loads(state.read_text())
        except ValueError:
            raise OutputError(f"{state}: corrupt clean state; choose a new --to") from None
        if recorded.get("identity") != identity:
            raise OutputError(
                f"{dest}: holds a clean of another run or with other options; "
                "choose a new --to (or remove it)"
            )
    elif dest.exists() and any(dest.iterdir()):
        raise OutputError(
            f"{dest}: exists, is not empty and is not a clearset clean output in progress "
            "(a finished clean keeps no state in its copy); choose a new or empty --to"
        )
    try:
        state_dir(dest).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{dest}: cannot create ({exc.strerror})") from None
    if not state.exists():
        write_json_atomic(state, {"format": CLEAN_FORMAT, "identity": identity})
    sweep_dest_tmp(dest)


def sweep_dest_tmp(dest: Path) -> None:
    """An interrupted writer leaves `.tmp-*` files anywhere under the copy; they are ours."""
    for leftover in dest.rglob(f"{TMP_PREFIX}*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


#: The data set's own card and licence files, at the top of a tar or parquet source folder
#: (a Hugging Face repository's README.md and LICENSE): carried into the cleaned copy as
#: they are. Hidden files (`.gitattributes`) are never carried: the hub makes its own.
CARD_NAME = re.compile(
    r"(readme|licen[cs]e|copying|citation|notice)([._-][^/]*)?|dataset_infos?\.json",
    re.IGNORECASE,
)
#: A card is carried only as text (UTF-8, no NUL byte, at most this size): it is not an
#: item and has no manifest row, so it may hold no picture or other bytes nobody scanned.
MAX_CARD_BYTES = 1 << 20
#: The YAML of a Hugging Face card states the source's sizes: they are not this copy's.
_CARD_COUNTS = re.compile(r"^\s*(num_examples|num_bytes|dataset_size|download_size)\s*:", re.M)


def card_files(source: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, url) of the card and licence files at the top of a source folder."""
    if source.get("kind") not in ("webdataset", "parquet"):
        return []  # a folder source's files are its members; a URL list is one file
    url = str(source.get("url") or "")
    if not url or any(c in url for c in "{*?["):
        return []
    try:
        fs, root = fsspec.core.url_to_fs(url)
        if not fs.isdir(root):
            return []
        entries = fs.ls(root, detail=True)
    except (OSError, ValueError):
        return []
    found = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if (
            entry.get("type") != "file"
            or entry.get("islink")
            or not CARD_NAME.fullmatch(name)
            or name.lower().endswith((".parquet", ".tar", ".tgz", ".gz"))
        ):
            continue
        found.append((name, fs.unstrip_protocol(str(entry["name"]))))
    return sorted(found)


def publish_cards(dest: Path, source: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Copy the source's card and licence files into a clean in progress, byte for byte.

    Their counts (a Hugging Face card's `dataset_info`) describe the source: they are
    copied unchanged, and `states_counts` says when the caller must tell the user so."""
    copied: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    if not (state_dir(dest) / STATE_FILE).exists():
        return {"copied": copied, "skipped": skipped}  # finished before: nothing to do
    for name, url in card_files(source):
        try:
            with fsspec.open(url, "rb") as handle:
                data = handle.read(MAX_CARD_BYTES + 1)
        except OSError as exc:
            raise InputError(f"{url}: cannot read the data set's card ({exc})") from None
        why = _not_a_text_card(data)
        if why:
            skipped.append({"name": name, "why": why})
            continue
        with atomic_path(dest / name) as tmp:
            tmp.write_bytes(data)
        text = data.decode("utf-8")
        copied.append(
            {
                "name": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "states_counts": name.lower().startswith("readme")
                and bool(_CARD_COUNTS.search(text)),
            }
        )
    return {"copied": copied, "skipped": skipped}


def _not_a_text_card(data: bytes) -> str | None:
    if len(data) > MAX_CARD_BYTES:
        return f"larger than {MAX_CARD_BYTES // (1 << 20)} MiB"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return "not text (holds a NUL byte)" if "\0" in text else None


def drop_state(dest: Path) -> None:
    """Remove a finished clean's bookkeeping from its destination, `clean.state` last:
    until it goes, the destination says it is unfinished and a re-run resumes."""
    state = state_dir(dest)
    if not state.is_dir():
        return
    sweep_dest_tmp(dest)
    for path in sorted(state.rglob("*"), reverse=True):  # a folder's entries before it
        if path == state / STATE_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    (state / STATE_FILE).unlink(missing_ok=True)
    state.rmdir()


def card_lines(cards: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    """What the clean says about the card files it carried (or left out)."""
    lines = []
    copied = (cards or {}).get("copied") or []
    skipped = (cards or {}).get("skipped") or []
    if copied:
        names = ", ".join(c["name"] for c in copied)
        lines.append(
            f"copied the data set's card and licence files as they are: {names} "
            "(any counts they state describe the source, not this copy)"
        )
    for card in copied:
        if card.get("states_counts"):
            lines.append(
                f"  {card['name']} states the source's sizes (dataset_info: num_examples, "
                "num_bytes): correct them before publishing the copy"
            )
    for card in skipped:
        lines.append(f"not copied: {card['name']} ({card['why']}; a card is carried as text)")
    return lines


def _local_path(url: str) -> Path | None:
    fs, path = fsspec.core.url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return Path(path).resolve() if "file" in protocols or "local" in protocols else None


def refuse_overlap(source_url: str, shards: list[ShardRef], dest: Path, what: str = "--to") -> None:
    """The source is never modified: refuse a destination that would overwrite a source
    file, or that is, holds or lies in a source folder (a re-scan would see both)."""
    target = dest.resolve()
    folders = set()
    root = _local_path(source_url) if not any(c in source_url for c in "{*?[") else None
    if root is not None and root.is_dir():
        folders.add(root)
    for shard in shards:
        path = _local_path(shard.path)
        if path is None:
            continue
        if shard.files:
            folders.add(path)
        # A URL list's shard is a run of rows; the cleaned list keeps the file's name.
        name = shard.name.rsplit("[", 1)[0] if shard.rows is not None else shard.name
        if not shard.files and (target / name).resolve() == path:
            folders.add(path.parent)
    for folder in folders:
        if target == folder or folder in target.parents or target in folder.parents:
            raise OutputError(
                f"{dest}: overlaps the source ({folder}); the source is never modified, "
                f"choose a {what} outside it"
            )


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
    writer = WRITERS[source_kind]
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
        write_removals(_removal_rows(manifest, removed), removals_file(cleaned, shard.id))
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


def removals_file(cleaned: RunFolder, shard_id: str) -> Path:
    return cleaned.path / "removals" / f"{shard_id}.parquet"


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
    cleaned = RunFolder(run.path / "cleaned")
    dest = Path(job.dest)
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
        matches = pq.read_table(matches_file, columns=["key", "list_name"])
    if matches is None and run.read_info().get("settings", {}).get("matching"):
        raise RunFolderError(
            f"{run.path}: no match rows for shard {shard.name}; re-run `clearset match`"
        )
    removed = shard_removals(manifest, matches, job.options, fetched=source.kind == "fetch")
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


def _identity(run: RunFolder, info: RunInfo, options: CleanOptions) -> dict[str, Any]:
    return {
        "run": str(run.path.resolve()),
        "run_started": info.started,
        "source": info.source,
        "matching": info.matching,
        "options": options.identity(),
    }


def prepare_clean(run: RunFolder, info: RunInfo, job: CleanJob, shards: list[ShardRef]) -> bool:
    """Check and ready both sides of a clean before any shard is written. True when
    this very clean (run, options, lists, destination) has finished before."""
    options = job.options
    refuse_unaccounted(run, info)
    if not info.matching and not (options.keep_list or options.drop_undecodable):
        raise RunFolderError(
            f"{run.path}: the run was not matched against any list; "
            "run `clearset match` first (or give --keep-list)"
        )
    if options.keep_list:
        keep_set(options.keep_list)  # fail early on a bad keep list
    dest = Path(job.dest)
    refuse_overlap(info.source["url"], shards, dest)
    identity = _identity(run, info, options)
    cleaned = RunFolder(run.path / "cleaned")
    record = _read_clean_json(cleaned)
    if finished_here(record, dest) and record.get("identity") == identity:  # type: ignore[union-attr]
        return True
    if _holds_an_earlier_clean(run, record, dest):
        raise OutputError(
            f"{dest}: holds a finished clean of this run (an earlier one, or with other "
            "options or lists); choose a new --to (or remove it)"
        )
    prepare_destination(dest, identity)
    wanted = {"destination": str(dest.resolve()), "identity": identity}
    replaced = None
    if record is not None and {k: record.get(k) for k in wanted} != wanted:
        # This run was cleaned before to elsewhere or otherwise: the new clean becomes
        # RUN/cleaned (a receipt follows the latest clean) and the record of the old one,
        # with the receipt and report made from it, is kept in RUN/history/clean-<n>/.
        replaced = run.archive("clean", [run.path / name for name in CLEAN_OUTPUTS])
        record = None
    for folder in (cleaned.manifest_dir, cleaned.markers_dir, cleaned.path / "removals"):
        folder.mkdir(parents=True, exist_ok=True)
        sweep_tmp(folder)
    record = record or {
        "format": CLEAN_FORMAT,
        **wanted,
        "started": utc_now(),
        "replaced": replaced,
    }
    record.update(
        finished=None,
        options=options.to_dict(),
        matching=identity["matching"],
        source=info.source,
    )
    write_json_atomic(cleaned.path / "clean.json", record)
    return False


def finished_here(record: dict[str, Any] | None, dest: Path) -> bool:
    """Whether `dest` is the finished copy this run's last clean wrote: the run remembers
    it, since a finished copy keeps no state of its own."""
    return bool(
        record
        and record.get("finished")
        and record.get("destination") == str(dest.resolve())
        and dest.is_dir()
        and not (state_dir(dest) / STATE_FILE).exists()
    )


def _holds_an_earlier_clean(run: RunFolder, record: dict[str, Any] | None, dest: Path) -> bool:
    if not dest.is_dir() or (state_dir(dest) / STATE_FILE).exists() or not any(dest.iterdir()):
        return False
    named = {e.get("destination") for e in run.read_history() if e.get("op") == "clean"}
    if record and record.get("finished"):
        named.add(record.get("destination"))
    return str(dest.resolve()) in named


def refuse_unaccounted(run: RunFolder, info: RunInfo) -> None:
    """A run whose scan hashed nothing, or left too much unread, backs no cleaned copy
    and no receipt (unless it was scanned with --allow-missing)."""
    accounting = info.accounting
    if info.verdict == "failed":
        raise RunFolderError(
            f"{run.path}: {accounting.get('problem')}; not cleaning or signing it (re-run its "
            "scan with --allow-missing to accept it)"
        )


def _read_clean_json(cleaned: RunFolder) -> dict[str, Any] | None:
    path = cleaned.path / "clean.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise RunFolderError(f"{path}: corrupt clean record") from None


def finish_clean(
    run: RunFolder, cards: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Gather per-shard removals into RUN/removals.parquet and finish clean.json (with
    the card files `publish_cards` carried, when given)."""
    cleaned = RunFolder(run.path / "cleaned")
    markers = cleaned.done_markers()
    tables = [pq.read_table(removals_file(cleaned, m["shard_id"])) for m in markers]
    removals = pa.concat_tables(tables) if tables else REMOVALS_SCHEMA.empty_table()
    write_removals(removals, run.path / "removals.parquet")
    counts: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for marker in markers:
        counts.update(
            {
                "shards": 1,
                "items_kept": marker.get("items_kept", marker["rows"]),
                "items_removed": marker.get("items_removed", marker["rows_removed"]),
                "rows_kept": marker["rows"],
                "rows_removed": marker["rows_removed"],
                "samples_kept": marker_samples(
                    marker, cleaned.manifest_file(marker["shard_id"]), "samples_kept"
                ),
                "keys_removed": marker["keys_removed"],
                "members_removed": marker["members_removed"],
                "undecodable_kept": marker["undecodable_kept"],
                "undecodable_dropped": marker["undecodable_dropped"],
                "kept_without_bytes": marker["kept_without_bytes"],
                "path_only_kept": marker["path_only_kept"],
                "members_dropped": marker.get("members_dropped", 0),
                "shards_copied_whole": int(marker["copied_whole"]),
                "shards_dropped_empty": int(marker["dropped_empty"]),
            }
        )
        by_reason.update(marker["removed_by_reason"])
    summary = {**dict(counts), "keys_removed_by_reason": dict(sorted(by_reason.items()))}
    record = _read_clean_json(cleaned) or {}
    record.update(finished=utc_now(), counts=summary)
    if cards is not None and (cards["copied"] or cards["skipped"] or "card_files" not in record):
        record["card_files"] = cards
    write_json_atomic(cleaned.path / "clean.json", record)
    return summary


def record_clean(run: RunFolder) -> None:
    """RUN/history.jsonl's line for the clean that just finished."""
    record = CleanRecord.read(run.path) or CleanRecord.of({})
    counts = record.counts
    run.record(
        "clean",
        destination=record.destination,
        started=record.started,
        finished=record.finished,
        options=record.options,
        lists=lists_identity(record.matching),
        items_kept=counts.get("items_kept"),
        items_removed=counts.get("items_removed"),
        keys_removed=counts.get("keys_removed"),
        replaced=record.replaced,
    )


def cleaned_manifest_files(run_dir: str | Path) -> list[Path]:
    """The cleaned copy's manifest files, once the last clean has finished."""
    return [path for path, _ in cleaned_manifest_shards(run_dir)]


def cleaned_manifest_shards(run_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The cleaned copy's manifest files with their completion markers (``rows``, the
    file's row count, and ``manifest_sha256``), once the last clean has finished."""
    run = RunFolder(Path(run_dir))
    cleaned = RunFolder(run.path / "cleaned")
    record = _read_clean_json(cleaned)
    if record is None:
        raise RunFolderError(f"{run.path}: has no cleaned copy; run `clearset clean` first")
    refuse_unaccounted(run, RunInfo.read(run))
    if not record.get("finished"):
        raise RunFolderError(
            f"{run.path}: the clean to {record.get('destination')} is not finished; "
            "re-run the same `clearset clean` to complete it"
        )
    return [(cleaned.manifest_file(m["shard_id"]), m) for m in cleaned.done_markers()]


def read_cleaned_manifest(run_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The cleaned copy's manifest: the run's manifest rows that the last clean kept."""
    from clearset.sinks.manifest import read_manifest_files

    return read_manifest_files(cleaned_manifest_files(run_dir), columns)


def clean_info(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/cleaned/clean.json, or None when the run was never cleaned."""
    return _read_clean_json(RunFolder(Path(run_dir) / "cleaned"))


__all__ = [
    "CleanJob",
    "CleanOptions",
    "CleanShardSummary",
    "card_files",
    "card_lines",
    "clean_info",
    "cleaned_manifest_files",
    "clean_run_shard",
    "clean_shard",
    "drop_state",
    "finish_clean",
    "finished_here",
    "prepare_clean",
    "publish_cards",
    "read_cleaned_manifest",
    "record_clean",
    "shard_removals",
]
