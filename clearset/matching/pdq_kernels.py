"""The numba kernels behind `clearset.matching.pdq_index` (see its docstring).

Kept apart so that importing clearset does not import numba (about half a second of
every command's and every worker's start): `PDQIndex` imports this module the first time
it builds or searches an index. Their plain twin is `clearset.matching.reference`, which
the tests compare them with.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Queries and entries per block in the brute-force kernel (8192 entries = 256 KiB, L2).
_BRUTE_QUERY_BLOCK = 32
_BRUTE_ENTRY_BLOCK = 8192


@intrinsic
def popcount64(typingctx, value):
    """LLVM's ctpop: one POPCNT instruction on x86-64 (numba has no popcount of its own)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, args)

    return signature, codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to start loading array[index] now (llvm.prefetch, read, keep in all caches).

    The probes and candidates of one chunk are independent, so issuing all their loads
    before using any lets the memory system overlap the cache misses that dominate a search.
    """
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        array_struct = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_struct, [args[1]])
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch",
            fnty=ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]),
        )
        builder.call(
            prefetch,
            [builder.bitcast(pointer, byte_pointer), int32(0), int32(3), int32(1)],
        )
        return context.get_dummy_value()

    return signature, codegen


def thread_count() -> int:
    """Threads numba runs a parallel loop on (NUMBA_NUM_THREADS, or numba.set_num_threads)."""
    return int(numba.get_num_threads())


@numba.njit(inline="always", cache=True)
def hamming256(a: np.ndarray, b: np.ndarray) -> np.int64:
    return np.int64(
        popcount64(a[0] ^ b[0])
        + popcount64(a[1] ^ b[1])
        + popcount64(a[2] ^ b[2])
        + popcount64(a[3] ^ b[3])
    )


@numba.njit(inline="always", cache=True)
def chunk_value(words: np.ndarray, start: np.int64, bits: np.int64) -> np.int64:
    """Bits start..start+bits-1 of a hash's four uint64 words (a chunk may span two)."""
    word = start >> 6
    offset = np.uint64(start & 63)
    value = words[word] >> offset
    if (start & 63) + bits > 64:
        value |= words[word + 1] << (np.uint64(64) - offset)
    # Chunk values index offset tables: int64 keeps numba's arithmetic integral.
    return np.int64(value & ((np.uint64(1) << np.uint64(bits)) - np.uint64(1)))


@numba.njit(parallel=True, cache=True)
def build_chunks(
    words: np.ndarray, starts: np.ndarray, bits: int, offsets: np.ndarray, rows: np.ndarray
) -> None:
    """Counting-sort the entry rows by each chunk's value, one chunk per thread."""
    n_entries = words.shape[0]
    for chunk in prange(starts.shape[0]):
        start = starts[chunk]
        chunk_offsets = offsets[chunk]
        for entry in range(n_entries):
            chunk_offsets[chunk_value(words[entry], start, bits) + 1] += 1
        for value in range(1, chunk_offsets.shape[0]):
            chunk_offsets[value] += chunk_offsets[value - 1]
        cursor = chunk_offsets[:-1].copy()
        chunk_rows = rows[chunk]
        for entry in range(n_entries):
            value = chunk_value(words[entry], start, bits)
            chunk_rows[cursor[value]] = entry
            cursor[value] += 1


@numba.njit(parallel=True, cache=True)
def occupancy_kernel(offsets: np.ndarray, occupied: np.ndarray) -> None:
    """Bit v of occupied[chunk] (word v >> 6, bit v & 63) set where that chunk's bucket v
    holds an entry (offsets[chunk, v + 1] > offsets[chunk, v]); `occupied` starts zeroed."""
    n_values = offsets.shape[1] - 1
    for chunk in prange(offsets.shape[0]):
        chunk_offsets = offsets[chunk]
        chunk_occupied = occupied[chunk]
        for value in range(n_values):
            if chunk_offsets[value + 1] > chunk_offsets[value]:
                chunk_occupied[value >> 6] |= np.uint64(1) << np.uint64(value & 63)


