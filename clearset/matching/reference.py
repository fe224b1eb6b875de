"""Brute-force PDQ matching in plain numpy: the reference the fast index is tested against.

It compares every query with every list entry, a block at a time so that memory stays
bounded whatever the sizes, and keeps what is within the threshold. It is slow (it is
meant to be read, not run at scale) and returns exactly what `PDQIndex.search` must
return, in the same order, so the two can be compared with `np.array_equal`.
"""

from __future__ import annotations

import numpy as np

from clearset.errors import InputError

#: Bits in a PDQ hash and bytes in its packed form.
PDQ_BITS = 256
PDQ_BYTES = PDQ_BITS // 8

# Elements of the (queries x entries x words) XOR block held at once: ~32 MiB of uint64.
_BLOCK_ELEMENTS = 1 << 22

# Bit counts of every byte value; used where numpy predates np.bitwise_count (numpy < 2).
_BYTE_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def check_pdq_array(hashes: np.ndarray, what: str) -> np.ndarray:
    """Return `hashes` as a C-contiguous uint8[N, 32] array, or raise InputError."""
    if not isinstance(hashes, np.ndarray):
        raise InputError(f"{what}: expected a numpy array of packed PDQ hashes, got {type(hashes)}")
    if hashes.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8 (packed PDQ bytes), got {hashes.dtype}")
    if hashes.ndim != 2 or hashes.shape[1] != PDQ_BYTES:
        raise InputError(f"{what}: expected shape (N, {PDQ_BYTES}), got {hashes.shape}")
    return np.ascontiguousarray(hashes)


def check_threshold(threshold: int) -> int:
    """Return `threshold` as an int in 0..256, or raise InputError."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer):
        raise InputError(f"threshold: expected an integer number of bits, got {threshold!r}")
    if not 0 <= threshold <= PDQ_BITS:
        raise InputError(f"threshold: must be between 0 and {PDQ_BITS} bits, got {threshold}")
    return int(threshold)


def _popcount_words(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, as uint8."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return _BYTE_POPCOUNT[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, dtype=np.uint8)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance of packed hashes: uint8[..., 32] and uint8[..., 32] -> int16[...].

    The two broadcast against each other, so one hash can be compared with many.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    for what, hashes in (("a", a), ("b", b)):
        if hashes.dtype != np.uint8 or hashes.ndim < 1 or hashes.shape[-1] != PDQ_BYTES:
            raise InputError(
                f"{what}: expected uint8[..., {PDQ_BYTES}], got {hashes.dtype}{list(hashes.shape)}"
            )
    differing = np.bitwise_xor(a, b)
    return _BYTE_POPCOUNT[differing].sum(axis=-1, dtype=np.int16)


def brute_force_search(
    entries: np.ndarray, queries: np.ndarray, threshold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query_row, entry_row, distance) with Hamming distance <= threshold.

    Returns int64 query rows, int64 entry rows and int16 distances, sorted by (query, entry).
    """
    entries = check_pdq_array(entries, "entries")
    queries = check_pdq_array(queries, "queries")
    threshold = check_threshold(threshold)
    entry_words = entries.view(np.uint64)
    query_words = queries.view(np.uint64)
    words = entry_words.shape[1]

    entry_block = max(1, min(len(entries), _BLOCK_ELEMENTS // words))
    query_block = max(1, _BLOCK_ELEMENTS // (words * entry_block))
    found_queries: list[np.ndarray] = []
    found_entries: list[np.ndarray] = []
    found_distances: list[np.ndarray] = []
    for q_start in range(0, len(queries), query_block):
        q_block = query_words[q_start : q_start + query_block]
        for e_start in range(0, len(entries), entry_block):
            e_block = entry_words[e_start : e_start + entry_block]
            differing = q_block[:, None, :] ^ e_block[None, :, :]
            distances = _popcount_words(differing).sum(axis=-1, dtype=np.int16)
            q_hit, e_hit = np.nonzero(distances <= threshold)
            found_queries.append(q_hit + q_start)
            found_entries.append(e_hit + e_start)
            found_distances.append(distances[q_hit, e_hit])
    if not found_queries:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16)
    query_rows = np.concatenate(found_queries).astype(np.int64)
    entry_rows = np.concatenate(found_entries).astype(np.int64)
    distances = np.concatenate(found_distances).astype(np.int16)
    order = np.lexsort((entry_rows, query_rows))
    return query_rows[order], entry_rows[order], distances[order]
