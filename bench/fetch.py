"""Benchmark: `scan --fetch` against img2dataset's own download rate, in one run.

    python bench/fetch.py [--urls 2000] [--workers N] [--threads 64] [--delays 0,100]
                          [--in-flight 10000] [--skip-memory | --only-memory]

A loopback server (tests/fetch_server.py, its own process) serves benign generated JPEGs
with a fixed delay per response standing in for the internet. On the same URL list,
machine and server, it times img2dataset (`--output_format files
--disable_all_reencoding True`: it downloads and stores) and `clearset scan --fetch`
(which downloads, hashes SHA-256/MD5/SHA-1 and PDQ, matches against a list, writes the
manifest, and stores no image), each as a whole command from start to exit, at 1 and N
processes, with the same requests in flight per process (`--thread_count` =
`--concurrency` = `--per-host`). Prints images/s of each and clearset's ratio to
img2dataset (the baseline, measured in the same run).

Then the memory check: one clearset worker with `--in-flight` URLs in flight at once (a
server delay long enough that they all wait together), its peak RSS against the same
scan with 64 in flight, and how many requests the server saw in flight at the most.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fetch_server.py"
sys.path.insert(0, str(ROOT))


def start_server(delay_ms: float, warm: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay-ms", str(delay_ms), "--warm", str(warm)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, port


def server_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        return json.loads(response.read())


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of a whole command, from start to exit."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def img2dataset(urls: Path, out: Path, workers: int, threads: int, shard: int) -> list[str]:
    return [
        shutil.which("img2dataset") or "img2dataset",
        f"--url_list={urls}",
        "--input_format=txt",
        "--output_format=files",
        f"--output_folder={out}",
        "--disable_all_reencoding=True",
        f"--processes_count={workers}",
        f"--thread_count={threads}",
        f"--number_sample_per_shard={shard}",
        "--timeout=10",
        "--retries=0",
        "--enable_wandb=False",
        "--distributor=multiprocessing",
    ]


def clearset(urls: Path, run: Path, lst: str, workers: int, threads: int, shard: int) -> list[str]:
    return [
        sys.executable, "-m", "clearset.cli", "scan", str(urls), "--fetch", "--out", str(run),
        "--list", lst, "-w", str(workers), "--concurrency", str(threads), "--per-host",
        str(threads), "--shard-rows", str(shard), "--no-progress", "--allow-missing",
    ]  # fmt: skip


def own_seconds_img2dataset(out: Path) -> float:
    """img2dataset's own timing: its first shard's start to its last shard's end."""
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)


def seconds_between(started: str, finished: str) -> float:
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")

    return (parse(finished) - parse(started)).total_seconds()


