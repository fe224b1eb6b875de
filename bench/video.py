"""Video: clearset's vPDQ hashing against Meta's `vpdq` on the same videos, and Meta's
match rule on the PDQ index at list scale.

Hashing: benign procedural videos (tests/test_video.py's scenes, h264 in mp4), hashed by
`clearset.hashing.video.hash_video` (PyAV, from memory) and by `vpdq.computeHash` (from a
file, as it must), in the same run. Speed is decoded frames per CPU-second (both decode
every frame and hash one a second), so threads do not flatter either; accuracy is the
Hamming distance between the two hashes of each frame of quality >= 50. The same videos
are hashed a second time with the frames hashed by the numpy path the compiled per-frame
pass replaced (`video.frame_pdq_reference`), for the whole-video ratio and the distances
before and after.

Frame hashing alone (decoding dominates the whole-video figure): the frames the scan
hashes (one a second of the videos above), and every frame of short videos at the
`--frame-sizes` (720p and 1080p by default), each hashed by the numpy path and by the
compiled pass (`video._frame_pdq`), alternating, in CPU time; least of `--rounds`
rounds, since the machine is shared. Both must give the same hashes, frame by frame.

Matching: a list of `--list-frames` random frame hashes in videos of `--frames-per-video`
frames, and `--videos` query videos of as many frames, a tenth of them noisy copies
(up to 12 bits flipped a frame) of listed videos. `VpdqIndex` (one `PDQIndex`
over the list's frames) is timed against Meta's brute-force rule on a sample of queries,
extrapolated.

    python bench/video.py [--videos-hashed 8] [--videos 10000] [--list-frames 1000000]
                          [--frame-sizes 1280x720,1920x1080] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clearset.hashing import video as video_module  # noqa: E402
from clearset.hashing.video import hash_video  # noqa: E402
from clearset.matching.vpdq import VpdqHash, VpdqIndex, VpdqList, brute_force_match  # noqa: E402
from tests.test_video import encode, scene  # noqa: E402


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _summary(distances: list[int]) -> str:
    d = np.asarray(distances)
    return f"mean {d.mean():.2f}, p99 {np.percentile(d, 99):.0f}, max {d.max()} bits"


def hashed_frames(data: bytes, every: int | None = None) -> list[object]:
    """The decoded frames a scan hashes (every `int(rate)`-th, as `hash_video`), or
    every `every`-th frame."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        step = every or max(1, int(video_module._frame_rate(stream) or 1))
        return [f for n, f in enumerate(container.decode(stream)) if n % step == 0]


def bench_hashing(count: int, seconds: float) -> list[object]:
    """Whole videos, clearset against vpdq; returns the frames clearset hashed."""
    import vpdq

    sizes = [(160, 96), (320, 192), (480, 272), (640, 352)]
    ours_cpu = numpy_cpu = theirs_cpu = 0.0
    decoded = 0
    distances: list[int] = []
    before: list[int] = []
    frames: list[object] = []
    fused_pass = video_module._frame_pdq
    # numba's import and the kernel's load from its cache (once a process) are not timed.
    warm = hashed_frames(encode(scene(1, 64, 48, 0.1)))[0]
    assert fused_pass(warm) == video_module.frame_pdq_reference(warm)
    with tempfile.TemporaryDirectory() as folder:
        for number in range(count):
            width, height = sizes[number % len(sizes)]
            data = encode(scene(100 + number, width, height, seconds))
            path = Path(folder) / f"{number}.mp4"
            path.write_bytes(data)
            start = time.process_time()
            ours = hash_video(data)
            ours_cpu += time.process_time() - start
            video_module._frame_pdq = video_module.frame_pdq_reference
            try:
                start = time.process_time()
                numpy_path = hash_video(data)
                numpy_cpu += time.process_time() - start
            finally:
                video_module._frame_pdq = fused_pass
            start = time.process_time()
            theirs = vpdq.computeHash(str(path), thread_count=1)
            theirs_cpu += time.process_time() - start
            decoded += ours.frames_decoded
            frames += hashed_frames(data)
            for a, old, b in zip(ours.frames, numpy_path.frames, theirs, strict=True):
                if b.quality >= 50:
                    distances.append(_bits(a.pdq.hex(), b.hex))
                    before.append(_bits(old.pdq.hex(), b.hex))
    print(
        f"hashing: {count} videos of {seconds:g} s at 24 fps, {sizes[0][0]}-{sizes[-1][0]} px "
        f"wide, {decoded} frames decoded, {len(distances)} hashed (quality >= 50)"
    )
    print(f"  clearset (PyAV): {decoded / ours_cpu:,.0f} frames per CPU-second")
    print(f"  clearset, numpy frame path: {decoded / numpy_cpu:,.0f} frames per CPU-second")
    print(f"  Meta's vpdq:     {decoded / theirs_cpu:,.0f} frames per CPU-second")
    print(f"  ratio clearset / vpdq: {theirs_cpu / ours_cpu:.2f}x")
    print(f"  ratio clearset / its numpy frame path: {numpy_cpu / ours_cpu:.2f}x")
    print(
        f"  distance to vpdq per frame: {_summary(distances)} (numpy frame path: "
        f"{_summary(before)}; bars: mean <= 2, p99 <= 10)"
    )
    return frames


def bench_frames(groups: dict[str, list[object]], rounds: int) -> None:
    """Frame hashing alone: the numpy path against the compiled pass, same frames."""
    numpy_path, fused_pass = video_module.frame_pdq_reference, video_module._frame_pdq
    print(
        f"frame hashing alone (decoded frames, decoding not counted), CPU time, "
        f"least of {rounds} rounds:"
    )
    for label, frames in groups.items():
        same = sum(fused_pass(f) == numpy_path(f) for f in frames)  # and warms both up
        best = {"numpy": float("inf"), "fused": float("inf")}
        for _ in range(rounds):
            for name, hasher in (("numpy", numpy_path), ("fused", fused_pass)):
                start = time.process_time()
                for frame in frames:
                    hasher(frame)
                best[name] = min(best[name], time.process_time() - start)
        n = len(frames)
        print(
            f"  {label}: {n} frames: numpy path {n / best['numpy']:,.0f} frames per "
            f"CPU-second ({1e3 * best['numpy'] / n:.2f} ms), compiled pass "
            f"{n / best['fused']:,.0f} ({1e3 * best['fused'] / n:.2f} ms), "
            f"ratio {best['numpy'] / best['fused']:.2f}x; same hash {same}/{n}"
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
    parser.add_argument("--frame-sizes", default="1280x720,1920x1080")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}; figures on a shared machine: read the ratios")
    groups: dict[str, list[object]] = {}
    if args.videos_hashed:
        frames = bench_hashing(args.videos_hashed, args.seconds)
        groups["the frames hashed above (160-640 px)"] = frames
    for size in filter(None, args.frame_sizes.split(",")):
        width, height = (int(v) for v in size.split("x"))
        data = encode(scene(200 + width, width, height, 1))
        groups[f"every frame of a 1 s {width}x{height} video"] = hashed_frames(data, every=1)
    if groups:
        bench_frames(groups, args.rounds)
    bench_matching(args.videos, args.list_frames, args.frames_per_video, args.brute_sample)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("video"):
        main()
