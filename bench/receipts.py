"""Benchmark the receipts library: tree build time and memory, proof size and speed.

For each size (default 1e6 and 1e7 leaves of random sorted SHA-256 values) it measures,
each build in a fresh child process so peaks do not mix:

* build time and peak memory for an in-memory build from an array (the caller holds the
  leaves) and for a streamed build straight to tree.bin;
* a same-run baseline: a plain ``hashlib.sha256(leaf).digest()`` loop over the same leaves
  (the least any Python build must do), and the build / baseline ratio;
* proof generation and verification time per proof (inclusion and non-inclusion, on the
  memory-mapped tree.bin), and proof sizes in JSON bytes.

Memory is the growth of the child's peak RSS (VmHWM, reset after the leaves are made)
beyond the leaves themselves; it is extrapolated linearly to 1e8 leaves. Run:

    python bench/receipts.py --in-memory [--sizes 1000000,10000000] [--out bench/out]

The default mode measures the out-of-core, parallel build (`clearset.runs.receipts`) at
scale, 1 worker against 2 (or --workers), in one run:

    python bench/receipts.py [--leaves 1e7] [--workers 1,2] [--dir /work/bench-receipts]

Leaves are synthetic: deterministic random 32-byte values made inside each extract task
(`RandomLeaves`, --shard-leaves a shard, --dup-every N makes every N-th value repeat one
from another shard), so no input set has to be stored beside the build; reading a
manifest's parquet is not part of the figures. The same-run baseline is a plain hashlib
pass over the same leaves (made the same way, then ``hashlib.sha256(leaf).digest()`` once
each) on the same engine at the same worker count, timed just before and just after the
build and averaged (both are printed); --baseline-leaves N times it over
the first N leaves only (per-leaf rate) when the whole set would take too long. Peak RSS
is the sum over the driver and its worker processes (sampled twice a second); peak
disk is what the build folder and tree file hold (st_blocks, sampled each second).
Proofs are made from the tree.bin on disk, verified against a statement.

Cold proofs (--cold-proofs N, default 200 in the out-of-core mode; 0 skips them): before
each proof the tree file's pages are dropped from the page cache (POSIX_FADV_DONTNEED,
no root needed for clean pages; mincore checks they are gone), then the tree is opened
and the proof made, timed together as `clearset prove` would run on a server that has
not touched the file. Each value is proved with the batched reader (the default) and
with the plain memory-mapped reads (``MerkleTree.open(..., batched=False)``), in turn, so
the two strategies share the disk's mood; warm figures (file in the page cache) beside
them. JSON sizes of proof versions 1 and 2 over the same values. To measure a tree.bin
that exists already, without building:

    python bench/receipts.py --proofs-only /tmp/proofs-bench/tree.bin [--cold-proofs 200]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clearset.receipts import (  # noqa: E402 - after the path tweak for a source tree
    MerkleTree,
    build_statement,
    proof_to_json,
    prove,
    statement_digest,
    verify_proof,
)
from clearset.stages.receipts import RandomLeaves  # noqa: E402

GIB = 1 << 30


def make_leaves(n: int, seed: int = 0) -> np.ndarray:
    """n random 32-byte values, sorted ascending (unique with overwhelming probability)."""
    values = np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)
    return np.ascontiguousarray(values[np.argsort(values.view("S32").ravel())])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def child(mode: str, n: int, tree_path: str) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    leaves = make_leaves(n)
    _reset_peak()
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    if mode == "memory":
        tree = MerkleTree.build(leaves)
    elif mode == "file":
        tree = MerkleTree.build(iter([leaves]), tree_path)
    else:  # baseline: one SHA-256 per leaf and nothing else
        sha256 = hashlib.sha256
        buffer = memoryview(leaves.tobytes())
        for offset in range(0, 32 * n, 32):
            sha256(buffer[offset : offset + 32]).digest()
        tree = None
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    print(
        json.dumps(
            {
                "mode": mode,
                "n": n,
                "seconds": seconds,
                "peak_growth_bytes": (peak - before) * 1024,
                "root": tree.root.hex() if tree else None,
            }
        )
    )


def run_child(mode: str, n: int, tree_path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(n), str(tree_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def proof_timings(tree_path: Path, count: int = 2000) -> dict:
    tree = MerkleTree.open(tree_path)
    statement = build_statement(
        dataset_name="bench",
        tree_size=tree.size,
        root=tree.root,
        source_name="bench",
        manifest_digest="ab" * 32,
        lists=[],
        scan_started="2024-01-01T00:00:00Z",
        scan_finished="2024-01-01T00:00:00Z",
        removed_count=0,
        removed_commitment="cd" * 32,
    )
    digest = statement_digest(statement)
    rng = np.random.default_rng(1)
    indices = rng.integers(0, tree.size, count)
    held = [tree.leaf(int(i)) for i in indices]
    absent = [bytes(v) for v in rng.integers(0, 256, (count, 32), dtype=np.uint8)]
    figures = {}
    for kind, values in (("inclusion", held), ("non-inclusion", absent)):
        start = time.perf_counter()
        proofs = [prove(tree, value, digest) for value in values]
        prove_us = (time.perf_counter() - start) / count * 1e6
        assert all(p["type"] == kind for p in proofs)
        start = time.perf_counter()
        for proof in proofs:
            verify_proof(proof, statement)
        verify_us = (time.perf_counter() - start) / count * 1e6
        sizes = [len(proof_to_json(p).encode()) for p in proofs]
        figures[kind] = {
            "prove_us": prove_us,
            "verify_us": verify_us,
            "json_bytes_mean": sum(sizes) / len(sizes),
            "json_bytes_max": max(sizes),
        }
    start = time.perf_counter()
    for i in indices:
        tree.inclusion_proof(int(i))
    figures["inclusion_path_only_us"] = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    for value in held:
        hashlib.sha256(value).digest()
    figures["baseline_one_sha256_us"] = (time.perf_counter() - start) / count * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-memory", action="store_true", help="the single-process builds")
    parser.add_argument("--sizes", default="1000000,10000000", help="with --in-memory")
    parser.add_argument("--leaves", type=float, default=1e7, help="leaves of the scaled build")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--dir", default="/tmp/bench-receipts", help="scratch for the build")
    parser.add_argument("--shard-leaves", type=float, default=1 << 22)
    parser.add_argument("--dup-every", type=int, default=0)
    parser.add_argument("--baseline-leaves", type=float, default=0)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument(
        "--cold-proofs",
        type=int,
        default=200,
        help="values proved on cold pages (out-of-core mode; 0: none)",
    )
    parser.add_argument(
        "--proofs-only", metavar="TREE", help="only the proof figures, from this existing tree.bin"
    )
    parser.add_argument("--progress", action="store_true", help="progress lines of the build")
    parser.add_argument("--out", default="bench/out", help="folder for the JSON results")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "N", "TREE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    if args.proofs_only:
        figures = cold_proof_timings(Path(args.proofs_only), args.cold_proofs or 200)
        print_cold(figures)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = f"receipts-proofs-{figures['leaves']}.json"
        (out / name).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {out / name}")
        return
    if not args.in_memory:
        scaled(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in (int(float(s)) for s in args.sizes.split(",")):
            tree_path = Path(scratch) / f"tree-{n}.bin"
            base = run_child("baseline", n, tree_path)
            memory = run_child("memory", n, tree_path)
            streamed = run_child("file", n, tree_path)
            assert memory["root"] == streamed["root"]
            proofs = proof_timings(tree_path)
            file_bytes = tree_path.stat().st_size
            result = {
                "n": n,
                "baseline": base,
                "memory": memory,
                "file": streamed,
                "tree_bin_bytes": file_bytes,
                "proofs": proofs,
            }
            results.append(result)
            print(f"\n== {n:,} leaves ==")
            print(f"baseline hashlib loop (1 sha256/leaf): {base['seconds']:.2f} s")
            for label, row in (("in-memory build", memory), ("streamed to tree.bin", streamed)):
                print(
                    f"{label:<22} {row['seconds']:.2f} s  "
                    f"({row['seconds'] / base['seconds']:.2f}x baseline, "
                    f"{row['seconds'] / n * 1e9:.0f} ns/leaf)  "
                    f"peak growth {row['peak_growth_bytes'] / 2**20:.1f} MiB "
                    f"= {row['peak_growth_bytes'] / n:.2f} B/leaf beyond the leaves"
                )
            print(f"tree.bin: {file_bytes / 2**20:.1f} MiB = {file_bytes / n:.2f} B/leaf")
            for kind in ("inclusion", "non-inclusion"):
                row = proofs[kind]
                print(
                    f"{kind:<14} prove {row['prove_us']:.1f} us  verify {row['verify_us']:.1f} us"
                    f"  json {row['json_bytes_mean']:.0f} B mean, {row['json_bytes_max']} B max"
                )
            print(
                f"inclusion path alone {proofs['inclusion_path_only_us']:.1f} us; "
                f"one hashlib sha256 {proofs['baseline_one_sha256_us']:.2f} us "
                f"(verify/sha256 = "
                f"{proofs['inclusion']['verify_us'] / proofs['baseline_one_sha256_us']:.0f}x)"
            )
    big, small = results[-1], results[0]

    def fit(mode: str) -> tuple[float, float]:
        """Peak growth = fixed + per_leaf * n, through the smallest and largest sizes."""
        if big["n"] == small["n"]:
            return 0.0, big[mode]["peak_growth_bytes"] / big["n"]
        per_leaf = (big[mode]["peak_growth_bytes"] - small[mode]["peak_growth_bytes"]) / (
            big["n"] - small["n"]
        )
        return big[mode]["peak_growth_bytes"] - per_leaf * big["n"], per_leaf

    print("\n== extrapolation to 1e8 leaves (peak = fixed + per_leaf * n, fitted) ==")
    fixed, per_leaf = fit("memory")
    print(
        f"in-memory build: 32 B/leaf (the caller's leaves) + {per_leaf:.2f} B/leaf * n "
        f"+ {fixed / 2**20:.0f} MiB = {(32 * 1e8 + per_leaf * 1e8 + fixed) / GIB:.2f} GiB"
    )
    fixed, per_leaf = fit("file")
    print(
        f"streamed build:  {per_leaf:.2f} B/leaf * n + {fixed / 2**20:.0f} MiB (leaves go "
        f"to disk) = {(per_leaf * 1e8 + fixed) / GIB:.2f} GiB; tree.bin on disk "
        f"{big['tree_bin_bytes'] / big['n'] * 1e8 / GIB:.2f} GiB"
    )
    seconds = big["memory"]["seconds"] / big["n"] * 1e8
    print(f"build time at 1e8 (one core): about {seconds / 60:.0f} min")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "receipts.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out / 'receipts.json'}")


# --- the out-of-core, parallel build -------------------------------------------------


def baseline_task(source: RandomLeaves) -> int:
    """The least a build must do: make the leaves, then one SHA-256 each."""
    leaves = source.read()
    sha256 = hashlib.sha256
    buffer = memoryview(leaves.tobytes())
    for offset in range(0, len(buffer), 32):
        sha256(buffer[offset : offset + 32]).digest()
    return len(leaves)


def timed_tasks(engine, tasks) -> float:
    """Seconds the engine takes to run ``tasks``."""
    from clearset.progress import Meter
    from clearset.runs.tasks import run_tasks

    start = time.perf_counter()
    run_tasks(engine, tasks, Meter(len(tasks), 0, False, None), retries=0)
    return time.perf_counter() - start


def _tree_rss_bytes(root: int) -> int:
    """RSS of process ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    family, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        family.update(frontier)
    total = 0
    for pid in family:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf(
                "SC_PAGE_SIZE"
            )
        except (OSError, ValueError, IndexError):
            continue
    return total


