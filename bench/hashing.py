"""Benchmark: fast PDQ (reduced JPEG decode + PDQ operator) against the reference pipeline.

Builds (once, cached under bench/out/) a deterministic corpus of benign JPEGs of web
sizes (0.2-4 megapixels, mean about 0.8): scikit-image photos cropped, resized, tinted
and given sensor grain, and procedural scenes; each with four modified twins (re-encoded
at quality 60, resized to 90 %, cropped by up to 1 % a side, letterboxed to a square with
white or black bands as img2dataset pads). It then prints, measured side by side in one
run: images/s per core and MP/s for the reference (Pillow full decode -> RGB -> pdqhash)
and the fast path, with 1 and N processes; the distance of the fast hash to the
reference hash of the same file; the share of twins found at distance <= 31 by each
pipeline; and the recall on letterboxed copies with and without border trimming.

    python bench/hashing.py            # 2,000 images, about 10 minutes on 2 cores
    python bench/hashing.py --quick    # 200 images
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The repository root, for `bench.photos` when run as `python bench/hashing.py`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Per-core figures: keep BLAS to one thread in this process and the workers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from bench.photos import photos  # noqa: E402
from clearset.demo import generate_image  # noqa: E402
from clearset.hashing import fast_pdq  # noqa: E402
from clearset.hashing.decode import open_image  # noqa: E402
from clearset.hashing.item import ItemHashes, _fast_pdq, _reference_pdq  # noqa: E402
from clearset.settings import PDQ_MATCH_THRESHOLD  # noqa: E402

TWINS = ("q60", "resize90", "crop1", "letterbox")
#: Long side of the pictures, in pixels (log-uniform between them).
LONG_SIDE = (300, 4000)
#: Size bands the distance figures are reported in (long side, pixels).
SIZE_BANDS = ((300, 600), (600, 1200), (1200, 2400), (2400, 4001))
#: PDQ quality bands (of the reference hash) the figures are reported in.
QUALITY_BANDS = ((50, 70), (70, 90), (90, 101))
OUT = Path(__file__).resolve().parent / "out"


# ---------------------------------------------------------------- corpus


def _size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(LONG_SIDE[0] * (LONG_SIDE[1] / LONG_SIDE[0]) ** rng.random())
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3, 9 / 16]))
    if aspect >= 1:
        return long_side, max(16, int(round(long_side / aspect)))
    return max(16, int(round(long_side * aspect))), long_side


def _picture(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, str]:
    """A picture of the corpus and its kind: a camera photo (cropped, resized, tinted,
    with grain; some low-texture, some turned by up to 3 degrees with black corners) or,
    one in five, a procedural scene."""
    kind = "scene"
    if rng.random() < 0.8:
        library = photos()
        name = sorted(library)[int(rng.integers(len(library) - 1))]  # not the 128-px pack
        photo = library[name]
        ph, pw = photo.shape[:2]
        ch, cw = int(rng.integers(ph // 2, ph + 1)), int(rng.integers(pw // 2, pw + 1))
        y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        image = Image.fromarray(photo[y : y + ch, x : x + cw])
        kind = "photo"
        if rng.random() < 0.2:
            # Low texture: out of focus and in fog, as many web pictures are.
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
            grey = np.asarray(image, np.float32)
            image = Image.fromarray((grey * 0.35 + 150).astype(np.uint8))
            kind = "low-texture"
        image = image.resize((width, height), Image.BICUBIC)
        if rng.random() < 0.3:
            image = image.rotate(float(rng.uniform(-3, 3)), Image.BICUBIC, fillcolor=(0, 0, 0))
            kind += "+turned"
        pixels = np.asarray(image, np.float32) * rng.uniform(0.85, 1.15, 3)
    else:
        pixels = np.asarray(generate_image(rng).resize((width, height), Image.BICUBIC), np.float32)
    # Sensor grain gives upscaled pictures the entropy (and decode cost) of real photos.
    pixels = pixels + rng.normal(0, rng.uniform(1, 5), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), kind


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _letterbox(image: Image.Image, colour: int) -> Image.Image:
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), (colour,) * 3)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def _make_item(args: tuple[int, int, Path, bool]) -> None:
    seed, number, folder, with_twins = args
    rng = np.random.default_rng([seed, number])
    width, height = _size(rng)
    picture, kind = _picture(rng, width, height)
    quality = int(rng.integers(60, 96))
    original = _jpeg(picture, quality)
    (folder / f"{number:05d}.jpg").write_bytes(original)
    (folder / f"{number:05d}.kind").write_text(f"{kind} {quality}\n")
    if not with_twins:
        return
    shown = Image.open(io.BytesIO(original)).convert("RGB")
    w, h = shown.size
    cut = [int(rng.integers(0, max(1, d // 100) + 1)) for d in (w, h, w, h)]
    twins = {
        "q60": _jpeg(shown, 60),
        "resize90": _jpeg(shown.resize((int(w * 0.9), int(h * 0.9)), Image.BICUBIC), 90),
        "crop1": _jpeg(shown.crop((cut[0], cut[1], w - cut[2], h - cut[3])), 90),
        "letterbox": _jpeg(_letterbox(shown, 255 if number % 2 == 0 else 0), 90),
    }
    for name, data in twins.items():
        (folder / f"{number:05d}.{name}.jpg").write_bytes(data)


def build_corpus(count: int, twins: int, seed: int, processes: int) -> Path:
    folder = OUT / f"hashing-corpus-v2-{seed}-{count}-{twins}"
    done = folder / "complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with mp.Pool(processes) as pool:
        pool.map(_make_item, [(seed, n, folder, n < twins) for n in range(count)], chunksize=8)
    done.write_text("ok\n")
    took = time.perf_counter() - started
    print(f"built corpus of {count} images ({twins} with twins) in {took:.0f} s")
    return folder


# ---------------------------------------------------------------- hashing paths


def reference_path(data: bytes, trim: bool = False) -> ItemHashes:
    result = ItemHashes(sha256=None, md5=None, sha1=None, size=len(data))
    _reference_pdq(open_image(data).image, result, trim)
    return result


def fast_path(data: bytes, trim: bool = False) -> ItemHashes:
    result = ItemHashes(sha256=None, md5=None, sha1=None, size=len(data))
    _fast_pdq(open_image(data).image, result, trim)
    return result


PATHS: dict[str, Callable[[bytes, bool], ItemHashes]] = {
    "reference": reference_path,
    "fast": fast_path,
}


def _hash_many(args: tuple[str, bool, list[Path]]) -> list[tuple[bytes, int, bytes | None]]:
    name, trim, files = args
    out = []
    for path in files:
        item = PATHS[name](path.read_bytes(), trim)
        out.append((item.pdq, item.pdq_quality, item.pdq_trimmed))
    return out


def _timed(args: tuple[str, list[bytes]]) -> float:
    """CPU seconds one process spends hashing `datas` (no file reads)."""
    name, datas = args
    path = PATHS[name]
    started = time.process_time()
    for data in datas:
        path(data, False)
    return time.process_time() - started


# ---------------------------------------------------------------- measures


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a ^ b, axis=1).sum(axis=1)


def _packed(hashes: list[bytes | None]) -> np.ndarray:
    return np.array([np.frombuffer(h or bytes(32), np.uint8) for h in hashes])


def speed(datas: list[bytes], megapixels: float, processes: int) -> dict[str, dict[int, float]]:
    """images/s per core for each path with 1 and `processes` processes, interleaved."""
    figures: dict[str, dict[int, float]] = {name: {} for name in PATHS}
    # One process: alternate the paths chunk by chunk so machine noise hits both alike.
    cpu = dict.fromkeys(PATHS, 0.0)
    for start in range(0, len(datas), 50):
        chunk = datas[start : start + 50]
        for name in PATHS:
            cpu[name] += _timed((name, chunk))
    for name in PATHS:
        figures[name][1] = len(datas) / cpu[name]
    if processes > 1:
        parts = [datas[i::processes] for i in range(processes)]
        with mp.Pool(processes) as pool:
            for name in PATHS:
                pool.map(_timed, [(name, part[:5]) for part in parts])  # warm imports
                started = time.perf_counter()
                pool.map(_timed, [(name, part) for part in parts])
                wall = time.perf_counter() - started
                figures[name][processes] = len(datas) / wall / processes
    del megapixels
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument(
        "--twins",
        type=int,
        default=500,
        help="images whose 4 modified twins are made and hashed (the reference is slow)",
    )
    parser.add_argument("--quick", action="store_true", help="200 images, 100 with twins")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="*",
        default=None,
        help="also print distance and speed for these FAST_PDQ_BLOCK_PER_WINDOW values",
    )
    args = parser.parse_args()
    count = 200 if args.quick else args.count
    twins = min(count, 100 if args.quick else args.twins)
    processes = max(1, args.processes)
    folder = build_corpus(count, twins, args.seed, processes)
    originals = [folder / f"{n:05d}.jpg" for n in range(count)]
    datas = [p.read_bytes() for p in originals]
    sizes = [Image.open(io.BytesIO(d)).size for d in datas]
    megapixels = np.array([w * h for w, h in sizes]) / 1e6
    print(
        f"corpus: {count} JPEGs, {megapixels.mean():.2f} MP mean "
        f"({megapixels.min():.2f}-{megapixels.max():.2f}), {processes} processes available"
    )

    figures = speed(datas, float(megapixels.sum()), processes)
    mp_mean = float(megapixels.mean())
    print("\nspeed (PDQ from bytes: decode + filter + hash; CPU time for 1 process)")
    print(f"{'path':<10} {'procs':>5} {'img/s/core':>11} {'MP/s/core':>10} {'vs ref':>7}")
    for procs in sorted(figures["reference"]):
        base = figures["reference"][procs]
        for name in PATHS:
            rate = figures[name][procs]
            print(
                f"{name:<10} {procs:>5} {rate:>11.1f} {rate * mp_mean:>10.1f} {rate / base:>6.2f}x"
            )

    # Hashes of every file by both paths, spread over the processes.
    names = [("reference", False), ("fast", False), ("fast", True), ("reference", True)]
    files = {"original": originals}
    for twin in TWINS:
        files[twin] = [folder / f"{n:05d}.{twin}.jpg" for n in range(twins)]
    hashes: dict[tuple[str, bool, str], list[tuple[bytes, int, bytes | None]]] = {}
    with mp.Pool(processes) as pool:
        for name, trim in names:
            for kind, paths in files.items():
                if trim and kind not in ("original", "letterbox"):
                    continue
                if trim and name == "reference" and kind == "original":
                    continue
                chunks = [paths[i : i + 25] for i in range(0, len(paths), 25)]
                parts = pool.map(_hash_many, [(name, trim, c) for c in chunks])
                hashes[(name, trim, kind)] = [h for part in parts for h in part]

    ref = _packed([h[0] for h in hashes[("reference", False, "original")]])
    fast = _packed([h[0] for h in hashes[("fast", False, "original")]])
    d = distance(ref, fast)
    q_ref = np.array([h[1] for h in hashes[("reference", False, "original")]])
    q_fast = np.array([h[1] for h in hashes[("fast", False, "original")]])
    print("\nfast hash vs reference hash of the same file (bits)")
    print(f"{'mean':>6} {'p50':>5} {'p90':>5} {'p99':>5} {'max':>5} {'<=10':>7}  |dq| mean/max")
    print(
        f"{d.mean():>6.2f} {np.percentile(d, 50):>5.0f} {np.percentile(d, 90):>5.0f} "
        f"{np.percentile(d, 99):>5.0f} {d.max():>5d} {np.mean(d <= 10):>7.1%}  "
        f"{np.abs(q_ref - q_fast).mean():.2f}/{np.abs(q_ref - q_fast).max()}"
    )

    def recall(list_hashes: np.ndarray, key: tuple[str, bool, str]) -> float:
        rows = hashes[key]
        list_hashes = list_hashes[: len(rows)]
        best = distance(list_hashes, _packed([h[0] for h in rows]))
        trimmed = [h[2] for h in rows]
        if any(t is not None for t in trimmed):
            other = distance(list_hashes, _packed(trimmed))
            best = np.where([t is not None for t in trimmed], np.minimum(best, other), best)
        return float(np.mean(best <= PDQ_MATCH_THRESHOLD))

    print(
        f"\ntwin recall at distance <= {PDQ_MATCH_THRESHOLD}, {twins} pairs each "
        "(list hashed by the reference from the original; fast/fast: both sides fast)"
    )
    print(f"{'twin':<10} {'reference':>10} {'fast':>7} {'fast/fast':>10}")
    for twin in TWINS:
        r = recall(ref, ("reference", False, twin))
        f = recall(ref, ("fast", False, twin))
        ff = recall(fast, ("fast", False, twin))
        print(f"{twin:<10} {r:>10.1%} {f:>7.1%} {ff:>10.1%}")

    print("\nletterboxed copies: recall with and without border trimming")
    print(f"  reference, no trim     {recall(ref, ('reference', False, 'letterbox')):.1%}")
    print(f"  reference, trim        {recall(ref, ('reference', True, 'letterbox')):.1%}")
    print(f"  fast, no trim          {recall(ref, ('fast', False, 'letterbox')):.1%}")
    print(f"  fast, trim (default)   {recall(ref, ('fast', True, 'letterbox')):.1%}")
    trimmed_originals = sum(h[2] is not None for h in hashes[("fast", True, "original")])
    print(f"  originals (no borders) given a trimmed hash: {trimmed_originals}/{count}")

    if args.sweep:
        print("\nsweep of FAST_PDQ_BLOCK_PER_WINDOW (1 process, CPU time)")
        for value in args.sweep:
            started = time.process_time()
            swept = []
            for data in datas:
                reduced = fast_pdq.decode_jpeg_luma(open_image(data).image, value)
                swept.append(fast_pdq.pdq_from_reduced(reduced)[0])
            rate = len(datas) / (time.process_time() - started)
            ds = distance(ref, _packed(swept))
            print(
                f"  {value:>5}: {rate:>6.1f} img/s  mean {ds.mean():.2f}  "
                f"p99 {np.percentile(ds, 99):.0f}  max {ds.max()}"
            )


if __name__ == "__main__":
    main()
