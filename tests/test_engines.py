"""Scale-out: the same run whatever runs it — local processes, Ray, or the ranks of an
array job — with failed and killed shards retried, and `clearset status` on a half-done run.

The Ray tests (marked `ray`) share one local Ray instance (conftest's `ray_engine`); CI
runs them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData, build_demo_data
from clearset.engines import Engine, Task, make_engine
from clearset.engines.local import LocalEngine
from clearset.errors import InputError
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.receipts import generate_keypair
from clearset.runs import (
    MatchJob,
    ScanIncomplete,
    ScanSettings,
    Split,
    apply_removals,
    clean_run,
    run_match,
    run_scan,
)
from clearset.runs.issue import issue_receipt
from clearset.runs.status import run_status, status_lines
from tests.conftest import built_once, cli, run_cli

# ---------------------------------------------------------------- helpers


def lists_of(demo: DemoData) -> MatchJob:
    return MatchJob((ListSpec(str(demo.pdq_list)), ListSpec(str(demo.md5_list))), MatchSettings())


def scan(
    demo: DemoData, run: Path, engine: Engine, split: Split | None = None, source: Any = None
) -> Any:
    return run_scan(
        source or open_source(str(demo.webdataset)),
        run,
        ScanSettings(),
        engine=engine,
        show_progress=False,
        match=lists_of(demo),
        split=split,
    )


def sorted_table(path: Path, by: list[str]) -> list[dict]:
    table = pq.read_table(path) if path.is_file() else pq.ParquetDataset(str(path)).read()
    return table.sort_by([(c, "ascending") for c in by]).to_pylist()


def run_data(run: Path) -> dict[str, Any]:
    """What must be equal between engines: every data column, the counts, the verdict."""
    info = json.loads((run / "run.json").read_text())
    return {
        "manifest": sorted_table(run / "manifest", ["shard", "position"]),
        "matches": sorted_table(run / "matches.parquet", ["shard", "position", "list_digest"]),
        "counts": info["counts"],
        "accounting": info["accounting"],
        "finished": bool(info["finished"]),
        "markers": sorted(p.name for p in (run / "markers").iterdir()),
    }


def copy_digest(dest: Path) -> dict[str, str]:
    """SHA-256 of every file of a cleaned copy (its own state folder aside)."""
    return {
        str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dest.rglob("*"))
        if p.is_file() and ".clearset-clean" not in p.parts
    }


def receipt_root(run: Path, key: Path, engine: Engine | None = None) -> tuple[str, int]:
    # In this process: the CLI's own call; the tree's extract, sort and hash tasks run
    # on ``engine`` (so Ray builds the Ray run's tree).
    envelope = issue_receipt(run, key, engine=engine)
    tree = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["tree"]
    return tree["root"], tree["size"]


@dataclass
class Faulty:
    """A source whose `target` shard kills its worker (`kill`) or fails (`fail`) while
    the file `flag` says so; every try of that shard adds a line to `flag`.log."""

    inner: Any
    target: str
    flag: str
    mode: str

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def url(self) -> str:
        return self.inner.url

    def shards(self) -> list:
        return self.inner.shards()

    def spec(self) -> dict:
        return self.inner.spec()

    def read_shard(self, shard: Any, record: dict | None = None) -> Iterator[Any]:
        if shard.name == self.target:
            with open(f"{self.flag}.log", "a") as log:
                log.write("try\n")
            if self.mode == "kill" and not os.path.exists(self.flag):
                Path(self.flag).touch()  # the next try goes through
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "fail" and os.path.exists(self.flag):
                # An I/O error may pass, so it is retried (bad input is not).
                raise OSError(f"{shard.path}: made to fail by the test")
        yield from self.inner.read_shard(shard, record)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """A few hundred items in many small shards (the planted matches among them)."""
    return DemoData(
        built_once(
            tmp_path_factory, "many", lambda root: build_demo_data(root, count=240, shard_size=5)
        )
    )


@pytest.fixture(scope="module")
def local_many(many: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's run of `many`: the run every other engine's must equal."""
    root = built_once(
        tmp_path_factory, "local-many", lambda root: scan(many, root / "run", LocalEngine(2))
    )
    return root / "run"


