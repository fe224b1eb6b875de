"""Issue 23, points 1 and 8: what the report, the documents and the receipt say about a
run in every state (a scan stopped after some shards, one whose shards failed, one that
failed its accounting, a run matched again after its clean, a finished one), and a
per-shard view that stays readable at 23,000 shards."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData, demo_items, write_webdataset
from clearset.documents import FORMATS
from clearset.documents.report import SHARD_BARS_MAX, build_report, render_html, write_report
from clearset.engines import Outcome, Task
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.progress import ProgressFn
from clearset.runs import MatchJob, ScanSettings, run_scan
from clearset.stages.clean import CleanJob
from tests.conftest import cli


class _StopAfter:
    """An engine that runs tasks here, one at a time, and is stopped (Ctrl-C) after
    `shards` of them: the run folder of a scan interrupted between shards."""

    name = "stop-after"
    workers = 1

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def run(self, tasks: Sequence[Task], on_progress: ProgressFn) -> Iterator[Outcome]:
        for number, task in enumerate(tasks):
            if number == self.shards:
                raise KeyboardInterrupt
            yield Outcome(task, result=task.fn(*task.args))

    def close(self) -> None:
        pass


def _job(demo: DemoData) -> MatchJob:
    return MatchJob((ListSpec(str(demo.pdq_list)), ListSpec(str(demo.md5_list))), MatchSettings())


def _matched_in_shard_files(run: Path) -> int:
    """Distinct (shard, key) in the per-shard match files of the shards marked done."""
    keys = set()
    for marker in (run / "markers").glob("*.done.json"):
        shard_id = json.loads(marker.read_text())["shard_id"]
        path = run / "matches" / f"{shard_id}.parquet"
        if path.exists():
            table = pq.read_table(path, columns=["shard", "key"]).to_pylist()
            keys |= {(row["shard"], row["key"]) for row in table}
    return len(keys)


def _one_line_refusal(proc, *needles: str) -> None:  # noqa: ANN001
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def stopped(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(KeyboardInterrupt):
        run_scan(open_source(str(demo_data.webdataset)), run, ScanSettings(),
                 engine=_StopAfter(2), show_progress=False, match=_job(demo_data))  # fmt: skip
    return run


def test_a_stopped_scan_gets_a_report_marked_partial_with_its_matches(stopped: Path) -> None:
    info = json.loads((stopped / "run.json").read_text())
    assert info["finished"] is None and not (stopped / "matches.parquet").exists()
    matched = _matched_in_shard_files(stopped)
    assert matched > 0  # matches sit in RUN/matches/*.parquet, not gathered

    proc = cli("report", str(stopped))
    assert proc.returncode == 0, proc.stderr
    assert "PARTIAL: the scan has not finished: 2 of 4 shards scanned" in proc.stdout
    assert "to finish: re-run `clearset scan" in proc.stdout

    report = json.loads((stopped / "report.json").read_text())
    assert report["partial"] is True
    assert report["state"]["scan"] == "not finished"
    assert (report["state"]["shards_done"], report["state"]["shards"]) == (2, 4)
    assert report["items"]["matched"] == matched == report["matches"]["items"]
    assert sum(s["matched_items"] for s in report["per_shard"].values()) == matched

    page = (stopped / "report.html").read_text()
    assert "<title>clearset removal report (PARTIAL)</title>" in page
    banner = page.index("PARTIAL REPORT: the scan has not finished: 2 of 4 shards scanned")
    assert banner < page.index("<h2>")  # at the top, before anything else
    assert f"at least {matched:,} samples matched a list" in page
    assert not re.search(r"\b0 (samples |items )?matched a list", page)
    assert "To finish: re-run <code" not in page and "clearset scan" in page
    # Every chart's title says what it covers.
    titles = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert titles and all("(partial: 2 of 4 shards only)" in t for t in titles)


def test_a_stopped_scan_backs_no_document_and_no_receipt(stopped: Path, tmp_path: Path) -> None:
    for fmt in FORMATS:
        proc = cli("document", str(stopped), "--format", fmt)
        _one_line_refusal(proc, "the scan has not finished: 2 of 4 shards", "clearset scan")
    assert not (stopped / "documents").exists()
    cli("keygen", str(tmp_path / "keys"), check=True)
    proc = cli("receipt", str(stopped), "--key", str(tmp_path / "keys" / "clearset.key"))
    _one_line_refusal(proc, "not finished")
    assert not (stopped / "receipt.dsse.json").exists()


def test_a_scan_stopped_before_its_first_shard_has_nothing_to_report(
    demo_data: DemoData, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_scan(open_source(str(demo_data.webdataset)), run, ScanSettings(),
                 engine=_StopAfter(0), show_progress=False, match=_job(demo_data))  # fmt: skip
    proc = cli("report", str(run))
    _one_line_refusal(proc, "0 of 4 shards scanned", "nothing to report yet", "clearset scan")
    assert not (run / "report.html").exists() and not (run / "report.json").exists()


def test_a_scan_with_a_failed_shard_is_partial_and_names_it(tmp_path: Path) -> None:
    items = demo_items(seed=4, count=6)
    write_webdataset(tmp_path / "src", items, shard_size=5)
    tar = tmp_path / "src" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:700])  # cut mid-member
    run = tmp_path / "run"
    proc = cli("scan", str(tmp_path / "src"), "--out", str(run), "--no-progress")
    assert proc.returncode != 0
    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())
    assert report["partial"] is True and report["state"]["shards_failed"] == 1
    assert "1 of 2 shards scanned; 1 failed" in report["state"]["problem"]
    assert "PARTIAL REPORT" in (run / "report.html").read_text()


@pytest.fixture(scope="module")
def unaccounted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where most pictures are unreadable; the one readable one is on the list."""
    from tests.test_accounting import _jpeg, _sha256_list

    root = tmp_path_factory.mktemp("unaccounted")
    src = root / "src"
    src.mkdir()
    picture = _jpeg(90)
    (src / "good.jpg").write_bytes(picture)
    for n in range(9):
        (src / f"broken{n}.jpg").write_bytes(b"\xff\xd8 a broken picture")
    run = root / "run"
    proc = cli("scan", str(src), "--out", str(run), "--list", _sha256_list(root / "l.txt", picture))
    assert proc.returncode == 1 and "could not read 9 of 10" in proc.stderr
    return run


