"""Benchmark: fast PDQ (reduced JPEG decode + PDQ operator) against the reference pipeline.

Builds (once, cached under bench/out/) a deterministic, seeded corpus of benign JPEGs of
300-4000 px on the long side (log-uniform), JPEG quality 60-95: camera photographs that
packages ship (bench/photos.py: scikit-image, scikit-learn, matplotlib) cropped, resized,
tinted and given sensor grain, a fifth of them low-texture (out of focus, in fog) and
three in ten turned by up to 3 degrees with black corners; and one picture in five a
procedural scene. The first --twins get four modified twins (re-encoded at quality 60,
resized to 90 %, cropped by up to 1 % a side, letterboxed to a square with white or
black bands). It then prints, measured side by side in one run: images/s per core for
the reference (Pillow full decode -> RGB -> pdqhash) and the fast path, with 1 and N
processes; the distance of the fast hash to the reference hash of the same file, per
size band, PDQ-quality band, JPEG-quality band and kind of picture; the share of twins
found at distance <= 31 by each pipeline; the recall on letterboxed copies with and
without border trimming; the cost of --dihedral against a plain scan; and the recall of
listed originals in the real img2dataset's --resize_mode border output (run against a
loopback server) against the reference with the true padding cut off.

    python bench/hashing.py --count 1000 --twins 300   # about 30 minutes on 2 cores
    python bench/hashing.py --quick                    # 200 images
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

from bench.photos import dark_edges, photos, product_shot  # noqa: E402
from clearset.demo import generate_image  # noqa: E402
from clearset.hashing import (
    fast_pdq,  # noqa: E402
    hash_bytes,  # noqa: E402
)
from clearset.hashing.crypto import crypto_digests  # noqa: E402
from clearset.hashing.decode import (
    open_image,  # noqa: E402
    to_display_rgb,  # noqa: E402
)
from clearset.hashing.item import ItemHashes, _fast_pdq, _reference_pdq  # noqa: E402
from clearset.hashing.pdq import pdq_dihedral_from_rgb, pdq_from_rgb  # noqa: E402
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
    result = ItemHashes(digests={}, size=len(data))
    _reference_pdq(open_image(data).image, result, trim)
    return result


def fast_path(data: bytes, trim: bool = False) -> ItemHashes:
    result = ItemHashes(digests={}, size=len(data))
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


def _scan_cost(args: tuple[str, list[bytes]]) -> float:
    """CPU seconds to hash `datas` as a scan does (crypto, PDQ, trimming) in `mode`."""
    mode, datas = args
    started = time.process_time()
    for data in datas:
        if mode == "plain":
            hash_bytes(data)
        elif mode == "dihedral":
            hash_bytes(data, dihedral=True)
        else:  # what --dihedral cost before: a second, reference decode for the 7 others
            hash_bytes(data)
            pdq_dihedral_from_rgb(np.asarray(to_display_rgb(open_image(data).image)))
    return time.process_time() - started


def dihedral_cost(datas: list[bytes]) -> None:
    """CPU time of a scan's hashing with --dihedral against without, one process."""
    cpu = dict.fromkeys(("plain", "dihedral", "second decode"), 0.0)
    for start in range(0, len(datas), 25):
        for mode in cpu:
            cpu[mode] += _scan_cost((mode, datas[start : start + 25]))
    print(f"\n--dihedral cost ({len(datas)} originals, 1 process, hash_bytes with trimming)")
    for mode, seconds in cpu.items():
        print(
            f"  {mode:<14} {len(datas) / seconds:>7.1f} img/s  "
            f"{seconds / cpu['plain']:>5.2f}x a plain scan"
        )


# ---------------------------------------------------------------- img2dataset borders

I2D_SIZE = 256


def _border_pictures(seed: int, count: int) -> list[tuple[str, bytes]]:
    """(kind, JPEG) of `count` pictures for img2dataset: camera photos, product shots on
    white (studio, against a corner, centred on pure white) and photos with dark edges."""
    rng = np.random.default_rng([seed, 13])
    library = photos()
    # The shipped product pack is on pure white already: a "pure" picture, not a photo.
    names = [name for name in sorted(library) if "Present" not in name]
    out = []
    for n in range(count):
        photo = library[names[n % len(names)]]
        long_side = int(rng.integers(400, 1600))
        aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3]))
        size = (
            (long_side, int(long_side / aspect))
            if aspect > 1
            else (int(long_side * aspect), long_side)
        )
        kind = ("photo", "photo", "studio", "corner", "pure", "dark")[n % 6]
        if kind == "photo":
            image = Image.fromarray(photo).resize(size, Image.BICUBIC)
        elif kind == "dark":
            image = dark_edges(photo, size, int(rng.integers(2)))
        else:
            image = product_shot(photo, size, kind, rng)
        out.append((kind, _jpeg(image, int(rng.integers(75, 96)))))
    return out


