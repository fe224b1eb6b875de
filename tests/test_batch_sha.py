"""The build's fast paths against their twins: the native SHA-256 loop against hashlib
(the same digests for every batch, the same tree whichever path hashes it, hashlib when
the loop cannot be had), the bucket split and the packed-key sort against plain sorts."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearset.lists.model import sort_unique
from clearset.receipts import batch_sha, merkle
from clearset.receipts.merkle import MerkleTree, reference_path, reference_root
from clearset.stages.receipts import bucket_of, split_by_bucket

NATIVE = batch_sha.native_available()
needs_native = pytest.mark.skipif(
    not NATIVE, reason="this Python's hashlib has no shared libcrypto to call"
)


def hashlib_rows(rows: np.ndarray, prefix: int) -> np.ndarray:
    return np.frombuffer(
        b"".join(hashlib.sha256(bytes([prefix]) + row.tobytes()).digest() for row in rows),
        np.uint8,
    ).reshape(-1, 32)


def test_a_shared_libcrypto_is_found_on_linux():
    # CI and the dev machines link hashlib against the system OpenSSL: the fast path must
    # be the one the build takes there, not a silent fallback.
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory map is read from /proc")
    import _hashlib

    linked = subprocess.run(["ldd", _hashlib.__file__], capture_output=True, text=True)
    if "libcrypto" not in linked.stdout:
        pytest.skip("this Python links OpenSSL statically")
    assert NATIVE


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 300),
    st.sampled_from([32, 64]),
    st.sampled_from([0, 1]),
    st.integers(0, 2**32 - 1),
)
def test_native_digests_equal_hashlib(count, width, prefix, seed):
    rows = np.random.default_rng(seed).integers(0, 256, (count, width), dtype=np.uint8)
    assert np.array_equal(batch_sha.prefixed_sha256(rows, prefix), hashlib_rows(rows, prefix))


@needs_native
def test_a_strided_batch_is_hashed_as_its_rows():
    rows = np.random.default_rng(3).integers(0, 256, (100, 64), dtype=np.uint8)
    view = rows[::3, :32]  # not contiguous
    assert np.array_equal(batch_sha.prefixed_sha256(view, 0), hashlib_rows(view, 0))


@needs_native
@pytest.mark.parametrize("size", [2**k + d for k in (5, 10, 14, 15) for d in (-1, 0, 1)])
def test_a_tree_hashed_natively_equals_the_rfc_definition(size, monkeypatch):
    monkeypatch.setattr(batch_sha, "NATIVE_MIN_ROWS", 1)
    values = np.sort(
        np.random.default_rng(size).integers(0, 256, (size, 32), dtype=np.uint8).view("S32"),
        axis=0,
    ).view(np.uint8)
    native = MerkleTree.build(values)
    entries = [bytes(v) for v in values]
    if size < 2**12:  # the recursive definition is slow; pymerkle-checked elsewhere
        assert native.root == reference_root(entries)
        index = size // 3
        assert native.inclusion_proof(index) == reference_path(entries, index)
    monkeypatch.setenv("CLEARSET_HASHLIB_ONLY", "1")
    assert MerkleTree.build(values).root == native.root


def test_without_the_native_loop_hashlib_hashes(monkeypatch):
    # As on a Python whose OpenSSL is static: the loop cannot load; every batch size
    # still hashes, through hashlib, to the same digests.
    monkeypatch.setattr(batch_sha, "_kernel", None)
    monkeypatch.setattr(batch_sha, "_failed", False)
    monkeypatch.setattr(batch_sha, "libcrypto_path", lambda: None)
    monkeypatch.setattr(batch_sha, "NATIVE_MIN_ROWS", 1)
    rows = np.random.default_rng(5).integers(0, 256, (70, 64), dtype=np.uint8)
    assert batch_sha.prefixed_sha256(rows, 1) is None
    assert batch_sha._failed
    expected = hashlib_rows(rows, 1)
    assert np.array_equal(merkle.parent_level(rows.reshape(-1, 32)), expected)


def test_hashlib_only_is_honoured(monkeypatch):
    monkeypatch.setenv("CLEARSET_HASHLIB_ONLY", "1")
    rows = np.zeros((40, 32), np.uint8)
    assert batch_sha.prefixed_sha256(rows, 0) is None
    assert not batch_sha.worth_native(1 << 20)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 16), st.integers(0, 2**32 - 1))
def test_split_by_bucket_groups_rows_in_bucket_order_keeping_their_order(count, bits, seed):
    rows = np.random.default_rng(seed).integers(0, 256, (count, 32), dtype=np.uint8)
    grouped, counts = split_by_bucket(rows, bits)
    buckets = bucket_of(rows, bits)
    assert counts.tolist() == np.bincount(buckets, minlength=1 << bits).tolist()
    order = sorted(range(count), key=lambda i: int(buckets[i]))  # Python's sort is stable
    expected = [rows[i].tobytes() for i in order]
    assert [row.tobytes() for row in grouped] == expected


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 600),
    st.sampled_from([16, 20, 32]),
    st.sampled_from(["random", "shared prefix", "tied keys", "repeats"]),
    st.integers(0, 2**32 - 1),
)
def test_sort_unique_equals_a_sorted_set_for_buckets_ties_and_repeats(count, width, kind, seed):
    # The sort packs each row's index into the low bits of its first 8 bytes: rows that
    # share leading bits (a bucket), differ only past the packed key, or repeat must
    # still come out in full byte order, once each.
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (count, width), dtype=np.uint8)
    if kind == "shared prefix":
        rows[:, :6] = 7
    elif kind == "tied keys":
        rows[:, :8] = 3
        rows[:, 8] = rng.integers(0, 3, count)
    elif kind == "repeats":
        rows = rows[rng.integers(0, max(1, count // 3), count)]
    unique, repeats = sort_unique(rows)
    expected = sorted({row.tobytes() for row in rows})
    assert [row.tobytes() for row in unique] == expected
    assert repeats == count - len(expected)
