"""PDQ, Meta's perceptual hash, computed by the reference implementation (`pdqhash`).

A PDQ hash is 256 bits; we keep it as 32 packed bytes, most significant bit first, so that
its hex form is the one threatexchange and HMA lists use. The quality score (0-100) says
how much detail the hash was computed from; below `PDQ_MIN_QUALITY` it is unreliable for
near matching. This module is the `--exact-pdq` path: bit for bit what `pdqhash` gives on
the decoded pixels.
"""

from __future__ import annotations

import numpy as np
import pdqhash
from PIL import Image

PDQ_BYTES = 32

#: The order in which `pdqhash.compute_dihedral` returns the 8 rotations and flips.
DIHEDRAL_NAMES = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flip_vertical",
    "flip_horizontal",
    "rotate90_flip_vertical",
    "rotate90_flip_horizontal",
)


def pack_bits(vector: np.ndarray) -> bytes:
    """pdqhash's 256-element 0/1 vector as 32 bytes, first element in the top bit."""
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes()


def pdq_from_rgb(rgb: np.ndarray) -> tuple[bytes, int]:
    """(hash, quality) of an HxWx3 uint8 RGB array by the reference implementation."""
    vector, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return pack_bits(vector), int(quality)


def pdq_dihedral_from_rgb(rgb: np.ndarray) -> tuple[list[bytes], int]:
    """The 8 rotation/flip hashes (in DIHEDRAL_NAMES order) and the quality, in one pass."""
    vectors, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb, dtype=np.uint8))
    return [pack_bits(v) for v in vectors], int(quality)


def pdq_from_image(image: Image.Image) -> tuple[bytes, int]:
    """(hash, quality) of an already display-converted RGB Pillow image."""
    return pdq_from_rgb(np.asarray(image))


def pdq_hex(pdq: bytes) -> str:
    """The 64-character lower-case hex form lists use."""
    return pdq.hex()
