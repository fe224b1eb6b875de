"""The clean and apply-removals commands' orchestrators: every shard of a source written
again without what goes, by `clean_run_shard` / `apply_shard` on an engine."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from clearset import storage
from clearset.atomic import TMP_PREFIX, atomic_path, sweep_tmp, write_json_atomic
from clearset.documents.counts import marker_samples
from clearset.engines import Engine, Task
from clearset.errors import InputError, OutputError, RunFolderError
from clearset.formats import format_of, open_source, rewriter_for, source_from_spec
from clearset.formats.base import ShardRef
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import (
    CLEAN_OUTPUTS,
    REMOVALS_FILE,
    RunFolder,
    read_clean_json,
    record_clean,
    refuse_unaccounted,
    utc_now,
)
from clearset.runlock import run_lock
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, run_or_fail
from clearset.stages.clean import (
    STATE_FILE,
    CleanJob,
    CleanOptions,
    CleanShardSummary,
    apply_shard,
    clean_run_shard,
    keep_set,
    state_dir,
)
from clearset.stages.removals import (
    REASON_REMOVAL_LIST,
    REMOVALS_SCHEMA,
    _url_sha256,
    read_removals,
    write_removals,
)


def clean_run(
    run_dir: str | Path,
    to: str | Path,
    *,
    link: bool = False,
    drop_undecodable: bool = False,
    drop_empty_shards: bool = False,
    keep_list: str | None = None,
    keep_unfetched: bool = False,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Write the scanned source of `run_dir` to `to` without its matched items.

    Resumes an interrupted clean into the same destination; returns clean.json's counts.
    """
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same scan before cleaning"
        )
    # One writer at a time: a second clean of this run (into any copy) would rewrite
    # RUN/cleaned under the first, and a scan or match would change what it keeps.
    with run_lock(run.path, "clean", advice="wait for it, then run the clean again"):
        source = source_from_spec(info.source)
        rewriter_for(source.kind, source.url)  # a format that cannot be written: say so now
        shards = source.shards()
        job = CleanJob(
            dest=str(Path(to).resolve()),
            options=CleanOptions(
                link=link,
                drop_undecodable=drop_undecodable,
                drop_empty_shards=drop_empty_shards,
                keep_list=keep_list,
                keep_unfetched=keep_unfetched,
            ),
        )
        if prepare_clean(run, info, job, shards):
            record_clean(run)  # the same clean, finished before: nothing to write
            record = CleanRecord.read(run.path)
            return record.counts if record else {}
        engine = choose_engine(engine, workers, source.url, keep_list)
        tasks = [
            Task(shard.id, shard.name, clean_run_shard, (source, shard, str(run.path), job))
            for shard in shards
        ]
        try:
            run_shard_tasks(
                engine, tasks, show_progress=show_progress, console=console, retries=retries
            )
        except BaseException:
            # Workers remove their own temporary files when stopped, unless killed inside a
            # long call: this clean is the only writer of both places, so it sweeps them now.
            sweep_dest_tmp(Path(job.dest))
            cleaned = run.cleaned
            for folder in (cleaned.manifest_dir, cleaned.markers_dir, cleaned.removals_dir):
                sweep_tmp(folder)
            raise
        if getattr(engine, "name", None) != "local":
            # Outputs on an object store: tasks on other nodes uploaded what they wrote.
            storage.pull_all(run.path)
            storage.pull_all(Path(job.dest))
        # The copy is finished: the card joins it, and its bookkeeping leaves it (last).
        cards = publish_cards(Path(job.dest), info.source)
        counts = finish_clean(run, cards)
        record_clean(run)
        drop_state(Path(job.dest))
        return counts


