"""Find letterbox and pillarbox padding so PDQ can also be computed on the picture inside.

Data-set tools pad pictures to a fixed shape (img2dataset's "border" resize mode pads
with pure white; video stills and phone screenshots carry black bars). PDQ of a padded
copy is far from PDQ of the original, so a padded copy of a listed image would be
missed. We find the padding at the edges of the luma and return how many rows and
columns it takes; the caller hashes the trimmed picture as well as the stored one and
matches on either, so lists hashed by tools that do not trim still match.

Trimming must stop at the picture, whose own edges may be white (a product shot) or
dark (a night sky). Padding is told from them by what padding tools write:
- one exact colour (pure white or pure black), the same for every band of a picture,
  uniform across each whole line; only JPEG's ringing next to the picture is allowed
  to stray, and only within a block's reach of the picture;
- centred: a band at one end of an axis has one at the other end, of about the same
  width. A band with none opposite is the picture's own background, and the part of
  a band wider than its opposite one (plus the odd pixel) is too.
What no rule can tell apart is a picture whose own background is the pad colour exactly
on both sides of an axis (a product centred on pure white): its margins are trimmed
with the padding, as they would be by hand without knowing the original's shape.
The same function works on a full-resolution luma (the exact path) and on a reduced
decode (the fast path), where one row stands for `block` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest luma distance from the pad colour, pure black (0) or pure white (255), of any
#: pixel in a padding line. JPEG decodes a flat pad to within 1-5 levels (quality 60-95)
#: away from the picture; photos' own white or dark edges stray further than this.
BORDER_TOLERANCE = 6
#: Next to the picture, JPEG's ringing (and the 2x chroma blocks' bleed) reaches into the
#: pad: up to this many pixels there may stray further, as long as the line's mean stays
#: within BORDER_RINGING_MEAN of the pad colour.
BORDER_RINGING_PIXELS = 16
BORDER_RINGING_MEAN = 12.0
#: Centred padding leaves the trailing band up to this many pixels wider than the leading
#: one (an odd remainder); a band wider than that keeps the excess as the picture's own.
#: Each pixel trimmed too many costs 5-10 bits on a 256-pixel picture.
BORDER_CENTRE_SLACK_PIXELS = 1
#: Borders thinner than this share of the axis (both sides together) are left alone:
#: they barely move PDQ and are more often part of the picture.
BORDER_MIN_FRACTION = 0.02
#: Never trim an axis below this share of its length; a picture that is mostly uniform
#: is a picture, not a border.
BORDER_MIN_REMAINING = 0.2

#: The colours padding tools write.
BORDER_COLOURS = (255.0, 0.0)


@dataclass(frozen=True, slots=True)
class Borders:
    """Rows and columns of padding at each edge, in units of the array examined."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)

    @property
    def area(self) -> int:
        return self.top + self.bottom + self.left + self.right


def _edge_run(flags: np.ndarray) -> int:
    """Length of the run of True at the start of `flags`."""
    misses = np.flatnonzero(~flags)
    return int(misses[0]) if misses.size else int(flags.size)


def _band(worst: np.ndarray, mean: np.ndarray, reach: int, tolerance: float) -> int:
    """Padding lines at the start of an axis, given each line's worst and mean deviation
    from the pad colour: the exact run, then JPEG's ringing for at most `reach` lines."""
    run = _edge_run(worst <= tolerance)
    if run == 0:
        return 0
    ringing = mean[run : run + reach] <= BORDER_RINGING_MEAN
    return run + _edge_run(ringing)


def _axis(deviation: np.ndarray, reach: int, slack: int, tolerance: float) -> tuple[int, int]:
    """(leading, trailing) padding lines of `deviation` (lines x pixels, distance from the
    pad colour), or (0, 0) where the bands do not look like centred padding."""
    n = deviation.shape[0]
    worst, mean = deviation.max(axis=1), deviation.mean(axis=1)
    lead = _band(worst, mean, reach, tolerance)
    trail = _band(worst[::-1], mean[::-1], reach, tolerance)
    if lead == 0 or trail == 0:
        return 0, 0  # one-sided: the picture's own background, not padding
    # Padding is centred, the odd pixel after the picture (img2dataset, through
    # albumentations, pads floor((S - h) / 2) before it): what one band has beyond that
    # is the picture's own background of the pad colour.
    lead, trail = min(lead, trail), min(trail, lead + slack)
    if lead + trail < BORDER_MIN_FRACTION * n or n - lead - trail < BORDER_MIN_REMAINING * n:
        return 0, 0
    return lead, trail


