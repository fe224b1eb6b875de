"""Bytes to hashes: SHA-256, MD5 and SHA-1 of the stored bytes, and PDQ of the pixels.

The hash types are registered in `clearset.hashing.types`, which everything else (the
manifest, lists, the matcher, reports) derives from.

`hash_bytes` is the one entry point the scan uses for an item. Each signal is computed
independently: an image that cannot be decoded still gets its cryptographic hashes, with
a status and a reason, so a low PDQ quality or a broken file never silences the exact check.
"""

from clearset.hashing.crypto import CryptoDigests, crypto_digests
from clearset.hashing.item import ItemHashes, hash_bytes

__all__ = ["CryptoDigests", "ItemHashes", "crypto_digests", "hash_bytes"]
