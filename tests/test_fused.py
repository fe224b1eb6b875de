"""The compiled per-picture pass (`fused`) against its numpy twin (`fast_pdq`, `borders`).

Bit for bit: the same hash, the same 8 rotations and flips, the same quality and the same
borders, on a few hundred pictures (camera photos at several sizes and EXIF orientations,
generated scenes, JPEGs decoded at reduced scale) and on crafted edge cases (flat
pictures, 1-pixel-wide and -tall ones, pictures too small to hash, padding on every side,
odd sizes, grey pixels). numba compiles the kernel once per checkout (`cache=True`).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clearset.demo import generate_image
from clearset.hashing import fused, hash_bytes
from clearset.hashing.borders import find_borders
from clearset.hashing.fast_pdq import (
    EXIF_ORIENTATION_OPS,
    DecodeAxis,
    decode_jpeg_luma,
    decode_jpeg_pixels,
    luma_from_rgb,
    orient,
    pdq_dihedral_from_luma,
    pdq_from_luma,
)

PHOTO_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "immunohistochemistry",
)


def _twin(pixels: np.ndarray, orientation: int, rows: DecodeAxis, cols: DecodeAxis, block: int):
    """What the numpy path gives: (8 hashes, quality, borders)."""
    luma = pixels[:, :, 0] if pixels.shape[2] == 1 else luma_from_rgb(pixels)
    oriented, _ = orient(luma, orientation)
    hashes, quality = pdq_dihedral_from_luma(oriented, rows, cols)
    return hashes, quality, find_borders(oriented, block=block)


def _axes(pixels: np.ndarray, orientation: int) -> tuple[DecodeAxis, DecodeAxis]:
    transpose, reverse_rows, reverse_cols = EXIF_ORIENTATION_OPS[orientation]
    h, w = pixels.shape[:2]
    if transpose:
        h, w = w, h
    return DecodeAxis.plain(h, 1, reverse_rows), DecodeAxis.plain(w, 1, reverse_cols)


def _check(pixels: np.ndarray, orientation: int = 1, rows=None, cols=None) -> None:
    if rows is None:
        rows, cols = _axes(pixels, orientation)
    hashes, quality, borders = _twin(pixels, orientation, rows, cols, rows.scale)
    axes = (rows.length, rows.scale, rows.head), (cols.length, cols.scale, cols.head)
    turned = fused.fused_pdq(pixels, orientation, *axes, dihedral=True, find_borders=True)
    assert (turned.hashes, turned.quality, turned.borders) == (hashes, quality, borders)
    plain = fused.fused_pdq(pixels, orientation, *axes)
    assert (plain.hashes, plain.quality) == (hashes[:1], quality)
    assert not plain.borders.any  # not asked for
    if borders.any:
        h, w = turned.height, turned.width
        inner_rows = rows.crop(borders.top, h - borders.bottom)
        inner_cols = cols.crop(borders.left, w - borders.right)
        luma = pixels[:, :, 0] if pixels.shape[2] == 1 else luma_from_rgb(pixels)
        inner = orient(luma, orientation)[0][
            borders.top : h - borders.bottom, borders.left : w - borders.right
        ]
        fused.fused_pdq(pixels, orientation, *axes)  # the workspace holds this picture
        got = fused.region_pdq(
            plain,
            borders,
            (inner_rows.length, inner_rows.scale, inner_rows.head),
            (inner_cols.length, inner_cols.scale, inner_cols.head),
        )
        assert got == pdq_from_luma(inner, inner_rows, inner_cols)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from skimage import data as skdata

    out = []
    for name in PHOTO_NAMES:
        array = np.asarray(getattr(skdata, name)())
        out.append(np.asarray(Image.fromarray(array).convert("RGB")))
    return out


def test_photos_at_several_sizes_and_orientations(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(27)
    count = 0
    for photo in photos:
        for short in (16, 64, 131, 256, 384):
            aspect = float(rng.choice([1.0, 4 / 3, 16 / 9]))
            size = (
                (int(short * aspect), short) if rng.random() < 0.5 else (short, int(short * aspect))
            )
            pixels = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR))
            for orientation in (1, int(rng.integers(2, 9))):
                _check(pixels, orientation)
                count += 1
    assert count == len(PHOTO_NAMES) * 10


def test_generated_scenes() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        image = generate_image(rng)
        side = int(rng.integers(40, 260))
        pixels = np.asarray(image.resize((side, int(side * image.height / image.width) + 1)))
        _check(pixels, int(rng.integers(1, 9)))


def test_reduced_decodes(photos: list[np.ndarray]) -> None:
    """JPEGs decoded at 1/2 and 1/4 scale: the reduced axes (scale, head) and orientation."""
    scales = set()
    for number, photo in enumerate(photos[:5]):
        image = Image.fromarray(photo).resize((1200 + 37 * number, 700 + 11 * number))
        exif = Image.Exif()
        exif[0x0112] = 1 + number % 8
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88, exif=exif)
        data = buffer.getvalue()
        decoded = decode_jpeg_pixels(Image.open(io.BytesIO(data)))
        scales.add(decoded.rows.scale)
        _check(decoded.pixels, decoded.orientation, decoded.rows, decoded.cols)
        reduced = decode_jpeg_luma(Image.open(io.BytesIO(data)))
        assert (
            hash_bytes(data, trim_borders=False).pdq
            == pdq_from_luma(reduced.luma, reduced.rows, reduced.cols)[0]
        )
    assert scales & {2, 4}


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_pictures(value: int) -> None:
    _check(np.full((70, 90, 3), value, np.uint8))
    _check(np.full((33, 20, 1), value, np.uint8), 6)


@pytest.mark.parametrize(
    "shape", [(1, 300, 3), (300, 1, 3), (1, 1, 3), (4, 4, 3), (4, 300, 3), (5, 5, 3), (2, 9, 1)]
)
def test_thin_and_tiny_pictures(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    for orientation in (1, 5, 8):
        _check(pixels, orientation)
    if min(shape[:2]) < 5:
        assert fused.fused_pdq(pixels, 1, (shape[0], 1, 1), (shape[1], 1, 1)).hashes == [bytes(32)]


def test_an_axis_with_over_128_taps() -> None:
    """17,000 px wide, decoded in full: 265 column taps, past the 8-lane path's 128 (numpy
    then sums in halves); short, so that it stays cheap."""
    rng = np.random.default_rng(17)
    pixels = rng.integers(0, 256, (6, 17_000, 1)).astype(np.uint8)
    _check(pixels)
    _check(pixels, 6)  # the long axis as rows


@pytest.mark.parametrize("odd", [(7, 301), (129, 257), (63, 65), (211, 97)])
def test_odd_sizes(odd: tuple[int, int], photos: list[np.ndarray]) -> None:
    pixels = np.asarray(Image.fromarray(photos[0]).resize((odd[1], odd[0])))
    _check(pixels)
    _check(np.ascontiguousarray(pixels[:, :, :1]), 7)  # grey


@pytest.mark.parametrize("colour", [0, 255])
@pytest.mark.parametrize("sides", ["tb", "lr", "tblr", "t", "r", "tbl"])
def test_padding_on_every_side(colour: int, sides: str, photos: list[np.ndarray]) -> None:
    """Letterbox, pillarbox, both, and one-sided bands; through a JPEG for its ringing."""
    inner = Image.fromarray(photos[1]).resize((180, 120))
    pad = {side: (24 if side in sides else 0) for side in "tblr"}
    canvas = Image.new("RGB", (180 + pad["l"] + pad["r"], 120 + pad["t"] + pad["b"]), (colour,) * 3)
    canvas.paste(inner, (pad["l"], pad["t"]))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=85)
    pixels = np.asarray(Image.open(buffer).convert("RGB"))
    _check(pixels)
    _check(pixels, 6)
    if sides in ("tb", "lr", "tblr"):
        assert fused.fused_pdq(
            pixels, 1, (pixels.shape[0], 1, 1), (pixels.shape[1], 1, 1), find_borders=True
        ).borders.any


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_equal_pdqhash(fmt: str, photos: list[np.ndarray]) -> None:
    """Full-scale compiled pass on PNG and WebP: the reference's hashes."""
    for photo in photos[:3]:
        buffer = io.BytesIO()
        Image.fromarray(photo).resize((300, 200)).save(buffer, fmt)
        data = buffer.getvalue()
        ours, exact = (
            hash_bytes(data, dihedral=True),
            hash_bytes(data, exact_pdq=True, dihedral=True),
        )
        assert (ours.pdq, ours.pdq_quality, ours.pdq_dihedral) == (
            exact.pdq,
            exact.pdq_quality,
            exact.pdq_dihedral,
        )


