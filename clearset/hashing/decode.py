"""Decode image bytes to the picture a browser would show, or say why it cannot be done.

PDQ must be computed on what a person sees: EXIF orientation applied, transparency
composited on white, palette, CMYK, greyscale and 16-bit modes converted to 8-bit RGB, and
only the first frame of an animation. Pillow's decompression-bomb limit is kept; an image
over it is reported as an error reason, never a crash and never an attempt to decode it.
Below it, `check_pixels` applies our own, lower cap (`MAX_PIXELS`), which bounds the
memory one worker needs.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from clearset.settings import MAX_IMAGE_PIXELS

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class DecodeFailure(Exception):
    """The bytes are not a decodable image. `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class OpenedImage:
    """An image opened lazily: format and size are known, pixels are not decoded yet."""

    image: Image.Image
    format: str


#: Leading bytes of the formats a data set mostly holds: opened without `maybe_image`.
_COMMON_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF", b"GIF8")


def _spider(data: bytes) -> bool:
    if len(data) < 108:
        return False
    from PIL import SpiderImagePlugin as spider

    for order in (">", "<"):
        # `isSpiderHeader` says no unless its fifth value (iform) is one of these.
        if struct.unpack_from(order + "f", data, 16)[0] not in spider.iforms:
            continue
        if spider.isSpiderHeader(struct.unpack(order + "27f", data[:108])):
            return True
    return False


#: Pillow's plugins with no `_accept` check, each of which `Image.open` instantiates for
#: every unknown file, and for each a test true whenever its `_open` could succeed.
_NO_ACCEPT: dict[str, Callable[[bytes], bool]] = {
    "IM": lambda data: b"\n" in data[:100],
    "IMT": lambda data: b"\n" in data[:100],
    "IPTC": lambda data: not data[:5].strip(b"\x00") or data[0] == 0x1C,
    "PCD": lambda data: data[2048:2052] == b"PCD_",
    "SPIDER": _spider,
    "TGA": lambda data: len(data) < 2 or data[1] in (0, 1),
}


def maybe_image(data: bytes) -> bool:
    """False only when `Image.open` is sure to find no format for `data` (a caption, a
    .json): every registered plugin's own `_accept` test says no, and those without one
    could not open it. The same answer as trying them all, without building an image
    object per plugin (~0.06 ms a member). Anything unforeseen (a plugin this does not
    know, a test that raises) answers True, and Pillow decides."""
    if data.startswith(_COMMON_MAGIC):
        return True
    prefix = data[:16]
    tests = _plugin_tests()
    try:
        # The `_accept` tests see only the prefix: their answer is kept per prefix (an
        # img2dataset shard's .json members all start alike), for the plugins loaded now.
        accepted = _accepted.get(prefix)
        if accepted is None:
            accepted = any(accept(prefix) for accept, _ in tests if accept is not None)
            if len(_accepted) >= _ACCEPTED_KEPT:
                _accepted.clear()
            _accepted[prefix] = accepted
        return accepted or any(known(data) for _, known in tests if known is not None)
    except Exception:
        return True


_Tests = list[tuple[Callable[[bytes], Any] | None, Callable[[bytes], bool] | None]]
_tests: tuple[tuple[Any, ...], _Tests] = ((), [])


def _plugin_tests() -> _Tests:
    """(accept, test) for each plugin Pillow would try, built again when plugins change."""
    global _tests
    Image.init()
    names = tuple(Image.ID)
    if _tests[0] != (names, *Image.OPEN.values()):
        tests: _Tests = []
        for name in names:
            accept = Image.OPEN[name][1]
            known = _NO_ACCEPT.get(name, lambda data: True) if accept is None else None
            tests.append((accept, known))
        _tests = ((names, *Image.OPEN.values()), tests)
        _accepted.clear()
    return _tests[1]


#: Whether any plugin's `_accept` took a prefix, by prefix (for the plugins in `_tests`),
#: and how many prefixes are kept before starting over.
_accepted: dict[bytes, bool] = {}
_ACCEPTED_KEPT = 65_536


_WARNINGS_LOCK = threading.Lock()


def open_image(data: bytes) -> OpenedImage:
    """Open `data` with Pillow without decoding pixels. Raises DecodeFailure."""
    if not data:
        raise DecodeFailure("empty", "zero-byte file")
    if not maybe_image(data):
        raise DecodeFailure("not_an_image", "no known image format")
    try:
        # The lock: `catch_warnings` swaps the process's one list of filters, so two
        # threads in it at once (a worker's hashing threads) could each restore the
        # other's, and leave the warning an error for good, or not an error when it must
        # be. Opening reads only the header, holding the GIL: the lock costs no overlap.
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS Pillow only warns; we treat it as the bomb it may be.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeFailure("decompression_bomb", str(exc).split(".")[0]) from None
    except UnidentifiedImageError:
        raise DecodeFailure("not_an_image", "no known image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeFailure("corrupt", str(exc)) from None
    return OpenedImage(image=image, format=image.format or "unknown")


def check_pixels(image: Image.Image, max_pixels: int) -> None:
    """Raise DecodeFailure("too_large") if the first frame has more than `max_pixels`.

    Only the header has been read: the size is known before any pixel is decoded.
    """
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeFailure("too_large", f"{width}×{height} exceeds the {max_pixels:,}-pixel cap")


def to_display_rgb(image: Image.Image) -> Image.Image:
    """The first frame as 8-bit RGB, oriented and flattened as a browser shows it."""
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: scale down to 8 bits instead of clipping at 255.
            image = image.point(lambda v: v / 256).convert("L")
        # convert() would copy an image that is RGB already: a third of a large
        # image's peak memory, for nothing.
        return image if image.mode == "RGB" else image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeFailure("decompression_bomb", str(exc).split(".")[0]) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated JPEGs land here ("image file is truncated").
        raise DecodeFailure("corrupt", str(exc)) from None
