"""PDQIndex against the numpy brute-force reference: the index must return exactly its answer.

Data is random hashes (benign by construction) with planted neighbours: list entries
copied with k bits flipped, k on both sides of the threshold, including flips placed
exactly at the pigeonhole boundary of the index's chunks, where a miss would show first.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clearset.errors import InputError
from clearset.matching import pdq_index
from clearset.matching.pdq_index import PDQIndex
from clearset.matching.reference import brute_force_search, hamming_distance

THRESHOLDS = [0, 10, 31, 40]


def random_hashes(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 32), dtype=np.uint8)


def flip_bits(hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Flip bit `position` of each hash, numbering bits as the index does (uint64 words, LSB 0)."""
    flipped = hashes.copy()
    words = flipped.view(np.uint64)
    for row, row_positions in enumerate(positions):
        for position in row_positions:
            words[row, position // 64] ^= np.uint64(1) << np.uint64(position % 64)
    return flipped


def planted_queries(
    rng: np.random.Generator, entries: np.ndarray, flips: list[int], per_flip: int
) -> np.ndarray:
    """Copies of random entries with exactly k random bits flipped, for each k in flips."""
    queries = []
    for k in flips:
        sources = entries[rng.integers(0, len(entries), size=per_flip)]
        positions = np.array([rng.choice(256, size=k, replace=False) for _ in range(per_flip)])
        queries.append(flip_bits(sources, positions.reshape(per_flip, k)))
    return np.concatenate(queries)


def assert_same(got: tuple, expected: tuple) -> None:
    names = ("query rows", "entry rows", "distances")
    for name, got_part, expected_part in zip(names, got, expected, strict=True):
        assert got_part.dtype == expected_part.dtype, name
        np.testing.assert_array_equal(got_part, expected_part, err_msg=name)


def force(monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """Make every search use `strategy`: "mih" (query by query), "mih-sorted" (a chunk at
    a time over sorted queries), "brute", or "auto" (the index's own choice)."""
    if strategy in ("mih", "mih-sorted"):
        monkeypatch.setattr(pdq_index, "_RANDOM_ACCESS_COST", 0.0)
        sorted_from = 0.0 if strategy == "mih-sorted" else math.inf
        monkeypatch.setattr(pdq_index, "_SORTED_MIN_PROBES_PER_BUCKET", sorted_from)
        monkeypatch.setattr(pdq_index, "_SORTED_MIN_QUERIES", 0)
        monkeypatch.setattr(pdq_index, "_SORTED_MIN_ENTRIES", 0)
        # Small windows, so that the tests' small lists are searched in several.
        monkeypatch.setattr(pdq_index, "_WINDOW_BYTES", 1 << 16)
    elif strategy == "brute":
        monkeypatch.setattr(pdq_index, "_RANDOM_ACCESS_COST", math.inf)


@pytest.fixture(params=["auto", "mih", "mih-sorted", "brute"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the index's own choice, and with each strategy and kernel forced."""
    force(monkeypatch, request.param)
    return request.param


@pytest.fixture(scope="module")
def entries() -> np.ndarray:
    return random_hashes(np.random.default_rng(1), 3000)


@pytest.fixture(scope="module")
def index(entries: np.ndarray) -> PDQIndex:
    return PDQIndex(entries)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_random_and_planted_match_brute_force(
    entries: np.ndarray, index: PDQIndex, threshold: int, strategy: str
) -> None:
    rng = np.random.default_rng(threshold)
    flips = sorted({max(0, threshold + delta) for delta in (-3, -1, 0, 1, 2)})
    queries = np.concatenate(
        [random_hashes(rng, 50), planted_queries(rng, entries, flips, per_flip=20)]
    )
    got = index.search(queries, threshold)
    expected = brute_force_search(entries, queries, threshold)
    assert_same(got, expected)
    # The planted copies at exactly the threshold must be among the matches.
    assert np.any(got[2] == threshold)


@pytest.mark.parametrize("threshold", [10, 31, 40])
def test_flips_spread_to_the_pigeonhole_boundary(
    entries: np.ndarray, index: PDQIndex, threshold: int, strategy: str
) -> None:
    # Give every chunk as many flips as it can take without being probed at its radius,
    # then put the remaining ones in one chunk: the pair is findable through that chunk
    # only, and a radius one too small would miss it.
    starts, bits = index._starts, index._bits
    per_chunk, spare = divmod(threshold, len(starts))
    radii = [per_chunk if chunk <= spare else per_chunk - 1 for chunk in range(len(starts))]
    rng = np.random.default_rng(threshold + 100)
    queries = []
    for rescue_chunk in range(len(starts)):
        positions: list[int] = []
        for chunk, start in enumerate(starts):
            count = radii[chunk] + 1 if chunk != rescue_chunk else max(radii[chunk], 0)
            positions.extend(start + rng.choice(bits, size=min(count, bits), replace=False))
        source = entries[rng.integers(0, len(entries), size=1)]
        queries.append(flip_bits(source, np.array([positions])))
    queries = np.concatenate(queries)
    got = index.search(queries, threshold)
    assert_same(got, brute_force_search(entries, queries, threshold))


def test_flips_in_bits_no_chunk_covers(entries: np.ndarray, index: PDQIndex) -> None:
    covered = np.zeros(256, dtype=bool)
    for start in index._starts:
        covered[start : start + index._bits] = True
    uncovered = np.flatnonzero(~covered)
    assert len(uncovered) > 0  # 11 chunks of at most 23 bits leave some bits out
    # Every chunk equal, the whole distance in bits no chunk looks at.
    queries = flip_bits(entries[:5], np.tile(uncovered[:31], (5, 1)))
    got = index.search(queries, 31)
    assert_same(got, brute_force_search(entries, queries, 31))
    assert set(got[1].tolist()) >= set(range(5))


def test_duplicates_in_the_list_are_all_reported(strategy: str) -> None:
    rng = np.random.default_rng(7)
    # More copies than the first pass keeps per query, so the overflow pass runs too.
    copies = pdq_index._FIRST_PASS_CAPACITY * 3
    entries = np.concatenate([random_hashes(rng, 500), np.repeat(random_hashes(rng, 2), copies, 0)])
    entries = entries[rng.permutation(len(entries))]
    queries = np.concatenate([entries[:40], planted_queries(rng, entries, [5, 31], per_flip=10)])
    index = PDQIndex(entries)
    for threshold in THRESHOLDS:
        assert_same(
            index.search(queries, threshold), brute_force_search(entries, queries, threshold)
        )
    query_rows, _, _ = index.search(entries, 0)
    assert np.bincount(query_rows).max() >= copies


@pytest.mark.parametrize("kernel", ["mih", "mih-sorted"])
def test_many_query_batches(
    monkeypatch: pytest.MonkeyPatch, entries: np.ndarray, index: PDQIndex, kernel: str
) -> None:
    force(monkeypatch, kernel)
    monkeypatch.setattr(pdq_index, "_QUERY_BATCH", 7)
    rng = np.random.default_rng(3)
    queries = planted_queries(rng, entries, [0, 20, 31, 32], per_flip=15)
    assert_same(index.search(queries, 31), brute_force_search(entries, queries, 31))


def test_sorted_kernel_queries_sharing_chunk_values(
    monkeypatch: pytest.MonkeyPatch, entries: np.ndarray, index: PDQIndex
) -> None:
    # Sorting by a chunk's value ties equal values: repeated queries, and queries that
    # differ only outside one chunk, must each keep their own matches.
    force(monkeypatch, "mih-sorted")
    rng = np.random.default_rng(13)
    near = planted_queries(rng, entries[:20], [0, 3, 31], per_flip=20)
    same_chunk = flip_bits(np.repeat(entries[:3], 8, 0), rng.integers(200, 256, (24, 4)))
    queries = np.concatenate([near, near[::-1], same_chunk, random_hashes(rng, 40)])
    # Windows of one chunk value, of 2**9, of the whole chunk; keys copied for 2**11 or
    # 2**12 values at a time (8 or 4 spans a chunk), or for the whole chunk.
    # The last also with the threads splitting every run.
    for window_bytes, span_bytes, bits, parallel_from in (
        (1, 1 << 14, (0, 11), 1024),
        (1 << 12, 1 << 15, (9, 12), 1024),
        (1 << 30, 1 << 30, (index._bits, index._bits), 0),
    ):
        monkeypatch.setattr(pdq_index, "_WINDOW_BYTES", window_bytes)
        monkeypatch.setattr(pdq_index, "_SPAN_BYTES", span_bytes)
        monkeypatch.setattr(pdq_index, "_PARALLEL_MIN_QUERIES", parallel_from)
        assert index.window_bits() == bits
        for threshold in (0, 31):
            assert_same(
                index.search(queries, threshold), brute_force_search(entries, queries, threshold)
            )


@pytest.mark.parametrize("list_size", [0, 1, 200])
@pytest.mark.parametrize("query_count", [0, 1, 30])
def test_small_and_empty_inputs(list_size: int, query_count: int, strategy: str) -> None:
    rng = np.random.default_rng(list_size * 100 + query_count)
    entries = random_hashes(rng, list_size)
    queries = random_hashes(rng, query_count)
    if list_size and query_count:
        queries[0] = entries[0]
    index = PDQIndex(entries)
    assert len(index) == list_size
    for threshold in (0, 31, 256):
        got = index.search(queries, threshold)
        assert_same(got, brute_force_search(entries, queries, threshold))
    if list_size and query_count:
        assert len(index.search(queries, 256)[0]) == list_size * query_count


@pytest.mark.parametrize("kernel", ["auto", "mih-sorted"])
def test_chunk_layouts_all_exact(
    monkeypatch: pytest.MonkeyPatch, entries: np.ndarray, kernel: str
) -> None:
    # Chunks that span two words, and the sorted kernel's bucket-order keys taken from
    # words the chunk overlaps: recall stays exact whichever bits the keys hold.
    force(monkeypatch, kernel)
    rng = np.random.default_rng(11)
    queries = planted_queries(rng, entries, [0, 9, 10, 11, 31, 32], per_flip=10)
    for chunks, chunk_bits in [(1, 8), (4, 12), (8, 20), (16, 16), (32, 8), (11, 23)]:
        index = PDQIndex(entries, chunks=chunks, chunk_bits=chunk_bits)
        for threshold in (0, 10, 31):
            expected = brute_force_search(entries, queries, threshold)
            assert_same(index.search(queries, threshold), expected)


@pytest.mark.parametrize("chunks", [1, 5, 11, 16, 32])
def test_plan_radii_follow_the_pigeonhole_principle(entries: np.ndarray, chunks: int) -> None:
    index = PDQIndex(entries[:10], chunks=chunks)
    for threshold in range(0, 257):
        strategy_name, radii = index.plan(threshold)
        if strategy_name == "mih":
            # Chunk distances all above their radii add up to more than the threshold.
            assert int((radii + 1).sum()) == threshold + 1


def test_reference_against_unpacked_bits() -> None:
    rng = np.random.default_rng(5)
    entries = random_hashes(rng, 40)
    queries = np.concatenate([random_hashes(rng, 10), planted_queries(rng, entries, [3, 120], 5)])
    bits_e = np.unpackbits(entries, axis=1).astype(np.int16)
    bits_q = np.unpackbits(queries, axis=1).astype(np.int16)
    distances = np.abs(bits_q[:, None, :] - bits_e[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_distance(queries[:, None, :], entries[None]), distances)
    for threshold in (0, 3, 120, 256):
        q, e = np.nonzero(distances <= threshold)
        assert_same(
            brute_force_search(entries, queries, threshold),
            (q.astype(np.int64), e.astype(np.int64), distances[q, e].astype(np.int16)),
        )


def test_hamming_distance_row_wise() -> None:
    a = np.zeros((2, 32), dtype=np.uint8)
    b = a.copy()
    b[0, 0] = 0b1000_0001
    b[1] = 0xFF
    np.testing.assert_array_equal(hamming_distance(a, b), [2, 256])
    assert hamming_distance(a[0], b[0]) == 2
    assert hamming_distance(a[0], b).tolist() == [2, 256]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 32), dtype=np.int8),
        np.zeros((3, 31), dtype=np.uint8),
        np.zeros(32, dtype=np.uint8),
        np.zeros((2, 3, 32), dtype=np.uint8),
        [[0] * 32],
    ],
)
def test_malformed_hash_arrays_are_input_errors(bad: object, index: PDQIndex) -> None:
    with pytest.raises(InputError):
        PDQIndex(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        index.search(bad, 31)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        brute_force_search(bad, np.zeros((1, 32), np.uint8), 31)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [-1, 257, 31.0, True, "31"])
def test_bad_thresholds_are_input_errors(threshold: object, index: PDQIndex) -> None:
    queries = np.zeros((1, 32), dtype=np.uint8)
    with pytest.raises(InputError):
        index.search(queries, threshold)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        brute_force_search(index._entries, queries, threshold)  # type: ignore[arg-type]


def test_non_contiguous_inputs_are_accepted(entries: np.ndarray) -> None:
    wide = np.zeros((200, 64), dtype=np.uint8)
    wide[:, ::2] = entries[:200]
    strided = wide[:, ::2]
    index = PDQIndex(strided)
    queries = np.asfortranarray(entries[:20])
    assert_same(index.search(queries, 31), brute_force_search(entries[:200], queries, 31))


@pytest.mark.parametrize("chunk_bits", [8, 13])
def test_occupancy_bits_mark_exactly_the_buckets_that_hold_entries(chunk_bits: int) -> None:
    # The query-by-query kernel probes only buckets whose bit is set: a bit missing
    # would lose matches, so the compiled bits are held to numpy's, bit for bit, on a
    # list that leaves most buckets empty (13 bits) and one that fills them (8 bits).
    rng = np.random.default_rng(3)
    index = PDQIndex(random_hashes(rng, 3000), chunk_bits=chunk_bits)
    offsets = index.arrays["offsets"].astype(np.int64)
    held = np.packbits(np.diff(offsets, axis=1) > 0, axis=1, bitorder="little")
    occupied = index._occupancy()
    assert occupied.dtype == np.uint64
    assert occupied.view(np.uint8).tobytes() == held.tobytes()
    assert held.sum() > 0 and (chunk_bits == 8 or not held.all())
    # An index over the same arrays (as the shared one adopts them) works out the same.
    again = PDQIndex.from_arrays(**index.arrays)
    assert np.array_equal(again._occupancy(), occupied)