def count_files(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.rglob(f"*{suffix}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=64, help="requests in flight a process")
    parser.add_argument("--delays", default="0,100", help="ms per response, comma-separated")
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-memory", action="store_true")
    args = parser.parse_args()

    from tests.fetch_server import jpeg

    root = Path(tempfile.mkdtemp(prefix="clearset-bench-fetch-"))
    env_note = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    print(f"{args.urls} URLs of benign {len(jpeg(0))}-byte JPEGs; {env_note}")
    known = root / "known.txt"
    picked = (1, args.urls // 2, args.urls - 1)
    known.write_text("".join(hashlib.sha256(jpeg(n)).hexdigest() + "\n" for n in picked))
    lst = f"{known},type=sha256"
    try:
        print(
            "images/s as whole commands (start to exit), then as each tool times its own "
            "work\n(img2dataset: first shard start to last shard end in its _stats.json; "
            "clearset: run.json started to finished)"
        )
        print(
            f"{'delay':>6} {'procs':>5} | {'img2dataset':>11} {'clearset':>9} {'ratio':>6} | "
            f"{'img2dataset':>11} {'clearset':>9} {'ratio':>6}"
        )
        delays = [] if args.only_memory else [float(d) for d in args.delays.split(",")]
        for delay in delays:
            server, port = start_server(delay, args.urls)
            try:
                urls = root / f"urls-{delay:g}.txt"
                urls.write_text(
                    "".join(f"http://127.0.0.1:{port}/img/{n}.jpg\n" for n in range(args.urls))
                )
                for workers in sorted({1, args.workers}):
                    shard = max(100, -(-args.urls // (2 * workers)))
                    out = root / f"i2d-{delay:g}-{workers}"
                    i2d_s = timed(img2dataset(urls, out, workers, args.threads, shard), root)
                    stored = count_files(out, ".jpg")
                    run = root / f"run-{delay:g}-{workers}"
                    cs_s = timed(clearset(urls, run, lst, workers, args.threads, shard), root)
                    i2d_own = own_seconds_img2dataset(out)
                    info = json.loads((run / "run.json").read_text())
                    counts = info["counts"]
                    hashed = counts["status"].get("ok", 0)
                    assert counts["matches"]["items"] == 3, counts["matches"]
                    cs_own = seconds_between(info["started"], info["finished"])
                    rates = [stored / i2d_s, hashed / cs_s, stored / i2d_own, hashed / cs_own]
                    print(
                        f"{delay:>4g}ms {workers:>5} | {rates[0]:>11.0f} {rates[1]:>9.0f} "
                        f"{rates[1] / rates[0]:>5.2f}x | {rates[2]:>11.0f} {rates[3]:>9.0f} "
                        f"{rates[3] / rates[2]:>5.2f}x   ({stored} stored, {hashed} hashed)"
                    )
                    shutil.rmtree(out, ignore_errors=True)
            finally:
                server.terminate()
                server.wait()
        if not args.skip_memory:
            memory(root, lst, args.in_flight)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def memory(root: Path, lst: str, in_flight: int) -> None:
    """Peak RSS of one worker with `in_flight` requests waiting at once, against 64."""
    delay_ms = 30_000  # long enough that every request waits while the last ones connect
    server, port = start_server(delay_ms, in_flight)
    try:
        urls = root / "urls-memory.txt"
        urls.write_text("".join(f"http://127.0.0.1:{port}/img/{n}.jpg\n" for n in range(in_flight)))
        results = []
        for flight in (64, in_flight):
            run = root / f"run-memory-{flight}"
            # Responses come after the delay; connections may wait on the kernel's queue.
            patient = ["--read-timeout", str(delay_ms / 250), "--connect-timeout", "60"]
            command = clearset(urls, run, lst, 1, flight, in_flight) + patient
            # With 64 in flight the long delay would take hours: one round of 64.
            if flight == 64:
                short = root / "urls-memory-short.txt"
                short.write_text("".join(urls.read_text().splitlines(True)[:64]))
                command = clearset(short, run, lst, 1, flight, in_flight) + patient
            script = (
                "import resource, subprocess, sys; "
                "p = subprocess.run(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
                "sys.exit(p.returncode)"
            )
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", script, *command], capture_output=True, text=True
            )
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"memory run failed:\n{proc.stderr[-2000:]}")
            peak_kib = int(proc.stdout.strip().splitlines()[-1])
            hashed = json.loads((run / "run.json").read_text())["counts"]["status"].get("ok", 0)
            results.append((flight, peak_kib, hashed, seconds))
        stats = server_stats(port)
    finally:
        server.terminate()
        server.wait()
    base = results[0][1]
    for flight, peak_kib, hashed, seconds in results:
        print(
            f"memory: {flight:>6} in flight (delay {delay_ms} ms): peak RSS "
            f"{peak_kib / 1024:.0f} MiB ({peak_kib / base:.2f}x the 64-in-flight run); "
            f"{hashed} hashed in {seconds:.1f}s"
        )
    print(f"memory: the server saw at most {stats['max_in_flight']} requests in flight at once")


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("fetch"):
        main()
