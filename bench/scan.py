"""Benchmark: scan throughput of the demo data set, 1 worker against N, in one run.

    python bench/scan.py [--images 400] [--shard-size 50] [--workers N] [--exact-pdq]

By default it times what `clearset scan` does by default (fast PDQ, border trimming);
--exact-pdq times the reference PDQ path instead.

    python bench/scan.py --img2dataset 256 --images 20000 --list-size 1000000

times `clearset scan` (the CLI, one worker) of an img2dataset-style WebDataset of camera
photos stored at SIZE x SIZE px (JPEG quality 85-95, with `original_width/height`
beside each) against a list of `--list-size` random PDQ hashes, and prints its images/s
against the per-image hashing rate (`hash_bytes` as a scan calls it, one process)
measured on the same images in the same run: rounds of (hashing, then for each of
`--hash-threads` (1,2) a one-shard scan and a whole scan), each figure the least of
`--rounds` (3). It prints each scan's rate per CPU second and per second of wall time:
with CLEARSET_HASH_THREADS=1 a worker is one thread, and the two tell the same story;
with 2 it hashes on two threads beside the one reading the shard, which shortens the
wall time (on cores to spare) and not the CPU time. `--compare-tree DIR` (another
commit's tree, e.g. `git archive c13a40d | tar -x -C DIR`) also runs every scan with
that tree's clearset, in the same rounds, against the same hashing rate (this tree's
`hash_bytes`): a before/after in one run on a machine whose load moves between runs.

    python bench/scan.py --img2dataset 256 --images 1000 --breakdown 9
    python bench/scan.py --img2dataset 256 --images 5000 --paired 3

--breakdown splits one shard's CPU time a sample into its parts (see `breakdown`);
--paired times the scan against the hashing loop shard by shard, in pairs close in time,
and prints the median of the pairs' ratios (see `paired`): the reading of the 0.85x goal
that a host whose speed moves between seconds does not bias.

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
from typing import Any

import numpy as np

from clearset.demo import DemoItem, demo_items, write_webdataset
from clearset.engines.local import default_workers
from clearset.formats import open_source
from clearset.runs import ScanSettings, run_scan

#: This tree's root: its clearset is the one the CLI scans import unless told otherwise.
REPO = Path(__file__).resolve().parents[1]


def _i2d_item(args: tuple[int, int, int]) -> DemoItem:
    """One img2dataset-style item: a camera photo, cropped, tinted, with grain, at
    `size` x `size` (its center_crop mode), recording a larger original size."""
    import io
    import sys

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.photos import photos

    number, size, seed = args
    rng = np.random.default_rng([seed, number])
    library = photos()
    names = sorted(library)
    photo = library[names[number % len(names)]]
    ph, pw = photo.shape[:2]
    side = int(rng.integers(min(ph, pw) // 2, min(ph, pw) + 1))
    y, x = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
    image = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(image, np.float32) * rng.uniform(0.85, 1.15, 3)
    pixels = pixels + rng.normal(0, rng.uniform(1, 4), pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(85, 96))
    )
    original = int(side * 1.5)
    return DemoItem(f"{number:09d}", "jpg", buffer.getvalue(), original, original, "a photo")


def img2dataset_scan(
    size: int,
    images: int,
    list_size: int,
    shard_size: int,
    rounds: int = 3,
    thread_counts: tuple[int, ...] = (1, 2),
    compare_tree: Path | None = None,
    breakdown_rounds: int = 0,
    paired_rounds: int = 0,
) -> None:
    """`clearset scan` (CLI, 1 worker) against the hashing rate, measured in one run; with
    `breakdown_rounds`, only `breakdown` of the set's first shard; with `paired_rounds`,
    only `paired`."""
    import multiprocessing as mp
    import subprocess
    import sys

    from clearset.hashing import hash_bytes

    root = Path(tempfile.mkdtemp(prefix="clearset-bench-i2d-"))
    try:
        started = time.perf_counter()
        with mp.Pool(os.cpu_count() or 1) as pool:
            items = pool.map(_i2d_item, [(n, size, 7) for n in range(images)], chunksize=64)
        write_webdataset(root / "src", items, shard_size)
        rng = np.random.default_rng(11)
        hashes = rng.integers(0, 256, (list_size, 32), dtype=np.uint8)
        with open(root / "list.txt", "w") as out:
            out.writelines(h.tobytes().hex() + "\n" for h in hashes)
        print(
            f"{images} JPEGs of {size} x {size} px ({sum(len(i.data) for i in items) / 1e6:.0f} MB)"
            f" in {-(-images // shard_size)} shards, a list of {list_size:,} PDQ hashes; "
            f"built in {time.perf_counter() - started:.0f} s"
        )
        if breakdown_rounds:
            breakdown(root / "src", breakdown_rounds, hashes)
            return
        if paired_rounds:
            paired(root / "src", paired_rounds, hashes)
            return
        # Hashing alone, as a scan calls it, one process (CPU time: the machine is shared).
        sample = items[: min(len(items), 4000)]
        hash_bytes(sample[0].data)

        def hashing() -> float:
            cpu = time.process_time()
            for item in sample:
                hash_bytes(item.data, original_size=(item.width, item.height))
            return time.process_time() - cpu

        write_webdataset(root / "small", items[:shard_size], shard_size)

        trees: dict[str, Path | None] = {"": None}
        if compare_tree is not None:
            trees[f" [{compare_tree}]"] = compare_tree

        def scan(source: str, threads: int, tree: Path | None = None) -> tuple[float, float]:
            """(wall, CPU) seconds of `clearset scan --workers 1` of `source`, its worker
            hashing on `threads` threads (CLEARSET_HASH_THREADS; 1: none), with the
            clearset of `tree` (None: this one)."""
            run = root / f"run-{source}"
            shutil.rmtree(run, ignore_errors=True)
            command = [sys.executable, "-m", "clearset.cli", "scan", str(root / source)]
            command += ["--out", str(run), "--workers", "1", "--no-progress"]
            command += ["--list", f"{root / 'list.txt'},type=pdq"]
            # The tree's clearset, and nothing from the current folder: `python -m` puts
            # the working folder first on sys.path, so run from the repository's root a
            # scan would import this tree's clearset whatever PYTHONPATH said.
            env = {**os.environ, "CLEARSET_HASH_THREADS": str(threads)}
            env["PYTHONPATH"] = str(tree if tree is not None else REPO)
            wall, child = time.perf_counter(), resource_usage()
            subprocess.run(command, check=True, capture_output=True, env=env, cwd=root)
            return time.perf_counter() - wall, resource_usage() - child

        # Untimed first: it fills numba's on-disk caches (a fresh checkout compiles the
        # matcher's and the hasher's kernels once), which no timed scan should pay.
        for tree in trees.values():
            scan("small", 1, tree)
        # Rounds of (hashing, then per thread count a one-shard and a whole scan), each
        # figure the least of its rounds: on a shared machine a lone pass of each,
        # minutes apart, can differ by a third, which is the whole of the ratio looked for.
        hash_cpu: list[float] = []
        hash_wall: list[float] = []
        cpu: dict[tuple[int, str, str], list[float]] = {}
        wall: dict[tuple[int, str, str], list[float]] = {}
        for _ in range(rounds):
            started, cpu_started = time.perf_counter(), time.process_time()
            hashing()
            hash_cpu.append(time.process_time() - cpu_started)
            hash_wall.append(time.perf_counter() - started)
            line = f"  round: hashing {len(sample) / hash_cpu[-1]:7.1f} images/s (CPU)"
            for threads in thread_counts:
                for name, tree in trees.items():
                    for source in ("small", "src"):
                        seconds, used = scan(source, threads, tree)
                        cpu.setdefault((threads, source, name), []).append(used)
                        wall.setdefault((threads, source, name), []).append(seconds)
                    taken_out = (images - shard_size) / (
                        cpu[threads, "src", name][-1] - cpu[threads, "small", name][-1]
                    )
                    line += (
                        f"; threads={threads}{name}: {taken_out:7.1f} images/s (CPU, start-up out)"
                    )
            print(line)
        rate = len(sample) / min(hash_cpu)
        wall_rate = len(sample) / min(hash_wall)
        print(
            f"hashing alone (hash_bytes, {len(sample)} images, one thread): {rate:8.1f} "
            f"images/s per CPU second, {wall_rate:8.1f} images/s of wall time"
        )
        for threads, name in ((t, n) for t in thread_counts for n in trees):
            best_scan, best_small = min(cpu[threads, "src", name]), min(cpu[threads, "small", name])
            best_wall = min(wall[threads, "src", name])
            small_wall = min(wall[threads, "small", name])
            marginal = (images - shard_size) / (best_scan - best_small)
            marginal_wall = (images - shard_size) / (best_wall - small_wall)
            label = "no hashing threads" if threads == 1 else f"{threads} hashing threads"
            print(
                f"clearset scan{name} --workers 1, {label} (CLEARSET_HASH_THREADS={threads}), "
                f"all {images}: {best_wall:6.1f} s wall, {best_scan:6.1f} s CPU"
            )
            print(
                f"  per CPU second: {images / best_scan:7.1f} images/s = "
                f"{images / best_scan / rate:.2f}x the hashing rate, start-up included; "
                f"{marginal:7.1f} = {marginal / rate:.2f}x, start-up taken out"
            )
            print(
                f"  per second of wall time: {images / best_wall:7.1f} images/s = "
                f"{images / best_wall / wall_rate:.2f}x the hashing rate, start-up included; "
                f"{marginal_wall:7.1f} = {marginal_wall / wall_rate:.2f}x, start-up taken out "
                f"(a one-shard scan: {small_wall:.1f} s wall)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def breakdown(source_dir: Path, rounds: int, list_hashes: np.ndarray) -> None:
    """Where a scanned sample's CPU time goes, in this process, on the set's first shard:
    `hash_bytes` of its pictures alone (the hashing rate's loop), of every member (the
    .txt and .json too), the scan's machinery alone (`scan_shard` with every member's
    `hash_bytes` answered from a table: reading the tar, items, rows, manifest, marker),
    and the whole `scan_shard`. What the whole costs beyond hashing every member plus the
    machinery is the two run interleaved instead of apart. Then the parts of a scan's
    work beside the pictures that no scan can skip, each timed alone: reading the shard
    file with its SHA-256 (what a clean checks a copy against), the other members'
    digests, their .json parsed, the shard's hashes searched in the list
    (`list_hashes`), the manifest written (its rows given); and what they leave of the
    budget that 0.85x the hashing rate allows. Inside each whole scan it also times the
    pictures' own `hash_bytes` calls and the garbage collector's passes: where the cost of
    running the two interleaved lands. Each figure is the least and the median
    of `rounds`, the parts taken in turn in every round (the machine's load moves
    between rounds, not within one)."""
    import gc
    import glob
    import hashlib
    import json
    import statistics

    import pyarrow.parquet as pq

    import clearset.stages.scan as stage
    from clearset.hashing import hash_bytes
    from clearset.hashing.types import digests_of
    from clearset.manifest import ManifestWriter
    from clearset.matching.pdq_index import PDQIndex
    from clearset.settings import MANIFEST_ROW_GROUP

    source = open_source(str(source_dir))
    shard = source.shards()[0]
    items = [(i, i.data) for i in source.read_shard(shard, {}) if i.data is not None]
    samples = len({i.key for i, _ in items})
    pictures = [(i, data) for i, data in items if i.expect_image]
    settings = ScanSettings()
    # Answers by size: hashing each member's bytes to look it up would cost what is timed
    # (two members of one size get the same answer, which changes no time worth seeing).
    by_size = {len(data): hash_bytes(data) for _, data in items}

    def pictures_alone() -> None:
        for item, data in pictures:
            hash_bytes(data, original_size=item.extra.get("original_size"))

    def every_member() -> None:
        for item, data in items:
            hash_bytes(data, original_size=item.extra.get("original_size"))

    picture_sizes = {len(data) for _, data in pictures}
    # Inside each whole scan: the thread time of the pictures' `hash_bytes` calls and of
    # the garbage collector's passes, ms a sample (the interleaving's cost located).
    inside: dict[str, list[float]] = {"pictures": [], "gc": []}

    def scan(answered: bool) -> None:
        real = stage.hash_bytes
        spent = {"pictures": 0, "gc": 0}
        gc_started = [0]

        def timed(data: bytes, **options: Any) -> Any:
            started = time.thread_time_ns()
            hashes = real(data, **options)
            if len(data) in picture_sizes:
                spent["pictures"] += time.thread_time_ns() - started
            return hashes

        def collector(phase: str, _: dict[str, Any]) -> None:
            if phase == "start":
                gc_started[0] = time.thread_time_ns()
            else:
                spent["gc"] += time.thread_time_ns() - gc_started[0]

        if answered:
            stage.hash_bytes = lambda data, **_: by_size[len(data)]
        else:
            stage.hash_bytes = timed
            gc.callbacks.append(collector)
        run = Path(tempfile.mkdtemp(prefix="clearset-bench-breakdown-"))
        try:
            stage.scan_shard(source, shard, run, settings)
        finally:
            stage.hash_bytes = real
            if collector in gc.callbacks:
                gc.callbacks.remove(collector)
            shutil.rmtree(run, ignore_errors=True)
        if not answered:
            for name, ns in spent.items():
                inside[name].append(ns / samples / 1e6)

    # The parts no scan can skip, alone.
    shard_file = source_dir / shard.name
    others = [data for item, data in items if not item.expect_image]
    metadata = [data for item, data in items if item.member and item.member.endswith(".json")]
    answers = [by_size[len(data)] for _, data in pictures]
    queries = np.frombuffer(
        b"".join(
            [h.pdq for h in answers if h.pdq] + [h.pdq_trimmed for h in answers if h.pdq_trimmed]
        ),
        np.uint8,
    ).reshape(-1, 32)
    index = PDQIndex(list_hashes)
    manifest_dir = Path(tempfile.mkdtemp(prefix="clearset-bench-breakdown-"))
    stage.scan_shard(source, shard, manifest_dir, settings)
    rows = pq.read_table(glob.glob(f"{manifest_dir}/**/*.parquet", recursive=True)[0]).to_pylist()

    def file_digest() -> None:
        digest = hashlib.sha256()
        with open(shard_file, "rb") as stream:
            while block := stream.read(1 << 18):
                digest.update(block)

    def write_manifest() -> None:
        writer = ManifestWriter(manifest_dir / "again.parquet", MANIFEST_ROW_GROUP)
        for row in rows:
            writer.add(row)
        writer.close()

    parts = {
        "hash_bytes, the pictures alone": pictures_alone,
        "hash_bytes, every member": every_member,
        "the machinery alone (hashes answered)": lambda: scan(True),
        "scan_shard, whole": lambda: scan(False),
    }
    needed = {
        "the shard file read, with its SHA-256": file_digest,
        "the other members' digests": lambda: [digests_of(data) for data in others],
        "their .json parsed": lambda: [json.loads(data) for data in metadata],
        f"{len(queries)} hashes searched in {len(list_hashes):,}": lambda: index.search(
            queries, 31
        ),
        "the manifest written (rows given)": write_manifest,
    }
    for part in [*parts.values(), *needed.values()]:
        part()  # warm: numba's cache, Pillow's plugins, the page cache
    times: dict[str, list[float]] = {name: [] for name in [*parts, *needed]}
    for _ in range(rounds):
        for name, part in [*parts.items(), *needed.items()]:
            # Process time: the list search runs on numba's threads too.
            started = time.process_time()
            part()
            times[name].append((time.process_time() - started) / samples * 1e3)
    shutil.rmtree(manifest_dir, ignore_errors=True)
    print(f"breakdown: one shard, {samples} samples ({len(items)} members), ms a sample (CPU):")
    least = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in parts:
        print(f"  {name:40s} least {least[name]:6.3f}   median {median[name]:6.3f}")
    names = list(parts)
    for label, figures in (("least", least), ("median", median)):
        apart = figures[names[1]] + figures[names[2]]
        print(
            f"  {label}: whole / pictures alone = {figures[names[0]] / figures[names[3]]:.2f}x the"
            f" hashing rate; whole - (every member + machinery) = {figures[names[3]] - apart:+.3f}"
            " ms a sample (the cost of running them interleaved)"
        )
    pictures_inside = inside["pictures"][-rounds:]
    gc_inside = inside["gc"][-rounds:]
    ratios = [a / b for a, b in zip(pictures_inside, times[names[0]], strict=True)]
    print(
        "  inside the whole scan, the pictures' hash_bytes (thread time): least"
        f" {min(pictures_inside):6.3f}   median {statistics.median(pictures_inside):6.3f};"
        " against the loop in the same round, median"
        f" {statistics.median(ratios):.2f}x;"
        f" the garbage collector's passes: median {statistics.median(gc_inside):.4f}"
    )
    print("parts beside the pictures that no scan can skip, each alone, ms a sample (CPU):")
    for name in needed:
        print(f"  {name:40s} least {least[name]:6.3f}   median {median[name]:6.3f}")
    for label, figures in (("least", least), ("median", median)):
        budget = figures[names[0]] * (1 / 0.85 - 1)
        floor = sum(figures[name] for name in needed)
        print(
            f"  {label}: at 0.85x the hashing rate everything beside the pictures must fit in "
            f"{budget:.3f} ms a sample; these parts alone take {floor:.3f} "
            f"({floor / budget:.0%}), leaving {budget - floor:+.3f} for reading the tar's "
            "headers, the items, the rows and their accounting"
        )


def paired(source_dir: Path, rounds: int, list_hashes: np.ndarray) -> None:
    """A scan's CPU time a sample against the hashing loop's, timed in pairs close in time:
    for each shard (1,000 samples), its pictures' `hash_bytes`
    in a loop, then `scan_shard` of the shard, then the shard's hashes searched in the list
    (`list_hashes`), all in this process; the ratio of each pair, and the median over all
    pairs (`rounds` x shards). On a host whose speed moves from one second to the next,
    both halves of a pair see about the same speed, whereas the least of whole rounds
    favours whichever figure is the shorter one to take (the loop)."""
    import statistics

    import clearset.stages.scan as stage
    from clearset.formats.base import ORIGINAL_SIZE
    from clearset.hashing import hash_bytes
    from clearset.matching.pdq_index import PDQIndex

    source = open_source(str(source_dir))
    shards = source.shards()
    settings = ScanSettings()
    index = PDQIndex(list_hashes)
    work = []
    for shard in shards:
        items = [i for i in source.read_shard(shard, {}) if i.data is not None]
        pictures = [(i.data, i.extra.get(ORIGINAL_SIZE)) for i in items if i.expect_image]
        answers = [hash_bytes(data, original_size=size) for data, size in pictures]
        hashes = [h.pdq for h in answers if h.pdq] + [
            h.pdq_trimmed for h in answers if h.pdq_trimmed
        ]
        queries = np.frombuffer(b"".join(hashes), np.uint8).reshape(-1, 32)
        work.append((shard, len({i.key for i in items}), pictures, queries))
    index.search(work[0][3], 31)  # warm: numba's cache, the occupancy bits

    def one_pair(shard: Any, pictures: list[Any], queries: np.ndarray) -> tuple[float, ...]:
        started = time.process_time()
        for data, size in pictures:
            hash_bytes(data, original_size=size)
        loop = time.process_time() - started
        run = Path(tempfile.mkdtemp(prefix="clearset-bench-paired-"))
        try:
            started = time.process_time()
            stage.scan_shard(source, shard, run, settings)
            scanned = time.process_time() - started
        finally:
            shutil.rmtree(run, ignore_errors=True)
        started = time.process_time()
        index.search(queries, 31)
        return loop, scanned, time.process_time() - started

    one_pair(work[0][0], work[0][2], work[0][3])
    pairs: list[tuple[float, float, float]] = []
    samples = []
    for _ in range(rounds):
        for shard, count, pictures, queries in work:
            loop, scanned, searched = one_pair(shard, pictures, queries)
            pairs.append((loop / count * 1e3, scanned / count * 1e3, searched / count * 1e3))
            samples.append(count)

    def quartiles(values: list[float]) -> str:
        if len(values) < 2:  # one shard, one round: no spread to give
            return f"{values[0]:.3f}"
        low, mid, high = statistics.quantiles(values, n=4)
        return f"{mid:.3f} ({low:.3f}-{high:.3f})"

    print(
        f"paired: {len(pairs)} pairs ({rounds} rounds x {len(work)} shards of"
        f" ~{statistics.median(samples):.0f} samples), ms a sample (CPU), median (quartiles):"
    )
    print(f"  hash_bytes, the pictures in a loop    {quartiles([p[0] for p in pairs])}")
    print(f"  scan_shard                            {quartiles([p[1] for p in pairs])}")
    print(f"  the shard's hashes searched           {quartiles([p[2] for p in pairs])}")
    print(
        "  scan / loop, each pair:    scan_shard "
        f"{quartiles([p[1] / p[0] for p in pairs])}x;"
        f"  with the search {quartiles([(p[1] + p[2]) / p[0] for p in pairs])}x"
    )
    print(
        "  the hashing rate the scan keeps (loop / scan): scan_shard"
        f" {statistics.median(p[0] / p[1] for p in pairs):.2f}x, with the search"
        f" {statistics.median(p[0] / (p[1] + p[2]) for p in pairs):.2f}x (goal: 0.85x)"
    )


def resource_usage() -> float:
    """CPU seconds of this process's finished children (the scan and its workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--exact-pdq", action="store_true", help="time the reference PDQ path (default: fast)"
    )
    parser.add_argument(
        "--img2dataset",
        type=int,
        default=None,
        metavar="SIZE",
        help="time the CLI on an img2dataset-style set of SIZE-px photos against a list",
    )
    parser.add_argument("--list-size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="--img2dataset: best of N")
    parser.add_argument(
        "--hash-threads",
        default="1,2",
        help="--img2dataset: the worker's hashing threads to time (CLEARSET_HASH_THREADS)",
    )
    parser.add_argument(
        "--compare-tree",
        type=Path,
        default=None,
        metavar="DIR",
        help="--img2dataset: also time every scan with the clearset of this tree (a before)",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="--img2dataset: only the in-process breakdown of a sample's time, ROUNDS rounds",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="--img2dataset: only the scan against the hashing loop in pairs, shard by shard",
    )
    args = parser.parse_args()
    if args.img2dataset:
        threads = tuple(int(n) for n in args.hash_threads.split(","))
        compare = args.compare_tree.resolve() if args.compare_tree else None
        img2dataset_scan(
            args.img2dataset,
            args.images,
            args.list_size,
            1000,
            args.rounds,
            threads,
            compare,
            args.breakdown,
            args.paired,
        )
        return

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