# ------------------------------------------------------------ video frames: a Y plane


def _plane_twin(plane: np.ndarray, full_range: bool) -> tuple[bytes, int]:
    from clearset.hashing.video import luma_from_plane

    return pdq_from_luma(luma_from_plane(plane, full_range))


def _strided(values: np.ndarray, pad: int) -> np.ndarray:
    """`values` as a view whose rows lie `pad` bytes further apart than its width, as a
    decoder's planes do (PyAV's line_size), with junk in the padding."""
    height, width = values.shape
    buffer = np.full((height, width + pad), 99, np.uint8)
    buffer[:, :width] = values
    view = buffer[:, :width]
    assert view.strides[0] == width + pad
    return view


@pytest.mark.parametrize("full_range", [False, True])
def test_y_planes_equal_the_numpy_twin(full_range: bool, photos: list[np.ndarray]) -> None:
    """Photo planes at odd sizes, 1-pixel-wide and -tall, too small, flat at the ends of
    both ranges (below 16 and above 235 too), each contiguous and with padded rows."""
    rng = np.random.default_rng(2 + full_range)
    sizes = [(160, 96), (161, 97), (7, 301), (640, 352), (65, 63), (300, 5), (5, 5)]
    planes = [
        np.asarray(Image.fromarray(photo).convert("L").resize(size))
        for photo, size in zip(photos, sizes, strict=True)
    ]
    shapes = [(1, 300), (300, 1), (4, 9), (1, 1), (6, 17_000)]  # the last: 265 column taps
    planes += [rng.integers(0, 256, shape).astype(np.uint8) for shape in shapes]
    planes += [np.full((70, 90), value, np.uint8) for value in (0, 15, 16, 128, 235, 240, 255)]
    for plane in planes:
        expected = _plane_twin(plane, full_range)
        for pad in (0, 1, 32):
            view = _strided(plane, pad) if pad else np.ascontiguousarray(plane)
            assert fused.fused_pdq_luma(view, full_range) == expected, (plane.shape, pad)
        if min(plane.shape) < 5:
            assert expected == (bytes(32), 0)
    # Read-only, transposed (column stride not 1): still the same hash.
    plane = planes[0]
    frozen = plane.copy()
    frozen.setflags(write=False)
    assert fused.fused_pdq_luma(frozen, full_range) == _plane_twin(plane, full_range)
    turned = np.ascontiguousarray(plane.T).T
    assert fused.fused_pdq_luma(turned, full_range) == _plane_twin(plane, full_range)
    for wrong in (plane.astype(np.uint16), plane[:, :, None]):
        with pytest.raises(ValueError, match="uint8 plane"):
            fused.fused_pdq_luma(wrong, full_range)


def test_video_range_is_rescaled_inside_the_pass() -> None:
    """The luma the pass hashes (left in the thread's workspace) is the plane's values
    as stored (full range) or (Y - 16) * 255 / 219 (video range), the twin's bit for bit;
    junk in the padding of the rows is never read."""
    from clearset.hashing.video import luma_from_plane

    plane = np.arange(256, dtype=np.uint8).repeat(3).reshape(24, 32)
    view = _strided(plane, 13)
    for full_range in (False, True):
        fused.fused_pdq_luma(view, full_range)
        luma = fused._WORKSPACE.luma[: plane.size].reshape(plane.shape)
        expected = luma_from_plane(plane, full_range)
        assert luma.dtype == np.float32 and np.array_equal(luma, expected)
        exact = plane if full_range else (plane.astype(np.float64) - 16) * 255 / 219
        assert np.abs(luma - exact).max() < 1e-4
    assert luma_from_plane(plane, False)[0, 0] < 0  # below black: not clipped, as before
