"""Scanning into run folders: every item gets a row, broken members say why, a killed
scan resumes to exactly the uninterrupted result, and bad input fails cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.faults import wait_session_empty
from clearset.demo import DemoData, demo_items, write_webdataset
from clearset.errors import RunFolderError
from clearset.formats import open_source
from clearset.runfolder import RunFolder
from clearset.runs import ScanIncomplete, ScanSettings, run_scan
from tests.conftest import cli, run_cli, the_demo_items, tree_state


@pytest.fixture(scope="module")
def demo_run(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    run_scan(
        open_source(str(demo_data.webdataset)), run, ScanSettings(), workers=2, show_progress=False
    )
    return run


def test_broken_members_get_rows_with_reasons(demo_run: Path) -> None:
    rows = RunFolder(demo_run).read_manifest().to_pylist()
    by_key = {r["key"]: r for r in rows if r["status"] != "other"}  # the image rows
    broken = {i.key: i.broken for i in the_demo_items() if i.broken}
    reasons = {by_key[k]["reason"].split(":", 1)[0] for k in broken}
    assert reasons == {"corrupt", "empty", "not_an_image", "decompression_bomb"}
    assert all(by_key[k]["status"] == "error" and by_key[k]["sha256"] for k in broken)
    good = [i for i in the_demo_items() if not i.broken]
    assert all(by_key[i.key]["status"] == "ok" and len(by_key[i.key]["pdq"]) == 32 for i in good)
    # nothing lost: every key of the data set plus the failed download is in the manifest,
    # and every other member (captions, .json) is a row of its own, hashed
    assert len(by_key) == len(the_demo_items()) + 1
    others = [r for r in rows if r["status"] == "other"]
    assert len(others) == 2 * len(the_demo_items()) and all(r["sha256"] for r in others)


def test_run_json_records_source_settings_and_counts(demo_run: Path) -> None:
    info = json.loads((demo_run / "run.json").read_text())
    assert info["source"]["kind"] == "webdataset"
    assert info["settings"] == ScanSettings().to_dict()
    assert info["finished"] and info["started"] <= info["finished"]
    assert info["counts"]["items"] == 3 * len(the_demo_items()) + 1  # manifest rows
    assert info["counts"]["status"]["error"] == 4
    totals = info["accounting"]["totals"]
    assert totals == {"hashed": 96, "unread": 4, "other": 200, "upstream_failed": 1}
    assert info["accounting"]["verdict"] == "ok"
    assert info["tool"]["name"] == "clearset"


def test_parallel_and_serial_scans_agree(
    demo_data: DemoData, demo_run: Path, tmp_path: Path
) -> None:
    serial = tmp_path / "serial"
    run_scan(
        open_source(str(demo_data.webdataset)),
        serial,
        ScanSettings(),
        workers=1,
        show_progress=False,
    )
    assert RunFolder(serial).read_manifest().equals(RunFolder(demo_run).read_manifest())


def test_rerun_skips_finished_shards(demo_data: DemoData, demo_run: Path) -> None:
    before = tree_state(demo_run / "manifest")
    result = run_scan(
        open_source(str(demo_data.webdataset)),
        demo_run,
        ScanSettings(),
        workers=1,
        show_progress=False,
    )
    assert result.shards_skipped == result.shards_total and result.shards_done == 0
    assert tree_state(demo_run / "manifest") == before


def test_killed_scan_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    items = demo_items(seed=3, count=60)
    write_webdataset(tmp_path / "src", items, shard_size=3)
    src = str(tmp_path / "src")
    full = tmp_path / "full"
    # 4 broken members of 64 (6 %): accepted on purpose
    run_scan(
        open_source(src), full, ScanSettings(), workers=1, show_progress=False, allow_missing=True
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clearset.cli",
            "scan",
            src,
            "--out",
            str(killed),
            "-w",
            "1",
            "--no-progress",
            "--allow-missing",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((killed / "markers").glob("[!.]*.done.json")):
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "markers").glob("[!.]*.done.json")))
    total = len(open_source(src).shards())
    assert 0 < done < total, "the scan must be stopped part-way for this test to mean anything"
    # A kill while a marker is being written leaves its temporary file, half written:
    # it is not a marker (a glob of *.done.json also matches it).
    (killed / "markers" / ".tmp-4242-99999.done.json").write_text('{"shard_id": ')
    assert len(RunFolder(killed).done_markers()) == done

    result = run_scan(
        open_source(src), killed, ScanSettings(), workers=2, show_progress=False, allow_missing=True
    )
    assert result.shards_skipped == done
    assert RunFolder(killed).read_manifest().equals(RunFolder(full).read_manifest())
    assert not [p for p in (killed / "manifest").iterdir() if p.name.startswith(".tmp-")]


def test_source_is_not_modified(demo_data: DemoData, tmp_path: Path) -> None:
    before = tree_state(demo_data.root)
    run_scan(
        open_source(str(demo_data.folder)),
        tmp_path / "r",
        ScanSettings(),
        workers=1,
        show_progress=False,
    )
    assert tree_state(demo_data.root) == before


def test_resume_with_another_source_or_other_settings_is_refused(
    demo_data: DemoData, demo_run: Path
) -> None:
    with pytest.raises(RunFolderError, match="another source"):
        run_scan(
            open_source(str(demo_data.folder)), demo_run, ScanSettings(), workers=1,
            show_progress=False,
        )  # fmt: skip
    with pytest.raises(RunFolderError, match=r"other settings \(dihedral, trim_borders\)"):
        run_scan(
            open_source(str(demo_data.webdataset)), demo_run,
            ScanSettings(trim_borders=False, dihedral=True), workers=1, show_progress=False,
        )  # fmt: skip


def test_non_empty_folder_that_is_not_a_run_is_refused(demo_data: DemoData, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not a run folder"):
        run_scan(
            open_source(str(demo_data.folder)),
            tmp_path,
            ScanSettings(),
            workers=1,
            show_progress=False,
        )
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_corrupt_shard_fails_alone_and_leaves_no_partial_output(tmp_path: Path) -> None:
    items = demo_items(seed=4, count=6)
    write_webdataset(tmp_path / "src", items, shard_size=5)
    tar = tmp_path / "src" / "00001.tar"
    tar.write_bytes(tar.read_bytes()[:700])  # cut mid-member
    run = tmp_path / "run"
    with pytest.raises(ScanIncomplete, match=r"00001\.tar"):
        run_scan(
            open_source(str(tmp_path / "src")), run, ScanSettings(), workers=1, show_progress=False
        )
    names = sorted(p.name for p in (run / "manifest").iterdir())
    assert names == ["00000.tar.parquet"]
    assert sorted(p.name for p in (run / "markers").iterdir()) == ["00000.tar.done.json"]
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] is None and info["failed_shards"][0]["shard"] == "00001.tar"


def test_cli_scan_and_summary(demo_data: DemoData, tmp_path: Path) -> None:
    proc = cli(
        "scan", str(demo_data.hf_parquet), "--out", str(tmp_path / "r"), "--no-progress", check=True
    )
    assert "decompression_bomb" in proc.stdout and "manifest" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "{missing}", "--out", "{out}"], "no such file or folder"),
        (["scan", "{bad_tar}", "--out", "{out}"], "not a readable tar shard"),
        (["hash", "{missing}"], "cannot read"),
        (["scan", "{bad_parquet}", "--out", "{out}"], "not a readable parquet file"),
    ],
)
def test_cli_errors_are_one_line_and_leave_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar file at all" * 40)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 but not really")
    names = {
        "missing": str(tmp_path / "missing.jpg"),
        "bad_tar": str(tmp_path / "bad.tar"),
        "bad_parquet": str(tmp_path / "broken.parquet"),
        "out": str(tmp_path / "out"),
    }
    proc = cli(*[a.format(**names) for a in args])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert any(v in lines[0] for v in names.values())
    assert not (tmp_path / "out").exists()


def test_cli_hash_prints_threatexchange_hex(demo_data: DemoData) -> None:
    path = demo_data.folder / "000000000.jpg"
    proc = run_cli("hash", str(path), check=True)
    fields = dict(part.split("=", 1) for part in proc.stdout.split()[:-1])
    assert len(fields["pdq"]) == 64 and int(fields["quality"]) >= 0
    import hashlib

    assert fields["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_twice_with_workers_stops_promptly_and_resumes(tmp_path: Path) -> None:
    items = demo_items(seed=5, count=80)
    write_webdataset(tmp_path / "src", items, shard_size=4)
    src, run = str(tmp_path / "src"), tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clearset.cli", "scan", src, "--out", str(run), "-w", "2",
         "--exact-pdq", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would make it
        # ...and Ctrl-C not ignored, even when the tests run in a background job (which
        # starts with SIGINT ignored, and an ignored SIGINT is inherited)
        preexec_fn=_sigint_default,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((run / "markers").glob("[!.]*.done.json")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the scan hung after Ctrl-C") from None
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not wait_session_empty(proc.pid), "a worker outlived the interrupted scan"
    done = len(list((run / "markers").glob("[!.]*.done.json")))
    assert done < len(open_source(src).shards())
    run_scan(open_source(src), run, ScanSettings(exact_pdq=True), workers=2, show_progress=False)
    full = tmp_path / "full"
    run_scan(open_source(src), full, ScanSettings(exact_pdq=True), workers=1, show_progress=False)
    assert RunFolder(run).read_manifest().equals(RunFolder(full).read_manifest())
