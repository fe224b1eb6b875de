"""Hashing conformance: our PDQ equals pdqhash on the same decoded pixels, bit for bit,
and our cryptographic hashes equal hashlib's, on hundreds of varied benign images."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pdqhash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from clearset.demo import bomb_png, encode_jpeg, iter_demo_images
from clearset.hashing import hash_bytes
from clearset.hashing.decode import maybe_image
from clearset.hashing.pdq import DIHEDRAL_NAMES, pdq_dihedral_from_rgb, pdq_from_rgb


def reference_pdq(rgb: np.ndarray) -> tuple[bytes, int]:
    """pdqhash called directly, with the bits packed by plain Python (no numpy packbits)."""
    vector, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    bits = "".join(str(int(b)) for b in vector)
    return int(bits, 2).to_bytes(32, "big"), int(quality)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_pdq_equals_pdqhash_on_200_varied_images() -> None:
    checked = 0
    for number, image in enumerate(iter_demo_images(seed=1234, count=210)):
        # PNG at zlib level 1: the same pixels, a fraction of level 6's time to write
        data = (
            encode_jpeg(image, 60 + number % 36)
            if number % 3
            else _encode(image, "PNG", compress_level=1)
        )
        ours = hash_bytes(data, exact_pdq=True)
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ours.status == "ok"
        assert (ours.pdq, ours.pdq_quality) == reference_pdq(decoded), f"image {number}"
        assert (ours.width, ours.height) == image.size
        checked += 1
    assert checked >= 200


def test_crypto_hashes_equal_hashlib() -> None:
    for number, image in enumerate(iter_demo_images(seed=99, count=20)):
        data = encode_jpeg(image, 80) + bytes(number)  # trailing bytes still hash
        ours = hash_bytes(data)
        assert ours.sha256 == hashlib.sha256(data).digest()
        assert ours.md5 == hashlib.md5(data).digest()
        assert ours.sha1 == hashlib.sha1(data).digest()
        assert ours.size == len(data)


def _image(seed: int = 5) -> Image.Image:
    return next(iter_demo_images(seed=seed, count=1))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    image = _image()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(image, "JPEG", quality=95, exif=exif)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    turns = {3: 2, 6: 3, 8: 1}[orientation]  # counter-clockwise quarter turns to display
    shown = np.rot90(stored, k=turns)
    ours = hash_bytes(data, exact_pdq=True)
    assert (ours.pdq, ours.pdq_quality) == reference_pdq(shown)
    assert (ours.width, ours.height) == (shown.shape[1], shown.shape[0])


def test_alpha_is_composited_on_white() -> None:
    rgb = np.asarray(_image(), dtype=np.float64)
    alpha = np.zeros(rgb.shape[:2])
    alpha[:, : rgb.shape[1] // 2] = 1.0
    alpha[: rgb.shape[0] // 3] = 0.5
    a8 = np.round(alpha * 255).astype(np.uint8)
    rgba = np.dstack([rgb.astype(np.uint8), a8])
    data = _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    a = a8[..., None].astype(np.float64) / 255
    shown = np.clip(np.round(rgb * a + 255 * (1 - a)), 0, 255).astype(np.uint8)
    ours = hash_bytes(data, exact_pdq=True)
    ref_hash, _ = reference_pdq(shown)
    # Pillow's alpha_composite rounds in integer arithmetic; allow a rounding bit or two.
    distance = bin(int.from_bytes(ours.pdq, "big") ^ int.from_bytes(ref_hash, "big")).count("1")
    assert distance <= 2
    # and it is not the hash of the image with its transparency ignored
    ignored, _ = reference_pdq(rgb.astype(np.uint8))
    assert ours.pdq != ignored


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16"])
def test_other_modes_hash_as_displayed_rgb(mode: str) -> None:
    image = _image(8)
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 256
        converted = Image.fromarray(grey)  # 16-bit greyscale (mode I;16)
        fmt = "PNG"
    else:
        converted = image.convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    data = _encode(converted, fmt)
    ours = hash_bytes(data, exact_pdq=True)
    assert ours.status == "ok", ours.reason
    reopened = Image.open(io.BytesIO(data))
    if mode == "I;16":
        expected = np.asarray(image.convert("L").convert("RGB"))
    else:
        expected = np.asarray(reopened.convert("RGB"))
    assert (ours.pdq, ours.pdq_quality) == reference_pdq(expected)


def test_gif_uses_first_frame() -> None:
    first, second = _image(1), _image(2).resize(_image(1).size)
    data = _encode(first, "GIF", save_all=True, append_images=[second])
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert (hash_bytes(data, exact_pdq=True).pdq, hash_bytes(data).status) == (
        reference_pdq(expected)[0],
        "ok",
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"just some text\n", "not_an_image"),
        (bomb_png(), "decompression_bomb"),
    ],
)
def test_undecodable_items_keep_crypto_hashes_and_say_why(data: bytes, reason: str) -> None:
    result = hash_bytes(data)
    assert result.status == "error"
    assert result.reason is not None and result.reason.startswith(reason)
    assert result.sha256 == hashlib.sha256(data).digest()
    assert result.pdq is None and result.pdq_quality is None


def test_truncated_jpeg_is_an_error_row() -> None:
    data = encode_jpeg(_image(3), 90)
    result = hash_bytes(data[: len(data) // 2])
    assert result.status == "error" and result.reason.startswith("corrupt")
    assert result.md5 == hashlib.md5(data[: len(data) // 2]).digest()


def test_dihedral_hashes_match_pdqhash_order() -> None:
    rgb = np.asarray(_image(4))
    hashes, quality = pdq_dihedral_from_rgb(rgb)
    assert len(hashes) == len(DIHEDRAL_NAMES) == 8
    assert hashes[0] == pdq_from_rgb(rgb)[0]
    # rotating the picture moves its hash to the matching slot (within PDQ's noise)
    rotated, _ = pdq_from_rgb(np.ascontiguousarray(np.rot90(rgb, k=2)))
    distance = bin(int.from_bytes(rotated, "big") ^ int.from_bytes(hashes[2], "big")).count("1")
    assert distance <= 10
    assert quality == pdq_from_rgb(rgb)[1]


def _pillow_opens(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data))
    except Exception:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.lists(st.sampled_from(b"\x00\x01\x1c\n P6#%!BMGIF8"), max_size=120).map(bytes),
        st.binary(min_size=2048, max_size=2100).map(lambda d: d[:2048] + b"PCD_" + d[2048:]),
    )
)
def test_maybe_image_says_no_only_where_pillow_finds_no_format(data: bytes) -> None:
    """The sniff that spares captions and .json members Pillow's every-plugin search
    never turns away bytes Pillow would open (nor changes any member's row)."""
    if _pillow_opens(data):
        assert maybe_image(data)


def test_members_that_are_no_image_are_rows_as_before() -> None:
    for data in (b"a photo", b'{"key": "000000001", "url": "https://x.example/1.jpg"}'):
        assert not maybe_image(data)
        result = hash_bytes(data)
        assert (result.status, result.reason) == ("error", "not_an_image: no known image format")
    pcd_like = bytes(2048) + b"PCD_" + bytes(1600)
    assert maybe_image(pcd_like)
    # A SPIDER header (no magic: 27 floats Pillow checks), either byte order.
    header = [0.0] * 27
    header[0] = header[1] = header[4] = header[11] = header[12] = 1.0
    header[21] = header[22] = 1024.0
    for order in (">", "<"):
        spider = struct.pack(order + "27f", *header) + bytes(1024 * 1024)
        assert _pillow_opens(spider) and maybe_image(spider)
    assert maybe_image(encode_jpeg(Image.new("RGB", (8, 8)), 90))
