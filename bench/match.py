"""Benchmark of PDQ range search: clearset's PDQIndex against faiss IndexBinaryFlat.

For each list size it builds a list of random PDQ hashes, makes queries (random ones plus
copies of list entries with 0..threshold+9 bits flipped), then reports, all in the same
run so that a noisy machine moves both sides alike:

* build time, index size and the process's peak RSS right after the build;
* queries/s of PDQIndex.search over all queries, and of faiss IndexBinaryFlat.range_search
  over a sample of them (Flat is far too slow for all of them at 1e7), and the ratio;
* whether the index returns exactly what Flat returns on that sample, and its recall
  against clearset.matching.reference.brute_force_search on a smaller sample;
* the two multi-index kernels on one batch of `--kernel-sample` random queries: the
  query-by-query one and the sorted, windowed one that large batches use (their queries/s,
  ratio, and whether they return the same pairs);
* a scan's batch (one shard: 1,000 queries) through the query-by-query kernel, CPU time a
  query with the bucket occupancy bits against every bit set (every probe reads its
  bucket's offsets, as before the bits), alternated in the same run.

Each size runs in a child process so that peak RSS belongs to that size alone. numba's
compile time is measured once, first, in a child with an empty numba cache.

    PYTHONPATH=. python bench/match.py            # 1e5, 1e6, 1e7 entries, 1e6 queries
    PYTHONPATH=. python bench/match.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULT_PREFIX = "RESULT "


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux: the process's high-water mark, no tracing overhead.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_queries(
    rng: np.random.Generator, entries: np.ndarray, count: int, planted: int, threshold: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random queries, `planted` of them replaced by entries with 0..threshold+9 bits flipped."""
    queries = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    rows = rng.choice(count, size=planted, replace=False)
    sources = entries[rng.integers(0, len(entries), size=planted)]
    flips = rng.integers(0, threshold + 10, size=planted)
    # The k smallest of 256 random keys pick k distinct bits to flip.
    ranks = np.argsort(np.argsort(rng.random((planted, 256)), axis=1), axis=1)
    queries[rows] = sources ^ np.packbits(ranks < flips[:, None], axis=1)
    return queries, np.sort(rows)


def triples_from_faiss(lims: np.ndarray, distances: np.ndarray, labels: np.ndarray) -> tuple:
    query_rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
    entry_rows = labels.astype(np.int64)
    order = np.lexsort((entry_rows, query_rows))
    return query_rows[order], entry_rows[order], distances[order].astype(np.int16)


