"""Issue 23, point 7 and one case of point 9: no copy of a list's entries outlives the
command that made it, however it is killed; and one writer at a time in a run folder
(a second scan is refused in one line, not left to delete the first's index)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.faults import session_members, wait_session_empty
from clearset.demo import demo_items, write_webdataset
from clearset.errors import RunFolderError
from clearset.matching.matcher import ListSpec, Matcher, MatchSettings
from clearset.matching.shared import memory_index_possible
from clearset.runlock import RUN_LOCK, RunBusy, run_lock
from clearset.runs.status import run_status, status_lines
from clearset.stages.match import SHARED_INDEX_DIR, MatchJob
from tests.conftest import cli

LINUX = Path("/proc/self/stat").exists()


def _source(tmp_path: Path) -> Path:
    write_webdataset(tmp_path / "src", demo_items(seed=7, count=40), shard_size=2)
    return tmp_path / "src"


def _lists(tmp_path: Path) -> tuple[Path, Path, list[bytes]]:
    """A PDQ and an MD5 list of random (benign, made-up) entries: what must not leak."""
    rng = np.random.default_rng(23)
    pdq = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    md5 = rng.integers(0, 256, (1000, 16), dtype=np.uint8)
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "watch-pdq.txt").write_text("".join(row.tobytes().hex() + "\n" for row in pdq))
    (folder / "watch-md5.txt").write_text("".join(row.tobytes().hex() + "\n" for row in md5))
    entries = [row.tobytes() for row in pdq[::10]] + [row.tobytes() for row in md5[::10]]
    return folder / "watch-pdq.txt", folder / "watch-md5.txt", entries


def _lists_args(pdq_list: Path, md5_list: Path) -> list[str]:
    return ["--list", f"{pdq_list},type=pdq", "--list", f"{md5_list},type=md5"]


def _files_holding(roots: list[Path], entries: list[bytes]) -> list[str]:
    """Every file under `roots` that holds any of `entries`, packed or as hex."""
    needles = (
        entries + [e.hex().encode() for e in entries] + [e.hex().upper().encode() for e in entries]
    )
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(needle in data for needle in needles):
                    found.append(str(path))
    return found


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_a_scan_killed_while_its_workers_run_leaves_no_list_entry_on_disk(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)
    pdq_list, md5_list, entries = _lists(tmp_path)
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    command = [
        sys.executable, "-m", "clearset.cli", "scan", str(src), "--out", str(run),
        *_lists_args(pdq_list, md5_list), "-w", "2", "--no-progress", "--allow-missing",
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(scratch)}  # where the scan's own temporary files go
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (_workers(proc.pid) and list((run / "markers").glob("[!.]*.done.json"))):
            assert proc.poll() is None, "the scan ended before it could be killed"
            assert time.monotonic() < deadline, "no worker finished a shard in time"
            time.sleep(0.005)
        if memory_index_possible():
            assert _files_holding([run], entries) == [], "the workers map memory, no file"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the command alone, as the OOM killer would
        proc.wait(timeout=60)
    assert not wait_session_empty(proc.pid, timeout=10.0), "workers outlived their command"
    assert proc.returncode == -signal.SIGKILL
    done = len(list((run / "markers").glob("[!.]*.done.json")))
    assert 0 < done < len(list(src.glob("*.tar"))), "killed mid-run"
    assert _files_holding([run, scratch], entries) == [], "a list entry outlived the scan"
    assert not (run / SHARED_INDEX_DIR).exists()

    # The run resumes to a whole result, and still leaves nothing behind.
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["finished"]
    assert _files_holding([run, scratch], entries) == []


def _workers(session: int) -> list[int]:
    found = []
    for pid in session_members(session):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _built(pdq_list: Path, md5_list: Path) -> tuple[MatchJob, Matcher]:
    specs = (ListSpec(str(pdq_list), hash_type="pdq"), ListSpec(str(md5_list), hash_type="md5"))
    job = MatchJob(specs, MatchSettings())
    return job, job.matcher()


def test_a_folder_index_is_owner_only_named_by_status_and_removed_by_the_next_command(
    tmp_path: Path,
) -> None:
    # Where workers may be on other machines (Ray), the index is a folder in the run.
    src = _source(tmp_path)
    pdq_list, md5_list, entries = _lists(tmp_path)
    run = tmp_path / "run"
    again = ["scan", str(src), "--out", str(run), *_lists_args(pdq_list, md5_list), "-w", "1",
             "--no-progress", "--allow-missing"]  # fmt: skip
    scanned = cli(*again)
    assert scanned.returncode == 0, scanned.stderr

    def leave_index() -> Path:  # as a killed scan on Ray leaves it
        job, built = _built(pdq_list, md5_list)
        shared_job, _ = job.share(run, built, same_machine=False)
        assert isinstance(shared_job.index, str)
        folder = run / SHARED_INDEX_DIR
        assert _files_holding([run], entries), "the folder holds the entries"
        for path in [folder, *folder.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        return folder

    # While the command that made it runs, status names it and leaves it.
    folder = leave_index()
    with run_lock(run, "scan"):
        status = run_status(run)
        said = [line for line in status_lines(status) if line.startswith("list index: ")]
    holder = f"clearset scan (pid {os.getpid()} on {socket.gethostname()})"
    assert status["list_index"] and status["list_index_in_use_by"] == holder
    assert len(said) == 1 and str(folder) in said[0] and holder in said[0], said
    assert folder.exists()

    # Once it is gone, status says so and removes the copy.
    shown = cli("status", str(run), "--json")
    status = json.loads(shown.stdout)
    assert status["list_index_removed"] is True and status["list_index"] is False
    assert not folder.exists() and _files_holding([run], entries) == []
    leave_index()
    text = cli("status", str(run)).stdout
    assert f"list index: removed {folder}" in text, text
    assert not folder.exists()

    # So does the next scan or match of the run, even one that changes nothing.
    for command in (
        again,
        ["match", str(run), "--list", f"{md5_list},type=md5", "-w", "1"],
    ):  # fmt: skip
        leave_index()
        done = cli(*command)
        assert done.returncode == 0, done.stderr
        assert not folder.exists() and _files_holding([run], entries) == [], command


def _scan_args(src: Path, run: Path, md5_list: Path) -> list[str]:
    return ["scan", str(src), "--out", str(run), "--list", f"{md5_list},type=md5", "-w", "2",
            "--no-progress", "--allow-missing"]  # fmt: skip


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_a_second_scan_into_a_run_being_written_is_refused_and_the_first_finishes(
    tmp_path: Path,
) -> None:
    src = _source(tmp_path)
    _, md5_list, _ = _lists(tmp_path)
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "clearset.cli", *_scan_args(src, run, md5_list)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    stopped = False
    try:
        deadline = time.monotonic() + 120
        while not (run / "run.json").exists():  # the first has started
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first scan never started"
            time.sleep(0.005)
        os.killpg(first.pid, signal.SIGSTOP)  # held mid-run, lock and all, however fast
        stopped = True
        second = cli(*_scan_args(src, run, md5_list))
        match = cli("match", str(run), "--list", f"{md5_list},type=md5")
    finally:
        if stopped:
            os.killpg(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    host = socket.gethostname()
    expected = (
        f"clearset: error: {run}: another clearset scan (pid {first.pid} on {host}) is "
        "writing this run; wait for it or choose another --out"
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [expected], second.stderr
    assert match.returncode == 1
    assert f"another clearset scan (pid {first.pid} on {host}) is writing" in match.stderr
    assert len(match.stderr.strip().splitlines()) == 1, match.stderr

    # The first ran on untouched and finished the run as a scan alone would have.
    assert first.returncode == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] and info["resumed"] == 0
    assert len(list((run / "markers").glob("[!.]*.done.json"))) == len(list(src.glob("*.tar")))
    assert not (run / SHARED_INDEX_DIR).exists()
    again = cli(*_scan_args(src, run, md5_list))  # the lock went with the first
    assert again.returncode == 0, again.stderr


def test_ranks_share_the_lock_and_exclude_a_plain_scan(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_lock(run, "scan", shared=True) as alone, run_lock(run, "scan", shared=True):
        assert alone is False, "a rank is never alone in its run"
        with pytest.raises(RunBusy, match="another clearset scan"), run_lock(run, "scan"):
            pass
    with run_lock(run, "scan") as alone:
        assert alone is True
        with pytest.raises(RunFolderError), run_lock(run, "scan", shared=True):
            pass
    assert not run.exists(), "a lock alone made no run folder"


def test_a_refused_command_leaves_a_folder_that_is_no_run_as_it_was(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    src = _source(tmp_path)
    refused = cli("scan", str(src), "--out", str(mine), "--no-progress")
    assert refused.returncode != 0 and "is not a run folder" in refused.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    missing = cli("match", str(tmp_path / "nowhere"), "--list", str(mine / "notes.txt"))
    assert missing.returncode != 0 and not (tmp_path / "nowhere").exists()
    assert RUN_LOCK not in [p.name for p in tmp_path.iterdir()]


def test_the_entries_searched_for_are_those_an_index_holds(tmp_path: Path) -> None:
    pdq_list, md5_list, entries = _lists(tmp_path)
    _, built = _built(pdq_list, md5_list)
    held = {row.tobytes() for hash_list in built.lists for row in hash_list.hashes}
    assert set(entries) <= held


def test_a_clean_of_a_run_another_command_is_writing_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path)
    run, dest = tmp_path / "run", tmp_path / "clean"
    pdq_list, md5_list, _ = _lists(tmp_path)
    args = ("--workers", "1", "--allow-missing", *_lists_args(pdq_list, md5_list))
    cli("scan", str(source), "--out", str(run), *args, check=True)
    with run_lock(run, "match"):
        proc = cli("clean", str(run), "--to", str(dest))
    assert proc.returncode != 0
    said = proc.stderr.strip().splitlines()
    assert len(said) == 1 and f"{run}: another clearset match (pid {os.getpid()}" in said[0]
    assert "wait for it, then run the clean again" in said[0]
    assert not dest.exists() and not (run / "cleaned").exists()
    # Once the other command is done, the same clean runs.
    cli("clean", str(run), "--to", str(dest), check=True)
    assert dest.is_dir() and not (dest / ".clearset-clean").exists()