def apply_removals(
    source_url: str,
    removals_path: str | None,
    to: str | Path,
    *,
    keep_list: str | None = None,
    kind: str | None = None,
    image_column: str | None = None,
    link: bool = False,
    drop_empty_shards: bool = False,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Write `source_url` to `to` without the items a removal list names (by URL or by
    the SHA-256 of the bytes), and/or keeping only what a keep list holds.

    For holders of another copy of a cleaned data set: no run folder and no list is
    needed, only the published removal list. A whole key goes when any member matches.
    """
    if removals_path is None and keep_list is None:
        raise InputError("apply-removals: give a removal list, --keep-list, or both")
    source = open_source(source_url, kind=kind, image_column=image_column)
    rewriter_for(source.kind, source.url)
    shards = source.shards()
    options = CleanOptions(link=link, drop_empty_shards=drop_empty_shards, keep_list=keep_list)
    removal_digest = None
    removal_rows = 0
    if removals_path is not None:
        # Fail early on something that is not a removal list, or one that cannot match.
        _, removal_rows = read_removals(removals_path)
        removal_digest = _url_sha256(removals_path)
    if keep_list is not None:
        keep_set(keep_list)
    dest = Path(to).resolve()
    refuse_overlap(source_url, shards, dest)
    identity = {
        "source": source.spec(),
        "removals": removals_path,
        "removals_sha256": removal_digest,
        "options": options.identity(),
    }
    prepare_destination(dest, identity)
    engine = choose_engine(engine, workers, source_url, removals_path, keep_list)
    tasks = [
        Task(shard.id, shard.name, apply_shard, (source, shard, str(dest), removals_path, options))
        for shard in shards
    ]
    done = run_shard_tasks(
        engine, tasks, label="apply", show_progress=show_progress, console=console, retries=retries
    )
    # No run folder remembers this copy: once it is whole, its card joins it and every
    # trace of the clean (local paths, markers) leaves it, so a finished copy is not redone.
    cards = publish_cards(dest, source.spec())
    drop_state(dest)
    # A shard with nothing to remove is copied whole, unread, so its keys are not
    # counted: "kept" covers the rewritten shards only, and says so.
    return {
        "shards": len(done),
        "keys_removed": sum(s.keys_removed for s in done),
        "members_removed": sum(s.members_removed for s in done),
        "keys_kept_in_rewritten_shards": sum(s.rows for s in done if not s.copied_whole),
        "shards_copied_whole": sum(s.copied_whole for s in done),
        "shards_skipped": sum(s.skipped for s in done),
        "card_files": cards,
        "removal_rows": removal_rows,
        "keys_removed_by_removal_list": sum(
            count
            for s in done
            for reason, count in s.removed_by_reason.items()
            if REASON_REMOVAL_LIST in reason.split(", ")
        ),
    }


def run_shard_tasks(
    engine: Engine,
    tasks: list[Task],
    *,
    label: str = "clean",
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> list[CleanShardSummary]:
    """Run clean tasks with a progress bar. A shard that fails every try keeps no marker
    (a re-run retries it); the first failure is raised once the others are done."""
    done = run_or_fail(
        engine,
        tasks,
        label=label,
        show_progress=show_progress,
        console=console,
        retries=retries,
        counts=lambda summary: (summary.rows, summary.keys_removed, 0),
        errors_label="keys removed",
    )
    return [done.done[task.id] for task in tasks]


# ---------------------------------------------------------------- a whole run's clean:
# ready the destination, check the run, carry the card, gather the removals

#: 2: RUN/cleaned/ keeps its markers in markers/, as the run does.
CLEAN_FORMAT = 2


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
    elif dest.exists() and any(not _begun_here(dest, entry) for entry in dest.iterdir()):
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


def _begun_here(dest: Path, entry: Path) -> bool:
    """What a clean killed while it readied `dest` left before its state file: the state
    folder, empty or holding that file under a temporary name (swept on resuming)."""
    return (
        entry == state_dir(dest)
        and entry.is_dir()
        and all(p.name.startswith(TMP_PREFIX) for p in entry.iterdir())
    )


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
    fmt = format_of(source.get("kind"))
    if fmt is None or not fmt.carries_cards:
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


def _identity(run: RunFolder, info: RunInfo, options: CleanOptions) -> dict[str, Any]:
    return {
        "run": storage.url_of(run.path.resolve()),
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
    cleaned = run.cleaned
    record = read_clean_json(cleaned)
    if finished_here(record, dest) and record.get("identity") == identity:  # type: ignore[union-attr]
        return True
    if _holds_an_earlier_clean(run, record, dest):
        raise OutputError(
            f"{dest}: holds a finished clean of this run (an earlier one, or with other "
            "options or lists); choose a new --to (or remove it)"
        )
    prepare_destination(dest, identity)
    wanted = {"destination": storage.url_of(dest.resolve()), "identity": identity}
    replaced = None
    if record is not None and {k: record.get(k) for k in wanted} != wanted:
        # This run was cleaned before to elsewhere or otherwise: the new clean becomes
        # RUN/cleaned (a receipt follows the latest clean) and the record of the old one,
        # with the receipt and report made from it, is kept in RUN/history/clean-<n>/.
        replaced = run.archive("clean", [run.path / name for name in CLEAN_OUTPUTS])
        record = None
    for folder in (cleaned.manifest_dir, cleaned.markers_dir, cleaned.removals_dir):
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
        and record.get("destination") == storage.url_of(dest.resolve())
        and dest.is_dir()
        and not (state_dir(dest) / STATE_FILE).exists()
    )


def _holds_an_earlier_clean(run: RunFolder, record: dict[str, Any] | None, dest: Path) -> bool:
    if not dest.is_dir() or (state_dir(dest) / STATE_FILE).exists() or not any(dest.iterdir()):
        return False
    named = {e.get("destination") for e in run.read_history() if e.get("op") == "clean"}
    if record and record.get("finished"):
        named.add(record.get("destination"))
    return storage.url_of(dest.resolve()) in named


def finish_clean(
    run: RunFolder, cards: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Gather per-shard removals into RUN/removals.parquet and finish clean.json (with
    the card files `publish_cards` carried, when given)."""
    cleaned = run.cleaned
    markers = cleaned.done_markers()
    tables = [pq.read_table(cleaned.removals_file(m["shard_id"])) for m in markers]
    removals = pa.concat_tables(tables) if tables else REMOVALS_SCHEMA.empty_table()
    write_removals(removals, run.path / REMOVALS_FILE)
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
    record = read_clean_json(cleaned) or {}
    record.update(finished=utc_now(), counts=summary)
    if cards is not None and (cards["copied"] or cards["skipped"] or "card_files" not in record):
        record["card_files"] = cards
    write_json_atomic(cleaned.path / "clean.json", record)
    return summary
