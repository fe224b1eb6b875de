"""Fault injection: SIGKILL `clearset scan` and `clearset clean` at random moments, resume.

    python bench/faults.py [--kills 100] [--images 120] [--shard-size 4] [--workers 2]
                           [--seed 0] [--keep DIR]

Each cycle starts a fresh output, runs the command, kills its main process with SIGKILL
after a random delay (uniform over the duration of the latest uninterrupted run: the
reference, then any run that finished before its kill), and runs the same command again
to resume, until a run finishes (the fifth attempt is not killed); then the outputs
(every manifest parquet file of the run folder; every file of the cleaned copy) must
equal those of an uninterrupted run byte for byte. After each kill no process of the
command may be left: its workers must end with it (they are found by session id, so a
worker forked an instant before the kill is found too). Prints the kills, resumes,
cycles and any difference; exits 1 on a difference or an orphan.

The commands run in children forked from a fork server that has already imported
clearset, so that a kill lands in the work and not in interpreter start-up; the children
run the real CLI entry point (`clearset.cli.main`). tests/test_faults.py runs a small
version of this in CI.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Longest wait for a killed command's workers to end (they should end at once).
ORPHAN_WAIT_SECONDS = 5.0

#: Kills in one cycle before the resumed command is let finish: on a loaded machine a
#: run can take longer than the reference did, and must still end.
KILLS_PER_CYCLE = 4


# ------------------------------------------------------------------------- processes


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def session_members(session: int) -> list[int]:
    """Living (not zombie) processes in `session`: a command and everything it started."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry.name))
    return members


def wait_session_empty(session: int, timeout: float = ORPHAN_WAIT_SECONDS) -> list[int]:
    """Poll until nothing of `session` is alive; return what still is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = session_members(session)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid} {cmd[:120]}")
    return "; ".join(out)


# ---------------------------------------------------------------------- the commands


def _cli_child(argv: list[str], stderr: str) -> None:
    # Its own session, as a shell would give a command, so that all it starts is found.
    os.setsid()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    # Its error line is kept: a run that fails says why (a kill that left something its
    # resume refuses, say), not just its exit code.
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    sys.argv = ["clearset", *argv]
    from clearset.cli import main

    main()


class CommandRunner:
    """Runs `clearset ARGV` in a forked child of a fork server that imported clearset;
    the last command's stderr goes to the file `stderr`."""

    def __init__(self, stderr: Path) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["clearset.cli"])
        self.stderr = stderr

    def warm_up(self) -> None:
        """Start the fork server (it imports clearset) so that no timing includes that."""
        self.run(["--version"])

    def start(self, argv: list[str]) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(
            target=_cli_child, args=(argv, str(self.stderr)), daemon=False
        )
        process.start()
        return process

    def run(self, argv: list[str]) -> float:
        """Run to the end; the seconds it took. Raises if the command failed."""
        started = time.monotonic()
        process = self.start(argv)
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(self.failed(argv, process.exitcode))
        return time.monotonic() - started

    def failed(self, argv: list[str], exitcode: int | None, after: str = "") -> str:
        """What to say of a command that failed: it, its exit code, its last error lines."""
        try:
            said = self.stderr.read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            said = []
        return f"clearset {' '.join(argv)} exited {exitcode}{after}: {' | '.join(said)}"


@dataclass
class Tally:
    kills: int = 0
    resumes: int = 0
    cycles: int = 0
    finished_before_kill: int = 0
    orphans: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


def kill_and_resume(
    runner: CommandRunner,
    argv: list[str],
    fresh: Callable[[], None],
    outputs: Callable[[], dict[str, bytes]],
    expected: dict[str, bytes],
    duration: float,
    kills: int,
    rng: random.Random,
    tally: Tally,
    kills_per_cycle: int = KILLS_PER_CYCLE,
) -> None:
    """Cycles of (fresh output; run, kill at random, resume ... until done; compare)."""
    target = tally.kills + kills
    while tally.kills < target:
        fresh()
        tally.cycles += 1
        killed_at: list[str] = []  # when this cycle's kills landed, for a failure's report
        for attempt in range(kills_per_cycle + 1):
            if attempt:
                tally.resumes += 1
            started = time.monotonic()
            process = runner.start(argv)
            delay = rng.uniform(0, duration) if attempt < kills_per_cycle else 0.0
            if attempt < kills_per_cycle:
                process.join(delay)
            if process.exitcode is None and tally.kills < target and attempt < kills_per_cycle:
                os.kill(process.pid, signal.SIGKILL)  # the main process only
                process.join()
                tally.kills += 1
                killed_at.append(f"{delay:.3f}s")
                left = wait_session_empty(process.pid)
                if left:
                    tally.orphans.append(describe(left))
                    for pid in left:
                        os.kill(pid, signal.SIGKILL)
                continue
            process.join()
            if process.exitcode != 0:
                after = f" after kills at {', '.join(killed_at)} of its cycle"
                raise RuntimeError(runner.failed(argv, process.exitcode, after))
            if attempt == 0:
                tally.finished_before_kill += 1
                # An uninterrupted run: kills land within its time from now on. The
                # reference run can take many times longer (it compiled the kernels that
                # later runs load from numba's cache), and a delay past the end kills nothing.
                duration = time.monotonic() - started
            break
        got = outputs()
        if got != expected:
            differing = sorted(
                k for k in got.keys() | expected.keys() if got.get(k) != expected.get(k)
            )
            tally.differences.append(
                f"cycle {tally.cycles} (kills at {', '.join(killed_at)}): {differing[:5]}"
            )