def _interior(original: bytes) -> tuple[int, int, int, int]:
    """The white padding img2dataset's border mode adds (top, bottom, left, right)."""
    width, height = Image.open(io.BytesIO(original)).size
    scale = I2D_SIZE / max(width, height)
    w, h = round(width * scale), round(height * scale)
    top, left = (I2D_SIZE - h) // 2, (I2D_SIZE - w) // 2
    return top, I2D_SIZE - h - top, left, I2D_SIZE - w - left


def border_recall(seed: int, count: int) -> None:
    """Recall of listed originals in the real img2dataset's --resize_mode border output:
    our trimming (fast and exact paths) against the reference with the true padding cut
    off (perfect borders known) and against no trimming."""
    import json
    import tempfile

    from tests.conftest import run_img2dataset

    pictures = _border_pictures(seed, count)
    with tempfile.TemporaryDirectory(prefix="clearset-i2d-") as tmp:
        root = Path(tmp)
        options = {"output_format": "files", "thread_count": 8, "image_size": I2D_SIZE}
        runs = {"border": {**options, "resize_mode": "border"}}
        started = time.perf_counter()
        urls = run_img2dataset(root, [data for _, data in pictures], runs, timeout=1200)
        took = time.perf_counter() - started
        by_url = {}
        for meta in (root / "border").rglob("*.json"):
            record = json.loads(meta.read_text())
            if record.get("status") == "success":
                size = (record["original_width"], record["original_height"])
                by_url[record["url"]] = (meta.with_suffix(".jpg").read_bytes(), size)
    rows: dict[str, list[tuple[bool, bool, bool, bool]]] = {}
    for (kind, original), url in zip(pictures, urls, strict=True):
        if url not in by_url:
            continue
        # As a scan hashes it: with the original size img2dataset records beside it.
        stored, size = by_url[url]
        listed = np.frombuffer(reference_path(original).pdq, np.uint8)[None]
        rgb = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
        top, bottom, left, right = _interior(original)
        perfect = pdq_from_rgb(rgb[top : I2D_SIZE - bottom, left : I2D_SIZE - right])[0]

        def found(*found_hashes: bytes | None, listed: np.ndarray = listed) -> bool:
            packed = _packed([h for h in found_hashes if h])
            near = distance(np.repeat(listed, len(packed), 0), packed) <= PDQ_MATCH_THRESHOLD
            return bool(near.any())

        fast_item = hash_bytes(stored, original_size=size)
        exact_item = hash_bytes(stored, exact_pdq=True, original_size=size)
        rows.setdefault(kind, []).append(
            (
                found(perfect),
                found(fast_item.pdq, fast_item.pdq_trimmed),
                found(exact_item.pdq, exact_item.pdq_trimmed),
                found(exact_item.pdq),
            )
        )
    total = [r for kind_rows in rows.values() for r in kind_rows]
    print(
        f"\nimg2dataset --resize_mode border --image_size {I2D_SIZE} on {len(pictures)} "
        f"pictures ({len(total)} written, {took:.0f} s): listed originals found at <= 31"
    )
    header = ("kind", 8), ("n", 4), ("perfect borders", 16), ("fast+trim", 10), ("exact+trim", 11)
    print(" ".join(f"{name:>{width}}" for name, width in (*header, ("no trim", 8))))
    for kind, kind_rows in [*sorted(rows.items()), ("all", total)]:
        a = np.array(kind_rows)
        print(
            f"{kind:<8} {len(a):>4} {a[:, 0].sum():>16} {a[:, 1].sum():>10} "
            f"{a[:, 2].sum():>11} {a[:, 3].sum():>8}"
        )


# ---------------------------------------------------------------- size bands vs the floor

#: Short sides of the band corpus; 1024 and 1536 together are the "1024+" band.
BAND_SIDES = (256, 384, 512, 768, 1024, 1536)
BAND_FORMATS = ("JPEG", "PNG", "WEBP")


def _band(short_side: int) -> str:
    return "1024+" if short_side >= 1024 else str(short_side)


