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

    python bench/receipts.py [--sizes 1000000,10000000] [--out bench/out]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
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
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--out", default="bench/out", help="folder for the JSON results")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "N", "TREE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
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


if __name__ == "__main__":
    main()
