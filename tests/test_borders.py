"""Letterbox and pillarbox detection, and the trimmed hash it gives an item.

Padded copies (white bands as img2dataset pads, black bars) must be found and trimmed on
both PDQ paths, the trimmed hash must be close to the reference hash of the unpadded
picture, the as-stored hash must stay as it was, and pictures without borders (or that
are one colour) must not be trimmed.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from clearset.hashing import hash_bytes
from clearset.hashing.borders import Borders, find_borders, trim
from clearset.hashing.fast_pdq import luma_from_rgb
from clearset.hashing.pdq import pdq_from_rgb
from clearset.settings import PDQ_MATCH_THRESHOLD
from tests.conftest import built_once, run_img2dataset


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


def test_trimming_stops_at_the_picture() -> None:
    # Dark edge rows of a photo inside a white pillarbox are the picture's, not padding.
    dark = np.asarray(_pad(_dark_edges("coffee", (300, 400), 0), 500, 400, 255))
    assert find_borders(luma_from_rgb(dark)) == Borders(left=100, right=100)
    # A white band on one side only is the picture's own background ...
    shot = np.asarray(_product("rocket", (400, 300), studio=False))
    assert not find_borders(luma_from_rgb(shot)).any
    # ... and padding around it is trimmed to the narrower band.
    padded = np.asarray(_pad(Image.fromarray(shot), 400, 400, 255))
    found = find_borders(luma_from_rgb(padded))
    assert (found.top, found.bottom, found.left, found.right) == (50, 50, 0, 0)
    # Off-white (a studio's fall-off, grain) is not padding.
    studio = np.asarray(_product("rocket", (400, 300), studio=True))
    assert not find_borders(luma_from_rgb(studio)).any


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


# ---------------------------------------------------------------- what img2dataset writes
#
# Pictures whose own edges look like padding: products on white (studio white with its
# fall-off, or pure white where the product touches one edge) and photos whose edge rows
# or columns are dark. img2dataset's "border" mode pads them with white to a square; its
# "center_crop" mode adds no padding at all.

I2D_SIZE = 256
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "coins", "retina")


def _product(name: str, size: tuple[int, int], studio: bool) -> Image.Image:
    """A product shot: an elliptical cut-out of a photo on a white background. A studio
    shot (`studio`) is centred on white that falls off towards the corners; the other
    sits in the bottom-left corner on pure white (255), flat where it meets the edges."""
    width, height = size
    rng = np.random.default_rng(width * 31 + height)
    if studio:
        y, x = np.mgrid[0:height, 0:width]
        r2 = ((x - width / 2) / width) ** 2 + ((y - height / 2) / height) ** 2
        background = 253 - 40 * r2 + rng.normal(0, 1.2, (height, width))
        canvas = np.repeat(np.clip(background, 0, 255)[..., None], 3, axis=2)
    else:
        canvas = np.full((height, width, 3), 255.0)
    ow, oh = int(width * 0.55), int(height * 0.6)
    thing = np.asarray(_photo(name, (ow, oh)), np.float32)
    yy, xx = np.mgrid[0:oh, 0:ow]
    inside = ((xx - ow / 2) / (ow / 2)) ** 2 + ((yy - oh / 2) / (oh / 2)) ** 2 <= 1
    if studio:
        top, left = (height - oh) // 2, (width - ow) // 2
    else:
        inside |= (yy > oh / 2) & (xx < ow / 2)
        top, left = height - oh, 0
    region = canvas[top : top + oh, left : left + ow]
    region[inside] = thing[inside]
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _dark_edges(name: str, size: tuple[int, int], axis: int) -> Image.Image:
    """A photo whose first and last 12 % of rows (axis 0) or columns (axis 1) fade to
    near black, as night skies and vignetted frames do."""
    pixels = np.asarray(_photo(name, size), np.float32)
    n = pixels.shape[axis]
    ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.12 * n), 0.03, 1.0)
    shape = (n, 1, 1) if axis == 0 else (1, n, 1)
    return Image.fromarray((pixels * ramp.reshape(shape)).astype(np.uint8))


def _i2d_pictures() -> list[tuple[str, bytes]]:
    """(kind, JPEG) of 24 pictures; landscape ones get white bands above and below in
    border mode, portrait ones at the sides."""
    out = []
    for n, name in enumerate(PHOTO_NAMES):
        landscape, portrait = (640 + 40 * n, 480), (480, 600 + 40 * n)
        out.append(("photo", _jpeg(_photo(name, landscape), 85 + n)))
        for size, studio in ((landscape, n % 2 == 0), (portrait, n % 2 == 1)):
            out.append(("studio" if studio else "corner", _jpeg(_product(name, size, studio))))
        # Dark rows inside a white pillarbox, dark columns inside a white letterbox.
        out.append(("dark", _jpeg(_dark_edges(name, (portrait, landscape)[n % 2], n % 2), 90)))
    return out


@pytest.fixture(scope="module")
def img2dataset_padded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real img2dataset's border and center_crop output of the 24 pictures, from a
    loopback server (one process, files layout)."""
    pictures = _i2d_pictures()
    options = {"output_format": "files", "thread_count": 4, "image_size": I2D_SIZE}
    runs = {mode: {**options, "resize_mode": mode} for mode in ("border", "center_crop")}
    root = built_once(
        tmp_path_factory,
        "i2d-borders",
        lambda root: run_img2dataset(root, [data for _, data in pictures], runs),
    )
    urls = (root / "urls.txt").read_text().splitlines()[: len(pictures)]  # as it served them
    out: dict = {"pictures": pictures}
    for mode in runs:
        by_url = {}
        for meta in (root / mode).rglob("*.json"):
            record = json.loads(meta.read_text())
            if record.get("status") == "success":
                by_url[record["url"]] = meta.with_suffix(".jpg").read_bytes()
        out[mode] = [by_url.get(url) for url in urls]
    return out


