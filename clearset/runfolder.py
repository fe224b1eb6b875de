"""A run is a folder; every later stage reads it.

    RUN/run.json                     source, tool version, settings, times, counts
    RUN/manifest/<shard>.parquet     one row per item of that source shard (nothing else:
                                     the folder is a parquet data set any reader loads)
    RUN/markers/<shard>.done.json    completion marker: rows, counts, the parquet's sha256
    RUN/matches/<shard>.parquet      with lists: that shard's match rows (before its marker)
    RUN/matches.parquet              all match rows, gathered when a scan or match ends
    RUN/history.jsonl                one line per scan, match and clean, oldest first
    RUN/history/<op>-<n>/            what a later match or clean replaced, kept

A shard's parquet is renamed into place first and its marker second, so a marker always
names a complete file. A re-run skips shards with a marker; only marked shards count as
the manifest. run.json is rewritten atomically at the start and the end of each scan.
A run folder of another format (`RUN_FORMAT`) is refused, not read half-right.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from clearset import TOOL_NAME, __version__, storage
from clearset.atomic import TMP_PREFIX, atomic_path, sweep_tmp, write_json_atomic
from clearset.errors import RunFolderError
from clearset.manifest import (
    HASHED,
    MANIFEST_VERSION,
    OTHER,
    UNREAD,
    UPSTREAM_FAILED,
    read_manifest_files,
)
from clearset.progress import plural
from clearset.records import CleanRecord, RunInfo
from clearset.runlock import RUN_LOCK
from clearset.settings import MAX_UNREAD_SHARE

#: 2: completion markers moved from manifest/ to markers/, positional keys name the shard.
RUN_FORMAT = 2
DONE_SUFFIX = ".done.json"
HISTORY_FILE = "history.jsonl"
HISTORY_DIR = "history"
#: What `clearset receipt` writes in a run (see `clearset.runs.issue`), and the removals
#: a finished clean gathers there.
RECEIPT_FILE = "receipt.dsse.json"
TREE_FILE = "tree.bin"
SALT_FILE = "receipt.salt"
REMOVALS_FILE = "removals.parquet"
#: RUN/cleaned/: what the last clean kept (see `RunFolder.cleaned`).
CLEANED_DIR = "cleaned"
#: What belongs to one clean of a run, and moves to RUN/history/clean-<n>/ when a clean
#: to another destination (or with other options or lists) replaces it.
CLEAN_OUTPUTS = (
    CLEANED_DIR,
    REMOVALS_FILE,
    RECEIPT_FILE,
    SALT_FILE,
    TREE_FILE,
    "report.json",
    "report.html",
    "documents",  # `clearset document` drafts describe one clean and cite its receipt
)

#: What the commands that read a run folder (and write no more than a few files of their
#: own into it) read of it, by command: names, and folders ending in "/". A run folder on
#: an object store is fetched for them only so far (`storage.attach`); another file they
#: open is fetched on first use (`storage.fetch`), and a command not named here fetches
#: the whole folder. The records every one of them may read are small: run.json, the
#: history, the markers (what counts), the ranks' and failed shards' notes, the receipt.
RECORDS = ("run.json", HISTORY_FILE, "markers/", "failed/", "ranks/", "exchange/",
           RECEIPT_FILE, f"{CLEANED_DIR}/clean.json", f"{CLEANED_DIR}/markers/")  # fmt: skip
_FACTS = (*RECORDS, "manifest/", "frames/", "matches.parquet", REMOVALS_FILE)
COMMAND_READS: dict[str, tuple[str, ...]] = {
    "status": RECORDS,
    "report": (*_FACTS, "report.json", "report.html"),
    "prove": (*RECORDS, TREE_FILE, SALT_FILE),
    "document": (*_FACTS, f"{CLEANED_DIR}/manifest/", "documents/"),
    "receipt": (
        *RECORDS,
        "frames/",
        "matches.parquet",
        REMOVALS_FILE,
        f"{CLEANED_DIR}/manifest/",
        TREE_FILE,
        SALT_FILE,
        ".receipt-build/",
    ),
}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def manifest_dir(self) -> Path:
        return self.path / "manifest"

    def manifest_file(self, shard_id: str) -> Path:
        return self.manifest_dir / f"{shard_id}.parquet"

    @property
    def matches_dir(self) -> Path:
        return self.path / "matches"

    def matches_file(self, shard_id: str) -> Path:
        return self.matches_dir / f"{shard_id}.parquet"

    @property
    def frames_dir(self) -> Path:
        # Videos' vPDQ frames, one row per frame (clearset.manifest.FRAMES_SCHEMA).
        return self.path / "frames"

    def frames_file(self, shard_id: str) -> Path:
        return self.frames_dir / f"{shard_id}.parquet"

    @property
    def markers_dir(self) -> Path:
        # Beside the manifest, not in it: RUN/manifest/ stays a plain parquet data set.
        return self.path / "markers"

    def done_file(self, shard_id: str) -> Path:
        return self.markers_dir / f"{shard_id}{DONE_SUFFIX}"

    @property
    def cleaned(self) -> RunFolder:
        """RUN/cleaned/: the last clean's kept manifest rows and markers, laid out as a run."""
        return RunFolder(self.path / CLEANED_DIR)

    @property
    def removals_dir(self) -> Path:
        # Used on RUN/cleaned/: the rows each shard's clean removed.
        return self.path / "removals"

    def removals_file(self, shard_id: str) -> Path:
        return self.removals_dir / f"{shard_id}.parquet"

    def is_done(self, shard_id: str) -> bool:
        return self.done_file(shard_id).exists() and storage.exists(self.manifest_file(shard_id))

    def refresh(self) -> None:
        """For a run folder on an object store: bring in the shards other ranks finished
        (their manifests and matches first, markers last); nothing on a local path."""
        for part in ("manifest", "matches", "markers"):
            storage.pull(self.path, part)

    def fetch_shard(self, shard_id: str) -> None:
        """In a task working its own mirror of a bucket run folder (a Ray task on any
        node, `storage.task_mirrors`): download run.json and this shard's manifest,
        matches and marker, what cleaning it reads (one GET each); nothing elsewhere."""
        storage.fetch(
            self.run_json,
            self.manifest_file(shard_id),
            self.matches_file(shard_id),
            self.done_file(shard_id),
        )

    def done_markers(self) -> list[dict[str, Any]]:
        markers = []
        # Not a marker still being written (an atomic write's .tmp- name): a kill in that
        # moment leaves one, half written, until the next run sweeps it.
        for marker in sorted(self.markers_dir.glob(f"[!.]*{DONE_SUFFIX}")):
            try:
                markers.append(json.loads(marker.read_text()))
            except ValueError:
                raise RunFolderError(f"{marker}: corrupt completion marker") from None
        return markers

    def read_info(self) -> dict[str, Any]:
        if not self.run_json.exists():
            raise RunFolderError(f"{self.path}: not a clearset run folder (no run.json)")
        try:
            info = json.loads(self.run_json.read_text())
        except ValueError:
            raise RunFolderError(f"{self.run_json}: corrupt run.json") from None
        found = info.get("format") if isinstance(info, dict) else None
        if found != RUN_FORMAT:
            raise RunFolderError(
                f"{self.path}: a run folder of format {found} (this clearset {__version__} "
                f"reads format {RUN_FORMAT}); scan the source again into a new --out"
            )
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        write_json_atomic(self.run_json, info)

    def manifest_files(self) -> list[Path]:
        """The complete shards' parquet files, in shard-id order."""
        return [self.manifest_file(m["shard_id"]) for m in self.done_markers()]

    def read_manifest(self, columns: list[str] | None = None) -> pa.Table:
        files = self.manifest_files()
        if not files:
            raise RunFolderError(f"{self.path}: the manifest is empty (was it scanned?)")
        return read_manifest_files(files, columns)

    def prepare(
        self, source_spec: dict[str, Any], settings: dict[str, Any], *, shared: bool = False
    ) -> dict[str, Any]:
        """Start or resume a scan into this folder; refuse one made for something else.

        `shared`: other commands (the ranks of an array job) write into the folder at the
        same time, so one may be creating it now, and what is under a temporary name may
        be another's write in progress: nothing is swept (each shard's own leftovers are,
        when it is scanned again)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        if self.run_json.exists():
            info = self.read_info()
            recorded_info = RunInfo.of(info)
            if recorded_info.source != source_spec:
                other = recorded_info.source_url
                raise RunFolderError(
                    f"{self.path}: holds a run of another source ({other}); choose a new --out"
                )
            recorded = _by_identity(recorded_info.settings)
            now = _by_identity(settings)
            differ = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
            if differ == ["matching"]:
                raise RunFolderError(
                    self._other_lists(
                        recorded.get("matching"), settings, finished=bool(recorded_info.finished)
                    )
                )
            if differ:
                raise RunFolderError(
                    f"{self.path}: holds a run with other settings ({', '.join(differ)}); "
                    "resume with the same options or choose a new --out"
                )
            info["resumed"] = recorded_info.resumed + 1
        else:
            if self.path.exists() and any(
                not (
                    entry.name == RUN_LOCK
                    or _begun_here(entry)
                    or (shared and _being_made(entry.name))
                )
                for entry in self.path.iterdir()
            ):
                raise RunFolderError(f"{self.path}: exists, is not empty and is not a run folder")
            info = {
                "format": RUN_FORMAT,
                "manifest_version": MANIFEST_VERSION,
                "tool": {"name": TOOL_NAME, "version": __version__},
                "source": source_spec,
                "settings": settings,
                "started": utc_now(),
                "resumed": 0,
            }
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self.markers_dir.mkdir(parents=True, exist_ok=True)
        if not shared:
            storage.sweep(self.path)  # a run folder on an object store: trust the bucket
            sweep_tmp(self.manifest_dir)
            sweep_tmp(self.markers_dir)
            for leftover in self.path.glob(".tmp-*"):
                # spool and staging folders of an interrupted scan or match
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                elif _begun_here(leftover):  # run.json of a scan killed making the folder
                    leftover.unlink(missing_ok=True)
        info["finished"] = None
        info["tool"] = {"name": TOOL_NAME, "version": __version__}
        self.write_info(info)
        return info

    def _other_lists(self, recorded: Any, settings: dict[str, Any], *, finished: bool) -> str:
        """Why a scan may not resume with these lists, and the command that matches a run
        against other lists instead (`clearset match`: it reads no image again)."""
        match = f"`clearset match {shlex.quote(storage.url_of(self.path))} --list LIST`"
        matches = [e for e in self.read_history() if e.get("op") == "match"]
        if matches:
            last = matches[-1]
            names = ", ".join(lst.get("name", "?") for lst in last.get("lists", [])) or "no list"
            return (
                f"{self.path}: `clearset match` re-matched this run at {last.get('time')} "
                f"against {names}, so it is no longer the scan's; re-running the scan would "
                f"undo that: match again with {match} (one --list per list), or scan into a "
                "new --out"
            )
        now = settings.get("matching")
        if not lists_identity(recorded):
            was = "was scanned without a list"
        elif not lists_identity(now):
            names = ", ".join(sorted({str(lst.get("name")) for lst in lists_identity(recorded)}))
            was = f"was scanned with lists ({names}) and this command gives none"
        else:
            was = f"was scanned with other lists ({lists_change(recorded, now)})"
        began = "without --list" if not lists_identity(recorded) else "with the lists it began with"
        when = "" if finished else f" once the scan is finished (re-run it {began} first)"
        return (
            f"{self.path}: {was}, and a scan resumes only with the lists it began with; to "
            f"match this run against lists (no image is read again), run {match} "
            f"(one --list per list){when}, or scan into a new --out"
        )

    # ------------------------------------------------------------ history

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    def read_history(self) -> list[dict[str, Any]]:
        """RUN/history.jsonl, oldest first (empty for a run that has none yet)."""
        if not self.history_file.exists():
            return []
        entries = []
        for number, line in enumerate(self.history_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise RunFolderError(
                    f"{self.history_file}:{number}: corrupt history line"
                ) from None
        return entries

    def record(self, op: str, **fields: Any) -> dict[str, Any]:
        """Append one line to RUN/history.jsonl.

        The file is small (a line per command) and is written whole to a temporary name
        and renamed, so a crash leaves the old history or the new one, never a torn line.
        """
        entry = {"op": op, "time": utc_now(), **fields}
        before = self.history_file.read_bytes() if self.history_file.exists() else b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        with atomic_path(self.history_file) as tmp:
            tmp.write_bytes(before + line)
        return entry

    def record_scan(self, info: dict[str, Any]) -> None:
        """History lines for a scan that just ended (finished or not), and for the clean
        `scan --clean-to` finished in the same pass."""
        run_info = RunInfo.of(info)
        counts = run_info.counts
        self.record(
            "scan",
            source=run_info.source_url,
            lists=lists_identity(run_info.matching),
            started=run_info.started,
            finished=run_info.finished,
            resumed=run_info.resumed,
            shards=run_info.shards,
            shards_done=counts.get("shards_done"),
            failed_shards=len(run_info.failed_shards),
            items=counts.get("items"),
            matched_items=(counts.get("matches") or {}).get("items"),
            accounting=run_info.verdict,
        )
        if "clean" in counts:
            record_clean(self)

    def archive(self, op: str, paths: list[Path]) -> str | None:
        """Move what a new `op` would replace into RUN/history/<op>-<n>/ (n counts up);
        returns that folder relative to the run, or None when there was nothing to keep.

        The folder gets its final name before anything moves in, so an interrupted move
        leaves every file either in place or in the archive, never in a temporary folder
        a resume would sweep."""
        present = [p for p in paths if p.exists()]
        if not present:
            return None
        root = self.path / HISTORY_DIR
        taken = [
            int(d.name.rsplit("-", 1)[1])
            for d in root.glob(f"{op}-*")
            if d.name.rsplit("-", 1)[1].isdigit()
        ]
        folder = root / f"{op}-{max(taken, default=0) + 1}"
        folder.mkdir(parents=True)
        for path in present:
            os.replace(path, folder / path.name)
        return str(folder.relative_to(self.path))


def _by_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as a resume compares them: each list by its identity (name, version,
    digest, ...), not by the path it was given by, so `./l.txt`, `l.txt`, `/abs/l.txt`
    or a link to it resume the same scan."""
    matching = settings.get("matching")
    if not isinstance(matching, dict) or not isinstance(matching.get("lists"), list):
        return settings
    lists = [
        {k: v for k, v in lst.items() if k != "source"} if isinstance(lst, dict) else lst
        for lst in matching["lists"]
    ]
    return {**settings, "matching": {**matching, "lists": lists}}


