"""Fast PDQ: Meta's PDQ filter as two small matrix products, fed by a scaled JPEG decode.

Meta's PDQ (pdqhasher.cpp) takes the luma of the full-resolution picture, blurs it with
two passes of a Jarosz box filter per axis (window ``ceil(dim / 128)``), samples a 64x64
grid, takes a 16x16 DCT and thresholds it at its median. The blur and the sampling are
linear and separable, so the whole front half is ``Rows @ luma @ Cols.T`` where ``Rows``
(64 x height) and ``Cols`` (64 x width) depend only on the image size. That lets us skip
most of the work: libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 scale, and each reduced
pixel is (close to) the mean of an s x s block of full-resolution pixels, so summing each
operator row over every block gives an operator that maps the reduced picture to the same
64x64 grid. We decode at the coarsest scale whose block is at most 0.4 box windows
(FAST_PDQ_BLOCK_PER_WINDOW), small pictures at full scale (FAST_PDQ_FULL_DECODE_BELOW),
and take PDQ's luma of the reduced RGB (FAST_PDQ_DECODE_MODE
says why not libjpeg's Y); the hash is within a few bits of the reference.
`pdq_from_rgb_full` is the same operator at full resolution, kept beside it so tests can
check the operator itself against `pdqhash` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np
from PIL import Image

from clearset.hashing.pdq import pack_bits

#: Side of the grid PDQ samples after blurring (Meta's constant).
PDQ_GRID = 64
#: Side of the DCT block the 256 bits come from (Meta's constant).
PDQ_DCT = 16
#: Meta's pdqhasher refuses pictures narrower than this and returns quality 0.
PDQ_MIN_DIM = 5
#: Box-filter passes per axis in Meta's implementation.
JAROSZ_PASSES = 2

#: The reduced decode keeps a block (1/s scale) no wider than this many Jarosz windows.
#: On bench/hashing.py's corpus of camera photos (300-4000 px) 0.4 keeps the mean
#: distance to the reference under 1 bit and p99 under 10 in every size band; 0.5 let
#: pictures of 2048-2560 px take 1/8 scale, p99 9 and max 18 there. Larger values decode
#: faster and drift further (see bench/hashing.py --sweep).
FAST_PDQ_BLOCK_PER_WINDOW = 0.4

#: Pictures whose short side is under this many pixels are decoded at full scale: their
#: Jarosz window is 2-4 pixels, so a 1/2 decode's block is half a window and more, and
#: they drifted most (a mean of 1.3 bits at 300-600 px where the rest stayed under 1);
#: a full decode of a small picture costs little (see the size bands of the bench).
FAST_PDQ_FULL_DECODE_BELOW = 600

#: What libjpeg decodes to. "L" (its Y channel) is about 15 % faster, but Y is not the
#: luma PDQ computes from decoded RGB where colours clip, and on the 2,000-JPEG bench that
#: cost resized and cropped twins their match at the threshold's edge (481 of 500 found
#: against the reference's 482); "RGB" then PDQ's own luma found all 482.
FAST_PDQ_DECODE_MODE = "RGB"

#: libjpeg's DCT scaling factors, coarsest first.
JPEG_SCALES = (8, 4, 2, 1)

#: EXIF orientation -> (transpose, reverse rows, reverse columns), applied in that order
#: to a row-major array; the same picture Pillow's `ImageOps.exif_transpose` gives.
EXIF_ORIENTATION_OPS: dict[int, tuple[bool, bool, bool]] = {
    1: (False, False, False),
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}

_EXIF_ORIENTATION_TAG = 0x0112
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def jarosz_window(dim: int) -> int:
    """Meta's box-filter window along an axis of `dim` pixels (computeJaroszFilterWindowSize)."""
    return (dim + 2 * PDQ_GRID - 1) // (2 * PDQ_GRID)