def test_a_scan_that_failed_its_accounting_is_reported_partial(unaccounted: Path) -> None:
    assert json.loads((unaccounted / "run.json").read_text())["accounting"]["verdict"] == "failed"
    proc = cli("report", str(unaccounted))
    assert proc.returncode == 0 and "PARTIAL: the scan could not read 9 of 10" in proc.stdout
    report = json.loads((unaccounted / "report.json").read_text())
    assert report["partial"] is True and report["state"]["scan"] == "accounting failed"
    assert report["items"]["matched"] == 1
    page = (unaccounted / "report.html").read_text()
    assert "PARTIAL REPORT: the scan could not read 9 of 10" in page
    assert "--allow-missing" in page and "at least 1 sample matched a list" in page


def test_a_scan_that_failed_its_accounting_backs_no_document_and_no_receipt(
    unaccounted: Path, tmp_path: Path
) -> None:
    for fmt in FORMATS:
        _one_line_refusal(cli("document", str(unaccounted), "--format", fmt), "could not read")
    cli("keygen", str(tmp_path / "keys"), check=True)
    proc = cli("receipt", str(unaccounted), "--key", str(tmp_path / "keys" / "clearset.key"))
    # The accounting is the reason, not a missing clean (which would be refused too).
    _one_line_refusal(proc, "could not read 9 of 10")


