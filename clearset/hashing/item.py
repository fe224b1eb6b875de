"""Hash one item's bytes: every signal, with a status and reason when decoding fails."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearset.hashing.crypto import crypto_digests
from clearset.hashing.decode import DecodeFailure, open_image, to_display_rgb
from clearset.hashing.pdq import pdq_from_rgb

STATUS_OK = "ok"
STATUS_ERROR = "error"  # bytes present but not a decodable image; crypto hashes still set
STATUS_MISSING = "missing"  # no bytes at all (failed download, URL-only metadata)


@dataclass(slots=True)
class ItemHashes:
    sha256: bytes | None
    md5: bytes | None
    sha1: bytes | None
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


def hash_bytes(data: bytes, *, exact_pdq: bool = True, trim_borders: bool = False) -> ItemHashes:
    """All hashes of one stored item. Never raises for bad image data.

    `exact_pdq` computes PDQ with the reference pipeline (bit-equal to pdqhash on the
    decoded pixels); `trim_borders` also hashes the picture without uniform borders.
    """
    del trim_borders  # the fast path and border trimming land with the fast-hashing work
    digests = crypto_digests(data)
    result = ItemHashes(
        sha256=digests.sha256, md5=digests.md5, sha1=digests.sha1, size=len(data)
    )
    try:
        opened = open_image(data)
        result.format = opened.format
        rgb = to_display_rgb(opened.image)
        result.width, result.height = rgb.size
        result.pdq, result.pdq_quality = pdq_from_rgb(np.asarray(rgb))
    except DecodeFailure as failure:
        result.status = STATUS_ERROR
        result.reason = str(failure)[:200]
    return result
