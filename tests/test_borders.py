"""Letterbox and pillarbox detection, and the trimmed hash it gives an item.

Padded copies (white bands as img2dataset pads, black bars) must be found and trimmed on
both PDQ paths, the trimmed hash must be close to the reference hash of the unpadded
picture, the as-stored hash must stay as it was, and pictures without borders (or that
are one colour) must not be trimmed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from clearset.hashing import hash_bytes
from clearset.hashing.borders import Borders, find_borders, trim
from clearset.hashing.fast_pdq import luma_from_rgb
from clearset.hashing.pdq import pdq_from_rgb
from clearset.settings import PDQ_MATCH_THRESHOLD


def distance(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def _photo(name: str, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.asarray(getattr(skdata, name)())).convert("RGB").resize(size)


def _pad(image: Image.Image, width: int, height: int, colour: int) -> Image.Image:
    canvas = Image.new("RGB", (width, height), (colour,) * 3)
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("colour", [0, 255])
def test_letterbox_and_pillarbox_found_exactly_on_clean_pixels(colour: int) -> None:
    picture = _photo("astronaut", (400, 300))
    letterbox = np.asarray(_pad(picture, 400, 400, colour))
    assert find_borders(luma_from_rgb(letterbox)) == Borders(top=50, bottom=50)
    pillarbox = np.asarray(_pad(picture, 600, 300, colour))
    assert find_borders(luma_from_rgb(pillarbox)) == Borders(left=100, right=100)
    both = np.asarray(_pad(picture, 500, 500, colour))
    found = find_borders(luma_from_rgb(both))
    assert found == Borders(top=100, bottom=100, left=50, right=50)
    assert trim(both, found).shape == (300, 400, 3)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera"])
def test_pictures_without_borders_are_not_trimmed(name: str) -> None:
    rgb = np.asarray(_photo(name, (640, 480)))
    assert not find_borders(luma_from_rgb(rgb)).any


def test_uniform_and_thin_borders_are_left_alone() -> None:
    assert not find_borders(np.full((200, 300), 255, np.uint8)).any
    assert not find_borders(np.zeros((200, 300), np.uint8)).any
    thin = np.asarray(_pad(_photo("coffee", (600, 398)), 600, 400, 0))  # 1 px a side
    assert not find_borders(luma_from_rgb(thin)).any


@pytest.mark.parametrize("exact_pdq", [False, True])
@pytest.mark.parametrize(("colour", "canvas"), [(255, (1200, 1200)), (0, (1600, 900))])
def test_padded_copy_matches_the_original_through_its_trimmed_hash(
    exact_pdq: bool, colour: int, canvas: tuple[int, int]
) -> None:
    picture = _photo("coffee", (900, 600) if canvas[0] < canvas[1] * 1.5 else (1200, 600))
    picture = picture.resize((min(picture.width, canvas[0]), min(picture.height, canvas[1])))
    original = np.asarray(Image.open(io.BytesIO(_jpeg(picture))).convert("RGB"))
    listed, _ = pdq_from_rgb(original)  # what another tool put on the list
    padded = _jpeg(_pad(Image.fromarray(original), *canvas, colour))
    stored = np.asarray(Image.open(io.BytesIO(padded)).convert("RGB"))

    trimmed = hash_bytes(padded, exact_pdq=exact_pdq, trim_borders=True)
    plain = hash_bytes(padded, exact_pdq=exact_pdq, trim_borders=False)
    assert trimmed.pdq_trimmed is not None and plain.pdq_trimmed is None
    assert trimmed.pdq == plain.pdq  # the as-stored hash is unchanged by trimming
    assert distance(trimmed.pdq_trimmed, listed) <= 12
    assert distance(trimmed.pdq, listed) > PDQ_MATCH_THRESHOLD  # why trimming matters
    assert trimmed.pdq_trimmed_quality is not None and trimmed.pdq_trimmed_quality > 50
    if exact_pdq:
        assert trimmed.pdq == pdq_from_rgb(stored)[0]
        inner = trim(stored, find_borders(luma_from_rgb(stored)))
        assert trimmed.pdq_trimmed == pdq_from_rgb(inner)[0]


def test_unpadded_jpeg_gets_no_trimmed_hash() -> None:
    result = hash_bytes(_jpeg(_photo("rocket", (1024, 683))), trim_borders=True)
    assert result.status == "ok" and result.pdq_trimmed is None
    assert result.pdq_trimmed_quality is None
