"""Typed records (clearset.records) and the CLI's option groups (clearset.cli.options)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer

from clearset.cli.options import grouped
from clearset.errors import RunFolderError
from clearset.records import CleanRecord, Report, RunInfo
from clearset.settings import PDQ_MIN_QUALITY


def test_run_info_reads_what_run_json_holds() -> None:
    raw = {
        "format": 1,
        "source": {"url": "/data", "kind": "folder"},
        "settings": {"exact_pdq": False, "matching": {"min_quality": 40, "lists": [{"a": 1}]}},
        "started": "2026-01-01T00:00:00+00:00",
        "finished": None,
        "resumed": 2,
        "accounting": {"verdict": "failed", "problem": "read nothing"},
        "rare": "kept",
    }
    info = RunInfo.of(raw)
    assert info.source_url == "/data"
    assert info.matching == {"min_quality": 40, "lists": [{"a": 1}]}
    assert info.lists == [{"a": 1}]
    assert info.min_quality == 40
    assert info.scan_settings == {"exact_pdq": False}
    assert info.verdict == "failed"
    assert (info.resumed, info.finished, info.failed_shards) == (2, None, [])
    assert info.raw["rare"] == "kept"


def test_run_info_absent_keys_read_as_the_writers_defaults() -> None:
    info = RunInfo.of({"format": 1, "settings": {"matching": None}})
    assert info.matching is None and info.lists == []
    assert info.min_quality == PDQ_MIN_QUALITY
    assert info.source == {} and info.source_url is None
    assert info.verdict is None and info.counts == {} and info.shards is None


def test_clean_record_read(tmp_path) -> None:
    assert CleanRecord.read(tmp_path) is None
    (tmp_path / "cleaned").mkdir()
    record = {"destination": "/out", "finished": None, "counts": {"items_kept": 3}}
    (tmp_path / "cleaned" / "clean.json").write_text(json.dumps(record))
    read = CleanRecord.read(tmp_path)
    assert read is not None
    assert (read.destination, read.finished, read.counts) == ("/out", None, {"items_kept": 3})
    assert read.identity == {} and read.card_files is None
    (tmp_path / "cleaned" / "clean.json").write_text("{")
    with pytest.raises(RunFolderError, match="corrupt clean record"):
        CleanRecord.read(tmp_path)


def test_report_sections() -> None:
    report = Report.of({"partial": True, "lists": [{"name": "x"}], "clean": None})
    assert report.partial and report.lists == [{"name": "x"}] and report.clean == {}


@dataclass(frozen=True)
class _Group:
    alpha: Annotated[int, typer.Option(help="a")] = 1
    beta: Annotated[str | None, typer.Option(help="b")] = None


def test_grouped_gives_typer_flat_options_and_the_command_objects() -> None:
    seen = {}

    @grouped
    def command(first: str, *, group: _Group, last: bool = False) -> None:
        seen.update(first=first, group=group, last=last)

    names = list(inspect.signature(command).parameters)
    assert names == ["first", "alpha", "beta", "last"]
    command(first="x", alpha=5, beta=None, last=True)
    assert seen == {"first": "x", "group": _Group(alpha=5), "last": True}