# ---------------------------------------------------------------- the same result


def _scan_clean_sign(demo: DemoData, root: Path, engine: Engine, key: Path) -> dict:
    run = root / "run"
    scan(demo, run, engine)
    run_match(run, lists_of(demo), engine=engine)  # again, on the engine: same rows
    clean_run(run, root / "clean", engine=engine)
    apply_removals(
        str(demo.webdataset), str(run / "removals.parquet"), root / "applied", engine=engine
    )
    return {
        **run_data(run),
        "removals": sorted_table(run / "removals.parquet", ["shard", "key"]),
        "copy": copy_digest(root / "clean"),
        "applied": copy_digest(root / "applied"),
        "receipt": receipt_root(run, key, engine),
    }


@pytest.mark.ray
def test_local_ray_and_two_ranks_give_the_same_run_and_local_ray_the_same_copy_and_receipt(
    demo_data: DemoData, ray_engine: Engine, tmp_path: Path
) -> None:
    key, _ = generate_keypair(tmp_path / "keys")
    local = _scan_clean_sign(demo_data, tmp_path / "local", LocalEngine(2), key)
    assert 0 < local["counts"]["matches"]["items"] <= len(demo_data.planted())
    assert local["removals"], "the demo's planted items are removed"
    assert local["applied"] == local["copy"], "the removal list makes the same copy"
    assert ray_engine.name == "ray"
    assert _scan_clean_sign(demo_data, tmp_path / "ray", ray_engine, key) == local
    # The ranks of an array job, one after the other, make the same run (what follows a
    # scan reads only the run, so the copy and receipt follow from it). One worker each:
    # the split is the point, and a pool of two per rank only adds processes to start.
    ranks = tmp_path / "ranks" / "run"
    for rank in range(2):
        scan(demo_data, ranks, LocalEngine(1), Split(rank, 2))
    assert run_data(ranks) == run_data(tmp_path / "local" / "run")


@pytest.mark.ray
def test_many_small_shards_on_ray_equal_the_local_run(
    many: DemoData, local_many: Path, ray_engine: Engine, tmp_path: Path
) -> None:
    result = scan(many, tmp_path / "run", ray_engine)
    shards = len(list(many.webdataset.glob("*.tar")))
    assert shards > 40 and result.shards_total == shards and result.shards_done == shards
    assert run_data(tmp_path / "run") == run_data(local_many)