@numba.njit(parallel=True, cache=True)
def mih_kernel(
    words: np.ndarray,
    starts: np.ndarray,
    bits: int,
    offsets: np.ndarray,
    rows: np.ndarray,
    flips: np.ndarray,
    radii: np.ndarray,
    flip_counts: np.ndarray,
    queries: np.ndarray,
    threshold: int,
    slot_starts: np.ndarray,
    slot_counts: np.ndarray,
    found: np.ndarray,
    found_rows: np.ndarray,
    found_distances: np.ndarray,
    occupied: np.ndarray,
) -> None:
    """Probe every chunk value within each chunk's radius of the query's; verify; keep.

    Each chunk is done in passes (occupancy bits, then offsets of the buckets that hold
    entries, then bucket rows, then hashes), each pass prefetching what the next one
    reads: ~1.6x faster than one pass that waits on each miss in turn (measured at 1e6
    and 1e7 entries). The occupancy bits (`occupancy_kernel`: 1 bit a bucket, 1/32 of
    the offsets) spare the offsets' cache miss for an empty bucket, which most probes
    find below ~10 million entries: 1.4-1.6x fewer CPU seconds a query at 1e5 and 1e6
    entries, the same at 1e7 (bench/match.py).

    Query q's matches go to found_rows/found_distances[slot_starts[q]:][:slot_counts[q]];
    found[q] counts all of them, so a caller sees which queries had more than their room.
    """
    n_chunks = starts.shape[0]
    max_probes = flip_counts.max()
    for query in prange(queries.shape[0]):
        query_words = queries[query]
        # Per query, not per thread: numba's prange has no thread-local storage, and one
        # allocation is noise next to thousands of cache misses.
        probes = np.empty(max_probes, dtype=np.int64)
        lows = np.empty(max_probes, dtype=np.int64)
        highs = np.empty(max_probes, dtype=np.int64)
        candidates = np.empty(4 * max_probes + 64, dtype=np.int64)
        kept = 0
        for chunk in range(n_chunks):
            n_probes = flip_counts[chunk]
            if n_probes == 0:
                continue
            value = chunk_value(query_words, starts[chunk], bits)
            chunk_offsets = offsets[chunk]
            chunk_rows = rows[chunk]
            chunk_occupied = occupied[chunk]
            for flip in range(n_probes):
                prefetch(chunk_occupied, (value ^ flips[flip]) >> 6)
            n_live = 0  # probes of buckets that hold entries
            for flip in range(n_probes):
                probe = value ^ flips[flip]
                if (chunk_occupied[probe >> 6] >> np.uint64(probe & 63)) & np.uint64(1):
                    probes[n_live] = probe
                    n_live += 1
                    prefetch(chunk_offsets, probe)
            n_candidates = 0
            for flip in range(n_live):
                low = np.int64(chunk_offsets[probes[flip]])
                high = np.int64(chunk_offsets[probes[flip] + 1])
                lows[flip] = low
                highs[flip] = high
                n_candidates += high - low  # type: ignore[assignment]  # int64 in numba
                if high > low:
                    prefetch(chunk_rows, low)
            if n_candidates > candidates.shape[0]:
                candidates = np.empty(2 * n_candidates, dtype=np.int64)
            n_candidates = 0
            for flip in range(n_live):
                for slot in range(lows[flip], highs[flip]):
                    entry = np.int64(chunk_rows[slot])
                    candidates[n_candidates] = entry
                    n_candidates += 1
                    prefetch(words, entry)
            for candidate in range(n_candidates):
                entry = candidates[candidate]
                distance = hamming256(words[entry], query_words)
                if distance > threshold:
                    continue
                # Report a pair only from the first chunk that can find it.
                seen = False
                for earlier in range(chunk):
                    if radii[earlier] < 0:
                        continue
                    differing = chunk_value(words[entry], starts[earlier], bits) ^ chunk_value(
                        query_words, starts[earlier], bits
                    )
                    if np.int64(popcount64(np.uint64(differing))) <= radii[earlier]:
                        seen = True
                        break
                if seen:
                    continue
                if kept < slot_counts[query]:
                    found_rows[slot_starts[query] + kept] = entry
                    found_distances[slot_starts[query] + kept] = distance
                kept += 1
        found[query] = kept