def _disk_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


class Peaks:
    """Samples the process tree's RSS and the scratch folder's disk use in a thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rss = 0
        self.disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.5):
            self.rss = max(self.rss, _tree_rss_bytes(os.getpid()))
            tick += 1
            if tick % 2 == 0:
                self.disk = max(self.disk, _disk_bytes(self.folder))


def proof_inputs(tree: MerkleTree, count: int, seed: int) -> tuple[dict, str, list, list]:
    """A statement for ``tree``, its digest, ``count`` values the tree holds and ``count``
    random ones (almost surely absent)."""
    statement = build_statement(
        dataset_name="bench", tree_size=tree.size, root=tree.root, source_name="bench",
        manifest_digest="ab" * 32, lists=[], scan_started="2024-01-01T00:00:00Z",
        scan_finished="2024-01-01T00:00:00Z", removed_count=0, removed_commitment="cd" * 32,
    )  # fmt: skip
    digest = statement_digest(statement)
    rng = np.random.default_rng(seed)
    held = [tree.leaf(int(i)) for i in rng.integers(0, tree.size, count)]
    absent = [bytes(v) for v in rng.integers(0, 256, (count, 32), dtype=np.uint8)]
    return statement, digest, held, absent


def _proofs(tree_path: Path, count: int) -> dict:
    tree = MerkleTree.open(tree_path)
    statement, digest, held, absent = proof_inputs(tree, count, seed=1)
    figures = {}
    for kind, values in (("inclusion", held), ("non-inclusion", absent)):
        times, proofs = [], []
        for value in values:
            start = time.perf_counter()
            proofs.append(prove(tree, value, digest))
            times.append(time.perf_counter() - start)
        assert all(p["type"] == kind for p in proofs)
        start = time.perf_counter()
        for proof in proofs:
            verify_proof(proof, statement)
        verify_ms = (time.perf_counter() - start) / count * 1e3
        sizes = [len(proof_to_json(p).encode()) for p in proofs]
        figures[kind] = {
            "binary_bytes_max": max(_binary_size(p) for p in proofs),
            "prove_ms_mean": float(np.mean(times)) * 1e3,
            "prove_ms_max": float(np.max(times)) * 1e3,
            "verify_ms": verify_ms,
            "json_bytes_max": max(sizes),
        }
    return figures


def _binary_size(proof: object) -> int:
    """The proof's content packed: 32 bytes a hash, 8 an integer (JSON spells them out)."""
    if isinstance(proof, dict):
        return sum(_binary_size(value) for value in proof.values())
    if isinstance(proof, list):
        return sum(_binary_size(value) for value in proof)
    if isinstance(proof, str):
        return 32 if len(proof) == 64 else len(proof)
    return 8


