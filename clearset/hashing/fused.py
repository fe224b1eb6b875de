"""One compiled pass per picture after decoding: luma, PDQ's filter, borders, DCT, hash.

`fast_pdq` computes the same thing as a chain of numpy steps (the reference twin the
tests compare this with, bit for bit). Each numpy step is a separate pass over the
picture with Python between them, which on a 256-px picture costs more than decoding
it. Here one numba kernel per picture reads the decoded pixels once into a luma buffer
(oriented as EXIF says to show it), then, without returning to Python: Meta's two Jarosz
box passes per axis and the 64x64 sampling (as the sparse operators of
`fast_pdq.pdq_axis_operator`), PDQ's quality, the 16x16 DCT, the median threshold of the
hash and of its 7 rotations and flips, and the letterbox/pillarbox bands of `borders`.
The buffers live in a per-thread workspace that grows to the largest picture seen, so a
picture allocates nothing but its outputs; the kernels release the GIL.

Every sum is taken in the order the numpy twin takes it (sequential along a middle axis,
numpy's pairwise summation along a last one), with no fused multiply-add, so the two
agree bit for bit; neither depends on which BLAS kernel the CPU picks.

Importing this module imports numba (about half a second); `clearset.hashing.item`
imports it on first use. Each worker process compiles nothing when numba's on-disk
cache (`cache=True`, next to this file or under NUMBA_CACHE_DIR) is warm, and loads the
machine code in a few hundred milliseconds; a cold cache compiles for several seconds.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

import numba
import numpy as np

from clearset.hashing.borders import (
    BORDER_CENTRE_SLACK_PIXELS,
    BORDER_MIN_FRACTION,
    BORDER_MIN_REMAINING,
    BORDER_RINGING_MEAN,
    BORDER_RINGING_PIXELS,
    BORDER_TOLERANCE,
    Borders,
)
from clearset.hashing.fast_pdq import (
    _LUMA_WEIGHTS,
    EXIF_ORIENTATION_OPS,
    PDQ_DCT,
    PDQ_GRID,
    PDQ_MIN_DIM,
    _dct_matrix,
    pdq_axis_operator,
)

_W_R, _W_G, _W_B = (np.float32(w) for w in _LUMA_WEIGHTS)
# uint32 constants: a Python int would widen the word's arithmetic to 64 bits.
_BYTE, _EIGHT, _SIXTEEN = np.uint32(0xFF), np.uint32(8), np.uint32(16)
_LITTLE_ENDIAN = sys.byteorder == "little"
_HUNDRED = np.float32(100)
_TWO_FIFTY_FIVE = np.float32(255)
_ZERO32 = np.float32(0)
_TOLERANCE = np.float32(BORDER_TOLERANCE)
_RINGING_MEAN = np.float32(BORDER_RINGING_MEAN)
_DCT = np.ascontiguousarray(_dct_matrix())
_DCT.setflags(write=False)
_DCT_T = np.ascontiguousarray(_DCT.T)
_DCT_T.setflags(write=False)
#: (−1)^frequency of DCT rows 1..16 (fast_pdq._DCT_REVERSE_SIGNS).
_SIGNS = np.where(np.arange(1, PDQ_DCT + 1) % 2 == 0, 1.0, -1.0)
_SIGNS.setflags(write=False)
#: (transpose, reverse rows, reverse columns) by EXIF orientation, as a table.
_ORIENT = np.zeros((9, 3), np.int64)
for _k, _ops in EXIF_ORIENTATION_OPS.items():
    _ORIENT[_k] = _ops
_ORIENT.setflags(write=False)

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _kernel(function: _Function) -> _Function:
    """numba.njit, cached on disk and releasing the GIL, typed for mypy as what it wraps."""
    return cast(_Function, numba.njit(cache=True, nogil=True)(function))


# Slots of the kernel's integer outputs.
_QUALITY, _TOP, _BOTTOM, _LEFT, _RIGHT = range(5)


@_kernel
def _pairwise_block(values: np.ndarray, start: int, n: int) -> Any:  # the array's dtype
    """numpy's pairwise sum of at most 128 values: 8 running sums, then the rest."""
    if n < 8:
        total = values[start] - values[start]  # zero of the array's precision
        if n > 0:
            total = values[start]
            for i in range(1, n):
                total += values[start + i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = 8
    while i < n - (n % 8):
        r0 += values[start + i]
        r1 += values[start + i + 1]
        r2 += values[start + i + 2]
        r3 += values[start + i + 3]
        r4 += values[start + i + 4]
        r5 += values[start + i + 5]
        r6 += values[start + i + 6]
        r7 += values[start + i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return total


@_kernel
def _pairwise(values: np.ndarray, start: int, n: int) -> Any:  # the array's dtype
    """numpy's pairwise summation of values[start:start + n] in its exact order, at the
    array's precision (float64 for the operators, float32 as `mean` sums a float32 row).

    numpy adds blocks of up to 128 in 8 running sums and splits longer runs in halves
    (multiples of 8). numba cannot load a recursive function from its cache, so the
    halving is walked with a small explicit stack instead.
    """
    if n <= 128:
        return _pairwise_block(values, start, n)
    # Frames of the halving: start, length, and the left half's sum once known.
    starts = np.empty(64, np.int64)
    lengths = np.empty(64, np.int64)
    lefts = np.empty(64, values.dtype)
    done_left = np.zeros(64, np.bool_)
    depth = 0
    starts[0], lengths[0] = start, n
    value = values[start] - values[start]
    while True:
        length = lengths[depth]
        if length <= 128:
            value = _pairwise_block(values, starts[depth], length)
            depth -= 1
        else:
            half = length // 2
            half -= half % 8
            depth += 1
            starts[depth], lengths[depth] = starts[depth - 1], half
            done_left[depth - 1] = False
            continue
        # Hand `value` up: a left half waits for its right; a right half completes.
        while depth >= 0:
            length = lengths[depth]
            half = length // 2
            half -= half % 8
            if not done_left[depth]:
                lefts[depth] = value
                done_left[depth] = True
                depth += 1
                starts[depth], lengths[depth] = starts[depth - 1] + half, length - half
                done_left[depth] = False
                break
            value = lefts[depth] + value
            depth -= 1
        if depth < 0:
            return value


@_kernel
def _luma(pixels: np.ndarray, orient: np.ndarray, luma: np.ndarray) -> None:
    """PDQ's luma of H x W x C uint8 pixels (C = 1 grey, 3 RGB, 4 RGBX), oriented for display,
    into the flat float32 buffer `luma` (row-major, the oriented shape)."""
    height, width, channels = pixels.shape
    transpose, reverse_rows, reverse_cols = orient[0], orient[1], orient[2]
    rows, cols = (width, height) if transpose else (height, width)
    if channels >= 3 and not (transpose or reverse_rows or reverse_cols):
        # The common case, as one straight loop of constant stride (RGBX as Pillow
        # holds it, or RGB) that the compiler can vectorise.
        if channels == 4 and _LITTLE_ENDIAN:
            # A pixel as one 32-bit word (R in the low byte): the compiler makes vectors
            # of word loads and shifts, about twice as fast as four strided byte loads.
            words = pixels.reshape(height * width * 4).view(np.uint32)
            for p in range(height * width):
                word = words[p]
                luma[p] = (
                    np.float32(np.int32(word & _BYTE)) * _W_R
                    + np.float32(np.int32((word >> _EIGHT) & _BYTE)) * _W_G
                ) + np.float32(np.int32((word >> _SIXTEEN) & _BYTE)) * _W_B
            return
        if channels == 4:
            rgbx = pixels.reshape(height * width * 4)
            for p in range(height * width):
                luma[p] = (
                    np.float32(rgbx[4 * p]) * _W_R + np.float32(rgbx[4 * p + 1]) * _W_G
                ) + np.float32(rgbx[4 * p + 2]) * _W_B
            return
        if channels == 3:
            rgb = pixels.reshape(height * width * 3)
            for p in range(height * width):
                luma[p] = (
                    np.float32(rgb[3 * p]) * _W_R + np.float32(rgb[3 * p + 1]) * _W_G
                ) + np.float32(rgb[3 * p + 2]) * _W_B
            return
    for y in range(height):
        for x in range(width):
            if channels == 1:
                value = np.float32(pixels[y, x, 0])
            else:
                value = (
                    np.float32(pixels[y, x, 0]) * _W_R + np.float32(pixels[y, x, 1]) * _W_G
                ) + np.float32(pixels[y, x, 2]) * _W_B
            i, j = (x, y) if transpose else (y, x)
            if reverse_rows:
                i = rows - 1 - i
            if reverse_cols:
                j = cols - 1 - j
            luma[i * cols + j] = value


@_kernel
def _combine(lanes: np.ndarray, j: int) -> Any:  # float64
    """numpy's closing of 8 running sums: ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7))."""
    return ((lanes[0, j] + lanes[1, j]) + (lanes[2, j] + lanes[3, j])) + (
        (lanes[4, j] + lanes[5, j]) + (lanes[6, j] + lanes[7, j])
    )


@_kernel
def _grid(
    luma: np.ndarray,
    stride: int,
    top: int,
    left: int,
    width: int,
    row_index: np.ndarray,
    row_weights: np.ndarray,
    col_index: np.ndarray,
    col_weights: np.ndarray,
    col_index_t: np.ndarray,
    col_weights_t: np.ndarray,
    gathered: np.ndarray,
    taps: np.ndarray,
    lanes: np.ndarray,
    grid: np.ndarray,
) -> None:
    """The blurred 64x64 grid of the luma region starting at (top, left), `width` wide.

    Each sum is independent of its neighbours, so the loops run across them (a row's
    pixels, then a grid row's 64 samples) and the compiler makes vectors of them, while
    each sum itself is still taken in numpy's order. `col_index_t`/`col_weights_t` are
    the column operator transposed (taps x 64, unsigned), for that second pass.
    """
    row_taps = row_index.shape[1]
    for i in range(PDQ_GRID):
        # 0 + p0 + p1 + ...: numpy's order along a middle axis, for every column at once.
        out = gathered[i * width : (i + 1) * width]
        for t in range(row_taps):
            offset = (top + row_index[i, t]) * stride + left
            line = luma[offset : offset + width]
            weight = row_weights[i, t]
            if t == 0:
                for x in range(width):
                    out[x] = 0.0 + np.float64(line[x]) * weight
            else:
                for x in range(width):
                    out[x] += np.float64(line[x]) * weight
    col_taps = col_index.shape[1]
    if col_taps > 128:
        # Only an axis over 16,000 pixels decoded in full: numpy's halving, one by one.
        origin = col_taps - col_taps  # not a literal: see below
        for i in range(PDQ_GRID):
            base = i * width
            for j in range(PDQ_GRID):
                for t in range(col_taps):
                    taps[t] = gathered[base + col_index[j, t]] * col_weights[j, t]
                grid[i, j] = _pairwise(taps, origin, col_taps)
        return
    # numpy's pairwise sum of at most 128 values: in order under 8 (0 + v0 + v1 + ...),
    # else 8 running sums over whole groups of 8, combined, then the rest in order.
    whole = 0 if col_taps < 8 else col_taps - col_taps % 8
    for i in range(PDQ_GRID):
        row = gathered[i * width : (i + 1) * width]
        out = grid[i]
        if whole == 0:
            for j in range(PDQ_GRID):
                out[j] = 0.0
        else:
            for t in range(whole):
                index, weights, lane = col_index_t[t], col_weights_t[t], lanes[t % 8]
                if t < 8:
                    for j in range(PDQ_GRID):
                        lane[j] = row[index[j]] * weights[j]
                else:
                    for j in range(PDQ_GRID):
                        lane[j] += row[index[j]] * weights[j]
            for j in range(PDQ_GRID):
                out[j] = _combine(lanes, j)
        for t in range(whole, col_taps):
            index, weights = col_index_t[t], col_weights_t[t]
            for j in range(PDQ_GRID):
                out[j] += row[index[j]] * weights[j]


@_kernel
def _quality(grid: np.ndarray) -> int:
    """Meta's quality from the grid, as `fast_pdq.pdq_quality` (float32 differences)."""
    total = 0
    for i in range(PDQ_GRID):
        for j in range(PDQ_GRID):
            here = np.float32(grid[i, j])
            if i + 1 < PDQ_GRID:
                step = (here - np.float32(grid[i + 1, j])) * _HUNDRED / _TWO_FIFTY_FIVE
                total += abs(int(step))
            if j + 1 < PDQ_GRID:
                step = (here - np.float32(grid[i, j + 1])) * _HUNDRED / _TWO_FIFTY_FIVE
                total += abs(int(step))
    return min(total // 90, 100)


@_kernel
def _dct16(
    grid: np.ndarray,
    dct: np.ndarray,
    dct_t: np.ndarray,
    lanes: np.ndarray,
    half: np.ndarray,
    out: np.ndarray,
) -> None:
    """16x16 DCT: (dct @ grid) @ dct.T, each sum numpy's pairwise sum of 64 products:
    8 running sums, lane m adding products m, m + 8, ..., combined as `_combine` does.
    The loops run across the independent sums of a row (64, then 16 of them) so that
    the compiler makes vectors of them without reordering any one sum."""
    for i in range(PDQ_DCT):
        for k in range(PDQ_GRID):
            weight, source, lane = dct[i, k], grid[k], lanes[k % 8]
            if k < 8:
                for j in range(PDQ_GRID):
                    lane[j] = weight * source[j]
            else:
                for j in range(PDQ_GRID):
                    lane[j] += weight * source[j]
        for j in range(PDQ_GRID):
            half[i, j] = _combine(lanes, j)
    for i in range(PDQ_DCT):
        for k in range(PDQ_GRID):
            weight, source, lane = half[i, k], dct_t[k], lanes[k % 8]
            if k < 8:
                for m in range(PDQ_DCT):
                    lane[m] = weight * source[m]
            else:
                for m in range(PDQ_DCT):
                    lane[m] += weight * source[m]
        for m in range(PDQ_DCT):
            out[i, m] = _combine(lanes, m)


@_kernel
def _threshold(values: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> None:
    """Bits above the lower median (the 128th smallest, as `np.partition(..., 127)`),
    packed as pdqhash orders them, into out[0:32]. A hand-written quickselect: numba's
    own sort costs seconds of compile time for nothing a median needs."""
    for i in range(256):  # not `scratch[:] = values`: its shape check compiles strings
        scratch[i] = values[i]
    lo, hi, kth = 0, 255, 127
    while lo < hi:
        pivot = scratch[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    median = scratch[kth]
    for k in range(32):
        byte = 0
        for t in range(8):
            if values[255 - 8 * k - t] > median:
                byte |= 1 << (7 - t)
        out[k] = byte


@_kernel
def _hashes(
    coefficients: np.ndarray,
    signs: np.ndarray,
    variants: int,
    flat: np.ndarray,
    scratch: np.ndarray,
    out: np.ndarray,
) -> None:
    """The hash (variants=1) or all 8 rotations/flips (DIHEDRAL_NAMES order) into out."""
    for v in range(variants):
        for i in range(PDQ_DCT):
            for j in range(PDQ_DCT):
                if v == 0:
                    value = coefficients[i, j]
                elif v == 1:
                    value = coefficients[j, i] * signs[i]
                elif v == 2:
                    value = coefficients[i, j] * (signs[i] * signs[j])
                elif v == 3:
                    value = coefficients[j, i] * signs[j]
                elif v == 4:
                    value = coefficients[i, j] * signs[i]
                elif v == 5:
                    value = coefficients[i, j] * signs[j]
                elif v == 6:
                    value = coefficients[j, i]
                else:
                    value = coefficients[j, i] * (signs[i] * signs[j])
                flat[i * PDQ_DCT + j] = value
        _threshold(flat, scratch, out[v])


@_kernel
def _line_ok(
    luma: np.ndarray, height: int, width: int, line: int, by_rows: bool, colour: np.float32
) -> bool:
    """Whether every pixel of a row (or column) is within the tolerance of `colour`."""
    if by_rows:
        base = line * width
        for x in range(width):
            if abs(luma[base + x] - colour) > _TOLERANCE:
                return False
    else:
        for y in range(height):
            if abs(luma[y * width + line] - colour) > _TOLERANCE:
                return False
    return True


@_kernel
def _line_mean(
    luma: np.ndarray,
    height: int,
    width: int,
    line: int,
    by_rows: bool,
    colour: np.float32,
    scratch: np.ndarray,
) -> np.float32:
    """Mean distance from `colour` of a row (numpy's pairwise float32 sum, as
    `deviation.mean(axis=1)`) or a column (summed down the rows, as `deviation.T.mean`)."""
    if by_rows:
        base = line * width
        for x in range(width):
            scratch[x] = abs(luma[base + x] - colour)
        return np.float32(np.float64(_pairwise(scratch, line - line, width)) / width)
    total = np.float32(0)
    for y in range(height):
        total += abs(luma[y * width + line] - colour)
    return np.float32(np.float64(total) / height)


@_kernel
def _band(
    luma: np.ndarray,
    height: int,
    width: int,
    by_rows: bool,
    backwards: bool,
    colour: np.float32,
    reach: int,
    scratch: np.ndarray,
) -> int:
    """Padding lines at one end of an axis: the exact run, then ringing up to `reach`."""
    n = height if by_rows else width
    run = 0
    while run < n:
        line = n - 1 - run if backwards else run
        if not _line_ok(luma, height, width, line, by_rows, colour):
            break
        run += 1
    if run == 0:
        return 0
    extra = 0
    while extra < reach and run + extra < n:
        line = n - 1 - (run + extra) if backwards else run + extra
        if _line_mean(luma, height, width, line, by_rows, colour, scratch) > _RINGING_MEAN:
            break
        extra += 1
    return run + extra


@_kernel
def _axis(
    luma: np.ndarray,
    height: int,
    width: int,
    by_rows: bool,
    colour: np.float32,
    reach: int,
    slack: int,
    scratch: np.ndarray,
) -> tuple[int, int]:
    """`borders._axis`: (leading, trailing) centred padding lines, or (0, 0)."""
    n = height if by_rows else width
    lead = trail = 0
    for end in range(2):  # the flag from a loop, not a literal: one compiled `_band`
        found = _band(luma, height, width, by_rows, end == 1, colour, reach, scratch)
        if found == 0:
            return 0, 0
        if end == 0:
            lead = found
        else:
            trail = found
    lead, trail = min(lead, trail), min(trail, lead + slack)
    if lead + trail < BORDER_MIN_FRACTION * n or n - lead - trail < BORDER_MIN_REMAINING * n:
        return 0, 0
    return lead, trail


@_kernel
def _borders(
    luma: np.ndarray, height: int, width: int, block: int, scratch: np.ndarray, out: np.ndarray
) -> None:
    """`borders.find_borders` of the luma buffer into out[_TOP:_RIGHT + 1]."""
    out[_TOP] = out[_BOTTOM] = out[_LEFT] = out[_RIGHT] = 0
    if height < 2 or width < 2:
        return
    reach = -(-BORDER_RINGING_PIXELS // block)
    slack = -(-BORDER_CENTRE_SLACK_PIXELS // block)
    best = -1
    for c in range(2):
        colour = np.float32(255.0) if c == 0 else np.float32(0.0)
        flat = True
        for p in range(height * width):
            if abs(luma[p] - colour) > _TOLERANCE:
                flat = False
                break
        top = bottom = left = right = 0
        if not flat:
            for axis in range(2):  # the flag from a loop: one compiled `_axis`
                lead, trail = _axis(luma, height, width, axis == 0, colour, reach, slack, scratch)
                if axis == 0:
                    top, bottom = lead, trail
                else:
                    left, right = lead, trail
        area = top + bottom + left + right
        if area > best:  # the first colour (white) wins a tie, as `max` keeps the first
            best = area
            out[_TOP], out[_BOTTOM], out[_LEFT], out[_RIGHT] = top, bottom, left, right


@_kernel
def _pdq_region(
    luma: np.ndarray,
    stride: int,
    top: int,
    left: int,
    width: int,
    row_index: np.ndarray,
    row_weights: np.ndarray,
    col_index: np.ndarray,
    col_weights: np.ndarray,
    col_index_t: np.ndarray,
    col_weights_t: np.ndarray,
    variants: int,
    gathered: np.ndarray,
    grid: np.ndarray,
    floats: np.ndarray,
    hashes: np.ndarray,
) -> int:
    """Hash(es) and quality of a luma region; returns the quality."""
    # Only an axis over 16,000 pixels decoded in full has more than 128 taps.
    taps = floats[:128] if col_index.shape[1] <= 128 else np.empty(col_index.shape[1])
    half = floats[128 : 128 + PDQ_DCT * PDQ_GRID].reshape((PDQ_DCT, PDQ_GRID))
    start = 128 + PDQ_DCT * PDQ_GRID
    coefficients = floats[start : start + 256].reshape((PDQ_DCT, PDQ_DCT))
    flat = floats[start + 256 : start + 512]
    scratch = floats[start + 512 : start + 768]
    lanes = floats[start + 768 : start + 768 + 8 * PDQ_GRID].reshape((8, PDQ_GRID))
    _grid(
        luma,
        stride,
        top,
        left,
        width,
        row_index,
        row_weights,
        col_index,
        col_weights,
        col_index_t,
        col_weights_t,
        gathered,
        taps,
        lanes,
        grid,
    )
    quality = _quality(grid)
    _dct16(grid, _DCT, _DCT_T, lanes, half, coefficients)
    _hashes(coefficients, _SIGNS, variants, flat, scratch, hashes)
    return quality


@_kernel
def fused_pdq_kernel(
    pixels: np.ndarray,
    orientation: int,
    row_index: np.ndarray,
    row_weights: np.ndarray,
    col_index: np.ndarray,
    col_weights: np.ndarray,
    col_index_t: np.ndarray,
    col_weights_t: np.ndarray,
    variants: int,
    find: bool,
    block: int,
    luma: np.ndarray,
    gathered: np.ndarray,
    grid: np.ndarray,
    floats: np.ndarray,
    scratch32: np.ndarray,
    hashes: np.ndarray,
    ints: np.ndarray,
) -> None:
    """The whole per-picture pass: luma, hash(es), quality, and borders when `find`.

    `variants` is 0 (the picture is too small to hash: luma and borders only), 1 or 8.
    """
    orient = _ORIENT[orientation]
    height, width = pixels.shape[0], pixels.shape[1]
    if orient[0]:
        height, width = width, height
    _luma(pixels, orient, luma)
    ints[_QUALITY] = 0
    if variants > 0:
        origin = width - width  # not literals: see `_grid`
        ints[_QUALITY] = _pdq_region(
            luma,
            width,
            origin,
            origin,
            width,
            row_index,
            row_weights,
            col_index,
            col_weights,
            col_index_t,
            col_weights_t,
            variants,
            gathered,
            grid,
            floats,
            hashes,
        )
    if find:
        _borders(luma, height, width, block, scratch32, ints)
    else:
        ints[_TOP] = ints[_BOTTOM] = ints[_LEFT] = ints[_RIGHT] = 0


@_kernel
def region_pdq_kernel(
    luma: np.ndarray,
    stride: int,
    top: int,
    left: int,
    width: int,
    row_index: np.ndarray,
    row_weights: np.ndarray,
    col_index: np.ndarray,
    col_weights: np.ndarray,
    col_index_t: np.ndarray,
    col_weights_t: np.ndarray,
    gathered: np.ndarray,
    grid: np.ndarray,
    floats: np.ndarray,
    hashes: np.ndarray,
) -> int:
    """The hash and quality of a region of a luma buffer (a trimmed picture)."""
    one = width // width if width else 1  # not a literal: see `_grid`
    return _pdq_region(
        luma,
        stride,
        top,
        left,
        width,
        row_index,
        row_weights,
        col_index,
        col_weights,
        col_index_t,
        col_weights_t,
        one,
        gathered,
        grid,
        floats,
        hashes,
    )


@_kernel
def borders_kernel(
    luma: np.ndarray, height: int, width: int, block: int, scratch32: np.ndarray, ints: np.ndarray
) -> None:
    """`borders.find_borders` of a luma buffer (when a recorded padding did not hold)."""
    _borders(luma, height, width, block, scratch32, ints)


#: Video range: luma 16..235 stretched to 0..255 ((Y - 16) * 255 / 219, in float32).
_SIXTEEN_F = np.float32(16)
_VIDEO_SCALE = np.float32(255.0 / 219.0)


@_kernel
def _plane_luma(
    plane: np.ndarray, stride: int, height: int, width: int, full_range: bool, luma: np.ndarray
) -> None:
    """The luma of a uint8 Y plane whose rows start `stride` bytes apart (a decoder's line
    size) into the flat float32 buffer `luma` (height x width, row-major): the value as
    stored (full range) or (Y - 16) * 255 / 219 in float32 (video range), as
    `video.luma_from_plane` computes it in numpy."""
    for y in range(height):
        line = plane[y * stride : y * stride + width]
        out = luma[y * width : (y + 1) * width]
        if full_range:
            for x in range(width):
                out[x] = np.float32(line[x])
        else:
            for x in range(width):
                out[x] = (np.float32(line[x]) - _SIXTEEN_F) * _VIDEO_SCALE


@_kernel
def plane_pdq_kernel(
    plane: np.ndarray,
    stride: int,
    height: int,
    width: int,
    full_range: bool,
    row_index: np.ndarray,
    row_weights: np.ndarray,
    col_index: np.ndarray,
    col_weights: np.ndarray,
    col_index_t: np.ndarray,
    col_weights_t: np.ndarray,
    luma: np.ndarray,
    gathered: np.ndarray,
    grid: np.ndarray,
    floats: np.ndarray,
    hashes: np.ndarray,
) -> int:
    """The whole per-frame pass from a Y plane: luma (rescaled from video range unless
    `full_range`), the filter, quality, DCT and hash; returns the quality."""
    _plane_luma(plane, stride, height, width, full_range, luma)
    origin = width - width  # not a literal: see `_grid`
    return region_pdq_kernel(
        luma,
        width,
        origin,
        origin,
        width,
        row_index,
        row_weights,
        col_index,
        col_weights,
        col_index_t,
        col_weights_t,
        gathered,
        grid,
        floats,
        hashes,
    )


# ---------------------------------------------------------------- per-thread workspace


class _Workspace(threading.local):
    """Buffers one thread reuses for every picture; the luma buffer grows as needed."""

    def __init__(self) -> None:
        self.luma = np.empty(0, np.float32)
        self.gathered = np.empty(0, np.float64)
        self.scratch32 = np.empty(0, np.float32)
        self.grid = np.empty((PDQ_GRID, PDQ_GRID), np.float64)
        self.floats = np.empty(128 + PDQ_DCT * PDQ_GRID + 768 + 8 * PDQ_GRID, np.float64)
        self.hashes = np.empty((8, 32), np.uint8)
        self.ints = np.zeros(8, np.int64)

    def fit(self, height: int, width: int) -> None:
        if self.luma.size < height * width:
            self.luma = np.empty(max(height * width, 2 * self.luma.size), np.float32)
        side = max(height, width)
        if self.gathered.size < PDQ_GRID * side:
            self.gathered = np.empty(PDQ_GRID * max(side, 1024), np.float64)
            self.scratch32 = np.empty(max(side, 1024), np.float32)


_WORKSPACE = _Workspace()


@dataclass(frozen=True, slots=True)
class FusedResult:
    """What one kernel pass gives: hash(es), quality, the luma kept for trimming."""

    hashes: list[bytes]  # 1 or 8 (DIHEDRAL_NAMES order)
    quality: int
    borders: Borders
    height: int  # of the luma buffer (reduced, oriented)
    width: int


_Operators = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@lru_cache(maxsize=4096)
def _operators(length_rows: tuple[int, int, int], length_cols: tuple[int, int, int]) -> _Operators:
    """The row and column operators, and the column operator transposed (taps x 64)."""
    rows = pdq_axis_operator(*length_rows)
    cols = pdq_axis_operator(*length_cols)
    return (
        rows.index,
        rows.weights,
        cols.index,
        cols.weights,
        # Unsigned: numba checks a signed index for wrap-around at every gather.
        _frozen(cols.index.T.astype(np.uint64)),
        _frozen(cols.weights.T),
    )


_EMPTY_INDEX = _frozen(np.zeros((PDQ_GRID, 1), np.int64))
_EMPTY_WEIGHTS = _frozen(np.zeros((PDQ_GRID, 1), np.float64))
_EMPTY_OPERATORS: _Operators = (
    _EMPTY_INDEX,
    _EMPTY_WEIGHTS,
    _EMPTY_INDEX,
    _EMPTY_WEIGHTS,
    _frozen(_EMPTY_INDEX.T.astype(np.uint64)),
    _frozen(_EMPTY_WEIGHTS.T),
)


def fused_pdq(
    pixels: np.ndarray,
    orientation: int,
    rows: tuple[int, int, int],
    cols: tuple[int, int, int],
    *,
    dihedral: bool = False,
    find_borders: bool = False,
) -> FusedResult:
    """Run the kernel on decoded `pixels` (H x W x C uint8, C-contiguous, as stored).

    `rows` and `cols` are (full-resolution length, scale, head) of the oriented axes,
    as `fast_pdq.DecodeAxis` holds them. Borders are in rows/columns of the buffer.
    """
    work = _WORKSPACE
    if pixels.flags.writeable:
        # One compiled signature: numba types read-only arrays apart from writable ones.
        pixels = pixels.view()
        pixels.setflags(write=False)
    height, width = pixels.shape[:2]
    if EXIF_ORIENTATION_OPS[orientation][0]:
        height, width = width, height
    work.fit(height, width)
    hashable = min(rows[0], cols[0]) >= PDQ_MIN_DIM
    operators = _operators(rows, cols) if hashable else _EMPTY_OPERATORS
    variants = (8 if dihedral else 1) if hashable else 0
    fused_pdq_kernel(
        pixels,
        orientation,
        *operators,
        variants,
        find_borders,
        rows[1],
        work.luma,
        work.gathered,
        work.grid,
        work.floats,
        work.scratch32,
        work.hashes,
        work.ints,
    )
    ints = work.ints
    if hashable:
        hashes = [work.hashes[v].tobytes() for v in range(variants)]
    else:
        hashes = [bytes(32)] * (8 if dihedral else 1)
    return FusedResult(
        hashes=hashes,
        quality=int(ints[_QUALITY]),
        borders=Borders(int(ints[_TOP]), int(ints[_BOTTOM]), int(ints[_LEFT]), int(ints[_RIGHT])),
        height=height,
        width=width,
    )


def luma_view(result: FusedResult) -> np.ndarray:
    """The luma of the last picture this thread passed through the kernel (a view of
    the workspace: valid until the thread's next picture)."""
    return _WORKSPACE.luma[: result.height * result.width].reshape(result.height, result.width)


def find_borders_fused(result: FusedResult, block: int) -> Borders:
    """`borders.find_borders` of the last picture's luma, by the kernel."""
    work = _WORKSPACE
    borders_kernel(work.luma, result.height, result.width, block, work.scratch32, work.ints)
    ints = work.ints
    return Borders(int(ints[_TOP]), int(ints[_BOTTOM]), int(ints[_LEFT]), int(ints[_RIGHT]))


def region_pdq(
    result: FusedResult,
    borders: Borders,
    rows: tuple[int, int, int],
    cols: tuple[int, int, int],
) -> tuple[bytes, int]:
    """(hash, quality) of the last picture's luma without `borders`; `rows`/`cols` are
    the cropped axes (full-resolution length, scale, head)."""
    if min(rows[0], cols[0]) < PDQ_MIN_DIM:
        return bytes(32), 0
    work = _WORKSPACE
    inner_width = result.width - borders.left - borders.right
    quality = region_pdq_kernel(
        work.luma,
        result.width,
        borders.top,
        borders.left,
        inner_width,
        *_operators(rows, cols),
        work.gathered,
        work.grid,
        work.floats,
        work.hashes,
    )
    return work.hashes[0].tobytes(), int(quality)


def fused_pdq_luma(plane: np.ndarray, full_range: bool) -> tuple[bytes, int]:
    """(hash, quality) of a video frame from its Y plane, in one compiled pass.

    `plane` is the H x W uint8 luma plane as the decoder holds it: its rows may lie
    further apart than W bytes (PyAV's `line_size`), and are read in place, not copied.
    Video range (`full_range` False) is rescaled, (Y - 16) * 255 / 219, inside the pass.
    The same as `fast_pdq.pdq_from_luma(video.luma_from_plane(plane, full_range))` bit
    for bit (tests/test_fused.py).
    """
    if plane.dtype != np.uint8 or plane.ndim != 2:
        # A 10-bit plane (uint16) would be read wrongly, not merely slowly: say so.
        raise ValueError(
            f"fused_pdq_luma: needs an H x W uint8 plane, not {plane.dtype} {plane.shape}"
        )
    height, width = plane.shape
    if min(height, width) < PDQ_MIN_DIM:
        return bytes(32), 0
    if plane.strides[1] != 1 or plane.strides[0] < width:
        plane = np.ascontiguousarray(plane)  # a transposed or reversed view: rare
    stride = plane.strides[0]
    # The rows as one flat read-only run of bytes from the first pixel to the last (no
    # copy): one compiled signature, whatever the line size.
    flat = np.lib.stride_tricks.as_strided(
        plane, shape=((height - 1) * stride + width,), strides=(1,), writeable=False
    )
    work = _WORKSPACE
    work.fit(height, width)
    quality = plane_pdq_kernel(
        flat,
        stride,
        height,
        width,
        bool(full_range),
        *_operators((height, 1, 1), (width, 1, 1)),
        work.luma,
        work.gathered,
        work.grid,
        work.floats,
        work.hashes,
    )
    return work.hashes[0].tobytes(), int(quality)
