"""Benchmark: scan throughput of the demo data set, 1 worker against N, in one run.

    python bench/scan.py [--images 400] [--shard-size 50] [--workers N] [--exact-pdq]

By default it times what `clearset scan` does by default (fast PDQ, border trimming);
--exact-pdq times the reference PDQ path instead.

Prints items/s and MB/s for each worker count and the speed-up over one worker (the
baseline measured in the same run, since these machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from clearset.demo import demo_items, write_webdataset
from clearset.engines.local import default_workers
from clearset.formats import open_source
from clearset.runs import ScanSettings, run_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--exact-pdq", action="store_true", help="time the reference PDQ path (default: fast)"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="clearset-bench-"))
    try:
        items = demo_items(seed=7, count=args.images)
        write_webdataset(root / "src", items, args.shard_size)
        total_bytes = sum(len(i.data) for i in items)
        settings = ScanSettings(exact_pdq=args.exact_pdq)
        print(
            f"{len(items)} items, {total_bytes / 1e6:.1f} MB in "
            f"{-(-len(items) // args.shard_size)} shards; exact_pdq={settings.exact_pdq} "
            f"trim_borders={settings.trim_borders}"
        )
        baseline = None
        for workers in sorted({1, args.workers}):
            run_dir = root / f"run-{workers}"
            start = time.perf_counter()
            run_scan(
                open_source(str(root / "src")),
                run_dir,
                settings,
                workers=workers,
                show_progress=False,
            )
            seconds = time.perf_counter() - start
            rate = len(items) / seconds
            baseline = baseline or rate
            print(
                f"workers={workers}: {seconds:6.2f} s  {rate:7.1f} items/s  "
                f"{total_bytes / seconds / 1e6:6.2f} MB/s  x{rate / baseline:.2f} vs 1 worker"
            )
        print(f"cores available: {os.cpu_count()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("scan"):
        main()
