"""Benchmark: memory of a large PDQ list across worker processes, each building its own
Matcher (today's engines) against each mapping one saved folder (`matching.shared`).

    PYTHONPATH=. python bench/list_memory.py                      # 1e6 entries, quick
    PYTHONPATH=. python bench/list_memory.py --entries 10000000   # the issue's figure

For 1, 2 and 4 workers alive at once, each matching the same batch of queries through
`Matcher.match_table`, it reads every worker's /proc/PID/smaps_rollup: Pss counts a page
shared by k processes as 1/k in each, so the workers' Pss summed is what they cost the
machine together; Rss counts it whole in each. Both are reported above the worker's own
figures after imports and a warm-up (Python, numpy, numba's compiled kernels), and as a
ratio to one copy: the nbytes of the list's entries plus its PDQ index. The goal (issue
12) is a total <= 1.3x one copy at 1, 2 and 4 workers with the shared folder.

"Old" workers load the entries from a .npy file and sort, de-duplicate and digest them as
`load_list` does, then build the index on first match: the arrays they end with are the
ones `ListSpec.load` + `Matcher` hold, without the cost of parsing ten million hex lines.
"Shared" workers call `open_matcher` on a folder `save_matcher` wrote once, before;
"memory" workers on the memory files `save_matcher_in_memory` built once in this process
(what a scan's local workers do: no disk holds them), through /proc/PID/fd/N.
Times: a worker's load-and-build (old) or open (shared), its first match (a shared
worker faults the mapped pages in as it goes) and a second one, in seconds.
The hashes are random bytes: benign by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READY = "READY "

_WORKER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import pyarrow as pa
from clearset.lists.model import HashList, ListIdentity, list_digest, sort_unique
from clearset.matching.matcher import Matcher
from clearset.matching.shared import open_matcher

way, folder = sys.argv[1], Path(sys.argv[2])

def manifest(queries):
    n = len(queries)
    return pa.table({"key": [str(i) for i in range(n)], "shard": ["0"] * n,
                     "position": list(range(n)), "pdq": [q.tobytes() for q in queries],
                     "pdq_quality": [100] * n, "member": [None] * n, "url": [None] * n,
                     "sha256": [None] * n})

def rollup():
    fields = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields

# Warm-up: both kernel signatures (writable arrays, read-only maps) loaded or compiled.
small = open_matcher(folder / "warm")
small.match_table(manifest(np.asarray(small.lists[0].hashes[:50])))
Matcher([HashList(small.lists[0].identity, np.array(small.lists[0].hashes))]).match_table(
    manifest(np.asarray(small.lists[0].hashes[:50])))
queries = np.load(folder / "queries.npy")
table = manifest(queries)
before = rollup()

started = time.perf_counter()
if way == "old":
    entries = np.load(folder / "entries.npy")
    hashes, folded = sort_unique(entries)
    del entries
    identity = ListIdentity("bench", None, list_digest("pdq", hashes), "pdq", len(hashes), "x")
    matcher = Matcher([HashList(identity, hashes, duplicates_folded=folded)])
    matcher._index(0)  # what the first match_table would build
else:
    matcher = open_matcher(folder / "index" if way == "shared" else json.loads(sys.argv[3]))
ready = time.perf_counter() - started
started = time.perf_counter()
matches = matcher.match_table(table)
matched = time.perf_counter() - started
started = time.perf_counter()
again = matcher.match_table(table)  # pages are in by now: the steady rate
matched_again = time.perf_counter() - started
assert again.equals(matches)
print("READY " + json.dumps({"before": before, "ready_s": ready, "match_s": matched,
                             "again_s": matched_again, "matches": matches.num_rows}), flush=True)
sys.stdin.readline()
"""