def band_corpus(seed: int, per_side: int) -> dict[tuple[int, str], list[bytes]]:
    """`per_side` camera photos (cropped, tinted, with grain) at each short side, each
    stored as JPEG (quality 85-95), PNG and WebP (quality 90)."""
    rng = np.random.default_rng([seed, 27])
    library = photos()
    names = [name for name in sorted(library) if "Present" not in name]
    out: dict[tuple[int, str], list[bytes]] = {}
    for side in BAND_SIDES:
        for n in range(per_side):
            photo = library[names[(n * 7 + side) % len(names)]]
            ph, pw = photo.shape[:2]
            ch, cw = int(rng.integers(ph * 2 // 3, ph + 1)), int(rng.integers(pw * 2 // 3, pw + 1))
            y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
            aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9]))
            long_side = int(round(side * aspect))
            size = (long_side, side) if n % 2 == 0 else (side, long_side)
            image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(size, Image.BICUBIC)
            pixels = np.asarray(image, np.float32) * rng.uniform(0.85, 1.15, 3)
            pixels = pixels + rng.normal(0, rng.uniform(1, 4), pixels.shape)
            picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            for fmt in BAND_FORMATS:
                buffer = io.BytesIO()
                if fmt == "JPEG":
                    picture.save(buffer, "JPEG", quality=int(rng.integers(85, 96)))
                elif fmt == "PNG":
                    picture.save(buffer, "PNG")
                else:
                    picture.save(buffer, "WEBP", quality=90)
                out.setdefault((side, fmt), []).append(buffer.getvalue())
    return out


