"""Hash one item's bytes: every signal, with a status and reason when decoding fails.

PDQ takes one of three paths. The default fast path decodes a JPEG at reduced scale to
RGB and runs one compiled pass (`fused`: PDQ's luma, Meta's filter through a matching
operator, quality, DCT, hash, borders): within a few bits of the reference, several
times faster. PNG and WebP are decoded in full and take the same compiled pass at full
scale: pdqhash's algorithm with its sums in a fixed order. With `exact_pdq=True`, and
for every other format, the reference path runs: full decode to display RGB and
`pdqhash`, bit-equal to other tools. With `trim_borders`,
letterbox and pillarbox bands are found and the picture inside is hashed too
(`pdq_trimmed`); `pdq` always stays the hash as stored. With `dihedral`, the 7 other
rotations and flips come from the same pass (`pdq_dihedral`): PDQ's 8 orientations are
sign patterns and a transpose of one DCT, so neither path decodes twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearset import settings
from clearset.hashing import types
from clearset.hashing.borders import (
    Borders,
    find_borders,
    holds_padding,
    in_units,
    recorded_padding,
    trim,
)
from clearset.hashing.crypto import crypto_digests
from clearset.hashing.decode import DecodeFailure, check_pixels, open_image, to_display_rgb
from clearset.hashing.fast_pdq import DecodeAxis, decode_jpeg_pixels, luma_from_rgb, pixels_of
from clearset.hashing.pdq import pdq_dihedral_from_rgb, pdq_from_rgb

STATUS_OK = "ok"
STATUS_ERROR = "error"  # bytes present but not a decodable image; crypto hashes still set
STATUS_MISSING = "missing"  # no bytes at all (failed download, URL-only metadata)

#: Formats (as Pillow names them) the fast path handles; the rest take the reference path.
FAST_PDQ_FORMATS = frozenset({"JPEG"})
#: Formats decoded in full (no DCT scaling) and hashed by the compiled pass, not pdqhash.
FULL_FUSED_FORMATS = frozenset({"PNG", "WEBP"})


@dataclass(slots=True)
class ItemHashes:
    #: Every registered digest of the stored bytes (`types.byte_types`), by type name;
    #: empty when there were no bytes to hash.
    digests: dict[str, bytes]
    size: int | None
    pdq: bytes | None = None
    pdq_quality: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    status: str = STATUS_OK
    reason: str | None = None
    # Set only when letterbox/pillarbox borders were trimmed before hashing: the hash of
    # the trimmed picture; `pdq` stays the hash as stored, so lists made by tools that do
    # not trim still match.
    pdq_trimmed: bytes | None = None
    pdq_trimmed_quality: int | None = None
    # Set only when asked for (`dihedral`): the other 7 rotations/flips of the stored
    # picture, 32 bytes each, in DIHEDRAL_NAMES order after "original".
    pdq_dihedral: bytes | None = None

    def value(self, hash_type: str) -> bytes | None:
        """This item's hash of type `hash_type` (a byte digest, or `pdq`), or None."""
        if types.get(hash_type).computed_from == "bytes":
            return self.digests.get(hash_type)
        return getattr(self, hash_type, None)

    @property
    def sha256(self) -> bytes | None:
        return self.digests.get("sha256")

    @property
    def md5(self) -> bytes | None:
        return self.digests.get("md5")

    @property
    def sha1(self) -> bytes | None:
        return self.digests.get("sha1")


def _set_dihedral(result: ItemHashes, hashes: list[bytes], quality: int) -> None:
    """The 8 orientations (DIHEDRAL_NAMES order): the first is the hash as stored."""
    result.pdq, result.pdq_quality = hashes[0], quality
    result.pdq_dihedral = b"".join(hashes[1:])


def _padding(
    luma: np.ndarray,
    result: ItemHashes,
    original_size: tuple[int, int] | None,
    block: int = 1,
) -> Borders:
    """The padding to trim: the one the source's recorded original size gives (img2dataset's
    border mode), where the pixels there are padding; else what `find_borders` finds."""
    if original_size is not None and result.width and result.height:
        recorded = recorded_padding(result.width, result.height, *original_size)
        if recorded is not None:
            units = in_units(recorded, block)
            if holds_padding(luma, units, block=block):
                return units
    return find_borders(luma, block=block)


def _reference_pdq(
    image: Image.Image,
    result: ItemHashes,
    trim_borders: bool,
    dihedral: bool = False,
    original_size: tuple[int, int] | None = None,
) -> None:
    """Full decode to display RGB and `pdqhash` (the `--exact-pdq` path)."""
    display = to_display_rgb(image)
    rgb = np.asarray(display)
    # Free the decoded pixels before pdqhash allocates its own float buffers: with a
    # large image, Pillow's copy and ours at once are most of a worker's peak memory.
    display.close()
    image.close()
    result.height, result.width = rgb.shape[:2]
    if dihedral:
        _set_dihedral(result, *pdq_dihedral_from_rgb(rgb))
    else:
        result.pdq, result.pdq_quality = pdq_from_rgb(rgb)
    if trim_borders:
        borders = _padding(luma_from_rgb(rgb), result, original_size)
        if borders.any:
            result.pdq_trimmed, result.pdq_trimmed_quality = pdq_from_rgb(trim(rgb, borders))