def rollup(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def run_workers(way: str, count: int, folder: Path, files: str = "{}") -> list[dict]:
    """Start `count` workers, wait until all have matched, measure them all, stop them."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, way, str(folder), files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    reports = []
    try:
        for worker in workers:
            assert worker.stdout is not None
            for line in worker.stdout:
                if line.startswith(READY):
                    reports.append(json.loads(line[len(READY) :]))
                    break
            else:
                raise RuntimeError(f"a {way} worker exited with {worker.wait()}")
        for worker, report in zip(workers, reports, strict=True):
            report["after"] = rollup(worker.pid)
    finally:
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()
        for worker in workers:
            worker.wait()
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ways = ["old", "shared", "memory"]
    parser.add_argument("--ways", nargs="+", default=ways, choices=ways)
    args = parser.parse_args()

    from clearset.lists.model import HashList, ListIdentity, list_digest, sort_unique
    from clearset.matching.matcher import Matcher
    from clearset.matching.shared import open_matcher, save_matcher, save_matcher_in_memory

    def matcher_of(entries: np.ndarray) -> Matcher:
        hashes, folded = sort_unique(entries)
        identity = ListIdentity("bench", None, list_digest("pdq", hashes), "pdq", len(hashes), "x")
        return Matcher([HashList(identity, hashes, duplicates_folded=folded)])

    rng = np.random.default_rng(12)
    with tempfile.TemporaryDirectory(prefix="list-memory-") as tmp:
        folder = Path(tmp)
        entries = rng.integers(0, 256, (args.entries, 32), dtype=np.uint8)
        np.save(folder / "entries.npy", entries)
        # Random queries, a tenth of them near copies of entries (<= 20 bits flipped).
        queries = rng.integers(0, 256, (args.queries, 32), dtype=np.uint8)
        near = rng.choice(args.queries, args.queries // 10, replace=False)
        flips = np.packbits(rng.random((len(near), 256)) < 20 / 256, axis=1)
        queries[near] = entries[rng.integers(0, args.entries, len(near))] ^ flips
        np.save(folder / "queries.npy", queries)
        save_matcher(matcher_of(entries[:1000]), folder / "warm")

        matcher = matcher_of(entries)
        del entries
        started = time.perf_counter()
        save_matcher(matcher, folder / "index")
        saved = time.perf_counter() - started
        files, in_memory_s = "{}", 0.0
        if "memory" in args.ways:
            started = time.perf_counter()
            held = save_matcher_in_memory(matcher)
            in_memory_s = time.perf_counter() - started
            files = json.dumps(dict(held.files))
        del matcher
        started = time.perf_counter()
        opened = open_matcher(folder / "index")
        opened_s = time.perf_counter() - started
        one_copy = opened.lists[0].hashes.nbytes + sum(
            a.nbytes for name, a in opened._indexes[0].arrays.items() if name != "entries"
        )
        del opened
        print(
            f"{args.entries:,} PDQ entries, {args.queries:,} queries per worker; one copy "
            f"(entries + index) = {gib(one_copy)} GiB; save_matcher {saved:.1f} s once "
            f"(in memory: {in_memory_s:.1f} s); open_matcher {opened_s * 1000:.1f} ms"
        )
        print(
            f"{'way':6} {'workers':>7} {'Pss/worker':>10} {'Pss total':>9} {'total/copy':>10} "
            f"{'Rss/worker':>10} {'all Pss':>7} {'ready s':>8} {'match s':>8} {'again s':>8} "
            f"{'matches':>8}"
        )
        totals: dict[tuple[str, int], float] = {}
        for way in args.ways:
            for count in args.workers:
                # An old worker peaks at ~2.3 copies (raw, sorted, index); keep 2 GiB spare.
                need = count * one_copy * (2.3 if way == "old" else 0.1) + 2 * 2**30
                if available_bytes() < need:
                    print(
                        f"{way:6} {count:7}  skipped: needs ~{gib(need)} GiB, "
                        f"{gib(available_bytes())} GiB available"
                    )
                    continue
                reports = run_workers(way, count, folder, files)
                pss = [r["after"]["Pss"] - r["before"]["Pss"] for r in reports]
                rss = [r["after"]["Rss"] - r["before"]["Rss"] for r in reports]
                totals[(way, count)] = sum(pss)
                print(
                    f"{way:6} {count:7} {gib(max(pss)):>10} {gib(sum(pss)):>9} "
                    f"{sum(pss) / one_copy:>9.2f}x {gib(max(rss)):>10} "
                    f"{gib(sum(r['after']['Pss'] for r in reports)):>7} "
                    f"{max(r['ready_s'] for r in reports):>8.2f} "
                    f"{max(r['match_s'] for r in reports):>8.2f} "
                    f"{max(r['again_s'] for r in reports):>8.2f} "
                    f"{'/'.join(sorted({str(r['matches']) for r in reports})):>8}"
                )
        for count in args.workers:
            for way, than in (("shared", "old"), ("memory", "old"), ("memory", "shared")):
                if (than, count) in totals and (way, count) in totals:
                    ratio = totals[(way, count)] / totals[(than, count)]
                    print(f"{count} workers: {way} uses {ratio:.2f}x the memory of {than}")
        print(
            "(GiB above each worker's own figures after imports and warm-up, max per worker; "
            "all Pss: the workers' whole Pss, imports included; seconds: the slowest worker)"
        )


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("list_memory"):
        main()
