"""Find letterbox and pillarbox borders so PDQ can also be computed on the picture inside.

Data-set tools pad pictures to a fixed shape (img2dataset's "border" resize mode pads
with white; video stills and phone screenshots carry black bars). PDQ of a padded copy
is far from PDQ of the original, so a padded copy of a listed image would be missed. We
find uniform black or white bands at each edge of the luma and return how many rows and
columns they take; the caller hashes the trimmed picture as well as the stored one and
matches on either, so lists hashed by tools that do not trim still match. The same
function works on a full-resolution luma (the exact path) and on a reduced decode (the
fast path), where one row stands for a block of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest luma distance from pure black (0) or pure white (255) a border pixel may have;
#: JPEG leaves uniform bands within a few levels, so 16 keeps dark photos mostly intact.
BORDER_TOLERANCE = 16
#: Borders thinner than this share of the axis (both sides together) are left alone:
#: they barely move PDQ and are more often part of the picture.
BORDER_MIN_FRACTION = 0.02
#: Never trim an axis below this share of its length; a picture that is mostly uniform
#: is a picture, not a border.
BORDER_MIN_REMAINING = 0.2

_BORDER_COLOURS = (0.0, 255.0)


@dataclass(frozen=True, slots=True)
class Borders:
    """Rows and columns of uniform border at each edge, in units of the array examined."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)


def _uniform_lines(luma: np.ndarray, colour: float, tolerance: float) -> np.ndarray:
    """Per row of `luma`: whether every pixel is within `tolerance` of `colour`."""
    return (np.abs(luma.astype(np.float32) - colour) <= tolerance).all(axis=1)


def _edge_run(flags: np.ndarray) -> int:
    """Length of the run of True at the start of `flags`."""
    misses = np.flatnonzero(~flags)
    return int(misses[0]) if misses.size else int(flags.size)


def _axis_borders(luma: np.ndarray, tolerance: float) -> tuple[int, int]:
    """(leading, trailing) border rows of `luma` (rows are the axis being trimmed)."""
    n = luma.shape[0]
    lead = trail = 0
    for colour in _BORDER_COLOURS:
        flags = _uniform_lines(luma, colour, tolerance)
        if flags.all():
            return 0, 0  # the whole picture is one colour: nothing inside to hash
        # Each edge takes whichever colour runs longer there (white above, black below
        # is rare but costs nothing to allow).
        lead, trail = max(lead, _edge_run(flags)), max(trail, _edge_run(flags[::-1]))
    if lead + trail < BORDER_MIN_FRACTION * n or n - lead - trail < BORDER_MIN_REMAINING * n:
        return 0, 0
    return lead, trail


def find_borders(luma: np.ndarray, tolerance: float = BORDER_TOLERANCE) -> Borders:
    """Uniform black or white bands at the edges of a 2-D luma array (uint8 or float)."""
    if luma.ndim != 2 or min(luma.shape) < 2:
        return Borders()
    top, bottom = _axis_borders(luma, tolerance)
    inner = luma[top : luma.shape[0] - bottom]
    left, right = _axis_borders(inner.T, tolerance)
    # Columns first found inside the letterbox; rows again inside the pillarbox, because
    # a padded picture may carry both (a small image centred on a square canvas).
    if left or right:
        inner_cols = luma[:, left : luma.shape[1] - right]
        top2, bottom2 = _axis_borders(inner_cols, tolerance)
        top, bottom = max(top, top2), max(bottom, bottom2)
    return Borders(top=top, bottom=bottom, left=left, right=right)


def trim(array: np.ndarray, borders: Borders) -> np.ndarray:
    """`array` (H x W or H x W x C) without its borders."""
    h, w = array.shape[:2]
    return array[borders.top : h - borders.bottom, borders.left : w - borders.right]
