"""A run is a folder; every later stage reads it.

    RUN/run.json                     source, tool version, settings, times, counts
    RUN/manifest/<shard>.parquet     one row per item of that source shard
    RUN/manifest/<shard>.done.json   completion marker: rows, counts, the parquet's sha256
    RUN/matches/<shard>.parquet      with lists: that shard's match rows (before its marker)
    RUN/matches.parquet              all match rows, gathered when a scan or match ends

A shard's parquet is renamed into place first and its marker second, so a marker always
names a complete file. A re-run skips shards with a marker; only marked shards count as
the manifest. run.json is rewritten atomically at the start and the end of each scan.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from clearset import TOOL_NAME, __version__
from clearset.errors import RunFolderError
from clearset.settings import MAX_UNREAD_SHARE
from clearset.sinks.atomic import sweep_tmp, write_json_atomic
from clearset.sinks.manifest import (
    HASHED,
    MANIFEST_VERSION,
    OTHER,
    UNREAD,
    UPSTREAM_FAILED,
    read_manifest_files,
)

RUN_FORMAT = 1
DONE_SUFFIX = ".done.json"


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

    def done_file(self, shard_id: str) -> Path:
        return self.manifest_dir / f"{shard_id}{DONE_SUFFIX}"

    def is_done(self, shard_id: str) -> bool:
        return self.done_file(shard_id).exists() and self.manifest_file(shard_id).exists()

    def done_markers(self) -> list[dict[str, Any]]:
        markers = []
        for marker in sorted(self.manifest_dir.glob(f"*{DONE_SUFFIX}")):
            try:
                markers.append(json.loads(marker.read_text()))
            except ValueError:
                raise RunFolderError(f"{marker}: corrupt completion marker") from None
        return markers

    def read_info(self) -> dict[str, Any]:
        if not self.run_json.exists():
            raise RunFolderError(f"{self.path}: not a clearset run folder (no run.json)")
        try:
            return json.loads(self.run_json.read_text())
        except ValueError:
            raise RunFolderError(f"{self.run_json}: corrupt run.json") from None

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

    def prepare(self, source_spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """Start or resume a scan into this folder; refuse one made for something else."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        if self.run_json.exists():
            info = self.read_info()
            if info.get("source") != source_spec:
                other = info.get("source", {}).get("url")
                raise RunFolderError(
                    f"{self.path}: holds a run of another source ({other}); choose a new --out"
                )
            recorded = info.get("settings", {})
            differ = sorted(
                k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k)
            )
            if differ == ["matching"]:
                raise RunFolderError(
                    f"{self.path}: was matched against other lists (a list file changed, or "
                    "`clearset match` re-matched it); resume with those lists or choose a new --out"
                )
            if differ:
                raise RunFolderError(
                    f"{self.path}: holds a run with other settings ({', '.join(differ)}); "
                    "resume with the same options or choose a new --out"
                )
            info["resumed"] = info.get("resumed", 0) + 1
        else:
            if self.path.exists() and any(self.path.iterdir()):
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
        sweep_tmp(self.manifest_dir)
        for leftover in self.path.glob(".tmp-*"):
            # spool and staging folders of an interrupted scan or match
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        info["finished"] = None
        info["tool"] = {"name": TOOL_NAME, "version": __version__}
        self.write_info(info)
        return info


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
        f"{totals.get(HASHED, 0):,} images hashed",
        f"{totals.get(UNREAD, 0):,} unread{why(UNREAD)}",
        f"{totals.get(OTHER, 0):,} other members hashed, not images",
    ]
    if totals.get(UPSTREAM_FAILED):
        parts.append(f"{totals[UPSTREAM_FAILED]:,} failed downloads the source records")
    return f"accounting: {found:,} rows: " + "; ".join(parts)
