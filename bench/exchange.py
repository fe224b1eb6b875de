"""Benchmark (issue 24): a list holder's side of the hash exchange.

    PYTHONPATH=. python bench/exchange.py                       # the issue's figures
    PYTHONPATH=. python bench/exchange.py --scale 1e6           # a quick run, both parts
    PYTHONPATH=. python bench/exchange.py --part holder --holder-scale 1e8

Part **holder**: a holder's list of N random PDQ entries (Safer holds 57 M; default
N = 10^8), taken the way `clearset scan/match/exchange answer` take a list: sorted and
de-duplicated (`lists.model.sort_unique`), digested (`list_digest`), then saved once per
machine by `matching.shared.save_matcher` (the entries and the PDQ index built straight
into the files that every worker then maps). Reported: the time of each step, the peak
RSS of that building process (anonymous and file-backed), the size of the saved folder
(the one copy per machine; goal <= 8 GiB), and for a worker process that maps it
(`open_matcher`): its RSS, queries per second at the default threshold (random queries,
and planted near-duplicates at distances 0..31), and exact recall against the
brute-force kernel on a sample of planted queries (every pair within the threshold found,
nothing else).

Part **exchange**: a run whose manifest holds N PDQ rows (default 10^7) matched against a
list of N PDQ entries twice, in the same run: by `clearset match RUN --list LIST` and by
`clearset exchange request RUN --out REQ --hash pdq` then `clearset exchange answer REQ
--list LIST --key KEY --out ANS`: each command's time and peak RSS (its largest process,
from wait4), their ratio (goal <= 1.3x), and the request's bytes per row. Skipped, with a
line saying so, where this clearset has no `exchange` command.

The run folder is made cheaply and honestly: a real `clearset scan` of a small benign
WebDataset (one demo image per shard, `--shards` shards), whose manifest files are then
replaced by rows in clearset's own manifest schema (`manifest.conform`: key, shard,
position, member, random SHA-256/MD5/PDQ of quality 100, status ok) and whose completion
markers are rewritten to match (rows, samples, status, the file's SHA-256); run.json's
counts are summarised again from them. 1,000 rows are planted near list entries (0..31
bits), so both sides find matches. All hashes are random bytes: benign by construction.

Figures on a shared 2-core machine vary with what else runs: each part reports its
baseline from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.docs_block import write_docs_block  # noqa: E402

THRESHOLD = 31  # clearset's default PDQ threshold (clearset.settings.PDQ_MATCH_THRESHOLD)
CHUNK = 1 << 22  # rows generated per numpy call
GIB = 1 << 30
PLANTED = 1000


def _scale(text: str) -> int:
    return int(float(text))


def _status() -> dict[str, int]:
    """This process's memory from /proc/self/status, in bytes."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            found[name] = int(value.split()[0]) * 1024
    return found


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def random_pdqs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.empty((n, 32), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        rows[start:stop] = rng.integers(0, 256, (stop - start, 32), dtype=np.uint8)
    return rows


def near(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copies of `rows` with (row number % 32) random bits flipped: distances 0..31."""
    rng = np.random.default_rng(seed)
    out = rows.copy()
    bits = np.unpackbits(out, axis=1)
    distances = np.arange(len(rows)) % 32
    for i, d in enumerate(distances):
        flip = rng.choice(256, size=d, replace=False)
        bits[i, flip] ^= 1
    return np.packbits(bits, axis=1), distances


# ------------------------------------------------------------------ part 1: the holder


def holder(n: int, workdir: Path, queries: int, sample: int) -> None:
    from clearset.lists.model import HashList, ListIdentity, list_digest, sort_unique
    from clearset.matching.matcher import Matcher, MatchSettings
    from clearset.matching.shared import save_matcher

    print(f"holder: a list of {n:,} random PDQ entries (threshold {THRESHOLD})")
    times: dict[str, float] = {}
    start = time.perf_counter()
    entries = random_pdqs(n, seed=24)
    times["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    entries, repeats = sort_unique(entries)
    times["sort and de-duplicate"] = time.perf_counter() - start
    start = time.perf_counter()
    digest = list_digest("pdq", entries)
    times["digest"] = time.perf_counter() - start
    after_load = _status()
    identity = ListIdentity("bench-holder", None, digest, "pdq", len(entries), "random")
    hash_list = HashList(identity=identity, hashes=entries, duplicates_folded=repeats)
    folder = workdir / "list-index"
    start = time.perf_counter()
    save_matcher(Matcher([hash_list], MatchSettings()), folder)
    times["build the index and save it (save_matcher)"] = time.perf_counter() - start
    built = _status()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    for what, seconds in times.items():
        print(f"  {what}: {seconds:.1f} s")
    print(f"  build total: {sum(t for k, t in times.items() if k != 'generate'):.1f} s")
    print(
        f"  builder peak RSS {_gib(peak)}: loading the list (sort, de-duplicate, digest) "
        f"peaked at {_gib(after_load['VmHWM'])} and left {_gib(after_load['RssAnon'])} "
        f"anonymous; after the build: anonymous {_gib(built['RssAnon'])}, file-backed "
        f"{_gib(built['RssFile'])} (the index files it wrote, mapped)"
    )
    print(f"  the one copy per machine (the saved folder): {_gib(on_disk)} (goal <= 8 GiB)")
    pick = np.random.default_rng(7).choice(len(entries), size=sample, replace=False)
    planted, distances = near(np.asarray(entries[pick]), seed=8)
    np.save(workdir / "planted.npy", planted)
    np.save(workdir / "planted-rows.npy", pick)
    del entries, hash_list
    proc = subprocess.run(
        [sys.executable, __file__, "_worker", str(folder), str(workdir), str(queries)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{proc.stderr}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  worker (open_matcher, mapped): open {got['open_s'] * 1000:.0f} ms; RSS after "
        f"{queries:,} random queries: anonymous {_gib(got['after_queries']['RssAnon'])}, "
        f"file-backed {_gib(got['after_queries']['RssFile'])} (shared page cache)"
    )
    print(
        f"  queries/s at threshold {THRESHOLD}: {got['random_qps']:,.0f} (random queries, "
        f"first pass on cold pages {got['cold_qps']:,.0f}); planted near-duplicates "
        f"{got['planted_qps']:,.0f}"
    )
    print(
        f"  exact recall on {sample:,} planted queries (distances 0..31) against the "
        f"brute-force kernel: {got['recall']:.4f} ({got['pairs']:,} pairs, "
        f"{got['extra']:,} extra; every planted entry found: {got['planted_found']}); "
        f"brute force took {got['brute_s']:.1f} s"
    )
    print(f"  worker peak RSS (brute force included: it reads every entry) {_gib(got['peak'])}")


def _worker(folder: str, workdir: str, queries: int) -> None:
    from clearset.matching.pdq_index import PDQIndex
    from clearset.matching.shared import open_matcher

    start = time.perf_counter()
    matcher = open_matcher(Path(folder))
    index: PDQIndex = matcher._indexes[0]
    opened = time.perf_counter() - start
    index.search(random_pdqs(64, seed=1), THRESHOLD)  # compile the kernels
    asked = random_pdqs(queries, seed=99)
    start = time.perf_counter()
    index.search(asked, THRESHOLD)
    cold = queries / (time.perf_counter() - start)
    start = time.perf_counter()
    index.search(asked, THRESHOLD)
    warm = queries / (time.perf_counter() - start)
    after = _status()
    planted = np.load(Path(workdir) / "planted.npy")
    rows = np.load(Path(workdir) / "planted-rows.npy")
    start = time.perf_counter()
    q, e, d = index.search(planted, THRESHOLD)
    planted_qps = len(planted) / (time.perf_counter() - start)
    start = time.perf_counter()
    counts = np.zeros(len(planted), dtype=np.int64) + 64
    found, brute_rows, brute_d = index._run_kernel(
        planted.view(np.uint64), THRESHOLD, "brute", np.empty(0, np.int64), counts
    )
    brute_s = time.perf_counter() - start
    brute = set()
    for query in range(len(planted)):
        for slot in range(min(int(found[query]), 64)):
            brute.add((query, int(brute_rows[query * 64 + slot])))
    fast = set(zip(q.tolist(), e.tolist(), strict=True))
    hit = len(brute & fast)
    result = {
        "open_s": opened,
        "cold_qps": cold,
        "random_qps": warm,
        "planted_qps": planted_qps,
        "after_queries": after,
        "recall": hit / max(1, len(brute)),
        "pairs": len(brute),
        "extra": len(fast - brute),
        "planted_found": all((i, int(r)) in fast for i, r in enumerate(rows)),
        "brute_s": brute_s,
        "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(result))


# ------------------------------------------------------------------ part 2: the exchange


def _clearset(*args: str, **kwargs: object) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run `clearset ARGS`; (seconds, peak RSS in bytes of its largest process, result)."""
    env = {**os.environ, "CLEARSET_PROGRESS_INTERVAL": "3600"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clearset.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return seconds, usage.ru_maxrss * 1024, done


def synth_run(root: Path, n: int, shards: int, list_rows: np.ndarray) -> Path:
    """A run folder whose manifest holds `n` PDQ rows (see the module's docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clearset.demo import demo_items, write_webdataset
    from clearset.manifest import conform
    from clearset.runfolder import RunFolder, file_sha256
    from clearset.runs.scan import summarise_markers

    source = root / "source"
    whole = [item for item in demo_items(count=shards * 2) if item.broken is None]
    write_webdataset(source, whole[:shards], shard_size=1)
    run = root / "run"
    _, _, proc = _clearset("scan", str(source), "--out", str(run), "--no-progress")
    if proc.returncode != 0:
        raise SystemExit(f"scan failed: {proc.stderr}")
    folder = RunFolder(run)
    markers = folder.done_markers()
    rng = np.random.default_rng(5)
    planted, _ = near(list_rows[rng.choice(len(list_rows), PLANTED, replace=False)], seed=6)
    per_shard = np.array_split(np.arange(n), len(markers))
    for number, (marker, rows) in enumerate(zip(markers, per_shard, strict=True)):
        count = len(rows)
        pdq = random_pdqs(count, seed=1000 + number)
        if number == 0:
            pdq[: min(PLANTED, count)] = planted[: min(PLANTED, count)]
        keys = [f"{number:05d}-{r:010d}" for r in range(count)]
        table = pa.table(
            {
                "key": keys,
                "shard": [marker["shard"]] * count,
                "position": pa.array(np.arange(count, dtype=np.int64)),
                "member": [f"{k}.jpg" for k in keys],
                "sha256": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(32), count, [None, pa.py_buffer(rng.bytes(32 * count))]
                ),
                "pdq": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(32), count, [None, pa.py_buffer(pdq.tobytes())]
                ),
                "pdq_quality": pa.array(np.full(count, 100, dtype=np.int16)),
                "status": ["ok"] * count,
            }
        )
        table = conform(table)
        path = folder.manifest_file(marker["shard_id"])
        pq.write_table(table, path, compression="zstd")
        done = json.loads(folder.done_file(marker["shard_id"]).read_text())
        done.update(
            rows=count,
            samples=count,
            status={"ok": count},
            by_status={"ok": {"": count}},
            account={"hashed": {"": count}},
            reasons={},
            manifest_sha256=file_sha256(path),
        )
        folder.done_file(marker["shard_id"]).write_text(json.dumps(done, indent=2))
    info = folder.read_info()
    counts = summarise_markers(folder)
    counts.pop("account", None)
    info["counts"] = counts
    folder.write_info(info)
    return run


def exchange(n: int, workdir: Path, shards: int, workers: int) -> None:
    print(f"exchange: a request of {n:,} PDQ rows against a list of {n:,} PDQ entries")
    has_exchange = _clearset("exchange", "--help")[2].returncode == 0
    list_rows = random_pdqs(n, seed=42)
    list_path = workdir / "holder-pdq.txt"
    with list_path.open("w") as handle:
        for start in range(0, n, CHUNK):
            block = list_rows[start : start + CHUNK]
            handle.write("\n".join(bytes(row).hex() for row in block) + "\n")
    start = time.perf_counter()
    run = synth_run(workdir, n, shards, list_rows)
    print(f"  synthesised the run folder ({shards} shards) in {time.perf_counter() - start:.0f} s")
    del list_rows
    seconds, peak, proc = _clearset(
        "match",
        str(run),
        "--list",
        f"{list_path},type=pdq",
        "--workers",
        str(workers),
        "--no-progress",
    )
    if proc.returncode != 0:
        raise SystemExit(f"clearset match failed: {proc.stderr}")
    matched = json.loads((run / "run.json").read_text())["counts"]["matches"]["rows"]
    print(f"  clearset match (baseline): {seconds:.1f} s, peak RSS {_gib(peak)} "
          f"({workers} workers; {matched:,} match rows, {PLANTED:,} planted)")  # fmt: skip
    if not has_exchange:
        print(
            "  exchange: skipped: this clearset has no `clearset exchange` command "
            "(issue 24 points 1-5); run this script again where it has"
        )
        return
    keys = workdir / "keys"
    _clearset("keygen", str(keys))
    request = workdir / "request"
    req_s, req_peak, proc = _clearset("exchange", "request", str(run), "--out", str(request),
                                      "--hash", "pdq")  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"clearset exchange request failed: {proc.stderr}")
    size = (
        sum(p.stat().st_size for p in request.rglob("*") if p.is_file())
        if request.is_dir()
        else request.stat().st_size
    )
    print(f"  exchange request: {req_s:.1f} s, peak RSS {_gib(req_peak)}, "
          f"{size / n:.1f} bytes per request row ({size / 1e6:,.0f} MB)")  # fmt: skip
    answer = workdir / "answer"
    ans_s, ans_peak, proc = _clearset(
        "exchange", "answer", str(request), "--list", f"{list_path},type=pdq",
        "--key", str(keys / "clearset.key"), "--out", str(answer),
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"clearset exchange answer failed: {proc.stderr}")
    print(f"  exchange answer: {ans_s:.1f} s, peak RSS {_gib(ans_peak)}")
    print(
        f"  answer / match: time {ans_s / seconds:.2f}x, peak memory {ans_peak / peak:.2f}x "
        "(goal <= 1.3x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=_scale, help="N for both parts (e.g. 1e6)")
    parser.add_argument("--holder-scale", type=_scale, default=100_000_000)
    parser.add_argument("--exchange-scale", type=_scale, default=10_000_000)
    parser.add_argument("--part", choices=("holder", "exchange", "both"), default="both")
    parser.add_argument("--queries", type=_scale, default=100_000)
    parser.add_argument("--sample", type=int, default=64, help="planted queries checked")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.scale is not None:
        args.holder_scale = args.exchange_scale = args.scale
    workdir = Path(tempfile.mkdtemp(prefix="bench-exchange-", dir=args.dir))
    print(f"{os.cpu_count()} cores; figures from a shared machine (see docs/benchmarks.md)")
    try:
        if args.part in ("holder", "both"):
            (workdir / "holder").mkdir()
            holder(args.holder_scale, workdir / "holder", args.queries, args.sample)
            shutil.rmtree(workdir / "holder")
        if args.part in ("exchange", "both"):
            (workdir / "exchange").mkdir()
            exchange(args.exchange_scale, workdir / "exchange", args.shards, args.workers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        with write_docs_block("exchange"):
            main()