@pytest.fixture(scope="module")
def finished(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    run_scan(
        open_source(str(demo_data.webdataset)),
        root / "run",
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=_job(demo_data),
        clean=CleanJob(str(root / "clean")),
    )
    return root / "run"


def test_a_finished_run_is_reported_whole(finished: Path) -> None:
    proc = cli("report", str(finished))
    assert proc.returncode == 0 and "PARTIAL" not in proc.stdout
    report = json.loads((finished / "report.json").read_text())
    assert report["partial"] is False and report["state"]["scan"] == "finished"
    assert report["state"]["shards_done"] == report["state"]["shards"] == 4
    page = (finished / "report.html").read_text()
    assert "PARTIAL" not in page and "partial:" not in page
    matched = report["items"]["matched"]
    assert matched > 0
    scanned = f"{report['items']['total']:,} members in "
    assert scanned in page and f" scanned; {matched:,} samples matched a list" in page


def test_a_match_not_gathered_is_partial_and_backs_no_document(
    finished: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "matches.parquet").unlink()  # killed between the swap and the gathering
    report = build_report(run)
    assert report["partial"] is True and report["state"]["scan"] == "match not finished"
    # Counted from the per-shard files: the same as when they were gathered.
    assert report["items"]["matched"] == build_report(finished)["items"]["matched"] > 0
    _one_line_refusal(cli("document", str(run), "--format", "datacard"), "clearset match")


def test_a_run_matched_again_after_its_clean(
    demo_data: DemoData, finished: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    write_report(run)
    cli("match", str(run), "--list", str(demo_data.md5_list), check=True)
    # The report of the old matches went with them: it no longer describes the run.
    assert not (run / "report.html").exists() and not (run / "report.json").exists()
    assert (run / "history" / "match-1" / "report.html").exists()
    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())
    assert report["partial"] is False and report["clean"]["stale"] is True
    assert [entry["name"] for entry in report["lists"]] == ["watch-md5"]
    page = (run / "report.html").read_text()
    assert page.index("cleaned copy this page describes is stale") < page.index("<h2>")
    for fmt in FORMATS:
        _one_line_refusal(
            cli("document", str(run), "--format", fmt), "before the last `clearset match`"
        )


# ---------------------------------------------------------------- many shards


def test_the_shard_view_stays_readable_at_23000_shards(finished: Path) -> None:
    report = build_report(finished)
    shards = 23_000
    report["per_shard"] = {
        f"{n:05d}.tar": {
            "items": 9_000 + (n * 7919) % 2_000,
            "matched_items": (n % 997 == 0) * (1 + n % 5),
            "matched_by_list": {"watch-pdq": 1 + n % 5} if n % 997 == 0 else {},
        }
        for n in range(shards)
    }
    page = render_html(report)
    assert len(page) < 150_000  # bounded, whatever the shard count
    # The page says what it aggregated, and how.
    assert "23,000 shards by number of members" in page
    assert "23,000 shards: too many for a bar each" in page
    with_match = sum(1 for s in report["per_shard"].values() if s["matched_items"])
    assert f"{with_match:,} of the 23,000 shards hold a match" in page
    # The histogram has a bar per range, not per shard; the table the top shards.
    shard_chart = page[page.index("23,000 shards by number of members") :]
    shard_chart = shard_chart[: shard_chart.index("</figure>")]
    assert 1 < shard_chart.count("<rect") <= 20
    assert "09,000" not in shard_chart and "9,000-" in shard_chart  # from the smallest
    # Axis labels no closer than their width: a 13-character range label every ~92 px of
    # a 584 px plot, not one on every other 29 px bar.
    ticks = re.findall(r'text-anchor="middle">([\d,]+-[\d,]+)</text>', shard_chart)
    assert 3 <= len(ticks) <= 584 // (max(map(len, ticks)) * 6.5) + 1
    table = page[page.index("Shards with the most matched samples") :]
    table = table[: table.index("</table>")]
    named = re.findall(r"<td>(\d{5}\.tar)</td>", table)
    most = sorted(report["per_shard"].items(), key=lambda kv: (-kv[1]["matched_items"], kv[0]))
    assert named == [name for name, _ in most[:20]]


def test_few_shards_keep_a_bar_each(finished: Path) -> None:
    report = build_report(finished)
    assert len(report["per_shard"]) <= SHARD_BARS_MAX
    page = render_html(report)
    assert "Members per shard" in page and "too many for a bar each" not in page
    for name in report["per_shard"]:
        assert f"<title>{name}: " in page