def floor_path(data: bytes) -> None:
    """What no hasher can skip: Pillow's decode at the scale clearset decodes (JPEG's DCT
    scaling as `fast_pdq.choose_scale` picks it; the rest in full) and the digests."""
    crypto_digests(data)
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        width, height = image.size
        scale = fast_pdq.choose_scale(width, height, fast_pdq.FAST_PDQ_BLOCK_PER_WINDOW)
        image.draft("RGB", (width // scale, height // scale) if scale > 1 else None)
    image.load()


def reference_full(data: bytes) -> None:
    """The reference: a full decode to display RGB and pdqhash (no digests)."""
    pdq_from_rgb(np.asarray(to_display_rgb(open_image(data).image)))


def _least_per_image(
    paths: tuple[Callable[[bytes], object], ...], datas: list[bytes], repeats: int
) -> list[float]:
    """Per path, the mean over `datas` of each image's least CPU seconds in `repeats`
    rounds, the paths interleaved image by image. On a shared machine a burst of load
    lasts longer than one image and shorter than a pass over all of them: the least of
    each image drops the bursts that the least of whole passes kept (passes of 12
    images gave 1.20-1.43x for the same JPEG band in runs minutes apart)."""
    best = [[float("inf")] * len(datas) for _ in paths]
    for _ in range(repeats):
        for number, data in enumerate(datas):
            for path, function in zip(best, paths, strict=True):
                started = time.process_time()
                function(data)
                path[number] = min(path[number], time.process_time() - started)
    return [sum(path) / len(path) for path in best]


def first_use_cost(data: bytes) -> None:
    """What numba costs a worker's start: the first picture in a fresh process, with the
    on-disk cache warm and with an empty one (a cold compile), against the second."""
    import subprocess
    import tempfile

    probe = (
        "import sys, time; from clearset.hashing import hash_bytes; "
        "data = open(sys.argv[1], 'rb').read(); t = time.perf_counter(); hash_bytes(data); "
        "first = time.perf_counter() - t; t = time.perf_counter(); hash_bytes(data); "
        "print(first, time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.jpg"
        path.write_bytes(data)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        print("\nnumba's cost to a worker's start (first JPEG in a fresh process):")
        for label, extra in (("warm cache", {}), ("cold cache", {"NUMBA_CACHE_DIR": tmp})):
            if label == "warm cache":  # make sure the cache is warm
                subprocess.run(
                    [sys.executable, "-c", probe, str(path)],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            out = subprocess.run(
                [sys.executable, "-c", probe, str(path)],
                env={**env, **extra},
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            first, second = float(out[0]), float(out[1])
            print(f"  {label:<10} first {first * 1e3:8.1f} ms, second {second * 1e3:6.2f} ms")


def _dihedral(data: bytes) -> None:
    hash_bytes(data, dihedral=True)


def bands(seed: int, per_side: int, repeats: int) -> None:
    """Per size band and format: clearset's hash_bytes (as a scan calls it) against the
    floor and the reference, all timed in this run; accuracy of the JPEG fast path."""
    corpus = band_corpus(seed, per_side)
    print(
        f"\nper size band (short side) and format: {per_side} photos per side "
        f"({', '.join(map(str, BAND_SIDES))} px), CPU ms per image, each image's least of "
        f"{repeats} (paths interleaved image by image); "
        "floor = Pillow decode at clearset's scale + SHA-256/MD5/SHA-1"
    )
    header = ("band", 6), ("format", 6), ("floor", 7), ("clearset", 9), ("x floor", 8)
    header += ("reference", 10), ("ref/clr", 8), ("dihedral", 9)
    print(" ".join(f"{name:>{width}}" for name, width in header))
    times: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for (side, fmt), datas in corpus.items():
        hash_bytes(datas[0])  # compile or load the kernel outside the timing
        paths = (floor_path, hash_bytes, reference_full, _dihedral)
        best = _least_per_image(paths, datas, repeats)
        times.setdefault((_band(side), fmt), []).append(tuple(best))  # type: ignore[arg-type]
    for (band, fmt), rows in times.items():
        floor, ours, reference, turned = np.mean(np.array(rows), axis=0)
        print(
            f"{band:>6} {fmt:>6} {floor * 1e3:>7.2f} {ours * 1e3:>9.2f} {ours / floor:>7.2f}x "
            f"{reference * 1e3:>10.2f} {reference / ours:>7.1f}x {turned / ours:>8.2f}x"
        )
    print("\nJPEG fast path vs reference hash of the same file (bits), quality >= 50")
    print(f"{'band':>6} {'n':>4} {'mean':>6} {'p99':>5} {'max':>4}")
    by_band: dict[str, list[int]] = {}
    for (side, fmt), datas in corpus.items():
        if fmt != "JPEG":
            continue
        for data in datas:
            ref = hash_bytes(data, exact_pdq=True, trim_borders=False)
            if (ref.pdq_quality or 0) < 50:
                continue
            ours_item = hash_bytes(data)
            gap = np.unpackbits(
                np.frombuffer(ref.pdq or b"", np.uint8)
                ^ np.frombuffer(ours_item.pdq or b"", np.uint8)
            ).sum()
            by_band.setdefault(_band(side), []).append(int(gap))
    for band, gaps in by_band.items():
        x = np.array(gaps)
        print(f"{band:>6} {len(x):>4} {x.mean():>6.2f} {np.percentile(x, 99):>5.1f} {x.max():>4}")
    first_use_cost(corpus[(256, "JPEG")][0])


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
    parser.add_argument("--dihedral-count", type=int, default=300)
    parser.add_argument("--img2dataset-count", type=int, default=240)
    parser.add_argument("--no-img2dataset", action="store_true")
    parser.add_argument(
        "--bands-only",
        action="store_true",
        help="only the per-size-band, per-format table against the floor (a few minutes)",
    )
    parser.add_argument("--band-count", type=int, default=16, help="photos per short side")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.bands_only:
        bands(args.seed, args.band_count, args.repeats)
        return
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
    long_side = np.array([max(size) for size in sizes])
    kinds = [(folder / f"{n:05d}.kind").read_text().split() for n in range(count)]
    jpeg_quality = np.array([int(k[1]) for k in kinds])
    usable = q_ref >= 50
    print(
        "\nfast hash vs reference hash of the same file (bits), hashes of reference "
        f"quality >= 50 ({usable.sum()} of {count}); |dq| is the quality gap"
    )
    columns = (("n", 5), ("mean", 6), ("p50", 4), ("p99", 4), ("max", 4), ("<=10", 7))
    print(f"{'band':<22} " + " ".join(f"{n:>{w}}" for n, w in (*columns, ("|dq|", 5))))

    def band_row(label: str, mask: np.ndarray) -> None:
        mask = mask & usable
        if not mask.any():
            print(f"{label:<22} {0:>5}")
            return
        x = d[mask]
        gap = np.abs(q_ref - q_fast)[mask].mean()
        print(
            f"{label:<22} {mask.sum():>5} {x.mean():>6.2f} {np.percentile(x, 50):>4.0f} "
            f"{np.percentile(x, 99):>4.0f} {x.max():>4d} {np.mean(x <= 10):>7.1%} {gap:>5.2f}"
        )

    band_row("all", np.ones(count, bool))
    for lo, hi in SIZE_BANDS:
        band_row(f"long side {lo}-{hi - 1}", (long_side >= lo) & (long_side < hi))
    for lo, hi in QUALITY_BANDS:
        band_row(f"PDQ quality {lo}-{hi - 1}", (q_ref >= lo) & (q_ref < hi))
    for lo, hi in ((60, 75), (75, 86), (86, 96)):
        band_row(f"JPEG quality {lo}-{hi - 1}", (jpeg_quality >= lo) & (jpeg_quality < hi))
    for kind in sorted({k[0] for k in kinds}):
        band_row(kind, np.array([k[0] == kind for k in kinds]))

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

    dihedral_cost(datas[: args.dihedral_count])
    bands(args.seed, args.band_count, args.repeats)
    if not args.no_img2dataset:
        border_recall(args.seed, args.img2dataset_count)

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
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("hashing"):
        main()