def _borders_of(luma: np.ndarray, colour: float, block: int, tolerance: float) -> Borders:
    deviation = np.abs(luma.astype(np.float32) - np.float32(colour))
    if deviation.max() <= tolerance:
        return Borders()  # the whole picture is one colour: nothing inside to hash
    reach = -(-BORDER_RINGING_PIXELS // block)
    # Rows uniform across the full width and columns uniform down the full height, each
    # axis found on its own: a small picture centred on a larger canvas has both.
    slack = -(-BORDER_CENTRE_SLACK_PIXELS // block)
    top, bottom = _axis(deviation, reach, slack, tolerance)
    left, right = _axis(deviation.T, reach, slack, tolerance)
    return Borders(top=top, bottom=bottom, left=left, right=right)


def find_borders(luma: np.ndarray, tolerance: float = BORDER_TOLERANCE, block: int = 1) -> Borders:
    """Padding of one exact colour (white or black) at the edges of a 2-D luma array.

    `block` is how many full-resolution pixels one element of `luma` stands for along
    each axis (the scale of a reduced decode), so JPEG's reach is counted in pixels.
    """
    if luma.ndim != 2 or min(luma.shape) < 2:
        return Borders()
    found = [_borders_of(luma, colour, block, tolerance) for colour in BORDER_COLOURS]
    # One pad colour per picture: a dark edge inside white padding is the picture's.
    return max(found, key=lambda b: b.area)


def trim(array: np.ndarray, borders: Borders) -> np.ndarray:
    """`array` (H x W or H x W x C) without its borders."""
    h, w = array.shape[:2]
    return array[borders.top : h - borders.bottom, borders.left : w - borders.right]


# ---------------------------------------------------------------- recorded padding
#
# img2dataset's "border" mode records each picture's size before it was resized
# (`original_width`, `original_height`) beside the padded copy. That size gives the
# padding exactly, where the pixels alone cannot: a product centred on pure white has
# margins of the pad colour that `find_borders` trims with the padding.

#: img2dataset's border mode pads with pure white.
RECORDED_PAD_COLOUR = 255.0


def recorded_padding(
    width: int, height: int, original_width: int, original_height: int
) -> Borders | None:
    """The padding img2dataset's border mode puts around a picture of the original size
    to make the stored `width` x `height` square, or None where it would put none.

    As img2dataset does it (through albumentations): `LongestMaxSize` scales by
    size / longest side and rounds each side (`max(1, round(side * scale))`), then
    `PadIfNeeded` pads centred, `int((size - side) / 2)` before and the rest after."""
    if width != height or min(original_width, original_height) <= 0:
        return None
    size = width
    scale = size / max(original_width, original_height)
    inner_w = max(1, round(original_width * scale))
    inner_h = max(1, round(original_height * scale))
    if inner_w > size or inner_h > size or (inner_w, inner_h) == (size, size):
        return None
    top, left = int((size - inner_h) / 2), int((size - inner_w) / 2)
    return Borders(top=top, bottom=size - inner_h - top, left=left, right=size - inner_w - left)


def in_units(borders: Borders, block: int) -> Borders:
    """`borders` in pixels as rows and columns of a decode reduced by `block`."""
    if block == 1:
        return borders
    return Borders(
        *(
            round(side / block)
            for side in (borders.top, borders.bottom, borders.left, borders.right)
        )
    )


def holds_padding(
    luma: np.ndarray, borders: Borders, tolerance: float = BORDER_TOLERANCE, block: int = 1
) -> bool:
    """Whether every band of `borders` is the pad colour in `luma`: exact away from the
    picture, JPEG's ringing allowed within its reach (as `find_borders` allows it). A
    square picture of another mode (a centre crop) holds picture where padding would be."""
    if luma.ndim != 2 or not borders.any:
        return False
    h, w = luma.shape
    if borders.top + borders.bottom >= h or borders.left + borders.right >= w:
        return False
    deviation = np.abs(luma.astype(np.float32) - np.float32(RECORDED_PAD_COLOUR))
    reach = -(-BORDER_RINGING_PIXELS // block)
    bands = (
        deviation[: borders.top],
        deviation[h - borders.bottom :][::-1],
        deviation[:, : borders.left].T,
        deviation[:, w - borders.right :].T[::-1],
    )
    for band in bands:
        if band.shape[0] == 0:
            continue
        # Lines ordered from the picture's edge outwards: the last `reach` are nearest.
        outer, inner = band[: max(0, band.shape[0] - reach)], band[max(0, band.shape[0] - reach) :]
        if outer.size and outer.max() > tolerance:
            return False
        if inner.mean(axis=1).max() > BORDER_RINGING_MEAN:
            return False
    return True