# -------------------------------------------------------------------------- outputs


def files_under(root: Path, keep: Callable[[Path], bool] = lambda p: True) -> dict[str, bytes]:
    """Relative path -> bytes of every file under root that `keep` accepts."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and keep(p)
    }


def manifest_files(run: Path) -> dict[str, bytes]:
    return files_under(run / "manifest", lambda p: p.suffix == ".parquet")


def cleaned_files(dest: Path) -> dict[str, bytes]:
    # The copy's data and side files, not clean's own records (which name the run folder
    # and say when they were made).
    return files_under(
        dest,
        lambda p: (
            p.suffix != ".json"
            and not any(part.startswith(".") for part in p.relative_to(dest).parts)
        ),
    )


# ---------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class Scenario:
    """A small webdataset with planted watched items, and the two commands to kill."""

    root: Path
    workers: int

    @property
    def src(self) -> Path:
        return self.root / "src"

    def list_args(self) -> list[str]:
        lists = self.root / "lists"
        return [
            "--list",
            f"{lists / 'watch-pdq.txt'},type=pdq",
            "--list",
            f"{lists / 'watch-md5.csv'}",
        ]

    def scan_argv(self, run: Path) -> list[str]:
        # The demo items include broken members on purpose (4 of 20 here): accepted.
        return ["scan", str(self.src), "--out", str(run), "-w", str(self.workers),
                "--no-progress", "--allow-missing", *self.list_args()]  # fmt: skip

    def clean_argv(self, run: Path, dest: Path) -> list[str]:
        return ["clean", str(run), "--to", str(dest), "-w", str(self.workers), "--no-progress"]


def build_scenario(root: Path, images: int, shard_size: int, workers: int, seed: int) -> Scenario:
    from clearset.demo import demo_items, plant_watched, write_watch_lists, write_webdataset

    items = demo_items(seed, images)
    watch = plant_watched(items, seed)
    write_watch_lists(root / "lists", watch)
    write_webdataset(root / "src", items, shard_size, seed)
    return Scenario(root, workers)


def fault_injection(
    root: Path, *, kills: int, images: int, shard_size: int, workers: int, seed: int
) -> tuple[Tally, Tally]:
    """Kill scan `kills` times and clean `kills` times; the two tallies."""
    rng = random.Random(seed)
    scenario = build_scenario(root, images, shard_size, workers, seed)
    runner = CommandRunner(root / "clearset-stderr.txt")
    runner.warm_up()

    reference = root / "reference-run"
    scan_seconds = runner.run(scenario.scan_argv(reference))
    reference_dest = root / "reference-clean"
    clean_run = root / "reference-run-for-clean"
    shutil.copytree(reference, clean_run)
    clean_seconds = runner.run(scenario.clean_argv(clean_run, reference_dest))

    run = root / "run"
    scans = Tally()
    kill_and_resume(
        runner,
        scenario.scan_argv(run),
        lambda: shutil.rmtree(run, ignore_errors=True),
        lambda: manifest_files(run),
        manifest_files(reference),
        scan_seconds,
        kills,
        rng,
        scans,
    )

    cleaned_run, dest = root / "cleaned-run", root / "cleaned"

    def fresh_clean() -> None:
        shutil.rmtree(cleaned_run, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(reference, cleaned_run)

    cleans = Tally()
    kill_and_resume(
        runner,
        scenario.clean_argv(cleaned_run, dest),
        fresh_clean,
        lambda: cleaned_files(dest),
        cleaned_files(reference_dest),
        clean_seconds,
        kills,
        rng,
        cleans,
    )
    return scans, cleans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="kills of scan, and of clean")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="clearset-faults-"))
    started = time.monotonic()
    try:
        scans, cleans = fault_injection(
            root, kills=args.kills, images=args.images, shard_size=args.shard_size,
            workers=args.workers, seed=args.seed,
        )  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    failed = False
    for name, tally in (("scan", scans), ("clean", cleans)):
        print(
            f"{name}: {tally.kills} kills, {tally.resumes} resumes, {tally.cycles} cycles "
            f"({tally.finished_before_kill} finished before the kill); "
            f"outputs equal to an uninterrupted run: "
            f"{'yes' if not tally.differences else 'NO ' + str(tally.differences)}; "
            f"orphans: {tally.orphans or 'none'}"
        )
        failed |= bool(tally.differences or tally.orphans)
    print(f"{time.monotonic() - started:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("faults"):
        main()