def test_two_ranks_started_together_write_one_run_equal_to_the_local_run(
    many: DemoData, local_many: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"  # neither rank finds it: both create it at once
    command = [
        sys.executable, "-m", "clearset.cli", "scan", str(many.webdataset), "--out", str(run),
        "--list", str(many.pdq_list), "--list", str(many.md5_list), "--workers", "1",
        "--world-size", "2", "--no-progress",
    ]  # fmt: skip
    ranks = [
        subprocess.Popen(
            [*command, "--rank", str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    assert run_data(run) == run_data(local_many)
    assert sorted(p.name for p in (run / "ranks").iterdir()) == ["0-of-2.json", "1-of-2.json"]
    assert not (run / ".finishing").exists()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [entry["op"] for entry in history] == ["scan"], "the run is finished once"


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("engine_name", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_worker_killed_mid_shard_is_retried_and_the_run_is_unchanged(
    engine_name: str,
    many: DemoData,
    local_many: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    engine = request.getfixturevalue("ray_engine") if engine_name == "ray" else LocalEngine(2)
    flag = tmp_path / "killed"
    source = Faulty(open_source(str(many.webdataset)), "00007.tar", str(flag), "kill")
    result = scan(many, tmp_path / "run", engine, source=source)
    assert flag.exists(), "the worker was killed once"
    assert Path(f"{flag}.log").read_text().count("try") == 2
    # The shard killed once is tried again; on the local engine a worker's death also
    # stops the pool, so the shard running beside it may be tried again too.
    assert 1 <= result.retried <= 2 and not result.failures
    assert run_data(tmp_path / "run") == run_data(local_many)
    leftovers = [p for p in (tmp_path / "run").rglob(".tmp-*")]
    assert leftovers == [], "the killed try's temporary files are gone"


def test_local_engine_runs_tasks_a_broken_pool_never_began_exactly_once(tmp_path: Path) -> None:
    tasks = [Task(str(n), f"t{n}", _count_and_maybe_die, (str(tmp_path), n)) for n in range(12)]
    outcomes = list(LocalEngine(2).run(tasks, lambda *counts: None))
    lost = [o.task.id for o in outcomes if o.lost]
    done = sorted(int(o.task.id) for o in outcomes if o.ok)
    assert lost == ["3"]
    assert done == [n for n in range(12) if n != 3]
    for n in done:
        assert (tmp_path / f"{n}.runs").read_text() == "run\n", f"task {n} ran more than once"


def _count_and_maybe_die(folder: str, number: int) -> int:
    with open(os.path.join(folder, f"{number}.runs"), "a") as log:
        log.write("run\n")
    if number == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return number


def test_a_shard_that_fails_every_try_is_reported_with_its_reason_and_retried_on_rerun(
    many: DemoData, local_many: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "failing"
    flag.touch()
    run = tmp_path / "run"
    source = Faulty(open_source(str(many.webdataset)), "00011.tar", str(flag), "fail")
    shards = len(list(many.webdataset.glob("*.tar")))
    with pytest.raises(ScanIncomplete, match=f"1 of {shards} shards failed .*made to fail by the"):
        run_scan(source, run, ScanSettings(), engine=LocalEngine(2), show_progress=False,
                 match=lists_of(many), retries=2)  # fmt: skip
    assert Path(f"{flag}.log").read_text().count("try") == 3, "one try and two retries"
    failed = json.loads((run / "failed" / "00011.tar.json").read_text())
    assert failed["attempts"] == 3 and "made to fail" in failed["error"]
    status = run_status(run)
    assert [f["shard"] for f in status["failed"]] == ["00011.tar"]
    assert status["shards_done"] == shards - 1
    assert not status["not_done"] and not status["finished"]

    shown = run_cli("status", str(run))
    assert shown.returncode == 1
    assert "failed: 00011.tar: " in shown.stdout and "made to fail by the test" in shown.stdout
    assert "re-run the same scan command" in shown.stdout

    flag.unlink()  # the cause is fixed: the same command finishes the run
    scan(many, run, LocalEngine(2), source=source)
    assert not (run / "failed" / "00011.tar.json").exists()
    assert run_data(run) == run_data(local_many)
    assert cli("status", str(run)).returncode == 0


# ---------------------------------------------------------------- status and options


def test_status_of_a_half_done_array_job_says_which_ranks_to_run(
    many: DemoData, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shards = len(list(many.webdataset.glob("*.tar")))
    mine = len(range(1, shards, 3))
    args = ["--list", str(many.pdq_list), "--world-size", "3", "--workers", "1", "--no-progress"]
    first = cli("scan", str(many.webdataset), "--out", str(run), "--rank", "1", *args)
    assert first.returncode == 0, first.stderr
    assert f"rank 1 of 3: {mine} shards scanned now" in first.stdout
    assert f"{mine} of {shards} shards of the run are done" in first.stdout
    assert not (run / "matches.parquet").exists(), "the run is not finished by one rank"

    shown = cli("status", str(run), "--json")
    assert shown.returncode == 1
    status = json.loads(shown.stdout)
    assert status["shards"] == shards and status["shards_done"] == mine
    assert len(status["not_done"]) == shards - mine and not status["failed"]
    assert status["items"] == sum(
        json.loads(m.read_text())["rows"] for m in (run / "markers").iterdir()
    )
    assert status["rerun_ranks"] == {"world_size": 3, "ranks": [0, 2]}
    text = cli("status", str(run)).stdout
    assert f"shards: {mine} done, 0 failed, {shards - mine} not done, of {shards}" in text
    assert "--world-size 3 --rank 0, 2" in text
    assert status["list_index"] is False and "list index" not in text, "the rank removed it"
    (run / ".list-index" / "list-index-0123").mkdir(parents=True)  # as a killed rank leaves it
    said = [line for line in status_lines(run_status(run)) if line.startswith("list index: ")]
    assert len(said) == 1 and str(run / ".list-index") in said[0], said

    # A run that is not finished backs no clean, and says why.
    refused = cli("clean", str(run), "--to", str(tmp_path / "clean"))
    assert refused.returncode != 0 and "the scan is not finished" in refused.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--rank", "2", "--world-size", "2"], "--rank 2: must be 0 to 1 for --world-size 2"),
        (["--rank", "0"], "--rank and --world-size go together"),
        (["--rank", "0", "--world-size", "0"], "--world-size 0: must be 1 or more"),
        (["--engine", "spark"], "--engine spark: unknown engine (known: local, ray)"),
        (["--address", "auto"], "--address: only with --engine ray"),
        (
            ["--rank", "0", "--world-size", "2", "--clean-to", "CLEAN"],
            "--clean-to with --rank: clean once every rank is done",
        ),
    ],
)
def test_bad_scale_out_options_are_one_line_errors_that_write_nothing(
    demo_data: DemoData, tmp_path: Path, args: list[str], problem: str
) -> None:
    args = [a.replace("CLEAN", str(tmp_path / "clean")) for a in args]
    proc = cli(
        "scan", str(demo_data.webdataset), "--out", str(tmp_path / "run"),
        "--list", str(demo_data.md5_list), *args,
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("clearset: error:")]
    assert len(errors) == 1 and problem in errors[0], proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "clean").exists()


def test_ray_is_optional_and_asking_for_it_without_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, clearset.cli, clearset.runs, clearset.engines; "
         "print('ray' in sys.modules)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(InputError, match=r"pip install 'clearset\[ray\]'"):
        make_engine("ray")


@pytest.mark.parametrize("option", ["--out", "--clean-to"])
def test_an_output_given_as_a_url_is_refused_not_written_to_a_local_folder(
    demo_data: DemoData, tmp_path: Path, option: str
) -> None:
    args = {"--out": str(tmp_path / "run"), "--clean-to": str(tmp_path / "clean")}
    args[option] = "https://example.invalid/somewhere"  # object stores are taken (issue 28)
    proc = subprocess.run(
        [sys.executable, "-m", "clearset.cli", "scan", str(demo_data.webdataset),
         "--list", str(demo_data.md5_list), "--out", args["--out"],
         "--clean-to", args["--clean-to"]],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{option} https:/example.invalid/somewhere: outputs must be a local" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written anywhere"


def test_the_lists_are_loaded_once_and_workers_map_the_index_which_is_gone_after(
    demo_data: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clearset.stages.match as stage

    loads: list[str] = []
    opened: list[Any] = []
    # load_all: every list file is read through it (hash lists and vPDQ lists, issue 26)
    real_load, real_open = ListSpec.load_all, stage.open_matcher
    monkeypatch.setattr(
        ListSpec, "load_all", lambda spec: loads.append(spec.path) or real_load(spec)
    )
    monkeypatch.setattr(stage, "open_matcher", lambda f: opened.append(f) or real_open(f))
    run = tmp_path / "run"
    scan(demo_data, run, LocalEngine(1))  # in this process, so the patches see the tasks
    assert sorted(loads) == sorted([str(demo_data.pdq_list), str(demo_data.md5_list)])
    # Local workers map memory files of the driver's, which no disk holds.
    assert opened and all(isinstance(f, dict) and "list-index.json" in f for f in opened)
    assert all(p.startswith(f"/proc/{os.getpid()}/fd/") for f in opened for p in f.values())
    assert not (run / ".list-index").exists(), "no copy of a list outlives the scan"
    assert run_data(run)["counts"]["matches"]["items"] > 0


@pytest.mark.ray
def test_a_ray_driver_killed_mid_run_resumes_to_the_local_result(
    many: DemoData, local_many: Path, ray_engine: Engine, tmp_path: Path
) -> None:
    import ray

    # Both drivers join the module's Ray instance (--address), as drivers on a cluster
    # do: each a real `clearset` process whose tasks run on Ray's workers, without the
    # start of a Ray instance of its own (several seconds each).
    address = ray.get_runtime_context().gcs_address
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "clearset.cli", "scan", str(many.webdataset), "--out", str(run),
        "--list", str(many.pdq_list), "--list", str(many.md5_list), "--engine", "ray",
        "--address", address, "--workers", "2", "--no-progress",
    ]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list((run / "markers").glob("[!.]*.done.json")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the scan ended before it could be killed"
            time.sleep(0.2)
    finally:
        driver.kill()
        driver.wait(timeout=60)
    done = len(list((run / "markers").glob("[!.]*.done.json")))
    shards = len(list(many.webdataset.glob("*.tar")))
    assert 0 < done < shards, "killed mid-run"
    assert not json.loads((run / "run.json").read_text())["finished"]
    # Ray's workers may be on other nodes: the lists' index is a folder, the owner's alone,
    # which the killed driver could not remove; the next command does.
    index = run / ".list-index"
    assert index.is_dir() and any(index.rglob("*.npy"))
    for path in [index, *index.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert run_data(run) == run_data(local_many)
    assert not index.exists()


def test_a_rank_that_finds_the_finishing_lock_held_leaves_the_run_to_its_holder(
    demo_data: DemoData, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    first = scan(demo_data, run, LocalEngine(1), Split(0, 2))
    assert not first.finished and not first.finishing_elsewhere
    (run / ".finishing").write_text("a rank that died while finishing\n")
    second = scan(demo_data, run, LocalEngine(1), Split(1, 2))
    assert second.finishing_elsewhere and not second.finished
    assert not json.loads((run / "run.json").read_text())["finished"]
    assert run_status(run)["not_done"] == [] and not run_status(run)["finished"]
    (run / ".finishing").unlink()  # as the message says, when no rank is finishing
    again = scan(demo_data, run, LocalEngine(1), Split(1, 2))
    assert again.finished and again.shards_skipped == again.shards_mine
    assert json.loads((run / "run.json").read_text())["finished"]
    assert not (run / ".finishing").exists()


@pytest.mark.ray
def test_an_audit_on_ray_equals_the_local_one(
    many: DemoData, local_many: Path, ray_engine: Engine, tmp_path: Path
) -> None:
    from clearset.runs.audit import AuditSettings, run_audit

    generated = tmp_path / "generated"
    generated.mkdir()
    for path in sorted(many.folder.glob("*.jpg"))[:12]:
        (generated / path.name).write_bytes(path.read_bytes())
    settings = AuditSettings(k=2, dihedral=True)
    local = run_audit(str(generated), local_many, tmp_path / "local", settings,
                      engine=LocalEngine(2))  # fmt: skip
    ray = run_audit(str(generated), local_many, tmp_path / "ray", settings, engine=ray_engine)
    assert local.summary["settings"]["indexed"] == "generated"
    assert local.summary["training"]["shards"] > 40
    assert ray.table.equals(local.table)
    assert ray.summary["results"] == local.summary["results"]
    results = local.summary["results"]
    assert 0 < results["generated_with_copy"] == local.summary["generated"]["searched"]