def _box_ranges(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last input index that Meta's box1DFloat averages for each output index."""
    # box1DFloat centres an even window one pixel right: output k averages
    # [k - (window - half), k + half - 1] clipped to the vector, half = (window + 2) // 2.
    half = (window + 2) // 2
    k = np.arange(n)
    lo = np.maximum(k - (window - half), 0)
    hi = np.minimum(k + half - 1, n - 1)
    return lo, hi


@dataclass(frozen=True, slots=True)
class AxisOperator:
    """PDQ's blur-and-sample along one axis: sample i = sum(weights[i] * x[index[i]]).

    Kept sparse because each sample only sees about two box windows of pixels: gathering
    those few rows and columns costs far less than a dense 64 x n product.
    """

    index: np.ndarray  # (64, taps) int, positions in the (reduced) axis
    weights: np.ndarray  # (64, taps) float64, zero where a row has fewer taps


@dataclass(frozen=True, slots=True)
class DecodeAxis:
    """How one axis of a reduced decode maps to full-resolution pixels.

    Reduced pixel 0 covers the first `head` full-resolution pixels, every later one the
    next `scale` (the last may be short). `head` is `scale` for a plain decode; it is the
    short remainder when EXIF orientation flipped the axis or a trim cut into it.
    """

    length: int  # full-resolution pixels
    scale: int
    head: int

    @classmethod
    def plain(cls, length: int, scale: int, flipped: bool = False) -> DecodeAxis:
        blocks = -(-length // scale)
        head = length - scale * (blocks - 1) if flipped else min(scale, length)
        return cls(length=length, scale=scale, head=head)

    @property
    def blocks(self) -> int:
        return 1 if self.length <= self.head else 1 + -(-(self.length - self.head) // self.scale)

    def start(self, block: int) -> int:
        """First full-resolution pixel of reduced pixel `block` (`blocks` gives the end)."""
        if block <= 0:
            return 0
        return min(self.head + (block - 1) * self.scale, self.length)

    def crop(self, first: int, stop: int) -> DecodeAxis:
        """The axis of reduced pixels [first, stop)."""
        begin, end = self.start(first), self.start(stop)
        return DecodeAxis(length=end - begin, scale=self.scale, head=self.start(first + 1) - begin)


@lru_cache(maxsize=4096)
def pdq_axis_operator(n: int, scale: int = 1, head: int | None = None) -> AxisOperator:
    """The operator taking one axis of a 1/scale decode of `n` pixels to PDQ's 64 samples.

    Sample i is Meta's two box-filter passes evaluated at pixel int((i + 0.5) * n / 64);
    each full-resolution pixel's weight goes to the reduced pixel whose block holds it
    (see DecodeAxis for `head`; None means a plain decode).
    """
    head = min(scale, n) if head is None else head
    window = jarosz_window(n)
    lo, hi = _box_ranges(n, window)
    samples = ((np.arange(PDQ_GRID) + 0.5) * n / PDQ_GRID).astype(np.int64)
    offsets = np.arange(window)
    # Second pass: sample c averages first-pass outputs k in [lo[c], hi[c]] ...
    k = lo[samples][:, None] + offsets  # (64, window)
    k_valid = k <= hi[samples][:, None]
    k = np.minimum(k, n - 1)
    # ... and each of those averages pixels p in [lo[k], hi[k]].
    p = lo[k][:, :, None] + offsets  # (64, window, window)
    valid = k_valid[:, :, None] & (p <= hi[k][:, :, None])
    weight = (1.0 / (hi[samples] - lo[samples] + 1))[:, None, None] / (hi[k] - lo[k] + 1)[
        :, :, None
    ]
    weight = np.where(valid, weight, 0.0)
    p = np.minimum(p, n - 1)
    blocks = DecodeAxis(length=n, scale=scale, head=head).blocks
    block = (p + scale - head) // scale
    first = block.reshape(PDQ_GRID, -1).min(axis=1)
    local = (block - first[:, None, None]).reshape(PDQ_GRID, -1)
    taps = int(local.max()) + 1
    flat = (np.arange(PDQ_GRID)[:, None] * taps + local).ravel()
    weights = np.bincount(flat, weights=weight.ravel(), minlength=PDQ_GRID * taps)
    index = np.minimum(first[:, None] + np.arange(taps), blocks - 1)
    weights = weights.reshape(PDQ_GRID, taps)
    index.setflags(write=False)
    weights.setflags(write=False)
    return AxisOperator(index=index, weights=weights)


def pdq_grid(luma: np.ndarray, rows: AxisOperator, cols: AxisOperator) -> np.ndarray:
    """The blurred 64x64 grid: gather the few rows, then the few columns, each sample needs."""
    gathered = (luma[rows.index] * rows.weights[:, :, None]).sum(axis=1)  # (64, width)
    return cast(np.ndarray, (gathered[:, cols.index] * cols.weights[None, :, :]).sum(axis=2))


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """Meta's 16 x 64 DCT-II rows 1..16 (the DC row is left out)."""
    i = np.arange(1, PDQ_DCT + 1)[:, None]
    j = np.arange(PDQ_GRID)[None, :]
    return cast(
        np.ndarray, np.sqrt(2.0 / PDQ_GRID) * np.cos(np.pi / 2 / PDQ_GRID * i * (2 * j + 1))
    )


def pdq_quality(grid: np.ndarray) -> int:
    """Meta's image-domain quality: summed truncated neighbour gradients of the 64x64 grid."""
    grid = grid.astype(np.float32)
    # C++ truncates each scaled difference to int before taking its absolute value.
    down = np.abs(np.trunc((grid[:-1, :] - grid[1:, :]) * np.float32(100) / np.float32(255)))
    right = np.abs(np.trunc((grid[:, :-1] - grid[:, 1:]) * np.float32(100) / np.float32(255)))
    return min(int(down.sum() + right.sum()) // 90, 100)


def _dct16(grid: np.ndarray) -> np.ndarray:
    """PDQ's 16 x 16 DCT coefficients of the 64 x 64 grid (rows: vertical frequency).

    `dct @ grid @ dct.T`, each sum taken along a contiguous last axis (numpy's pairwise
    summation, a fixed order) rather than by BLAS, whose order and fused multiply-adds
    depend on the CPU: the result is the same on every machine, and the compiled twin
    (`fused`) takes the same sums bit for bit.
    """
    dct = _dct_matrix()
    half = (dct[:, None, :] * grid.T[None, :, :]).sum(axis=2)  # (16, 64): dct @ grid
    return cast(np.ndarray, (half[:, None, :] * dct[None, :, :]).sum(axis=2))


def _hash_from_dct(coefficients: np.ndarray) -> bytes:
    """Threshold 256 coefficients at their median and pack them as pdqhash orders bits."""
    coefficients = coefficients.ravel()
    # Meta's torben median of 256 values is the 128th smallest (the lower median).
    median = np.partition(coefficients, 127)[127]
    bits = coefficients > median
    # pdqhash lists bit 255 first; pack_bits puts the first element in the top bit.
    return pack_bits(bits[::-1])


def pdq_from_grid(grid: np.ndarray) -> tuple[bytes, int]:
    """(hash, quality) from the blurred 64x64 luma grid: DCT, median threshold, pack."""
    return _hash_from_dct(_dct16(grid)), pdq_quality(grid)


#: (−1)^frequency for DCT rows 1..16: reversing the grid along an axis multiplies each
#: coefficient along it by this, because cos(pi k (2(63 - j) + 1) / 128) equals
#: (−1)^k cos(pi k (2j + 1) / 128). Transposing the grid transposes the coefficients.
_DCT_REVERSE_SIGNS = np.where(np.arange(1, PDQ_DCT + 1) % 2 == 0, 1.0, -1.0)


def dihedral_coefficients(coefficients: np.ndarray) -> list[np.ndarray]:
    """The 16 x 16 DCT of each of the picture's 8 rotations and flips, in
    `clearset.hashing.pdq.DIHEDRAL_NAMES` order, from the DCT of the picture as shown.

    This is what Meta's pdqhasher does, so it equals `compute_dihedral` bit for bit. It
    is the hash of the turned picture only up to PDQ's sampling: where the 64 sample
    positions are not symmetric along an axis (most sizes), hashing the turned picture
    samples other pixels, a few bits away.
    """
    signs = _DCT_REVERSE_SIGNS
    rows, cols, both = signs[:, None], signs[None, :], signs[:, None] * signs[None, :]
    transposed = coefficients.T
    return [
        coefficients,  # original
        transposed * rows,  # rotate90 (counter-clockwise): the transpose, upside down
        coefficients * both,  # rotate180
        transposed * cols,  # rotate270: the transpose, mirrored
        coefficients * rows,  # flip_vertical (upside down)
        coefficients * cols,  # flip_horizontal (mirrored)
        transposed,  # rotate90_flip_vertical: the transpose
        transposed * both,  # rotate90_flip_horizontal: the anti-transpose
    ]


def pdq_dihedral_from_grid(grid: np.ndarray) -> tuple[list[bytes], int]:
    """The 8 rotation/flip hashes (DIHEDRAL_NAMES order) and quality from one 64x64 grid."""
    return [_hash_from_dct(c) for c in dihedral_coefficients(_dct16(grid))], pdq_quality(grid)


def _grid_from_luma(
    luma: np.ndarray, rows: DecodeAxis | None, cols: DecodeAxis | None
) -> np.ndarray | None:
    """PDQ's blurred 64x64 grid of `luma` (None when the picture is too small to hash)."""
    rows = rows or DecodeAxis.plain(luma.shape[0], 1)
    cols = cols or DecodeAxis.plain(luma.shape[1], 1)
    if min(rows.length, cols.length) < PDQ_MIN_DIM:
        return None
    return pdq_grid(
        luma,
        pdq_axis_operator(rows.length, rows.scale, rows.head),
        pdq_axis_operator(cols.length, cols.scale, cols.head),
    )


def pdq_from_luma(
    luma: np.ndarray, rows: DecodeAxis | None = None, cols: DecodeAxis | None = None
) -> tuple[bytes, int]:
    """(hash, quality) of a luma array whose axes map to full resolution as `rows`, `cols`.

    Without axes `luma` is taken at full resolution: Meta's algorithm up to float rounding.
    """
    grid = _grid_from_luma(luma, rows, cols)
    return (bytes(32), 0) if grid is None else pdq_from_grid(grid)


def pdq_dihedral_from_luma(
    luma: np.ndarray, rows: DecodeAxis | None = None, cols: DecodeAxis | None = None
) -> tuple[list[bytes], int]:
    """The 8 rotation/flip hashes and quality of a luma array, from one grid."""
    grid = _grid_from_luma(luma, rows, cols)
    return ([bytes(32)] * 8, 0) if grid is None else pdq_dihedral_from_grid(grid)


def luma_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """PDQ's luma ((0.299 R + 0.587 G) + 0.114 B, float32) of an HxWx3 uint8 array.

    Element by element in that order, not `@ weights`: BLAS's sgemv rounds a fifth of
    the pixels differently by the batch it is given, which no twin can follow.
    """
    r, g, b = (rgb[..., c].astype(np.float32) for c in range(3))
    w_r, w_g, w_b = _LUMA_WEIGHTS
    return cast(np.ndarray, (r * w_r + g * w_g) + b * w_b)


def pdq_from_rgb_full(rgb: np.ndarray) -> tuple[bytes, int]:
    """The operator at full resolution: the plain twin tests compare with `pdqhash`."""
    return pdq_from_luma(luma_from_rgb(rgb))


def pdq_dihedral_from_rgb_full(rgb: np.ndarray) -> tuple[list[bytes], int]:
    """The 8 rotations/flips at full resolution: the twin of `pdqhash.compute_dihedral`."""
    return pdq_dihedral_from_luma(luma_from_rgb(rgb))


@dataclass(frozen=True, slots=True)
class ReducedLuma:
    """A picture's luma decoded at reduced scale, oriented as shown, with its axis maps."""

    luma: np.ndarray  # uint8 or float32, oriented as displayed
    rows: DecodeAxis
    cols: DecodeAxis

    @property
    def height(self) -> int:
        return self.rows.length

    @property
    def width(self) -> int:
        return self.cols.length

    def crop(self, top: int, bottom: int, left: int, right: int) -> ReducedLuma:
        """Drop `top`/`bottom` reduced rows and `left`/`right` reduced columns."""
        h, w = self.luma.shape
        return ReducedLuma(
            luma=self.luma[top : h - bottom, left : w - right],
            rows=self.rows.crop(top, h - bottom),
            cols=self.cols.crop(left, w - right),
        )


def choose_scale(
    width: int,
    height: int,
    block_per_window: float,
    full_decode_below: int = FAST_PDQ_FULL_DECODE_BELOW,
) -> int:
    """The coarsest libjpeg scale whose block is at most `block_per_window` Jarosz windows
    (1, a full decode, for pictures whose short side is under `full_decode_below`)."""
    if min(width, height) < full_decode_below:
        return 1
    limit = block_per_window * min(jarosz_window(width), jarosz_window(height))
    for scale in JPEG_SCALES:
        if scale <= limit and min(width, height) // scale >= PDQ_MIN_DIM:
            return scale
    return 1


#: The `info` keys Pillow's `getexif` reads an orientation from (EXIF, XMP).
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8), 1 when absent or unreadable."""
    info = image.info
    if (
        getattr(image, "_exif", None) is None
        and not hasattr(image, "tag_v2")
        and not any(key in info for key in _ORIENTATION_SOURCES)
    ):
        # Nowhere `getexif` looks (no APP1 EXIF block, no XMP): skip building an Exif.
        return 1
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the hash
        return 1
    return value if value in EXIF_ORIENTATION_OPS else 1


def orient(array: np.ndarray, orientation: int) -> tuple[np.ndarray, tuple[bool, bool]]:
    """`array` as EXIF `orientation` says to show it, and which output axes run backwards."""
    transpose, reverse_rows, reverse_cols = EXIF_ORIENTATION_OPS[orientation]
    if transpose:
        array = array.T
    if reverse_rows:
        array = array[::-1]
    if reverse_cols:
        array = array[:, ::-1]
    return array, (reverse_rows, reverse_cols)


def pixels_of(image: Image.Image) -> np.ndarray:
    """A loaded L or RGB image's pixels as H x W x C uint8 (C 1, or 4: RGBX).

    Through Arrow (Pillow 11.2 and later): a view of Pillow's own buffer, where RGB is
    held as RGBX, with no copy; `np.asarray` copies every pixel through Pillow's raw
    encoder, which on a 256-px picture costs a tenth of its decode. Falls back to the
    copy (H x W x 3) where Pillow cannot export (older Pillow, an image in several
    memory blocks)."""
    height, width = image.height, image.width
    try:
        import pyarrow as pa

        array = pa.array(image)
        if pa.types.is_fixed_size_list(array.type):
            # The child array itself where the list array starts at its start and has
            # no nulls (always, from Pillow): `flatten` would run a compute kernel.
            size = len(array) * array.type.list_size
            plain = array.offset == 0 and array.null_count == 0 and len(array.values) == size
            array = array.values if plain else array.flatten()
        flat = array.to_numpy(zero_copy_only=True)
        if flat.dtype == np.uint8 and flat.size % max(1, height * width) == 0:
            return cast(np.ndarray, flat.reshape(height, width, -1))
    except Exception:  # noqa: BLE001, S110 - any failure to export: take the copy
        pass
    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


@dataclass(frozen=True, slots=True)
class ReducedPixels:
    """A JPEG decoded at reduced scale, as stored (not yet oriented), with the axis maps
    of the picture as shown: what the compiled kernel (`fused`) starts from."""

    pixels: np.ndarray  # H x W x C uint8, C 1 (grey), 3 (RGB) or 4 (RGBX), C-contiguous
    orientation: int  # EXIF orientation, 1-8
    rows: DecodeAxis  # of the oriented picture
    cols: DecodeAxis


def decode_jpeg_pixels(
    image: Image.Image,
    block_per_window: float = FAST_PDQ_BLOCK_PER_WINDOW,
    full_decode_below: int = FAST_PDQ_FULL_DECODE_BELOW,
) -> ReducedPixels:
    """Decode an opened, not yet loaded JPEG at reduced scale to grey or RGB pixels.

    Raises Pillow's own errors (OSError for truncated data); the caller maps them.
    """
    orientation = exif_orientation(image)
    stored_width, stored_height = image.size
    scale = choose_scale(stored_width, stored_height, block_per_window, full_decode_below)
    # Pillow picks the largest libjpeg scale s with size // request >= s, so asking for
    # size // scale gets exactly `scale`.
    request = (stored_width // scale, stored_height // scale) if scale > 1 else None
    drafted = image.draft(FAST_PDQ_DECODE_MODE, request)
    actual = round(stored_width / drafted[1][2]) if drafted and request else 1
    image.load()
    # RGB as decoded, or CMYK converted.
    pixels = pixels_of(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    _, (reverse_rows, reverse_cols) = orient(pixels[:1, :1, 0], orientation)
    if EXIF_ORIENTATION_OPS[orientation][0]:
        stored_width, stored_height = stored_height, stored_width
    return ReducedPixels(
        pixels=np.ascontiguousarray(pixels),
        orientation=orientation,
        rows=DecodeAxis.plain(stored_height, actual, reverse_rows),
        cols=DecodeAxis.plain(stored_width, actual, reverse_cols),
    )


def decode_jpeg_luma(
    image: Image.Image,
    block_per_window: float = FAST_PDQ_BLOCK_PER_WINDOW,
    full_decode_below: int = FAST_PDQ_FULL_DECODE_BELOW,
) -> ReducedLuma:
    """Decode an opened, not yet loaded JPEG at reduced scale straight to oriented luma
    (the numpy twin of what `fused` does with `decode_jpeg_pixels`).

    Raises Pillow's own errors (OSError for truncated data); the caller maps them.
    """
    decoded = decode_jpeg_pixels(image, block_per_window, full_decode_below)
    pixels = decoded.pixels
    luma = pixels[:, :, 0] if pixels.shape[2] == 1 else luma_from_rgb(pixels)
    oriented, _ = orient(luma, decoded.orientation)
    return ReducedLuma(luma=oriented, rows=decoded.rows, cols=decoded.cols)


def pdq_from_reduced(reduced: ReducedLuma) -> tuple[bytes, int]:
    """(hash, quality) of a reduced decode."""
    return pdq_from_luma(reduced.luma, reduced.rows, reduced.cols)


def pdq_dihedral_from_reduced(reduced: ReducedLuma) -> tuple[list[bytes], int]:
    """The 8 rotation/flip hashes and quality of a reduced decode, from its one grid."""
    return pdq_dihedral_from_luma(reduced.luma, reduced.rows, reduced.cols)