_libc = ctypes.CDLL(None, use_errno=True)
_PAGE = mmap.PAGESIZE


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _resident_pages(path: Path) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages in all), by mincore(2) on a fresh map
    (mapping touches no page, so it does not change the answer)."""
    size = path.stat().st_size
    with open(path, "rb") as source:
        mapped = np.memmap(source, dtype=np.uint8, mode="r", shape=(size,))
        pages = -(-size // _PAGE)
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.c_void_p(mapped.ctypes.data)
        if _libc.mincore(address, ctypes.c_size_t(size), vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident = int(np.count_nonzero(np.frombuffer(vector, np.uint8) & 1))
        del mapped
    return resident, pages


def _summary(times: list[float]) -> dict:
    ms = np.array(times) * 1e3
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.median(ms)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}  # fmt: skip


def cold_proof_timings(tree_path: Path, count: int) -> dict:
    """Proofs from tree.bin on cold and warm pages, batched reader against mapped reads."""
    tree = MerkleTree.open(tree_path)
    statement, digest, held, absent = proof_inputs(tree, count, seed=2)
    del tree
    figures: dict = {"leaves": MerkleTree.open(tree_path).size,
                     "tree_bin_bytes": tree_path.stat().st_size, "count": count}  # fmt: skip
    # Are the pages really gone? Check after the drop, a few times over the run.
    leftovers = []
    for kind, values in (("inclusion", held), ("non-inclusion", absent)):
        times: dict[str, list[float]] = {"cold_batched": [], "cold_mapped": [],
                                         "warm_batched": [], "warm_mapped": []}  # fmt: skip
        proofs = []
        for number, value in enumerate(values):
            for batched in (True, False):
                _drop_cache(tree_path)
                if number % 50 == 0 and batched:
                    leftovers.append(_resident_pages(tree_path)[0])
                start = time.perf_counter()
                cold_tree = MerkleTree.open(tree_path, batched=batched)
                proof = prove(cold_tree, value, digest)
                times["cold_batched" if batched else "cold_mapped"].append(
                    time.perf_counter() - start
                )
                del cold_tree  # unmaps: pages a map holds cannot be dropped
                if batched:
                    proofs.append(proof)
        assert all(p["type"] == kind for p in proofs)
        for batched in (True, False):
            warm_tree = MerkleTree.open(tree_path, batched=batched)
            for value in values:  # once to load the pages, then timed
                prove(warm_tree, value, digest)
            for value in values:
                start = time.perf_counter()
                prove(warm_tree, value, digest)
                times["warm_batched" if batched else "warm_mapped"].append(
                    time.perf_counter() - start
                )
            del warm_tree
        verify_times = []
        verify_proof(proofs[0], statement)  # the first call pays for imports and caches
        for proof in proofs:
            start = time.perf_counter()
            verify_proof(proof, statement)
            verify_times.append(time.perf_counter() - start)
        warm_tree = MerkleTree.open(tree_path)
        sizes = {}
        for version in (1, 2):
            lengths = [len(proof_to_json(prove(warm_tree, v, digest, version=version)).encode())
                       for v in values]  # fmt: skip
            sizes[f"v{version}"] = {"mean": float(np.mean(lengths)),
                                    "p99": float(np.percentile(lengths, 99)),
                                    "max": max(lengths)}  # fmt: skip
        if kind == "non-inclusion":
            lengths = [len(proof_to_json(p).encode()) for p in proofs]
            sizes["v2_within_2048"] = sum(n <= 2048 for n in lengths) / len(lengths)
        del warm_tree
        figures[kind] = {name: _summary(t) for name, t in times.items()}
        figures[kind]["verify"] = _summary(verify_times)
        figures[kind]["json_bytes"] = sizes
        figures[kind]["cold_mapped_over_batched_mean"] = (
            figures[kind]["cold_mapped"]["mean_ms"] / figures[kind]["cold_batched"]["mean_ms"]
        )
    figures["resident_pages_after_drop_max"] = max(leftovers)
    figures["load_average"] = os.getloadavg()
    figures["pages"] = _resident_pages(tree_path)[1]
    return figures


def print_cold(figures: dict) -> None:
    print(f"== proofs from tree.bin, {figures['leaves']:,} leaves "
          f"({figures['tree_bin_bytes'] / 1e9:.2f} GB), {figures['count']} values each; cold = "
          f"page cache dropped before each, at most {figures['resident_pages_after_drop_max']}"
          f" of {figures['pages']:,} pages left resident (mincore); load average "
          f"{figures['load_average'][0]:.1f} ==", flush=True)  # fmt: skip
    for kind in ("inclusion", "non-inclusion"):
        row = figures[kind]
        for name in ("cold_batched", "cold_mapped", "warm_batched", "warm_mapped", "verify"):
            cell = row[name]
            print(f"{kind:<14} {name:<13} mean {cell['mean_ms']:7.2f} ms  p50 "
                  f"{cell['p50_ms']:7.2f} ms  p99 "
                  f"{cell['p99_ms']:7.2f} ms  max {cell['max_ms']:7.2f} ms")  # fmt: skip
        sizes = row["json_bytes"]
        print(f"{kind:<14} cold: mapped reads {row['cold_mapped_over_batched_mean']:.1f}x the "
              f"batched reader's time; JSON v1 {sizes['v1']['mean']:.0f} B mean / "
              f"{sizes['v1']['max']} max, v2 {sizes['v2']['mean']:.0f} B mean / "
              f"{sizes['v2']['p99']:.0f} p99 / {sizes['v2']['max']} max"
              + (f"; v2 within 2,048 B: {sizes['v2_within_2048']:.1%}"
                 if "v2_within_2048" in sizes else ""), flush=True)  # fmt: skip


def scaled(args: argparse.Namespace) -> None:
    from clearset.engines.base import Task
    from clearset.engines.local import LocalEngine
    from clearset.runs.receipts import build_tree

    n = int(args.leaves)
    shard = int(args.shard_leaves)
    sources = [
        RandomLeaves(1000 + i, min(shard, n - start), args.dup_every, 999 + i if i else -1)
        for i, start in enumerate(range(0, n, shard))
    ]
    sample_leaves = int(args.baseline_leaves) or n
    sample = []
    for source in sources:
        if sum(s.count for s in sample) >= sample_leaves:
            break
        sample.append(source)
    scratch = Path(args.dir)
    scratch.mkdir(parents=True, exist_ok=True)
    tree_path = scratch / "tree.bin"
    results: dict = {"leaves": n, "shard_leaves": shard, "dup_every": args.dup_every, "runs": []}
    roots = set()
    print(f"== out-of-core build over {n:,} synthetic leaves ({len(sources)} shards) ==",
          flush=True)  # fmt: skip
    from clearset.receipts import batch_sha

    results["hashing"] = (
        f"native loop over {batch_sha.libcrypto_path()}"
        if batch_sha.native_available()
        else "hashlib (no shared libcrypto, or CLEARSET_HASHLIB_ONLY=1)"
    )
    print(f"hashing: {results['hashing']}", flush=True)
    for workers in (int(w) for w in args.workers.split(",")):
        engine = LocalEngine(workers)
        tasks = [Task(str(i), str(i), baseline_task, (s,)) for i, s in enumerate(sample)]
        # The baseline is timed before and after the build and averaged, so a change of
        # load on a shared machine during the run moves both sides of the ratio alike.
        before = timed_tasks(engine, tasks)
        with Peaks(scratch) as peaks:
            start = time.perf_counter()
            tree = build_tree(
                sources, tree_path, scratch / "build", engine=engine, show_progress=args.progress
            )
            seconds = time.perf_counter() - start
        after = timed_tasks(engine, tasks)
        base_seconds = (before + after) / 2
        base_leaves = sum(s.count for s in sample)
        roots.add(tree.root)
        row = {
            "workers": workers,
            "seconds": seconds,
            "ns_per_leaf": seconds / n * 1e9,
            "baseline_seconds": base_seconds,
            "baseline_seconds_before_after": [before, after],
            "baseline_leaves": base_leaves,
            "baseline_ns_per_leaf": base_seconds / base_leaves * 1e9,
            "peak_rss_bytes": peaks.rss,
            "peak_disk_bytes": peaks.disk,
            "tree_bin_bytes": tree_path.stat().st_size,
            "size": tree.size,
            "root": tree.root.hex(),
        }
        row["vs_baseline"] = row["ns_per_leaf"] / row["baseline_ns_per_leaf"]
        results["runs"].append(row)
        print(
            f"{workers} worker(s): build {seconds:.1f} s = {row['ns_per_leaf']:.0f} ns/leaf; "
            f"hashlib baseline {row['baseline_ns_per_leaf']:.0f} ns/leaf over "
            f"{base_leaves:,} leaves (before {before / base_leaves * 1e9:.0f}, after "
            f"{after / base_leaves * 1e9:.0f}) -> {row['vs_baseline']:.2f}x baseline; "
            f"peak RSS {peaks.rss / GIB:.2f} GiB; peak disk {peaks.disk / 1e9:.1f} GB; "
            f"tree.bin {row['tree_bin_bytes'] / 1e9:.1f} GB ({row['tree_bin_bytes'] / n:.2f} "
            f"B/leaf); {tree.size:,} unique leaves",
            flush=True,
        )
        del tree
    assert len(roots) == 1, "worker counts gave different roots"
    if n <= 10_000_000:
        reference = np.concatenate([s.read() for s in sources])
        from clearset.lists.model import sort_unique

        assert MerkleTree.build(sort_unique(reference)[0]).root in roots
        print("root equals the in-memory builder's", flush=True)
    runs = results["runs"]
    if len(runs) > 1:
        print(f"{runs[-1]['workers']} vs {runs[0]['workers']} workers: "
              f"{runs[0]['seconds'] / runs[-1]['seconds']:.2f}x faster", flush=True)  # fmt: skip
    proofs = _proofs(tree_path, args.proofs)
    results["proofs"] = proofs
    for kind in ("inclusion", "non-inclusion"):
        row = proofs[kind]
        print(f"{kind:<14} prove {row['prove_ms_mean']:.2f} ms mean, {row['prove_ms_max']:.1f} "
              f"ms max from disk; verify {row['verify_ms']:.3f} ms; json "
              f"{row['json_bytes_max']} B max ({row['binary_bytes_max']} B packed)",
              flush=True)  # fmt: skip
    if args.cold_proofs:
        results["cold_proofs"] = cold_proof_timings(tree_path, args.cold_proofs)
        print_cold(results["cold_proofs"])
    best = min(runs, key=lambda r: r["seconds"] * r["workers"])
    core_seconds_per_leaf = best["seconds"] * best["workers"] / n
    laion = 5.85e9 * core_seconds_per_leaf
    results["laion_core_hours"] = laion / 3600
    print(f"per-core rate {1 / core_seconds_per_leaf / 1e6:.2f} M leaves/s -> LAION-5B "
          f"(5.85e9): {laion / 3600:.1f} core-hours; {laion / 100 / 60:.1f} min on 100 "
          f"cores, {laion / 1000 / 60:.1f} min on 1,000 (if it scaled perfectly)",
          flush=True)  # fmt: skip
    tree_path.unlink(missing_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"receipts-scale-{n}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / f'receipts-scale-{n}.json'}")


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("receipts"):
        main()