def _fast_pdq(
    image: Image.Image,
    result: ItemHashes,
    trim_borders: bool,
    dihedral: bool = False,
    original_size: tuple[int, int] | None = None,
) -> None:
    """Reduced-scale decode and one compiled pass (`fused`) for the rest (JPEG only).

    `fast_pdq`'s numpy steps are the twin the tests hold this to, bit for bit."""
    try:
        decoded = decode_jpeg_pixels(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeFailure("decompression_bomb", str(exc).split(".")[0]) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated JPEGs land here ("image file is truncated"), as on the reference path.
        raise DecodeFailure("corrupt", str(exc)) from None
    _fused_hashes(
        decoded.pixels,
        decoded.orientation,
        decoded.rows,
        decoded.cols,
        result,
        trim_borders,
        dihedral,
        original_size,
    )


def _full_fused_pdq(
    image: Image.Image,
    result: ItemHashes,
    trim_borders: bool,
    dihedral: bool = False,
    original_size: tuple[int, int] | None = None,
) -> None:
    """PNG and WebP: a full decode to display RGB, as the reference path makes it, then
    the compiled pass at full scale: the reference's algorithm with its sums in a fixed
    order (equal to pdqhash bit for bit on the tests' corpora), without pdqhash's float
    copies and numpy's border passes."""
    display = to_display_rgb(image)
    # A view of Pillow's buffer (no copy): the images are closed once the kernel is done.
    rgb = pixels_of(display)
    height, width = rgb.shape[:2]
    _fused_hashes(
        rgb,
        1,
        DecodeAxis.plain(height, 1),
        DecodeAxis.plain(width, 1),
        result,
        trim_borders,
        dihedral,
        original_size,
    )
    display.close()
    image.close()


def _fused_hashes(
    pixels: np.ndarray,
    orientation: int,
    rows: DecodeAxis,
    cols: DecodeAxis,
    result: ItemHashes,
    trim_borders: bool,
    dihedral: bool,
    original_size: tuple[int, int] | None,
) -> None:
    """Everything after decoding, in one kernel call (two where a picture has borders)."""
    from clearset.hashing import fused  # numba: imported by the first picture, not clearset

    result.width, result.height = cols.length, rows.length
    block = rows.scale
    recorded = None
    if trim_borders and original_size is not None:
        padding = recorded_padding(result.width, result.height, *original_size)
        recorded = None if padding is None else in_units(padding, block)
    passed = fused.fused_pdq(
        pixels,
        orientation,
        (rows.length, rows.scale, rows.head),
        (cols.length, cols.scale, cols.head),
        dihedral=dihedral,
        find_borders=trim_borders and recorded is None,
    )
    if dihedral:
        _set_dihedral(result, passed.hashes, passed.quality)
    else:
        result.pdq, result.pdq_quality = passed.hashes[0], passed.quality
    if not trim_borders:
        return
    borders = passed.borders
    if recorded is not None:
        # img2dataset's recorded size, where the pixels there are padding (`_padding`).
        luma = fused.luma_view(passed)
        holds = holds_padding(luma, recorded, block=block)
        borders = recorded if holds else fused.find_borders_fused(passed, block)
    if borders.any:
        h, w = passed.height, passed.width
        inner_rows = rows.crop(borders.top, h - borders.bottom)
        inner_cols = cols.crop(borders.left, w - borders.right)
        result.pdq_trimmed, result.pdq_trimmed_quality = fused.region_pdq(
            passed,
            borders,
            (inner_rows.length, inner_rows.scale, inner_rows.head),
            (inner_cols.length, inner_cols.scale, inner_cols.head),
        )


def hash_bytes(
    data: bytes,
    *,
    exact_pdq: bool = False,
    trim_borders: bool = True,
    dihedral: bool = False,
    max_pixels: int | None = None,
    original_size: tuple[int, int] | None = None,
) -> ItemHashes:
    """All hashes of one stored item. Never raises for bad image data.

    `exact_pdq` computes PDQ with the reference pipeline (bit-equal to pdqhash on the
    decoded pixels) instead of the fast path; `trim_borders` also hashes the picture
    without uniform black or white borders, into `pdq_trimmed`; `dihedral` also gives the
    7 other rotations and flips of the stored picture, into `pdq_dihedral`. An image over
    `max_pixels` (default `settings.MAX_PIXELS`) is not decoded, on either path, so
    that whether an item has a PDQ does not depend on the path: status "error", reason
    "too_large", with its cryptographic hashes like every item. `original_size` (width,
    height), where the source records the size a picture had before it was resized
    (img2dataset), gives the padding its border mode added exactly.
    """
    cap = settings.MAX_PIXELS if max_pixels is None else max_pixels
    result = ItemHashes(digests=crypto_digests(data), size=len(data))
    try:
        opened = open_image(data)
        result.format = opened.format
        check_pixels(opened.image, cap)
        if not exact_pdq and opened.format in FAST_PDQ_FORMATS:
            _fast_pdq(opened.image, result, trim_borders, dihedral, original_size)
        elif not exact_pdq and opened.format in FULL_FUSED_FORMATS:
            _full_fused_pdq(opened.image, result, trim_borders, dihedral, original_size)
        else:
            _reference_pdq(opened.image, result, trim_borders, dihedral, original_size)
    except DecodeFailure as failure:
        result.status = STATUS_ERROR
        result.reason = str(failure)[:200]
    return result
