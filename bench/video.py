"""Video: clearset's vPDQ hashing against Meta's `vpdq` on the same videos, and Meta's
match rule on the PDQ index at list scale.

Hashing: benign procedural videos (tests/test_video.py's scenes, h264 in mp4), hashed by
`clearset.hashing.video.hash_video` (PyAV, from memory) and by `vpdq.computeHash` (from a
file, as it must), in the same run. Speed is decoded frames per CPU-second (both decode
every frame and hash one a second), so threads do not flatter either; accuracy is the
Hamming distance between the two hashes of each frame of quality >= 50.

Matching: a list of `--list-frames` random frame hashes in videos of `--frames-per-video`
frames, and `--videos` query videos of as many frames, a tenth of them noisy copies
(up to 12 bits flipped a frame) of listed videos. `VpdqIndex` (one `PDQIndex`
over the list's frames) is timed against Meta's brute-force rule on a sample of queries,
extrapolated.

    python bench/video.py [--videos-hashed 8] [--videos 10000] [--list-frames 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clearset.hashing.video import hash_video  # noqa: E402
from clearset.matching.vpdq import VpdqHash, VpdqIndex, VpdqList, brute_force_match  # noqa: E402
from tests.test_video import encode, scene  # noqa: E402


def bench_hashing(count: int, seconds: float) -> None:
    import vpdq

    sizes = [(160, 96), (320, 192), (480, 272), (640, 352)]
    ours_cpu = theirs_cpu = 0.0
    decoded = 0
    distances: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(count):
            width, height = sizes[number % len(sizes)]
            data = encode(scene(100 + number, width, height, seconds))
            path = Path(folder) / f"{number}.mp4"
            path.write_bytes(data)
            start = time.process_time()
            ours = hash_video(data)
            ours_cpu += time.process_time() - start
            start = time.process_time()
            theirs = vpdq.computeHash(str(path), thread_count=1)
            theirs_cpu += time.process_time() - start
            decoded += ours.frames_decoded
            for a, b in zip(ours.frames, theirs, strict=True):
                if b.quality >= 50:
                    distances.append(bin(int(a.pdq.hex(), 16) ^ int(b.hex, 16)).count("1"))
    print(
        f"hashing: {count} videos of {seconds:g} s at 24 fps, {sizes[0][0]}-{sizes[-1][0]} px "
        f"wide, {decoded} frames decoded, {len(distances)} hashed (quality >= 50)"
    )
    print(f"  clearset (PyAV): {decoded / ours_cpu:,.0f} frames per CPU-second")
    print(f"  Meta's vpdq:     {decoded / theirs_cpu:,.0f} frames per CPU-second")
    print(f"  ratio clearset / vpdq: {theirs_cpu / ours_cpu:.2f}x")
    d = np.asarray(distances)
    print(
        f"  distance to vpdq per frame: mean {d.mean():.2f}, p99 {np.percentile(d, 99):.0f}, "
        f"max {d.max()} bits (bars: mean <= 2, p99 <= 10)"
    )


def bench_matching(videos: int, list_frames: int, per_video: int, sample: int) -> None:
    rng = np.random.default_rng(0)
    listed = rng.integers(0, 256, (list_frames, 32), dtype=np.uint8)
    quality = np.full(per_video, 100, dtype=np.int16)
    stamps = np.arange(per_video, dtype=np.float64)
    entries = tuple(
        VpdqHash(listed[i : i + per_video], quality, stamps)
        for i in range(0, list_frames, per_video)
    )
    vpdq_list = VpdqList("bench", tuple(str(i) for i in range(len(entries))), entries)
    queries = []
    planted = set()
    for number in range(videos):
        if number % 10 == 0:
            source = int(rng.integers(0, len(entries)))
            frames = entries[source].pdq.copy()
            bits = np.unpackbits(frames, axis=1)
            for row in bits:
                row[rng.choice(256, int(rng.integers(0, 13)), replace=False)] ^= 1
            frames = np.packbits(bits, axis=1)
            planted.add(number)
        else:
            frames = rng.integers(0, 256, (per_video, 32), dtype=np.uint8)
        queries.append(VpdqHash(frames, quality, stamps))
    start = time.perf_counter()
    index = VpdqIndex(vpdq_list)
    built = time.perf_counter() - start
    start = time.perf_counter()
    found = {n for n, hits in enumerate(index.match_many(queries)) if hits}
    searched = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries[:sample]:
        for entry in entries:
            brute_force_match(query, entry)
    brute = (time.perf_counter() - start) * videos / sample
    print(
        f"matching: {videos:,} videos of {per_video} frames against {len(entries):,} listed "
        f"videos ({list_frames:,} frames), threshold 31, Meta's rule (80 % / 0 %)"
    )
    print(
        f"  index build {built:.1f} s; search {searched:.1f} s: {videos / searched:,.0f} videos/s"
    )
    print(f"  brute force (Meta's rule, every pair), from {sample} videos: {brute:,.0f} s")
    print(f"  ratio index / brute force: {brute / searched:,.0f}x faster")
    print(
        f"  planted copies found {len(found & planted)}/{len(planted)}; "
        f"others {len(found - planted)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos-hashed", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--list-frames", type=int, default=1_000_000)
    parser.add_argument("--frames-per-video", type=int, default=20)
    parser.add_argument("--brute-sample", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}; figures on a shared machine: read the ratios")
    if args.videos_hashed:
        bench_hashing(args.videos_hashed, args.seconds)
    bench_matching(args.videos, args.list_frames, args.frames_per_video, args.brute_sample)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("video"):
        main()
