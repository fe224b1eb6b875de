"""Benchmark of the audit's search: generated hashes indexed, training hashes streamed.

`clearset audit` indexes the smaller side (the generated images) once and streams the
training side through it shard by shard (`clearset.stages.audit.range_search`, what each
engine task runs on its shard; a shard with more hashes than the generated side is itself
indexed and searched with the generated hashes, which is faster). This measures that
path on random PDQ hashes, with near copies of generated hashes planted among the
training ones, against faiss
`IndexBinaryFlat` over the same generated hashes and the same shards, in the same run:

* build time of both indexes;
* seconds and training hashes/s to stream every shard through each, and the ratio;
* whether both find exactly the same pairs (on every shard, or a sample with --sample);
* the process's peak RSS (each size runs in a child process, so it is that size's own).

It times the search only: hashing and reading the manifest files are measured by
bench/scan.py and bench/match.py. With --dihedral each generated image has 8 hashes.

    PYTHONPATH=. python bench/audit.py                     # 1e4 generated x 1e5 training
    PYTHONPATH=. python bench/audit.py --training 10000000 # the issue's 1e4 x 1e7
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

RESULT_PREFIX = "RESULT "
SHARD_ROWS = 100_000  # a training shard's rows (img2dataset's default is 10,000 per tar)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_shard(
    rng: np.random.Generator, generated: np.ndarray, rows: int, planted: int, threshold: int
) -> np.ndarray:
    """Random hashes, `planted` of them generated hashes with 0..threshold+9 bits flipped."""
    shard = rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)
    if planted:
        at = rng.choice(rows, size=planted, replace=False)
        sources = generated[rng.integers(0, len(generated), size=planted)]
        flips = rng.integers(0, threshold + 10, size=planted)
        ranks = np.argsort(np.argsort(rng.random((planted, 256)), axis=1), axis=1)
        shard[at] = sources ^ np.packbits(ranks < flips[:, None], axis=1)
    return shard


def run_size(generated_count: int, training_count: int, threshold: int, dihedral: bool,
             sample: int) -> dict:  # fmt: skip
    import faiss

    from clearset.stages.audit import IndexSide, best_pairs, range_search

    rng = np.random.default_rng(0)
    turns = 8 if dihedral else 1
    generated = rng.integers(0, 256, size=(generated_count * turns, 32), dtype=np.uint8)
    started = time.perf_counter()
    side = IndexSide(generated, turns)
    index = side.index()  # used when a shard is smaller than the generated side
    build = time.perf_counter() - started
    started = time.perf_counter()
    flat = faiss.IndexBinaryFlat(256)
    flat.add(generated)
    build_flat = time.perf_counter() - started
    started = time.perf_counter()
    index.search(generated[:2], threshold)  # numba compiles (or loads its cache) once
    compile_s = time.perf_counter() - started

    ours = theirs = 0.0
    pairs = checked = 0
    equal = True
    shards = range(0, training_count, SHARD_ROWS)
    for number, start in enumerate(shards):
        rows = min(SHARD_ROWS, training_count - start)
        shard = training_shard(rng, generated, rows, max(1, rows // 1000), threshold)
        started = time.perf_counter()
        found = range_search(side, shard.reshape(-1, 1, 32), threshold)
        ours += time.perf_counter() - started
        pairs += len(found[0])
        if sample and number % sample:
            continue
        started = time.perf_counter()
        # faiss keeps distances strictly below the radius.
        lims, distances, labels = flat.range_search(shard, threshold + 1)
        theirs += time.perf_counter() - started
        query_rows = np.repeat(np.arange(rows), np.diff(lims).astype(np.int64))
        reference = best_pairs(query_rows, labels.astype(np.int64), distances.astype(np.int16),
                               1, turns)  # fmt: skip
        equal &= all(np.array_equal(a, b) for a, b in zip(found, reference, strict=True))
        checked += rows
    return {
        "generated": generated_count,
        "hashes_per_generated": turns,
        "training": training_count,
        "threshold": threshold,
        "shards": len(shards),
        "build_s": round(build, 3),
        "build_flat_s": round(build_flat, 3),
        "first_call_s": round(compile_s, 2),
        "indexed_per_shard": "shard" if len(generated) < SHARD_ROWS else "generated",
        "stream_s": round(ours, 2),
        "training_per_s": round(training_count / ours) if ours else None,
        "flat_training_checked": checked,
        "flat_s": round(theirs, 2),
        "flat_training_per_s": round(checked / theirs) if theirs else None,
        "speedup": round((training_count / ours) / (checked / theirs), 1)
        if theirs and ours
        else None,
        "pairs": pairs,
        "equal_to_flat": bool(equal),
        "peak_rss_mib": round(peak_rss_mib()),
        "threads_faiss": faiss.omp_get_max_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generated", type=int, default=10_000)
    parser.add_argument("--training", type=int, default=100_000,
                        help="training hashes (the issue's figure is 10000000)")  # fmt: skip
    parser.add_argument("--threshold", type=int, default=31)
    parser.add_argument("--dihedral", action="store_true")
    parser.add_argument("--sample", type=int, default=0,
                        help="compare with faiss on every Nth shard only (0: all)")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_size(args.generated, args.training, args.threshold, args.dihedral,
                          args.sample)  # fmt: skip
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    argv = [sys.executable, __file__, "--child", "--generated", str(args.generated),
            "--training", str(args.training), "--threshold", str(args.threshold),
            "--sample", str(args.sample)] + (["--dihedral"] if args.dihedral else [])  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    r = json.loads(line[len(RESULT_PREFIX) :])
    print(json.dumps(r, indent=2))
    print(
        f"{r['generated']:,} generated (x{r['hashes_per_generated']}) x {r['training']:,} "
        f"training hashes in {r['shards']} shards: PDQIndex {r['stream_s']} s "
        f"({r['training_per_s']:,}/s), faiss IndexBinaryFlat {r['flat_training_per_s']:,}/s "
        f"on {r['flat_training_checked']:,}: {r['speedup']}x; same pairs: "
        f"{r['equal_to_flat']}; peak RSS {r['peak_rss_mib']} MiB"
    )


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("audit"):
        main()
