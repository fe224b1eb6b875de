"""What a loaded hash list is: packed hashes of one type, and the identity receipts name.

A list is held as a sorted, duplicate-free ``uint8[N, HASH_BYTES[type]]`` array, never as
Python strings, so that ten million PDQ hashes cost 320 MB and a batch lookup is a
``searchsorted``. A list is named in reports and receipts only by its identity (name,
version, digest, type, entry count, source path): its entries never leave this object.

Canonical digest form (``ListIdentity.digest``, version 1). The digest is the SHA-256 of
the UTF-8 text::

    clearset-hashlist-v1 <hash_type>\\n
    <hex of entry 1>\\n
    <hex of entry 2>\\n
    ...

where the entries are the list's unique hashes as lower-case hex, in ascending byte order
(which for lower-case hex is plain ``LC_ALL=C sort`` order), each followed by one newline.
For a ``url`` list the entries are the SHA-256 of each URL (see :func:`url_sha256`). So an
auditor holding a plain list of PDQ hashes can reproduce the digest with shell tools::

    { echo "clearset-hashlist-v1 pdq"; tr A-F a-f < list.txt | LC_ALL=C sort -u; } | sha256sum

The same entries in another order, letter case or file format give the same digest; the
same bytes declared as another type give another digest; name and version are not part
of it (they are recorded beside it).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

from clearset.hashing import types
from clearset.hashing.urls import url_md5_forms as url_md5_forms  # moved there; re-exported
from clearset.hashing.urls import url_sha256 as url_sha256

HASH_TYPES: tuple[str, ...] = types.list_type_names()
"""Hash types a list can hold (`clearset.hashing.types`, in list order). A ``url`` list
holds SHA-256 digests of URL strings; a ``url_md5`` list (python-threatexchange's signal
type) holds MD5 digests of URLs. Code here asks the registry, which a type registered
later is in; these two names are the built-in types, for callers that want a constant."""

HASH_BYTES: dict[str, int] = types.widths()
"""Packed width in bytes of one entry of each type."""

DIGEST_SCHEME = "clearset-hashlist-v1"
"""First token of the canonical text the list digest is computed over."""

# Signal types that appear in threatexchange/HMA exports but that clearset cannot match
# (TMK video and text signals). Entries of these types are skipped, counted and named in
# the load's notice, not errors: a mixed export is a normal input, and its PDQ and MD5
# entries are still usable. ``video_md5`` is MD5 of a video file (an alias of ``md5``);
# vPDQ entries make a list of their own (`clearset.lists.vpdq`).
UNSUPPORTED_SIGNALS: frozenset[str] = frozenset(
    {
        "tmk",
        "video_tmk_pdqf",
        "hash_tmk",
        "tmk_pdqf",
        "raw_text",
        "text",
        "trend_query",
        "text_md5",
        "hash_crypto",
        "video_md5_tmk",
        "photodna",
        "hash_photodna",
    }
)


def normalise_signal(name: str) -> str | None:
    """Our hash type for a signal/indicator type name from another tool (python-threatexchange
    signal names, the ThreatExchange API's indicator types, HMA exports), or None."""
    found = types.lookup(name)
    return None if found is None else found.name


# Byte -> its two lower-case hex digits as one little-endian uint16 (first digit in the
# low byte), so encoding is one table lookup per byte rather than per digit.
_HEX_PAIRS = np.array(
    [ord(f"{byte:02x}"[0]) | (ord(f"{byte:02x}"[1]) << 8) for byte in range(256)],
    dtype=np.uint16,
)

# Rows encoded per step while digesting: small enough to stay in cache, so that digesting
# ten million entries needs no second copy of the list as text.
_DIGEST_BLOCK = 4096


def to_hex_rows(rows: np.ndarray) -> np.ndarray:
    """uint8[N, B] -> uint8[N, 2B] of lower-case ASCII hex."""
    return np.take(_HEX_PAIRS, rows).view(np.uint8)


def list_digest(hash_type: str, hashes: np.ndarray) -> str:
    """Hex SHA-256 of the canonical form (module docstring) of sorted unique ``hashes``."""
    digest = hashlib.sha256(f"{DIGEST_SCHEME} {hash_type}\n".encode())
    width = hashes.shape[1] * 2
    text = np.full((_DIGEST_BLOCK, width + 1), ord("\n"), dtype=np.uint8)
    for start in range(0, hashes.shape[0], _DIGEST_BLOCK):
        block = hashes[start : start + _DIGEST_BLOCK]
        text[: block.shape[0], :width] = to_hex_rows(block)
        digest.update(text[: block.shape[0]].data)
    return digest.hexdigest()


def _key_columns(rows: np.ndarray) -> np.ndarray:
    """uint64[N, ceil(B/8)] whose lexicographic order is the rows' byte order."""
    width = rows.shape[1]
    padded_width = -(-width // 8) * 8
    if padded_width != width:  # SHA-1 is 20 bytes: pad with zeros, which keeps the order
        padded = np.zeros((rows.shape[0], padded_width), dtype=np.uint8)
        padded[:, :width] = rows
        rows = padded
    return np.ascontiguousarray(rows).view(">u8").astype(np.uint64)


_LITTLE = np.little_endian


def as_void(rows: np.ndarray) -> np.ndarray:
    """uint8[N, B] -> void[N], one item per row, comparing like the rows' bytes."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel()


def first_key(rows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each row as a native uint64 (big-endian read, so order holds)."""
    head = np.zeros((rows.shape[0], 8), dtype=np.uint8)
    take = min(8, rows.shape[1])
    head[:, :take] = rows[:, :take]
    return head.view(">u8").ravel().astype(np.uint64)


def _order_by_first_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(an order of the rows by ``keys``, each row's sort key in that order), where a sort
    key is the key with its lowest bits given up to the row index; rows whose sort keys
    tie are in index order and must be told apart by their bytes."""
    n = len(keys)
    index_bits = max(1, (n - 1).bit_length())
    # Leading bits every key shares (a bucket's) carry no order: shift them out first.
    spread = int(keys.min()) ^ int(keys.max())
    shared = 64 - spread.bit_length()
    if shared == 64 or index_bits > 40:  # all keys equal, or too many rows to pack
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    mask = np.uint64((1 << index_bits) - 1)
    packed = (keys << np.uint64(shared)) & ~mask
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    return (packed & mask).astype(np.intp), packed >> np.uint64(index_bits)


def sort_unique(rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Sort uint8[N, B] rows by bytes and drop repeats; returns (rows, repeats dropped).

    The rows are ordered by their first 8 bytes, read as one uint64, with each row's index
    packed into the low bits so that one plain (SIMD) sort of uint64 gives the order:
    several times faster than sorting 32-byte void rows or an argsort. Rows that tie on
    what is left of the key (repeats, mostly) are then put in full byte order among
    themselves.
    """
    n = rows.shape[0]
    if n == 0:
        return rows, 0
    order, sorted_keys = _order_by_first_key(first_key(rows))
    tie = sorted_keys[1:] == sorted_keys[:-1]
    if tie.any():
        in_run = np.zeros(n, dtype=bool)
        in_run[:-1] |= tie
        in_run[1:] |= tie
        positions = np.flatnonzero(in_run)
        # A run starts where a position is not tied to the one before it.
        run_start = np.ones(positions.shape[0], dtype=bool)
        run_start[1:] = ~tie[positions[1:] - 1] | (positions[1:] != positions[:-1] + 1)
        run_id = np.cumsum(run_start)
        columns = _key_columns(rows[order[positions]])
        perm = np.lexsort([columns[:, j] for j in range(columns.shape[1] - 1, -1, -1)] + [run_id])
        order[positions] = order[positions][perm]
    # Gathering whole rows as one void item each is several times faster than rows[order].
    rows = np.take(as_void(rows), order).view(np.uint8).reshape(n, -1)
    if not tie.any():
        return rows, 0
    candidates = np.flatnonzero(tie)
    repeat = np.zeros(n, dtype=bool)
    repeat[candidates + 1] = (rows[candidates + 1] == rows[candidates]).all(axis=1)
    repeats = int(repeat.sum())
    if repeats:
        rows = rows[~repeat]
    return rows, repeats


@dataclass(frozen=True)
class ListIdentity:
    """How reports and receipts name a list: never by its contents."""

    name: str
    version: str | None
    digest: str  # hex SHA-256 of the canonical form in this module's docstring
    hash_type: str
    entries: int
    source: str  # the path or URL as the operator gave it

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class HashList:
    """One list of one hash type: sorted unique packed hashes plus how they were loaded."""

    identity: ListIdentity
    hashes: np.ndarray  # uint8[N, HASH_BYTES[type]], ascending byte order, unique
    duplicates_folded: int = 0
    invalid_skipped: int = 0
    threshold: int | None = None  # PDQ Hamming threshold for this list; None: the default
    warnings: list[str] = field(default_factory=list)
    # Entries of the file not in this list, by kind ("invalid: non-hex character",
    # "unsupported: video_md5", "other type: md5"). Kinds without a list of their own
    # are counted on a file's first list, so summing over a file's lists counts each once.
    skipped: dict[str, int] = field(default_factory=dict)
    _first_keys: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def hash_type(self) -> str:
        return self.identity.hash_type

    def __len__(self) -> int:
        return int(self.hashes.shape[0])

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """bool[M]: whether each packed hash of a batch ``uint8[M, B]`` is in the list.

        Queries are looked up by their first 8 bytes (sorted first, which keeps the binary
        searches cache-friendly) and confirmed on all bytes; the rare queries whose first
        8 bytes match several list entries are resolved by a full-width search.
        """
        width = types.width(self.hash_type)
        queries = np.asarray(hashes, dtype=np.uint8)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if queries.ndim != 2 or queries.shape[1] != width:
            raise ValueError(
                f"expected uint8[M, {width}] {self.hash_type} hashes, got shape {queries.shape}"
            )
        found = np.zeros(queries.shape[0], dtype=bool)
        if queries.shape[0] == 0 or len(self) == 0:
            return found
        if self._first_keys is None:
            self._first_keys = first_key(self.hashes)
        list_keys = self._first_keys
        query_keys = first_key(queries)
        order = np.argsort(query_keys)
        sorted_query_keys = query_keys[order]
        lo = np.searchsorted(list_keys, sorted_query_keys, side="left")
        hi = np.searchsorted(list_keys, sorted_query_keys, side="right")
        span = hi - lo
        single = np.flatnonzero(span == 1)
        if single.size:
            rows = order[single]
            found[rows] = (self.hashes[lo[single]] == queries[rows]).all(axis=1)
        several = np.flatnonzero(span > 1)
        if several.size:
            rows = order[several]
            table = as_void(self.hashes)
            wanted = as_void(queries[rows])
            at = np.minimum(np.searchsorted(table, wanted), len(self) - 1)
            found[rows] = table[at] == wanted
        return found
