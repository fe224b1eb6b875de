"""Exact PDQ Hamming range search over lists of millions of hashes (multi-index hashing).

A hash list of known material may hold ten million PDQ hashes, and a scan must find every
entry within the threshold (31 bits by default) of every image it hashes: a missed match
is an item that should have been removed. `PDQIndex` answers that exactly, much faster
than comparing every query with every entry, by the pigeonhole principle (Norouzi, Punjani
and Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012):

* The 256 bits are cut into `m` disjoint chunks of `b` bits. If two hashes differ in at
  most `T` bits, with `T = m*s + t` (`0 <= t < m`), then one of the first `t + 1` chunks
  differs in at most `s` bits or one of the others in at most `s - 1`; otherwise the
  differences would add up to at least `T + 1`.
* For each chunk the entries are bucketed by the chunk's value (a counting sort: an
  offsets table over all `2**b` values and the entry rows in bucket order; flat arrays,
  no dicts). A query looks up every value within that chunk's radius of its own value
  and verifies each entry found there with a full 256-bit popcount.
* An entry found through several chunks is reported only from the first chunk whose
  radius it falls within, so no pair is reported twice and nothing needs de-duplicating.

With 11 chunks and the default threshold 31 (`s = 2`), a query makes ~2,800 lookups of
~1 entry each at ten million entries (23-bit chunks), instead of ten million comparisons.
Larger thresholds widen the radii; where that would cost more than comparing with every
entry, the index does that instead (the same numba kernel style, blocked for the cache).
Either way the result is exactly `reference.brute_force_search`'s, in the same order.

Memory: the entries (32 bytes each) plus, per chunk, 4 bytes per entry, a
`4 * 2**b`-byte offsets table and `2**b / 8` bytes of bucket occupancy bits: ~1.1 GiB at
ten million entries. The index keeps a reference to the `entries` array it was given
(no copy); do not modify that array later. `PDQIndex.from_arrays` adopts arrays built
before (e.g. memory-mapped from files that every worker of a machine shares,
`clearset.matching.shared`) without rebuilding them.
"""

from __future__ import annotations

import math
from itertools import combinations
from types import ModuleType

import numpy as np

from clearset.errors import InputError
from clearset.matching.reference import PDQ_BITS, check_pdq_array, check_threshold

#: Chunks the 256 bits are cut into. 11 is the fewest for which threshold 31 needs no
#: lookups beyond radius 2 (31 = 11*2 + 9: ten chunks at radius 2, one at radius 1); 10
#: would need radius 3 in two chunks (~3x the lookups), and more chunks mean narrower
#: chunks and so fuller buckets (16 chunks of 16 bits at radius 1: ~12x the candidates).
DEFAULT_CHUNKS = 11

#: Widest chunk, in bits. The offsets table holds 2**bits uint32 per chunk (32 MiB at 23);
#: 23 is also the widest 11 disjoint chunks can be (11 * 23 = 253 of 256 bits).
MAX_CHUNK_BITS = 23

#: Chunk bits beyond log2(entries), up to MAX_CHUNK_BITS.
_EXTRA_CHUNK_BITS = 2

#: Narrowest chunk, in bits (a 257-entry offsets table). Lists that small are mostly
#: searched by the brute-force kernel anyway; the floor keeps tiny tables sensible.
MIN_CHUNK_BITS = 8

#: Cost of one random memory access (a probe or a candidate check) relative to one
#: comparison in the brute-force kernel; picks the strategy per threshold. Measured 3-9 on
#: the 2-core bench machine (low for lists that fit in cache, high at 1e6+ entries). It
#: only affects speed, never results.
_RANDOM_ACCESS_COST = 5.0

#: Most queries searched per kernel call; bounds the per-query result buffers (~100 MiB
#: at 2**19 queries, the sorted kernel's copies included). Large, because the sorted
#: kernel gains with the density of queries per bucket.
_QUERY_BATCH = 1 << 19

#: Probes per bucket (a batch's queries times each query's probes, over 2**bits) from
#: which a batch is searched by `mih_sorted_kernel` (queries sorted per chunk, candidates
#: checked on bucket-ordered copies) rather than `mih_kernel` (query by query). Below it,
#: copying 16 bytes per list entry per chunk costs more than it saves. Measured on
#: bench/match.py: 1.5-3x faster from ~20 probes per bucket against the query-by-query
#: kernel before its occupancy bits; 1.2-1.3x at 1e6 entries and 1.6-2.6x at 1e7 since.
#: It only affects speed.
_SORTED_MIN_PROBES_PER_BUCKET = 8.0

#: Fewest queries searched by `mih_sorted_kernel`: it starts a few parallel loops per
#: chunk, which small batches (a small list's scan of a small shard) do not pay back.
_SORTED_MIN_QUERIES = 4096

