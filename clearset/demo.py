"""The built-in benign demo data set, generated deterministically from a seed.

Procedural scenes (gradients, shapes, textures, smooth noise; no text) plus, where
scikit-image is installed, variants of the photos it bundles. Written three ways, each
holding the same images under the same keys: img2dataset-style WebDataset shards with
their `.parquet` and `_stats.json` side files, a plain folder, and a parquet file with a
Hugging Face style image column. Some members are broken on purpose (a truncated JPEG, a
zero-byte file, a text file named .jpg, a decompression-bomb header) and one download
"failed", so every path through a scan is exercised. Nothing here is, or resembles,
material a real list would hold.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

from clearset.atomic import atomic_path
from clearset.hashing.pdq import pdq_from_rgb

DEMO_SEED = 0
DEMO_IMAGES = 96
DEMO_SHARD_SIZE = 32
URL_PREFIX = "https://images.example.com/demo/"


@dataclass
class DemoItem:
    key: str
    ext: str  # "jpg" or "png"
    data: bytes
    width: int | None
    height: int | None
    caption: str
    broken: str | None = None  # what is wrong with it on purpose, if anything
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- image generators


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    if rng.random() < 0.4:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        t = np.hypot(yy - cy, xx - cx) / np.hypot(h, w)
    t = np.clip(t, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for channel in range(3):
        for _ in range(3):
            fx, fy = rng.uniform(0.002, 0.08, 2)
            phase = rng.uniform(0, 2 * np.pi)
            out[..., channel] += np.sin(fx * xx * 6.28 + fy * yy * 6.28 + phase)
    out -= out.min()
    return out / max(out.max(), 1e-6) * 255


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.uniform(0, 255, (max(2, h // 24), max(2, w // 24), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)


def _shapes(rng: np.random.Generator, base: np.ndarray) -> Image.Image:
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(int(rng.integers(3, 12))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, w // 2 + 9)), y0 + int(rng.integers(8, h // 2 + 9))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        else:
            points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(points, fill=color)
    return image


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
    try:
        from skimage import data as skdata
    except ImportError:
        return None
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "page", "horse"]
    name = names[int(rng.integers(0, len(names)))]
    try:
        photo = np.asarray(getattr(skdata, name)())
    except Exception:  # a photo that needs a download (pooch) is simply not used
        return None
    if photo.dtype == bool:
        photo = photo.astype(np.uint8) * 255
    if photo.ndim == 2:
        photo = np.stack([photo] * 3, axis=-1)
    photo = photo[..., :3].astype(np.uint8)
    ph, pw = photo.shape[:2]
    # A random crop of at least half the photo, resized: each draw is a new picture.
    ch, cw = int(rng.integers(ph // 2, ph + 1)), int(rng.integers(pw // 2, pw + 1))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(crop, np.float32)


def generate_image(rng: np.random.Generator) -> Image.Image:
    """One benign picture, 160 to 720 pixels a side."""
    w, h = int(rng.integers(160, 721)), int(rng.integers(160, 721))
    kind = int(rng.integers(0, 5))
    base = None
    if kind == 4:
        base = _photo(rng, h, w)
    if base is None:
        kind = kind % 4
        base = [_gradient, _texture, _smooth_noise, _gradient][kind](rng, h, w)
    if kind in (0, 3) or rng.random() < 0.3:
        image = _shapes(rng, base)
    else:
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression-bomb stand-in."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def demo_items(seed: int = DEMO_SEED, count: int = DEMO_IMAGES) -> list[DemoItem]:
    """`count` good images plus the broken members, in key order."""
    rng = np.random.default_rng(seed)
    items: list[DemoItem] = []
    for number in range(count):
        key = f"{number:09d}"
        image = generate_image(rng)
        if number % 11 == 5:
            rgba = image.convert("RGBA")
            alpha = np.full(rgba.size[::-1], 255, np.uint8)
            alpha[: alpha.shape[0] // 4] = 96  # a translucent band: composited on white
            rgba.putalpha(Image.fromarray(alpha))
            data, ext = encode_png(rgba), "png"
        else:
            data, ext = encode_jpeg(image, int(rng.integers(70, 96))), "jpg"
        items.append(
            DemoItem(
                key, ext, data, image.width, image.height, f"a procedural scene, number {number}"
            )
        )
    good_jpeg = encode_jpeg(generate_image(rng), 90)
    broken = [
        ("jpg", good_jpeg[: len(good_jpeg) // 2], "truncated JPEG"),
        ("jpg", b"", "zero-byte file"),
        ("jpg", b"this is a text file, not a JPEG\n", "text file named .jpg"),
        ("png", bomb_png(), "decompression-bomb header"),
    ]
    for offset, (ext, data, why) in enumerate(broken):
        key = f"{count + offset:09d}"
        items.append(DemoItem(key, ext, data, None, None, f"broken member: {why}", broken=why))
    return items


FAILED_KEY_SUFFIX = "failed download"


# ---------------------------------------------------------------- writers


def _img2dataset_row(item: DemoItem, status: str = "success", error: str | None = None) -> dict:
    import hashlib

    return {
        "key": item.key,
        "url": f"{URL_PREFIX}{item.key}.{item.ext}",
        "caption": item.caption,
        "status": status,
        "error_message": error,
        "width": item.width,
        "height": item.height,
        "original_width": item.width,
        "original_height": item.height,
        "sha256": hashlib.sha256(item.data).hexdigest() if status == "success" else None,
    }


IMG2DATASET_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("original_width", pa.int64()),
        ("original_height", pa.int64()),
        ("sha256", pa.string()),
    ]
)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic shards
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(
    root: Path,
    items: list[DemoItem],
    shard_size: int,
    seed: int = DEMO_SEED,
    failed_keys: tuple[str, ...] = (),
) -> list[Path]:
    """img2dataset-style shards: NNNNN.tar + NNNNN.parquet + NNNNN_stats.json."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    shards = []
    chunks = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    for number, chunk in enumerate(chunks):
        name = f"{number:05d}"
        rows = [_img2dataset_row(item) for item in chunk]
        if number == 0:
            for fkey in failed_keys:
                ghost = DemoItem(fkey, "jpg", b"", None, None, "never downloaded")
                rows.append(_img2dataset_row(ghost, "failed_to_download", "HTTP Error 404"))
        # Members land in download-completion order, not key order.
        order = rng.permutation(len(chunk))
        tar_path = root / f"{name}.tar"
        with (
            atomic_path(tar_path) as tmp,
            tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for index in order:
                item, row = chunk[index], rows[index]
                _add_member(tar, f"{item.key}.{item.ext}", item.data)
                _add_member(tar, f"{item.key}.txt", item.caption.encode())
                _add_member(tar, f"{item.key}.json", json.dumps(row).encode())
        with atomic_path(root / f"{name}.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=IMG2DATASET_SCHEMA), tmp)
        ok = sum(r["status"] == "success" for r in rows)
        stats = {
            "count": len(rows),
            "successes": ok,
            "failed_to_download": len(rows) - ok,
            "failed_to_resize": 0,
            "status_dict": {"success": ok, "HTTP Error 404": len(rows) - ok},
        }
        with atomic_path(root / f"{name}_stats.json") as tmp:
            tmp.write_text(json.dumps(stats, indent=2))
        shards.append(tar_path)
    return shards


def write_folder(root: Path, items: list[DemoItem]) -> None:
    """img2dataset's "files" layout, flat: key.jpg, key.txt and key.json side by side."""
    root.mkdir(parents=True, exist_ok=True)
    for item in items:
        (root / f"{item.key}.{item.ext}").write_bytes(item.data)
        (root / f"{item.key}.txt").write_text(item.caption)
        (root / f"{item.key}.json").write_text(json.dumps(_img2dataset_row(item)))


def write_hf_parquet(path: Path, items: list[DemoItem]) -> None:
    """A Hugging Face `datasets` style parquet: an Image feature as struct<bytes, path>."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {
        "key": {"dtype": "string", "_type": "Value"},
        "url": {"dtype": "string", "_type": "Value"},
        "image": {"_type": "Image"},
        "text": {"dtype": "string", "_type": "Value"},
    }
    schema = pa.schema(
        [("key", pa.string()), ("url", pa.string()), ("image", image_type), ("text", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    table = pa.Table.from_pylist(
        [
            {
                "key": item.key,
                "url": f"{URL_PREFIX}{item.key}.{item.ext}",
                "image": {"bytes": item.data, "path": f"{item.key}.{item.ext}"},
                "text": item.caption,
            }
            for item in items
        ],
        schema=schema,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=32)


@dataclass(frozen=True)
class DemoData:
    root: Path

    @property
    def webdataset(self) -> Path:
        return self.root / "webdataset"

    @property
    def folder(self) -> Path:
        return self.root / "folder"

    @property
    def hf_parquet(self) -> Path:
        return self.root / "hf" / "train-00000.parquet"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def pdq_list(self) -> Path:
        return self.lists / "watch-pdq.txt"

    @property
    def md5_list(self) -> Path:
        return self.lists / "watch-md5.csv"

    def planted(self) -> dict[str, str]:
        return json.loads((self.lists / "planted.json").read_text())


def build_demo_data(
    root: Path, seed: int = DEMO_SEED, count: int = DEMO_IMAGES, shard_size: int = DEMO_SHARD_SIZE
) -> DemoData:
    """Write all three forms of the demo data set under `root` (deterministic)."""
    items = demo_items(seed, count)
    watch = plant_watched(items, seed)
    demo = DemoData(root)
    write_watch_lists(demo.lists, watch)
    failed = (f"{count + 100:09d}",)
    write_webdataset(demo.webdataset, items, shard_size, seed, failed_keys=failed)
    write_folder(demo.folder, items)
    write_hf_parquet(demo.hf_parquet, items)
    return demo


def iter_demo_images(seed: int, count: int) -> Iterator[Image.Image]:
    """Just the pictures, for tests and benchmarks that need many varied images."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield generate_image(rng)


# ---------------------------------------------------------------- the stand-in watch list

#: How each planted copy is made from its watched original. PDQ survives all of these
#: (flips only with --dihedral); it does not survive crops much larger than 1 %.
PLANTED_EDITS = ("exact", "reencode", "resize", "crop", "letterbox", "flip")


def _edit(image: Image.Image, edit: str, rng: np.random.Generator) -> bytes:
    w, h = image.size
    if edit == "reencode":
        return encode_jpeg(image, 60)
    if edit == "resize":
        return encode_jpeg(image.resize((int(w * 0.9), int(h * 0.9)), Image.Resampling.LANCZOS), 85)
    if edit == "crop":
        dx, dy = max(1, w // 200), max(1, h // 200)  # 0.5 % off each side: 1 % in all
        return encode_jpeg(image.crop((dx, dy, w - dx, h - dy)), 90)
    if edit == "letterbox":
        pad = h // 6
        canvas = Image.new("RGB", (w, h + 2 * pad), (255, 255, 255))  # img2dataset's white
        canvas.paste(image, (0, pad))
        return encode_jpeg(canvas, 90)
    if edit == "flip":
        return encode_jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 90)
    raise ValueError(edit)


@dataclass
class WatchList:
    """Benign stand-ins for a hotline list: hashes of pictures we then plant, edited."""

    pdq_hex: list[str]
    md5_hex: list[str]
    planted: dict[str, str]  # key of a planted copy -> the edit that made it


def watched_originals(seed: int, count: int) -> list[Image.Image]:
    """Detailed pictures (photos or busy scenes) whose PDQ quality is high."""
    rng = np.random.default_rng(seed + 101)
    chosen: list[Image.Image] = []
    while len(chosen) < count:
        w, h = int(rng.integers(320, 641)), int(rng.integers(320, 641))
        base = _photo(rng, h, w)
        if base is None:
            base = _texture(rng, h, w)
        image = _shapes(rng, base)
        if pdq_from_rgb(np.asarray(image))[1] >= 80:
            chosen.append(image)
    return chosen


def plant_watched(items: list[DemoItem], seed: int) -> WatchList:
    """Insert one edited copy of a watched original per edit; return the list to use."""
    rng = np.random.default_rng(seed + 202)
    originals = watched_originals(seed, len(PLANTED_EDITS))
    planted: dict[str, str] = {}
    pdq_hex, md5_hex = [], []
    import hashlib

    for number, (image, edit) in enumerate(zip(originals, PLANTED_EDITS, strict=True)):
        stored = encode_jpeg(image, 90)
        pdq_hex.append(
            pdq_from_rgb(np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")))[0].hex()
        )
        data = stored if edit == "exact" else _edit(image, edit, rng)
        if edit == "exact":
            md5_hex.append(hashlib.md5(stored).hexdigest())
        # Planted copies replace ordinary items spread through the shards.
        slot = (number * 7 + 3) % len([i for i in items if not i.broken])
        target = items[slot]
        shown = Image.open(io.BytesIO(data))
        items[slot] = DemoItem(target.key, "jpg", data, shown.width, shown.height, target.caption)
        planted[target.key] = edit
    # A watched picture that is not in the data set: lists hold far more than any set.
    absent = watched_originals(seed + 1, 1)[0]
    pdq_hex.append(pdq_from_rgb(np.asarray(absent))[0].hex())
    return WatchList(pdq_hex=pdq_hex, md5_hex=md5_hex, planted=planted)


def write_watch_lists(root: Path, watch: WatchList) -> tuple[Path, Path]:
    """A threatexchange-style PDQ list and an HMA-style CSV of MD5s, as an operator has."""
    root.mkdir(parents=True, exist_ok=True)
    pdq_path, md5_path = root / "watch-pdq.txt", root / "watch-md5.csv"
    lines = ["# benign stand-in watch list: PDQ hashes of generated demo pictures"]
    lines += [f"pdq {h}" for h in watch.pdq_hex]
    pdq_path.write_text("\n".join(lines) + "\n")
    rows = ["signal_type,signal_value,tags"] + [f"md5,{h},demo" for h in watch.md5_hex]
    md5_path.write_text("\n".join(rows) + "\n")
    (root / "planted.json").write_text(json.dumps(watch.planted, indent=2, sort_keys=True))
    return pdq_path, md5_path
