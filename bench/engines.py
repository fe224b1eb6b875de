"""Benchmark: the local engine against Ray on the same shards, at 1 and 2 workers, in one run.

    python bench/engines.py [--images 800] [--shard-size 25] [--workers 1,2] [--laion]

Scans one demo webdataset (matched against the demo's PDQ and MD5 lists, as `clearset
scan --list` does) with `--engine local` and with `--engine ray` (a Ray instance started
here) at each worker count. Prints images/s (an image with its caption and .json is one
item), each Ray figure as a ratio to the local engine's at the same worker count (the
baseline measured in the same run, since these machines are noisy), Ray's start-up cost
(starting the instance), and checks that every run's manifest and matches equal the
first. With --laion it also prints the core-hours and wall time of a LAION-5B scan
(5.85 × 10⁹ items) from the measured per-core rate.

Resident memory of the hash lists per worker is measured by bench/list_memory.py.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from clearset.demo import build_demo_data
from clearset.engines import make_engine
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runs import MatchJob, ScanSettings, run_scan

LAION_5B = 5.85e9


def _data(run: Path) -> tuple:
    manifest = (
        pq.ParquetDataset(str(run / "manifest"))
        .read()
        .sort_by([("shard", "ascending"), ("position", "ascending")])
    )
    matches = pq.read_table(run / "matches.parquet").sort_by(
        [("shard", "ascending"), ("position", "ascending"), ("list_digest", "ascending")]
    )
    return manifest.to_pylist(), matches.to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--laion", action="store_true", help="print a LAION-5B estimate")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    root = Path(tempfile.mkdtemp(prefix="clearset-bench-engines-"))
    try:
        demo = build_demo_data(root / "data", count=args.images, shard_size=args.shard_size)
        job = MatchJob(
            (ListSpec(str(demo.pdq_list)), ListSpec(str(demo.md5_list))), MatchSettings()
        )
        source = open_source(str(demo.webdataset))
        shards = len(source.shards())
        print(f"{args.images} demo images in {shards} shards; lists: PDQ + MD5")
        rates: dict[tuple[str, int], float] = {}
        reference = None
        for workers in counts:
            for name in ("local", "ray"):
                started = time.perf_counter()
                engine = make_engine(name, workers=workers)
                start_up = time.perf_counter() - started
                try:
                    run = root / f"run-{name}-{workers}"
                    began = time.perf_counter()
                    result = run_scan(
                        source, run, ScanSettings(), engine=engine, show_progress=False, match=job
                    )
                    seconds = time.perf_counter() - began
                finally:
                    engine.close()
                # Images, not rows: each image's caption and .json are rows of their own.
                status = result.counts["status"]
                images = sum(n for name, n in status.items() if name != "other")
                rate = images / seconds
                rates[name, workers] = rate
                data = _data(run)
                reference = reference or data
                same = "same result" if data == reference else "RESULT DIFFERS"
                line = f"  {name:5} {workers} worker(s): {rate:7.1f} images/s ({seconds:5.1f} s)"
                if name == "ray":
                    line += (
                        f"  = {rate / rates['local', workers]:.2f}× local;"
                        f" start-up {start_up:.1f} s"
                    )
                print(f"{line}  [{same}]")
        if len(counts) > 1:
            low, high = counts[0], counts[-1]
            for name in ("local", "ray"):
                print(
                    f"  {name}: {high} workers = {rates[name, high] / rates[name, low]:.2f}× "
                    f"{low} worker(s)"
                )
        if args.laion:
            per_core = rates["local", counts[0]] / counts[0]
            core_hours = LAION_5B / per_core / 3600
            print(
                f"LAION-5B at {per_core:.0f} images/s per core (these demo images): "
                f"{core_hours:,.0f} core-hours; on 1,000 cores {core_hours / 1000:,.1f} h"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("engines"):
        main()