def same(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def measure_compile() -> dict:
    """Time the first calls with an empty numba cache (run in a child with its own cache dir)."""
    from clearset.matching import pdq_index
    from clearset.matching.pdq_index import PDQIndex

    rng = np.random.default_rng(0)
    entries = rng.integers(0, 256, size=(1000, 32), dtype=np.uint8)
    started = time.perf_counter()
    index = PDQIndex(entries)
    build = time.perf_counter() - started
    pdq_index._RANDOM_ACCESS_COST = 0.0  # force the multi-index kernel
    started = time.perf_counter()
    index.search(entries[:2], 31)
    mih = time.perf_counter() - started
    pdq_index._RANDOM_ACCESS_COST = float("inf")  # force the brute-force kernel
    started = time.perf_counter()
    index.search(entries[:2], 31)
    brute = time.perf_counter() - started
    return {"build": build, "mih": mih, "brute": brute}


def run_size(args: argparse.Namespace, size: int) -> dict:
    import faiss
    import numba

    from clearset.matching.pdq_index import PDQIndex
    from clearset.matching.reference import brute_force_search

    threshold = args.threshold
    rng = np.random.default_rng(args.seed + size)
    entries = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    n_queries = args.queries
    planted = max(100, n_queries // 100)
    queries, planted_rows = make_queries(rng, entries, n_queries, planted, threshold)
    rss_before = peak_rss_mib()

    started = time.perf_counter()
    index = PDQIndex(entries)
    build_s = time.perf_counter() - started
    rss_build = peak_rss_mib()

    started = time.perf_counter()
    index.search(queries[:1], threshold)
    first_call_s = time.perf_counter() - started

    started = time.perf_counter()
    ours = index.search(queries, threshold)
    ours_s = time.perf_counter() - started
    ours_qps = n_queries / ours_s

    # The two multi-index kernels on the same batch of random queries: the query-by-query
    # one (what every batch used before) and the sorted, windowed one large batches use.
    from clearset.matching import pdq_index

    kernel_n = min(n_queries, args.kernel_sample)
    kernel_queries = np.ascontiguousarray(queries[:kernel_n])
    kernels = {}
    for name, sorted_from in (("query-by-query", float("inf")), ("sorted", 0.0)):
        knobs = ("_SORTED_MIN_PROBES_PER_BUCKET", "_SORTED_MIN_QUERIES", "_SORTED_MIN_ENTRIES")
        saved = [getattr(pdq_index, knob) for knob in knobs]
        for knob, value in zip(knobs, (sorted_from, 0, 0), strict=True):
            setattr(pdq_index, knob, value)
        index.search(kernel_queries[:64], threshold)
        started = time.perf_counter()
        kernels[name] = index.search(kernel_queries, threshold)
        kernels[name + "_qps"] = kernel_n / (time.perf_counter() - started)
        for knob, value in zip(knobs, saved, strict=True):
            setattr(pdq_index, knob, value)
    kernels_same = same(kernels["query-by-query"], kernels["sorted"])

    # A scan's batch (one shard's 1,000 pictures) takes the query-by-query kernel: CPU
    # time a query (numba's threads included) with the bucket occupancy bits, and with
    # every bit set (every probe reads its bucket's offsets: the kernel before the bits),
    # alternated, the least of 7 rounds each.
    shard_queries = np.ascontiguousarray(queries[: min(n_queries, 1000)])
    occupancy = index._occupancy()
    every_bucket = np.full_like(occupancy, np.iinfo(np.uint64).max)
    shard_cpu: dict[str, list[float]] = {"bits": [], "every": []}
    shard_results = {}
    for _ in range(7):
        for name, bits in (("bits", occupancy), ("every", every_bucket)):
            index._occupied = bits
            started = time.process_time()
            shard_results[name] = index.search(shard_queries, threshold)
            shard_cpu[name].append((time.process_time() - started) / len(shard_queries))
    index._occupied = occupancy

    flat = faiss.IndexBinaryFlat(256)
    started = time.perf_counter()
    flat.add(entries)
    flat_add_s = time.perf_counter() - started
    flat_n = min(n_queries, max(100, int(args.flat_budget / size)))
    sample = np.sort(rng.choice(n_queries, size=flat_n, replace=False))
    sample_queries = np.ascontiguousarray(queries[sample])
    started = time.perf_counter()
    # faiss keeps distances strictly below the radius.
    flat_result = triples_from_faiss(*flat.range_search(sample_queries, threshold + 1))
    flat_s = time.perf_counter() - started
    flat_qps = flat_n / flat_s
    started = time.perf_counter()
    ours_sample = index.search(sample_queries, threshold)
    ours_sample_qps = flat_n / (time.perf_counter() - started)
    del flat

    # Brute-force recall sample: half planted queries (they hold the matches), half random.
    brute_n = min(n_queries, max(20, int(args.brute_budget / size)))
    brute_rows = np.sort(
        np.concatenate(
            [
                rng.choice(planted_rows, size=min(brute_n // 2, planted), replace=False),
                rng.choice(n_queries, size=brute_n - min(brute_n // 2, planted), replace=False),
            ]
        )
    )
    brute_rows = np.unique(brute_rows)
    brute_queries = np.ascontiguousarray(queries[brute_rows])
    truth = brute_force_search(entries, brute_queries, threshold)
    ours_brute = index.search(brute_queries, threshold)
    truth_pairs = set(zip(truth[0].tolist(), truth[1].tolist(), strict=True))
    ours_pairs = set(zip(ours_brute[0].tolist(), ours_brute[1].tolist(), strict=True))
    recall = len(truth_pairs & ours_pairs) / max(1, len(truth_pairs))

    # A wider threshold, where the index probes radius 3 in most chunks.
    wide = 40
    started = time.perf_counter()
    index.search(sample_queries, wide)
    wide_qps = flat_n / (time.perf_counter() - started)
    wide_truth = brute_force_search(entries, brute_queries, wide)
    wide_exact = same(index.search(brute_queries, wide), wide_truth)

    return {
        "size": size,
        "threshold": threshold,
        "queries": n_queries,
        "planted": planted,
        "threads_numba": numba.get_num_threads(),
        "threads_faiss": faiss.omp_get_max_threads(),
        "chunk_bits": index._bits,
        "strategy": index.plan(threshold)[0],
        "build_s": build_s,
        "index_mib": index.nbytes / 2**20,
        "rss_before_build_mib": rss_before,
        "rss_after_build_mib": rss_build,
        "first_call_s": first_call_s,
        "ours_qps": ours_qps,
        "matches": len(ours[0]),
        "flat_add_s": flat_add_s,
        "flat_sample": flat_n,
        "flat_qps": flat_qps,
        "ours_sample_qps": ours_sample_qps,
        "flat_exact": same(ours_sample, flat_result),
        "flat_matches": len(flat_result[0]),
        "brute_sample": len(brute_rows),
        "brute_truth": len(truth_pairs),
        "brute_exact": same(ours_brute, truth),
        "recall": recall,
        "wide_threshold": wide,
        "wide_qps": wide_qps,
        "wide_exact": wide_exact,
        "kernel_sample": kernel_n,
        "per_query_kernel_qps": kernels["query-by-query_qps"],
        "sorted_kernel_qps": kernels["sorted_qps"],
        "kernels_same": kernels_same,
        "shard_queries": len(shard_queries),
        "occupancy_fill": float(
            np.unpackbits(occupancy.view(np.uint8)).sum() / (occupancy.size * 64)
        ),
        "shard_bits_us": min(shard_cpu["bits"]) * 1e6,
        "shard_every_us": min(shard_cpu["every"]) * 1e6,
        "shard_same": same(shard_results["bits"], shard_results["every"]),
        "rss_end_mib": peak_rss_mib(),
    }


def report(result: dict) -> None:
    r = result
    print(
        f"== {r['size']:,} entries, {r['queries']:,} queries ({r['planted']:,} planted), "
        f"threshold {r['threshold']}, threads numba {r['threads_numba']} / faiss "
        f"{r['threads_faiss']}, {r['chunk_bits']}-bit chunks, strategy {r['strategy']}"
    )
    print(
        f"  build            {r['build_s']:8.2f} s   index {r['index_mib']:.0f} MiB   "
        f"peak RSS {r['rss_after_build_mib']:.0f} MiB after build "
        f"({r['rss_before_build_mib']:.0f} MiB before: interpreter, entries, queries)"
    )
    print(f"  first call       {r['first_call_s']:8.3f} s   (numba cache load; the occupancy bits)")
    print(
        f"  PDQIndex         {r['ours_qps']:10,.0f} queries/s  (all {r['queries']:,} queries, "
        f"{r['matches']:,} matches)"
    )
    print(
        f"  faiss Flat       {r['flat_qps']:10,.0f} queries/s  (sample of {r['flat_sample']:,}; "
        f"add {r['flat_add_s']:.2f} s)"
    )
    print(f"  PDQIndex sample  {r['ours_sample_qps']:10,.0f} queries/s  (the same sample)")
    print(
        f"  speed ratio      {r['ours_qps'] / r['flat_qps']:8.1f} x  all queries vs Flat sample; "
        f"{r['ours_sample_qps'] / r['flat_qps']:.1f} x on the same sample"
    )
    print(f"  exact vs Flat    {r['flat_exact']}  ({r['flat_matches']:,} matches in the sample)")
    print(
        f"  recall vs brute  {r['recall']:.6f}  exact {r['brute_exact']}  "
        f"({r['brute_sample']:,} queries, {r['brute_truth']:,} true matches)"
    )
    print(
        f"  threshold {r['wide_threshold']}     {r['wide_qps']:10,.0f} queries/s  "
        f"exact vs brute {r['wide_exact']}"
    )
    print(
        f"  MIH kernels      query-by-query {r['per_query_kernel_qps']:,.0f} queries/s, sorted "
        f"{r['sorted_kernel_qps']:,.0f} queries/s: "
        f"{r['sorted_kernel_qps'] / r['per_query_kernel_qps']:.2f} x on the same "
        f"{r['kernel_sample']:,} random queries; same pairs: {r['kernels_same']}"
    )
    print(
        f"  a shard's batch  {r['shard_bits_us']:.1f} us CPU a query with the occupancy bits, "
        f"{r['shard_every_us']:.1f} probing every bucket: "
        f"{r['shard_every_us'] / r['shard_bits_us']:.2f} x fewer CPU seconds "
        f"({r['shard_queries']:,} queries, {r['occupancy_fill']:.0%} of buckets hold entries); "
        f"same pairs: {r['shard_same']}"
    )
    print(f"  peak RSS at end  {r['rss_end_mib']:8.0f} MiB (with faiss's copy of the list)")
    sys.stdout.flush()


def child(args: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, check=True
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"child {args} printed no result:\n{completed.stdout}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1e4 and 1e5 entries, 2e4 queries")
    parser.add_argument("--sizes", default="1e5,1e6,1e7", help="list sizes, comma separated")
    parser.add_argument("--queries", type=float, default=1e6)
    parser.add_argument("--threshold", type=int, default=31)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--flat-budget", type=float, default=4e9, help="Flat sample = budget / size queries"
    )
    parser.add_argument(
        "--brute-budget", type=float, default=5e8, help="numpy brute-force sample = budget / size"
    )
    parser.add_argument(
        "--kernel-sample",
        type=float,
        default=2e5,
        help="queries each multi-index kernel searches in one batch, for their ratio",
    )
    parser.add_argument("--one-size", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.kernel_sample = "1e4,1e5", 2e4, 2e4
        args.flat_budget, args.brute_budget = 4e8, 5e7
    args.queries = int(args.queries)
    args.kernel_sample = int(args.kernel_sample)

    if args.compile:
        print(RESULT_PREFIX + json.dumps(measure_compile()))
        return
    if args.one_size:
        print(RESULT_PREFIX + json.dumps(run_size(args, int(args.one_size))))
        return

    passed = [
        f"--threshold={args.threshold}",
        f"--seed={args.seed}",
        f"--queries={args.queries}",
        f"--flat-budget={args.flat_budget}",
        f"--brute-budget={args.brute_budget}",
        f"--kernel-sample={args.kernel_sample}",
    ]
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
        compiled = child(["--compile"])
        del os.environ["NUMBA_CACHE_DIR"]
    # Again with numba's own cache, which this fills if the source changed since last time,
    # so that the timed runs below load the kernels rather than compile them.
    loaded = child(["--compile"])
    loaded = child(["--compile"])
    for name, times in (("compile (empty cache)", compiled), ("load (warm cache)", loaded)):
        print(
            f"numba {name}: build kernel {times['build']:.2f} s, search kernel "
            f"{times['mih']:.2f} s, brute-force kernel {times['brute']:.2f} s"
        )
    sys.stdout.flush()
    started = time.perf_counter()
    results = []
    for size in args.sizes.split(","):
        results.append(child([*passed, f"--one-size={size}"]))
        report(results[-1])
    print(f"total {time.perf_counter() - started:.0f} s")
    print(
        "size        build_s  peak_rss_MiB  ours_q/s   flat_q/s  ratio  exact  recall  "
        "sorted/query-by-query  occupancy bits (shard batch)"
    )
    for r in results:
        exact = r["flat_exact"] and r["brute_exact"] and r["wide_exact"] and r["kernels_same"]
        exact = exact and r["shard_same"]
        print(
            f"{r['size']:<11,} {r['build_s']:7.1f}  {r['rss_after_build_mib']:12.0f}  "
            f"{r['ours_qps']:8,.0f}  {r['flat_qps']:9,.0f}  {r['ours_qps'] / r['flat_qps']:5.1f}  "
            f"{exact!s:5}  {r['recall']:.4f}  "
            f"{r['sorted_kernel_qps'] / r['per_query_kernel_qps']:.2f} x"
            f"                 {r['shard_every_us'] / r['shard_bits_us']:.2f} x"
        )


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("match"):
        main()
