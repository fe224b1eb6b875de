"""What the CLI prints: progress in logs, user text printed literally, the help, the demo.

A batch job's log must get plain progress lines (no escape codes, no wrapping); a path
or list name holding `[` must print as typed and never crash rich; `clearset --help`
lists commands in the order of the work with whole sentences.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.cli.commands import matched_items_note
from clearset.demo import DemoData
from clearset.progress import PROGRESS_INTERVAL_ENV
from clearset.progress import Meter as _Meter
from tests.conftest import run_cli

ESCAPE = "\x1b"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point with stdout and stderr piped, as in a Slurm log."""
    return subprocess.run(
        [sys.executable, "-m", "clearset.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_scan_into_a_log_prints_plain_progress_lines(demo_data: DemoData, tmp_path: Path) -> None:
    run = tmp_path / ("run-" + "x" * 90)  # a long path must not wrap either
    proc = _cli(
        "scan", str(demo_data.webdataset), "--out", str(run), "--workers", "1",
        env={PROGRESS_INTERVAL_ENV: "0.05", "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ESCAPE not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("clearset scan: ")]
    assert len(lines) >= 2, proc.stderr
    for line in lines:
        assert re.search(
            r"\d+/4 shards, [\d,]+ items, [\d,]+ items/s, .* elapsed \d:\d\d:\d\d", line
        )
    # every manifest row: 100 images with a caption and a .json each, 1 failed download
    assert lines[-1].startswith("clearset scan: 4/4 shards, 301 items")
    # The summary's long path stays on one line in a log too.
    assert any(str(run / "manifest") in line for line in proc.stdout.splitlines())


def test_no_progress_lines_when_told_not_to(demo_data: DemoData, tmp_path: Path) -> None:
    proc = _cli(
        "scan", str(demo_data.webdataset), "--out", str(tmp_path / "run"), "--workers", "1",
        "--no-progress", env={PROGRESS_INTERVAL_ENV: "0.05"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "clearset scan:" not in proc.stderr


def test_a_bad_progress_interval_is_one_line(demo_data: DemoData, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _cli(
        "scan", str(demo_data.webdataset), "--out", str(run), env={PROGRESS_INTERVAL_ENV: "soon"}
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        f"clearset: error: {PROGRESS_INTERVAL_ENV}='soon': not a number of seconds"
    )
    assert not run.exists()


def test_the_meter_moves_within_shards_and_never_back() -> None:
    meter = _Meter(4, 0, enabled=False, console=None, workers=1)
    assert meter._estimate() is None  # nothing finished: no estimate yet
    fractions = []
    for _ in range(4):
        for _ in range(4):
            meter.add(8, 0, 100)
            fraction = meter._estimate()
            if fraction is not None:
                fractions.append(fraction)
        meter.shard_done()
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < 0.5 and max(fractions) < 1
    assert len(set(fractions)) > 3  # it moved between shard completions
    assert meter._estimate() == 1.0
    assert "ETA" not in meter.line() and meter.line().startswith("clearset scan: 4/4 shards")


def test_the_meter_gives_an_eta_once_a_shard_finished() -> None:
    meter = _Meter(10, 2, enabled=False, console=None, workers=1)
    meter.add(100, 0, 0)
    assert "ETA ?" in meter.line()
    meter.shard_done()
    assert re.search(r"ETA \d:\d\d:\d\d", meter.line())
    assert "3/10 shards" in meter.line()


@pytest.fixture(scope="module")
def bracket_lists(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brackets")
    shutil.copy(demo_data.md5_list, root / "markup_[red]x.csv")
    return root


def test_paths_and_list_names_with_brackets_print_literally(
    demo_data: DemoData, bracket_lists: Path
) -> None:
    run = bracket_lists / "run[1]"
    proc = _cli(
        "scan", str(demo_data.webdataset), "--out", str(run), "--workers", "1",
        "--list", f"{demo_data.pdq_list},name=[/]x",
        "--list", str(bracket_lists / "markup_[red]x.csv"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[/]x" in proc.stdout  # a list name that is a closing tag to rich
    assert "markup_[red]x" in proc.stdout  # the list named after its file, not "markup_x"
    assert f"scan of {run}" in proc.stdout and str(run / "matches.parquet") in proc.stdout
    report = run_cli("report", str(run))
    assert report.returncode == 0 and str(run / "report.html") in report.stdout


def test_an_error_quoting_a_bracketed_path_prints_it_literally(
    demo_data: DemoData, bracket_lists: Path
) -> None:
    missing = bracket_lists / "markup_[red]y.txt"
    run = bracket_lists / "run[9]"
    proc = _cli("scan", str(demo_data.webdataset), "--out", str(run), "--list", str(missing))
    assert proc.returncode != 0
    line = proc.stderr.strip()
    assert line.startswith("clearset: error: ") and str(missing) in line, line
    assert "Traceback" not in proc.stderr


def _help(*args: str, columns: str = "80") -> str:
    """Help text as a terminal COLUMNS wide shows it (in-process: one interpreter each
    would take seconds)."""
    from typer.testing import CliRunner

    from clearset.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_lists_commands_in_the_order_of_the_work() -> None:
    section = _help().split("Commands:", 1)[1]
    names = re.findall(r"^  (\S+)", section, re.M)
    work = ["scan", "match", "clean", "report", "receipt", "prove", "verify"]
    assert [n for n in names if n in work] == work
    assert names[-1] == "demo"
    assert "..." not in section  # every summary is a whole sentence


@pytest.mark.parametrize("columns", ["80", "120"])
def test_help_texts_are_whole_sentences(columns: str) -> None:
    import typer.main

    from clearset.cli import app

    names = re.findall(r"^  (\S+) ", _help(columns=columns).split("Commands:", 1)[1], re.M)
    assert len(names) >= 12
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in names:
        summary = (commands[name].help or "").split("\n\n")[0].strip()
        # A summary broken over two source lines shows its break in the help.
        assert "\n" not in summary and summary.endswith((".", ")")), (name, summary)
        text = _help(name, columns=columns)
        assert "…" not in text and "..." not in re.sub(
            r"\w\.\.\. <|}\.\.\.|COMMAND \[ARGS\]\.\.\.", "", text
        ), text


def test_matched_items_note_explains_extra_rows(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({
            "shard": ["a", "a", "a", "b"], "key": ["1", "1", "2", "3"],
            "list_digest": ["p", "m", "p", "p"],
        }),
        tmp_path / "matches.parquet",
    )  # fmt: skip
    note = matched_items_note({"items": 3, "rows": 4}, tmp_path)
    assert note == "3 samples matched (4 match rows: 1 sample matched 2 lists)"
    assert matched_items_note({"items": 3, "rows": 3}, tmp_path) == "3 samples matched"


def test_demo_prints_its_commands(demo_data: DemoData, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    shutil.copytree(demo_data.root, out / "data")
    (out / "data" / ".complete").write_text("copied from the test fixture\n")
    # One worker: every step runs in the demo's own process (what it prints is the point
    # here; worker pools are tested with each command), not in pools of fresh ones.
    proc = _cli("demo", "--out", str(out), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    scan_line = next(line for line in text.splitlines() if line.startswith("$ clearset scan "))
    assert "--dihedral" in scan_line and "--clean-to" in scan_line
    assert scan_line.count("--list ") == 2
    assert "rotations and flips" in text
    for step in ("report", "receipt", "prove", "verify"):
        assert f"$ clearset {step} " in text
    assert "6 samples matched (7 match rows: 1 sample matched 2 lists)" in text
    assert "found: 6" in text
    assert f"$ clearset audit {out / 'generated'} --run {out / 'run'} " in text
    assert "generated images with a training copy: 4 of 7" in text
    for fmt, name in (("eu-ai-act", "eu-ai-act-summary.md"), ("ab2013", "ab2013.md"),
                      ("croissant", "croissant.json"), ("datacard", "README.md")):  # fmt: skip
        path = out / "run" / "documents" / name
        assert f"$ clearset document {out / 'run'} --format {fmt}" in text
        assert f"{fmt}: {path} " in text and path.stat().st_size > 0