@numba.njit(parallel=True, cache=True)
def brute_kernel(
    words: np.ndarray,
    queries: np.ndarray,
    threshold: int,
    slot_starts: np.ndarray,
    slot_counts: np.ndarray,
    found: np.ndarray,
    found_rows: np.ndarray,
    found_distances: np.ndarray,
) -> None:
    """Compare every query with every entry, in blocks that stay in cache.

    Outputs as in `mih_kernel`.
    """
    n_entries = words.shape[0]
    n_queries = queries.shape[0]
    n_blocks = (n_queries + _BRUTE_QUERY_BLOCK - 1) // _BRUTE_QUERY_BLOCK
    for block in prange(n_blocks):
        q_start = block * _BRUTE_QUERY_BLOCK
        q_stop = min(q_start + _BRUTE_QUERY_BLOCK, n_queries)
        for query in range(q_start, q_stop):
            found[query] = 0
        for e_start in range(0, n_entries, _BRUTE_ENTRY_BLOCK):
            e_stop = min(e_start + _BRUTE_ENTRY_BLOCK, n_entries)
            for query in range(q_start, q_stop):
                query_words = queries[query]
                kept = found[query]
                for entry in range(e_start, e_stop):
                    distance = hamming256(words[entry], query_words)
                    if distance <= threshold:
                        if kept < slot_counts[query]:
                            found_rows[slot_starts[query] + kept] = entry
                            found_distances[slot_starts[query] + kept] = distance
                        kept += 1
                found[query] = kept


@numba.njit(parallel=True, cache=True)
def mih_sorted_kernel(
    words: np.ndarray,
    starts: np.ndarray,
    bits: int,
    offsets: np.ndarray,
    rows: np.ndarray,
    flips: np.ndarray,
    radii: np.ndarray,
    flip_counts: np.ndarray,
    queries: np.ndarray,
    threshold: int,
    slot_starts: np.ndarray,
    slot_counts: np.ndarray,
    found: np.ndarray,
    found_rows: np.ndarray,
    found_distances: np.ndarray,
    window_bits: int,
    span_bits: int,
    parts: int,
) -> None:
    """`mih_kernel`'s search, one chunk and one window of its buckets at a time.

    Per chunk, the queries are sorted by the chunk's value, and the bucket values are cut
    into windows of 2**window_bits values. A probe (a query's value XOR a flip mask)
    lands in window w exactly when the query's value lies in window w XOR the mask's high
    bits: a contiguous run of the sorted queries. So for each window every flip sweeps one
    run of queries over that window's offsets in ascending order, and the window's data
    stays in cache while all its probes run, instead of ~2,800 scattered misses per query.
    Candidates are first checked on 128 of their bits, copied into bucket order for a span
    of 2**span_bits chunk values at a time (16 bytes per entry of the span: the kernel's
    only memory of the list's size), so a whole hash is read at random only for the
    ~1e-9 of random pairs that pass.

    Worth it once a batch probes most buckets (`PDQIndex` decides). Same pairs, same
    outputs as `mih_kernel` (the order of a query's matches within its slots aside).
    Threads split every run by position into `parts`; a query lies in one run only (its
    own value's), so it is always the same thread's and no output is written by two.
    """
    n_queries = queries.shape[0]
    n_chunks = starts.shape[0]
    for query in range(n_queries):
        found[query] = 0
    order = np.empty(n_queries, dtype=np.uint64)
    sorted_values = np.empty(n_queries, dtype=np.int64)
    sorted_queries = np.empty(n_queries, dtype=np.int64)
    sorted_words = np.empty((n_queries, 4), dtype=np.uint64)
    n_windows = np.int64(1) << np.int64(bits - window_bits)
    windows_per_span = np.int64(1) << np.int64(span_bits - window_bits)
    runs = np.empty(n_windows + 1, dtype=np.int64)
    for chunk in range(n_chunks):
        n_probes = flip_counts[chunk]
        if n_probes == 0:
            continue
        start = starts[chunk]
        # Serial: O(queries) next to the search's O(queries x probes), and each parallel
        # loop is a start and a barrier that a loaded machine makes slow.
        for query in range(n_queries):
            value = np.uint64(chunk_value(queries[query], start, bits))
            order[query] = (value << np.uint64(32)) | np.uint64(query)
        order.sort()
        for position in range(n_queries):
            row = np.int64(order[position] & np.uint64(0xFFFFFFFF))
            sorted_queries[position] = row
            sorted_values[position] = np.int64(order[position] >> np.uint64(32))
            for word in range(4):
                sorted_words[position, word] = queries[row, word]
        # A loop, not an array expression: numba would make that a parallel loop too.
        for window in range(n_windows + 1):
            runs[window] = np.searchsorted(sorted_values, window << window_bits)
        chunk_offsets = offsets[chunk]
        chunk_rows = rows[chunk]
        # Any bits give a lower bound of the distance (exact recall holds for every choice);
        # bits outside the chunk, where the pair may differ freely, reject the most.
        first_word, second_word = 0, 3
        if start + bits <= 128:
            first_word, second_word = 2, 3
        elif start >= 128:
            first_word, second_word = 0, 1
        for span_first in range(0, n_windows, windows_per_span):
            span_last = span_first + windows_per_span
            base = np.int64(chunk_offsets[span_first << window_bits])
            stop = np.int64(chunk_offsets[span_last << window_bits])
            keys = np.empty((stop - base, 2), dtype=np.uint64)
            # A parallel loop costs a start and a barrier (milliseconds on a loaded
            # machine): small copies and small batches run on this thread.
            if stop - base < _PARALLEL_MIN_KEYS:
                _copy_keys(keys, 0, stop - base, words, chunk_rows, base, first_word, second_word)
            else:
                for slot in prange(stop - base):
                    _copy_keys(
                        keys, slot, slot + 1, words, chunk_rows, base, first_word, second_word
                    )
            sweep_arguments = (
                span_first, span_last, window_bits, n_probes, flips, runs, sorted_values,
                sorted_words, sorted_queries, chunk_offsets, chunk_rows, base, keys,
                first_word, second_word, words, starts, bits, radii, chunk, threshold,
                slot_starts, slot_counts, found, found_rows, found_distances,
            )  # fmt: skip
            if parts == 1:
                _sweep(0, 1, *sweep_arguments)
            else:
                for part in prange(parts):
                    _sweep(part, parts, *sweep_arguments)