#: Fewest list entries searched by `mih_sorted_kernel`: a smaller index sits in cache,
#: where it gains nothing (measured on bench/match.py against the query-by-query kernel
#: with its occupancy bits: 0.4x at 1e4 entries, 0.6x at 1e5, 1.2-1.3x at 1e6, 1.6-2.6x
#: at 1e7).
_SORTED_MIN_ENTRIES = 1 << 18

#: Fewest queries that `mih_sorted_kernel` splits between threads (only tests force it
#: on fewer than `_SORTED_MIN_QUERIES`).
_PARALLEL_MIN_QUERIES = 1024

#: Bytes of one chunk's offsets and bucket-ordered keys that `mih_sorted_kernel` works
#: on at a time (a window of chunk values): about what a core's L2 cache holds.
_WINDOW_BYTES = 1 << 20

#: Bytes of bucket-ordered keys `mih_sorted_kernel` holds at once (a span of windows):
#: its working memory beyond the batch, whatever the list's size (16 bytes an entry).
_SPAN_BYTES = 1 << 26

#: Results kept per query in the first pass; queries with more are searched again with
#: room for all of them (only lists with many near-duplicates get there).
_FIRST_PASS_CAPACITY = 8


_MAX_ENTRIES = (1 << 32) - 1  # entry rows and bucket offsets are stored as uint32


