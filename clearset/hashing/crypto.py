"""Cryptographic hashes of an item's stored bytes: SHA-256, MD5 and SHA-1.

Hotline lists (IWF, NCMEC, C3P) carry MD5 and SHA-1; receipts and our own identities use
SHA-256. All three are computed in one pass over the bytes and returned as raw digests
(the manifest stores them as fixed-size binary columns).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CryptoDigests:
    sha256: bytes
    md5: bytes
    sha1: bytes


def crypto_digests(data: bytes) -> CryptoDigests:
    """SHA-256, MD5 and SHA-1 of `data` (raw 32, 16 and 20 byte digests)."""
    return CryptoDigests(
        sha256=hashlib.sha256(data).digest(),
        md5=hashlib.md5(data, usedforsecurity=False).digest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).digest(),
    )