def _begun_here(entry: Path) -> bool:
    """What a scan killed while it made this run folder left before its run.json: the
    empty manifest and marker folders, and run.json under a temporary name."""
    if entry.name in ("manifest", "markers"):
        return entry.is_dir() and not any(entry.iterdir())
    return entry.name.startswith(TMP_PREFIX) and entry.name.endswith("-run.json")


def _being_made(name: str) -> bool:
    """What another rank creating the same run folder may have put in it so far."""
    return name.startswith(TMP_PREFIX) or name in (
        "manifest",
        "markers",
        "matches",
        "failed",
        "ranks",
    )


def lists_identity(matching: Any) -> list[dict[str, Any]]:
    """The lists of a run.json "matching" record, as history names them: identity only."""
    if not isinstance(matching, dict):
        return []
    keep = ("name", "version", "digest", "hash_type", "threshold")
    return [{k: lst.get(k) for k in keep if k in lst} for lst in matching.get("lists", [])]


def lists_change(recorded: Any, now: Any) -> str:
    """What differs between two "matching" records, in a few words for a message."""
    old: dict[Any, dict[str, Any]] = {lst.get("name"): lst for lst in lists_identity(recorded)}
    new: dict[Any, dict[str, Any]] = {lst.get("name"): lst for lst in lists_identity(now)}
    parts = [f"{n} changed" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    renamed = {
        n: o
        for n in sorted(new.keys() - old.keys())
        for o in sorted(old.keys() - new.keys())
        if new[n].get("digest") == old[o].get("digest")
    }
    # A list is named after its file: the same list by a link or copy of another name.
    parts += [
        f"{n} is {o} under another name: give it as --list PATH,name={o}"
        for n, o in renamed.items()
    ]
    parts += [f"{n} added" for n in sorted(new.keys() - old.keys()) if n not in renamed]
    parts += [f"{n} dropped" for n in sorted(old.keys() - new.keys()) if n not in renamed.values()]
    return ", ".join(parts) or "other match settings"


def account_scan(account: dict[str, dict[str, int]], allow_missing: bool) -> dict[str, Any]:
    """The scan's accounting: what was hashed, what could not be read, and whether that
    is acceptable. A scan that hashed no image, or left more than `MAX_UNREAD_SHARE` of
    its items unread, fails unless the user accepts it (--allow-missing)."""
    totals = {name: sum(reasons.values()) for name, reasons in account.items()}
    hashed, unread = totals.get(HASHED, 0), totals.get(UNREAD, 0)
    read = sum(totals.values()) - totals.get(UPSTREAM_FAILED, 0)
    items = hashed + unread
    problem = None
    if read and not hashed:
        problem = f"hashed no image in {read:,} manifest rows"
    elif not hashed:
        # An empty tar, or shards whose every download failed: nothing was hashed, and
        # a cleaned copy or a receipt of it would vouch for nothing.
        failed = totals.get(UPSTREAM_FAILED, 0)
        problem = "hashed no image: the source holds no member" + (
            f" (only {plural(failed, 'failed download')} the source records)" if failed else ""
        )
    elif items and unread / items > MAX_UNREAD_SHARE:
        problem = (
            f"could not read {unread:,} of {items:,} items ({unread / items:.1%}, more than "
            f"the {MAX_UNREAD_SHARE:.0%} allowed)"
        )
    verdict = "ok" if problem is None else "accepted" if allow_missing else "failed"
    return {
        "verdict": verdict,
        "problem": problem,
        "allow_missing": allow_missing,
        "max_unread_share": MAX_UNREAD_SHARE,
        "totals": totals,
        "reasons": {name: dict(sorted(r.items())) for name, r in sorted(account.items())},
    }


def accounting_line(accounting: dict[str, Any]) -> str:
    """One line a person reads at the end of every scan."""
    totals, reasons = accounting["totals"], accounting["reasons"]

    def why(name: str) -> str:
        found = {k or "unknown": v for k, v in reasons.get(name, {}).items()}
        return " (" + ", ".join(f"{k} {v:,}" for k, v in found.items()) + ")" if found else ""

    found = sum(totals.values())
    parts = [
        plural(totals.get(HASHED, 0), "image hashed", "images hashed"),
        f"{totals.get(UNREAD, 0):,} unread{why(UNREAD)}",
        plural(
            totals.get(OTHER, 0),
            "other member hashed, not an image",
            "other members hashed, not images",
        ),
    ]
    if totals.get(UPSTREAM_FAILED):
        parts.append(
            plural(
                totals[UPSTREAM_FAILED],
                "failed download the source records",
                "failed downloads the source records",
            )
        )
    return f"accounting: {plural(found, 'member', 'members')}: " + "; ".join(parts)


# ---------------------------------------------------------------- RUN/cleaned/: the last clean


def refuse_unaccounted(run: RunFolder, info: RunInfo) -> None:
    """A run whose scan hashed nothing, or left too much unread, backs no cleaned copy
    and no receipt (unless it was scanned with --allow-missing)."""
    accounting = info.accounting
    if info.verdict == "failed":
        raise RunFolderError(
            f"{run.path}: {accounting.get('problem')}; not cleaning or signing it (re-run its "
            "scan with --allow-missing to accept it)"
        )


def read_clean_json(cleaned: RunFolder) -> dict[str, Any] | None:
    path = cleaned.path / "clean.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise RunFolderError(f"{path}: corrupt clean record") from None


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
    cleaned = run.cleaned
    record = read_clean_json(cleaned)
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
    return read_manifest_files(cleaned_manifest_files(run_dir), columns)


def clean_info(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/cleaned/clean.json, or None when the run was never cleaned."""
    return read_clean_json(RunFolder(Path(run_dir)).cleaned)