def _kernels() -> ModuleType:
    """The compiled kernels, imported (numba and all) only when an index is used."""
    from clearset.matching import pdq_kernels

    return pdq_kernels


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit mask with at most `radius` bits set, fewest bits first."""
    masks = [0]
    for weight in range(1, radius + 1):
        masks.extend(
            sum(1 << bit for bit in chosen) for chosen in combinations(range(bits), weight)
        )
    return np.array(masks, dtype=np.int64)


def index_layout(
    n_entries: int, *, chunks: int = DEFAULT_CHUNKS, chunk_bits: int | None = None
) -> tuple[int, int]:
    """(chunks, bits per chunk) of the index `PDQIndex` builds over `n_entries` hashes."""
    if n_entries > _MAX_ENTRIES:
        raise InputError(f"entries: at most {_MAX_ENTRIES} hashes per index, got {n_entries}")
    if not 1 <= chunks <= PDQ_BITS // MIN_CHUNK_BITS:
        raise InputError(f"chunks: must be 1..{PDQ_BITS // MIN_CHUNK_BITS}, got {chunks}")
    # Buckets of about a quarter of an entry: a probe that finds an empty bucket costs
    # one cache miss, a candidate two (its row, then its hash), so somewhat wider
    # chunks than log2(N) pay for their extra probes (measured: bench/match.py).
    wanted_bits = math.ceil(math.log2(max(n_entries, 2))) + _EXTRA_CHUNK_BITS
    if chunk_bits is not None:
        wanted_bits = chunk_bits
    return chunks, max(MIN_CHUNK_BITS, min(wanted_bits, MAX_CHUNK_BITS, PDQ_BITS // chunks))


def _chunk_starts(chunks: int) -> np.ndarray:
    return np.arange(chunks, dtype=np.int64) * (PDQ_BITS // chunks)


def build_index_arrays(entries: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> None:
    """Fill `offsets` (zeros, uint32[chunks, 2**bits + 1]) and `rows` (uint32[chunks, N])
    with the index of `entries`, in place.

    For callers that want the arrays somewhere other than this process's heap (a
    memory-mapped file that several processes then share: `clearset.matching.shared`).
    """
    entries = check_pdq_array(entries, "entries")
    chunks, width = offsets.shape
    bits = width.bit_length() - 1
    if (1 << bits) + 1 != width or rows.shape != (chunks, len(entries)):
        raise InputError(
            f"index arrays: offsets {offsets.shape} and rows {rows.shape} do not fit "
            f"{len(entries)} entries"
        )
    if len(entries):
        _kernels().build_chunks(entries.view(np.uint64), _chunk_starts(chunks), bits, offsets, rows)


class PDQIndex:
    """Exact Hamming range search over a list of packed PDQ hashes (uint8[N, 32])."""

    def __init__(
        self, entries: np.ndarray, *, chunks: int = DEFAULT_CHUNKS, chunk_bits: int | None = None
    ) -> None:
        entries = check_pdq_array(entries, "entries")
        chunks, bits = index_layout(len(entries), chunks=chunks, chunk_bits=chunk_bits)
        offsets = np.zeros((chunks, (1 << bits) + 1), dtype=np.uint32)
        rows = np.empty((chunks, len(entries)), dtype=np.uint32)
        build_index_arrays(entries, offsets, rows)
        self._adopt(entries, offsets, rows)

    @classmethod
    def from_arrays(cls, entries: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> PDQIndex:
        """An index over arrays built before (by `build_index_arrays` or another index's
        `arrays`), used as they are: no rebuild and no copy, so read-only memory-mapped
        arrays stay shared between processes.

        Shapes, dtypes and the cheap invariants (each chunk's offsets run from 0 to N) are
        checked; the rows themselves are trusted, as the arrays of a constructor are.
        """
        if not all(isinstance(a, np.ndarray) for a in (entries, offsets, rows)):
            raise InputError("index arrays: expected numpy arrays")
        if entries.dtype != np.uint8 or entries.ndim != 2 or entries.shape[1] != PDQ_BITS // 8:
            raise InputError(
                f"index entries: expected uint8[N, 32], got {entries.dtype}{entries.shape}"
            )
        for what, array in (("offsets", offsets), ("rows", rows)):
            if array.dtype != np.uint32 or array.ndim != 2 or not array.flags.c_contiguous:
                raise InputError(
                    f"index {what}: expected C-contiguous uint32[chunks, M], "
                    f"got {array.dtype}{array.shape}"
                )
        if not entries.flags.c_contiguous:
            raise InputError("index entries: expected a C-contiguous array")
        chunks, width = offsets.shape
        _, bits = index_layout(len(entries), chunks=chunks, chunk_bits=width.bit_length() - 1)
        if (
            (1 << bits) + 1 != width
            or rows.shape != (chunks, len(entries))
            or offsets[:, 0].any()
            or (offsets[:, -1] != len(entries)).any()
        ):
            raise InputError(
                f"index arrays: offsets {offsets.shape} and rows {rows.shape} are not an "
                f"index of {len(entries)} entries"
            )
        index = cls.__new__(cls)
        index._adopt(entries, offsets, rows)
        return index

    def _adopt(self, entries: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> None:
        self._entries = entries
        self._words = entries.view(np.uint64)
        self._bits = offsets.shape[1].bit_length() - 1
        self._starts = _chunk_starts(offsets.shape[0])
        self._offsets = offsets
        self._rows = rows
        self._flips: dict[int, np.ndarray] = {}
        self._occupied: np.ndarray | None = None

    def _occupancy_shape(self) -> tuple[int, int]:
        return self._offsets.shape[0], -(-(1 << self._bits) // 64)

    def _occupancy(self) -> np.ndarray:
        """uint64[chunks, ceil(2**bits / 64)]: a bit per bucket, set where it holds an
        entry (`mih_kernel` probes only those). Worked out from the offsets at the first
        search (~0.1 s at 1e7 entries), not stored: shared arrays stay as they were."""
        if self._occupied is None:
            occupied = np.zeros(self._occupancy_shape(), dtype=np.uint64)
            _kernels().occupancy_kernel(self._offsets, occupied)
            self._occupied = occupied
        return self._occupied

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that are the whole index: what `from_arrays` takes back."""
        return {"entries": self._entries, "offsets": self._offsets, "rows": self._rows}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index, the entries and the occupancy bits included."""
        occupancy = math.prod(self._occupancy_shape()) * 8
        return self._entries.nbytes + self._offsets.nbytes + self._rows.nbytes + occupancy

    def plan(self, threshold: int) -> tuple[str, np.ndarray]:
        """The strategy `search` uses at `threshold`: ("mih", radius per chunk) or ("brute", [])."""
        threshold = check_threshold(threshold)
        n_chunks = len(self._starts)
        per_chunk, spare = divmod(threshold, n_chunks)
        radii = np.where(np.arange(n_chunks) <= spare, per_chunk, per_chunk - 1).astype(np.int64)
        probes = sum(
            sum(math.comb(self._bits, weight) for weight in range(radius + 1))
            for radius in radii.tolist()
        )
        candidates = probes * len(self) / (1 << self._bits)
        if (probes + candidates) * _RANDOM_ACCESS_COST < len(self):
            return "mih", radii
        return "brute", np.empty(0, dtype=np.int64)

    def search(
        self, queries: np.ndarray, threshold: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query_row, entry_row, distance) with hamming distance <= threshold, exact.

        Returns int64 query indices, int64 entry indices, int16 distances, sorted by
        (query, entry).
        """
        queries = check_pdq_array(queries, "queries")
        threshold = check_threshold(threshold)
        if len(queries) == 0 or len(self) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16)
        strategy, radii = self.plan(threshold)
        query_words = queries.view(np.uint64)
        # Batches of equal size: a small last one would pay the sorted kernel's per-call
        # copies for few queries.
        n_batches = -(-len(queries) // _QUERY_BATCH)
        bounds = [len(queries) * number // n_batches for number in range(n_batches + 1)]
        batches = [
            self._search_batch(query_words[start:stop], threshold, strategy, radii)
            for start, stop in zip(bounds, bounds[1:], strict=False)
        ]
        query_rows = np.concatenate(
            [rows + bounds[number] for number, (rows, _, _) in enumerate(batches)]
        )
        entry_rows = np.concatenate([rows for _, rows, _ in batches])
        distances = np.concatenate([distances for _, _, distances in batches])
        return query_rows, entry_rows, distances

    def _search_batch(
        self, query_words: np.ndarray, threshold: int, strategy: str, radii: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # First pass: room for a few matches per query, which is all that almost every
        # query has. Queries with more are searched again with room for exactly theirs.
        n_queries = len(query_words)
        slot_counts = np.full(n_queries, _FIRST_PASS_CAPACITY, dtype=np.int64)
        found, rows, distances = self._run_kernel(
            query_words, threshold, strategy, radii, slot_counts
        )
        overflow = np.flatnonzero(found > _FIRST_PASS_CAPACITY)
        kept = np.arange(_FIRST_PASS_CAPACITY) < found[:, None]
        kept[overflow] = False
        query_rows, slots = np.nonzero(kept)
        entry_rows = rows.reshape(n_queries, _FIRST_PASS_CAPACITY)[query_rows, slots]
        distances = distances.reshape(n_queries, _FIRST_PASS_CAPACITY)[query_rows, slots]
        if len(overflow):
            _, more_rows, more_distances = self._run_kernel(
                np.ascontiguousarray(query_words[overflow]),
                threshold,
                strategy,
                radii,
                found[overflow],
            )
            query_rows = np.concatenate([query_rows, np.repeat(overflow, found[overflow])])
            entry_rows = np.concatenate([entry_rows, more_rows])
            distances = np.concatenate([distances, more_distances])
        # Chunks find entries out of row order, and overflow queries come last.
        order = np.lexsort((entry_rows, query_rows))
        return query_rows[order].astype(np.int64), entry_rows[order], distances[order]

    def _run_kernel(
        self,
        query_words: np.ndarray,
        threshold: int,
        strategy: str,
        radii: np.ndarray,
        slot_counts: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run a kernel with room for slot_counts[q] matches of query q."""
        slot_starts = np.zeros(len(slot_counts), dtype=np.int64)
        np.cumsum(slot_counts[:-1], out=slot_starts[1:])
        total = int(slot_counts.sum())
        found = np.zeros(len(query_words), dtype=np.int64)
        found_rows = np.zeros(total, dtype=np.int64)
        found_distances = np.zeros(total, dtype=np.int16)
        outputs = (slot_starts, slot_counts, found, found_rows, found_distances)
        if strategy == "brute":
            _kernels().brute_kernel(self._words, query_words, threshold, *outputs)
            return found, found_rows, found_distances
        max_radius = int(radii.max())
        flips = self._flips.get(max_radius)
        if flips is None:
            flips = self._flips[max_radius] = _flip_masks(self._bits, max_radius)
        # Masks are ordered by weight, so radius r uses the first sum(comb(b, 0..r)) of them.
        flip_counts = np.array(
            [sum(math.comb(self._bits, w) for w in range(r + 1)) if r >= 0 else 0 for r in radii],
            dtype=np.int64,
        )
        arguments = (
            self._words,
            self._starts,
            self._bits,
            self._offsets,
            self._rows,
            flips,
            radii,
            flip_counts,
            query_words,
            threshold,
            *outputs,
        )
        probes_per_bucket = len(query_words) * int(flip_counts.sum()) / (1 << self._bits)
        if (
            probes_per_bucket >= _SORTED_MIN_PROBES_PER_BUCKET
            and len(query_words) >= _SORTED_MIN_QUERIES
            and len(self) >= _SORTED_MIN_ENTRIES
        ):
            kernels = _kernels()
            parts = kernels.thread_count() if len(query_words) >= _PARALLEL_MIN_QUERIES else 1
            kernels.mih_sorted_kernel(*arguments, *self.window_bits(), parts)
        else:
            _kernels().mih_kernel(*arguments, self._occupancy())
        return found, found_rows, found_distances

    def window_bits(self) -> tuple[int, int]:
        """(window, span) bits of `mih_sorted_kernel`: chunk values per window (as many as
        keep a window's offsets and bucket-ordered keys within `_WINDOW_BYTES`) and per
        span whose keys it holds at once (within `_SPAN_BYTES`)."""

        def fitting(budget: int) -> int:
            chunk_bytes = 16 * len(self) + 4 * (1 << self._bits)
            pieces = max(1, math.ceil(chunk_bytes / budget))
            return max(0, self._bits - math.ceil(math.log2(pieces)))

        window = fitting(_WINDOW_BYTES)
        return window, max(window, fitting(_SPAN_BYTES))
