"""Cryptographic hashes of an item's stored bytes: every byte digest the registry holds.

Hotline lists (IWF, NCMEC, C3P) carry MD5 and SHA-1; receipts and our own identities use
SHA-256. The types are those `clearset.hashing.types` registers; all are computed in one
pass over the bytes and returned as raw digests (the manifest stores them as fixed-size
binary columns).
"""

from __future__ import annotations

from clearset.hashing.types import digests_of

#: Type name -> raw digest, in registry order (`{"sha256": ..., "md5": ..., "sha1": ...}`).
CryptoDigests = dict[str, bytes]


def crypto_digests(data: bytes) -> CryptoDigests:
    """Every registered byte digest of `data` (SHA-256, MD5 and SHA-1: 32, 16, 20 bytes)."""
    return digests_of(data)