def _true_interior(original: bytes) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) white padding img2dataset's border mode adds: the long
    side scaled to I2D_SIZE, the short side centred with the remainder below/right."""
    width, height = Image.open(io.BytesIO(original)).size
    scale = I2D_SIZE / max(width, height)
    w, h = round(width * scale), round(height * scale)
    top, left = (I2D_SIZE - h) // 2, (I2D_SIZE - w) // 2
    return top, I2D_SIZE - h - top, left, I2D_SIZE - w - left


def test_img2dataset_border_output_is_trimmed_to_the_picture(img2dataset_padded: dict) -> None:
    listed = [pdq_from_rgb(np.asarray(Image.open(io.BytesIO(d)).convert("RGB")))[0]
              for _, d in img2dataset_padded["pictures"]]  # fmt: skip
    found = {"fast": 0, "exact": 0, "perfect": 0}
    for (kind, original), stored, entry in zip(
        img2dataset_padded["pictures"], img2dataset_padded["border"], listed, strict=True
    ):
        assert stored is not None, "img2dataset failed on a picture"
        rgb = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
        top, bottom, left, right = _true_interior(original)
        borders = find_borders(luma_from_rgb(rgb))
        # Trimming stops at the picture: never into it by more than JPEG's reach, and
        # never short of it by more than the ringing beside it.
        for got, true in zip(
            (borders.top, borders.bottom, borders.left, borders.right),
            (top, bottom, left, right),
            strict=True,
        ):
            assert true - 3 <= got <= true + 2, (kind, borders, (top, bottom, left, right))
        perfect = pdq_from_rgb(trim(rgb, Borders(top, bottom, left, right)))[0]
        found["perfect"] += distance(perfect, entry) <= PDQ_MATCH_THRESHOLD
        for path in ("fast", "exact"):
            item = hash_bytes(stored, exact_pdq=path == "exact")
            best = min(distance(h, entry) for h in (item.pdq, item.pdq_trimmed) if h)
            found[path] += best <= PDQ_MATCH_THRESHOLD
    assert found["fast"] >= found["perfect"] and found["exact"] >= found["perfect"], found
    # Downscaling to 256 pixels alone takes some pictures past the threshold.
    assert found["perfect"] >= 0.75 * len(listed), found


def test_img2dataset_center_crop_output_is_not_trimmed(img2dataset_padded: dict) -> None:
    for (kind, _), stored in zip(
        img2dataset_padded["pictures"], img2dataset_padded["center_crop"], strict=True
    ):
        assert stored is not None
        for exact_pdq in (False, True):
            item = hash_bytes(stored, exact_pdq=exact_pdq)
            assert item.pdq_trimmed is None, kind
