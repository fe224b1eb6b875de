"""Typed views of the JSON records a run folder keeps: run.json (`RunInfo`), the clean
record RUN/cleaned/clean.json (`CleanRecord`) and the removal report RUN/report.json
(`Report`).

Code that reads a record reads named, typed fields instead of string keys into a
`dict[str, Any]`; `.raw` keeps the whole dict for a rare key. These classes only read:
the writers still build and write the dicts, so what a run folder holds is unchanged.
Absent keys read as the writers' own defaults (None, 0, an empty list or dict).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearset.errors import RunFolderError
from clearset.settings import PDQ_MIN_QUALITY

if TYPE_CHECKING:
    from clearset.runfolder import RunFolder


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class RunInfo:
    """run.json: the source, the settings a scan used, its times and its counts."""

    raw: dict[str, Any]
    source: dict[str, Any]
    settings: dict[str, Any]
    tool: dict[str, Any] | None
    started: str | None
    finished: str | None
    matched: str | None
    resumed: int
    shards: int | None
    failed_shards: list[dict[str, Any]]
    accounting: dict[str, Any]
    counts: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> RunInfo:
        return cls(
            raw=raw,
            source=_dict(raw.get("source")),
            settings=_dict(raw.get("settings")),
            tool=raw.get("tool"),
            started=raw.get("started"),
            finished=raw.get("finished"),
            matched=raw.get("matched"),
            resumed=int(raw.get("resumed") or 0),
            shards=raw.get("shards"),
            failed_shards=list(raw.get("failed_shards") or []),
            accounting=_dict(raw.get("accounting")),
            counts=_dict(raw.get("counts")),
        )

    @classmethod
    def read(cls, run: RunFolder) -> RunInfo:
        return cls.of(run.read_info())

    @property
    def source_url(self) -> str | None:
        url = self.source.get("url")
        return None if url is None else str(url)

    @property
    def matching(self) -> dict[str, Any] | None:
        """The lists and thresholds of the last scan or match; None for a run not matched."""
        matching = self.settings.get("matching")
        return matching if isinstance(matching, dict) else None

    @property
    def lists(self) -> list[dict[str, Any]]:
        return list((self.matching or {}).get("lists") or [])

    @property
    def min_quality(self) -> int:
        return int((self.matching or {}).get("min_quality", PDQ_MIN_QUALITY))

    @property
    def scan_settings(self) -> dict[str, Any]:
        """The settings that change what a scan writes (the matching left out)."""
        return {k: v for k, v in self.settings.items() if k != "matching"}

    @property
    def verdict(self) -> str | None:
        """The scan's accounting verdict: ok, accepted (with --allow-missing) or failed."""
        verdict = self.accounting.get("verdict")
        return None if verdict is None else str(verdict)


@dataclass(frozen=True)
class CleanRecord:
    """RUN/cleaned/clean.json: where the last clean wrote, with what, and its counts."""

    raw: dict[str, Any]
    destination: str | None
    started: str | None
    finished: str | None
    options: dict[str, Any] | None
    matching: dict[str, Any] | None
    identity: dict[str, Any]
    counts: dict[str, Any]
    replaced: str | None
    card_files: dict[str, list[dict[str, Any]]] | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> CleanRecord:
        return cls(
            raw=raw,
            destination=raw.get("destination"),
            started=raw.get("started"),
            finished=raw.get("finished"),
            options=raw.get("options"),
            matching=raw.get("matching"),
            identity=_dict(raw.get("identity")),
            counts=_dict(raw.get("counts")),
            replaced=raw.get("replaced"),
            card_files=raw.get("card_files"),
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> CleanRecord | None:
        """The record of `run_dir`'s last clean, or None when it was never cleaned."""
        path = Path(run_dir) / "cleaned" / "clean.json"
        if not path.exists():
            return None
        try:
            return cls.of(json.loads(path.read_text()))
        except ValueError:
            raise RunFolderError(f"{path}: corrupt clean record") from None


@dataclass(frozen=True)
class Report:
    """RUN/report.json (as `clearset report` writes it, or `build_report` returns it)."""

    raw: dict[str, Any]
    partial: bool
    state: dict[str, Any]
    run: dict[str, Any]
    thresholds: dict[str, Any]
    lists: list[dict[str, Any]]
    items: dict[str, Any]
    matches: dict[str, Any]
    clean: dict[str, Any]
    counts: dict[str, Any]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Report:
        return cls(
            raw=raw,
            partial=bool(raw.get("partial")),
            state=_dict(raw.get("state")),
            run=_dict(raw.get("run")),
            thresholds=_dict(raw.get("thresholds")),
            lists=list(raw.get("lists") or []),
            items=_dict(raw.get("items")),
            matches=_dict(raw.get("matches")),
            clean=_dict(raw.get("clean")),
            counts=_dict(raw.get("counts")),
        )

    @classmethod
    def read(cls, path: str | Path) -> Report:
        try:
            return cls.of(json.loads(Path(path).read_text()))
        except ValueError:
            raise RunFolderError(f"{path}: corrupt report") from None


__all__ = ["CleanRecord", "Report", "RunInfo"]