#: Fewest keys `mih_sorted_kernel` copies in parallel.
_PARALLEL_MIN_KEYS = 1 << 16


@numba.njit(inline="always", cache=True)
def _copy_keys(
    keys: np.ndarray,
    first: int,
    last: int,
    words: np.ndarray,
    chunk_rows: np.ndarray,
    base: int,
    first_word: int,
    second_word: int,
) -> None:
    for slot in range(first, last):
        entry = np.int64(chunk_rows[base + slot])
        keys[slot, 0] = words[entry, first_word]
        keys[slot, 1] = words[entry, second_word]


@numba.njit(cache=True)
def _sweep(
    part: int,
    parts: int,
    span_first: int,
    span_last: int,
    window_bits: int,
    n_probes: int,
    flips: np.ndarray,
    runs: np.ndarray,
    sorted_values: np.ndarray,
    sorted_words: np.ndarray,
    sorted_queries: np.ndarray,
    chunk_offsets: np.ndarray,
    chunk_rows: np.ndarray,
    base: int,
    keys: np.ndarray,
    first_word: int,
    second_word: int,
    words: np.ndarray,
    starts: np.ndarray,
    bits: int,
    radii: np.ndarray,
    chunk: int,
    threshold: int,
    slot_starts: np.ndarray,
    slot_counts: np.ndarray,
    found: np.ndarray,
    found_rows: np.ndarray,
    found_distances: np.ndarray,
) -> None:
    """Part `part` of `parts` of every run that the windows of one span take probes from."""
    for window in range(span_first, span_last):
        for flip in range(n_probes):
            mask = flips[flip]
            run = window ^ (mask >> window_bits)
            run_first = runs[run]
            run_length = runs[run + 1] - run_first
            first = run_first + run_length * part // parts
            last = run_first + run_length * (part + 1) // parts
            for position in range(first, last):
                if position + 8 < last:
                    prefetch(chunk_offsets, sorted_values[position + 8] ^ mask)
                probe = sorted_values[position] ^ mask
                low = np.int64(chunk_offsets[probe]) - base
                high = np.int64(chunk_offsets[probe + 1]) - base
                query_words = sorted_words[position]
                for slot in range(low, high):
                    if (
                        popcount64(keys[slot, 0] ^ query_words[first_word])
                        + popcount64(keys[slot, 1] ^ query_words[second_word])
                        > threshold
                    ):
                        continue
                    entry = np.int64(chunk_rows[base + slot])
                    distance = hamming256(words[entry], query_words)
                    if distance > threshold:
                        continue
                    seen = False
                    for earlier in range(chunk):
                        if radii[earlier] < 0:
                            continue
                        differing = chunk_value(words[entry], starts[earlier], bits) ^ chunk_value(
                            query_words, starts[earlier], bits
                        )
                        if np.int64(popcount64(np.uint64(differing))) <= radii[earlier]:
                            seen = True
                            break
                    if seen:
                        continue
                    query = sorted_queries[position]
                    kept = found[query]
                    if kept < slot_counts[query]:
                        found_rows[slot_starts[query] + kept] = entry
                        found_distances[slot_starts[query] + kept] = distance
                    found[query] = kept + 1
