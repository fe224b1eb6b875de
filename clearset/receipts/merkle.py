"""The Merkle tree over a data set's kept items, hashed as RFC 9162 §2.1.1 says.

A receipt commits to one number, the tree's root; this module computes it and the
inclusion paths that tie one item to it. Leaves are the 32-byte SHA-256 values of the
kept items' bytes, sorted ascending and unique, so an item's index is found by binary
search and two adjacent leaves bracket any hash the set does not hold. The tree is built
level by level (an odd last node is carried up unchanged, which gives the same root as
the RFC's "largest power of two below n" split), hashing in batches. Only the leaf values
and the levels from ``CACHE_LEVEL`` up are kept; the few levels below are recomputed for
one 2**CACHE_LEVEL-leaf group when a proof needs them. ``tree.bin`` holds exactly that:

    offset  size             field
    0       8                magic b"CSMERKLE"
    8       4                format version, u32 little-endian (1)
    12      4                cache level k, u32 little-endian
    16      8                tree size n, u64 little-endian
    24      32               root hash
    56      40               zero (reserved)
    96      32               SHA-256 of bytes 0..95 (a corrupted header is caught at open)
    128     32 * n           leaf values d, sorted ascending, unique
    ...     32 * ceil(n/2^k) level k node hashes, then each level above it,
                             ceil(previous/2) hashes each, ending with the 1-hash level

For n = 0 there are no levels and the root is SHA-256 of nothing. The file is memory-
mapped when opened, so a proof reads O(log n) hashes and 2**k leaves.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from clearset.errors import InputError
from clearset.receipts.batch_sha import prefixed_sha256, worth_native

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: Root of the empty tree (RFC 9162 §2.1.1: MTH({}) = SHA-256()).
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: Lowest tree level stored (level 0 is the leaf hashes). Skipping the bottom 4 levels
#: cuts the stored interior nodes to about n/8 hashes (4 bytes a leaf) for a proof cost of
#: recomputing one 16-leaf group (31 hashes, tens of microseconds).
CACHE_LEVEL = 4

#: Leaves hashed per batch while building: bounds the working memory of a build to a few
#: megabytes beyond the stored levels. A multiple of 2**CACHE_LEVEL.
BUILD_BATCH = 1 << 16

TREE_MAGIC = b"CSMERKLE"
TREE_FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQ32s40x")  # magic, version, cache level, n, root
_HEADER_SIZE = _HEADER.size + HASH_SIZE  # the header's own SHA-256 follows it

# Copying a hash object that has already absorbed the one-byte prefix is about twice as
# fast as constructing a fresh one per hash (OpenSSL's per-object setup dominates at
# 33- and 64-byte messages), and saves building prefixed buffers.
_LEAF_BASE = hashlib.sha256(LEAF_PREFIX)
_NODE_BASE = hashlib.sha256(NODE_PREFIX)


def hash_leaf(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + bytes(data)).digest()


def hash_node(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + bytes(left) + bytes(right)).digest()


def _hash_rows(rows: np.ndarray, prefix: bytes) -> np.ndarray:
    """SHA-256 of (prefix || row) for each row of a uint8[m, w] array, as uint8[m, 32].

    Large batches go through `batch_sha` (the same OpenSSL, without a Python call per
    hash); small ones, and any process where that is unavailable, through hashlib."""
    m, width = rows.shape
    if worth_native(m):
        native = prefixed_sha256(rows, prefix[0])
        if native is not None:
            return native
    return _hash_rows_hashlib(rows, prefix)


def _hash_rows_hashlib(rows: np.ndarray, prefix: bytes) -> np.ndarray:
    """`_hash_rows` one hashlib call at a time: the reference the native loop is checked
    against."""
    m, width = rows.shape
    base = _LEAF_BASE if prefix == LEAF_PREFIX else _NODE_BASE
    out = np.empty((m, HASH_SIZE), dtype=np.uint8)
    copy = base.copy
    # Whole levels pass through here too: go a batch at a time so the transient bytes
    # objects (about 70 bytes a digest) stay bounded instead of growing with the level.
    for lo in range(0, m, BUILD_BATCH):
        chunk = rows[lo : lo + BUILD_BATCH]
        buffer = memoryview(np.ascontiguousarray(chunk).tobytes())
        digests: list[bytes] = []
        append = digests.append
        for start in range(0, len(chunk) * width, width):
            h = copy()
            h.update(buffer[start : start + width])
            append(h.digest())
        out[lo : lo + len(chunk)] = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(
            len(chunk), HASH_SIZE
        )
    return out


def leaf_hashes(values: np.ndarray) -> np.ndarray:
    """Leaf hashes of a batch of 32-byte leaf values (uint8[m, 32] -> uint8[m, 32])."""
    return _hash_rows(values, LEAF_PREFIX)


def parent_level(level: np.ndarray) -> np.ndarray:
    """The level above: pairs hashed as nodes, an odd last node carried up unchanged."""
    m = len(level)
    pairs = _hash_rows(level[: m - m % 2].reshape(m // 2, 2 * HASH_SIZE), NODE_PREFIX)
    if m % 2:
        return np.concatenate([pairs, level[m - 1 :]])
    return pairs


def _levels(level0: np.ndarray) -> list[np.ndarray]:
    """Every level from the given one up to the single root hash."""
    levels = [level0]
    while len(levels[-1]) > 1:
        levels.append(parent_level(levels[-1]))
    return levels


def _path_in_levels(levels: Sequence[np.ndarray], index: int) -> list[bytes]:
    """Sibling hashes of ``index`` at each level, bottom up; a carried node has none."""
    path = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(bytes(level[sibling]))
        index >>= 1
    return path


def root_of(entries: Sequence[bytes]) -> bytes:
    """Root of the tree over arbitrary leaf data (the RFC test vectors use such data)."""
    if not entries:
        return EMPTY_ROOT
    level0 = np.frombuffer(b"".join(hash_leaf(e) for e in entries), dtype=np.uint8)
    return bytes(_levels(level0.reshape(-1, HASH_SIZE))[-1][0])


def inclusion_path_of(entries: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 inclusion path of ``entries[index]`` over arbitrary leaf data."""
    if not 0 <= index < len(entries):
        raise IndexError(f"leaf index {index} outside a tree of size {len(entries)}")
    level0 = np.frombuffer(b"".join(hash_leaf(e) for e in entries), dtype=np.uint8)
    return _path_in_levels(_levels(level0.reshape(-1, HASH_SIZE)), index)


def reference_root(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) written as RFC 9162 §2.1.1 defines it: the twin the tests check against."""
    n = len(entries)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hash_leaf(entries[0])
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two strictly less than n
    return hash_node(reference_root(entries[:k]), reference_root(entries[k:]))


def reference_path(entries: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) written as RFC 9162 §2.1.3.1 defines it."""
    n = len(entries)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if index < k:
        return reference_path(entries[:k], index) + [reference_root(entries[k:])]
    return reference_path(entries[k:], index - k) + [reference_root(entries[:k])]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` lead from the leaf hash at ``index`` to ``root``?

    ``leaf_hash`` is SHA-256(0x00 || d), not d itself.
    """
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == bytes(root)


def _level_sizes(size: int, cache_level: int) -> list[int]:
    """How many hashes each stored level holds, from level ``cache_level`` up."""
    if size == 0:
        return []
    sizes = [-(-size // (1 << cache_level))]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // 2))
    return sizes


def level_sizes(size: int, cache_level: int) -> list[int]:
    """How many hashes each stored level of a tree.bin holds, from ``cache_level`` up."""
    return _level_sizes(size, cache_level)


def tree_file_size(size: int, cache_level: int) -> int:
    """The length of a tree.bin over ``size`` leaves."""
    return _HEADER_SIZE + HASH_SIZE * (size + sum(_level_sizes(size, cache_level)))


def tree_level_offsets(size: int, cache_level: int) -> list[int]:
    """Where each stored level starts in a tree.bin, from ``cache_level`` up."""
    offsets = []
    offset = _HEADER_SIZE + HASH_SIZE * size
    for count in _level_sizes(size, cache_level):
        offsets.append(offset)
        offset += HASH_SIZE * count
    return offsets


def tree_header(size: int, root: bytes, cache_level: int) -> bytes:
    """A tree.bin's header (for writers that fill the rest of the file themselves)."""
    return _header(size, root, cache_level)


def _as_sorted_s32(values: np.ndarray) -> np.ndarray:
    """View uint8[n, 32] as n fixed 32-byte strings, which numpy compares like memcmp."""
    return np.ascontiguousarray(values).view("S32").reshape(len(values))


def _check_chunk(chunk: np.ndarray) -> None:
    if chunk.dtype != np.uint8 or chunk.ndim != 2 or chunk.shape[1] != HASH_SIZE:
        raise InputError(
            f"leaves must be uint8[N, 32] arrays of SHA-256 values, got "
            f"{chunk.dtype}{list(chunk.shape)}"
        )


def _batches(leaves: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Re-cut the input into BUILD_BATCH-row batches (the last one may be short)."""
    if isinstance(leaves, np.ndarray):
        # A whole array is cut into views, never copied.
        _check_chunk(leaves)
        for start in range(0, len(leaves), BUILD_BATCH):
            yield leaves[start : start + BUILD_BATCH]
        return
    # Only a batch's worth is ever copied: big chunks are cut into views, small ones are
    # gathered until they fill a batch.
    pending: list[np.ndarray] = []
    held = 0
    for chunk in leaves:
        chunk = np.asarray(chunk)
        _check_chunk(chunk)
        if held:
            need = BUILD_BATCH - held
            pending.append(chunk[:need])
            held += len(pending[-1])
            chunk = chunk[need:]
            if held < BUILD_BATCH:
                continue
            yield np.concatenate(pending)
            pending, held = [], 0
        whole = len(chunk) - len(chunk) % BUILD_BATCH
        for start in range(0, whole, BUILD_BATCH):
            yield chunk[start : start + BUILD_BATCH]
        if whole < len(chunk):
            pending, held = [chunk[whole:].copy()], len(chunk) - whole
    if held:
        yield np.concatenate(pending)


class MerkleTree:
    """An RFC 9162 tree over sorted, unique 32-byte leaf values.

    Build with :meth:`build`, or open a ``tree.bin`` with :meth:`open` (memory-mapped).
    ``root`` and ``size`` are what a receipt signs; :meth:`find` and
    :meth:`inclusion_proof` are what ``prove`` needs.
    """

    def __init__(
        self,
        leaves: np.ndarray,
        levels: list[np.ndarray],
        root: bytes,
        cache_level: int,
        path: Path | None = None,
    ) -> None:
        self._leaves = leaves
        self._levels = levels
        self._root = root
        self._cache_level = cache_level
        self.path = path

    @property
    def root(self) -> bytes:
        return self._root

    @property
    def size(self) -> int:
        return len(self._leaves)

    @property
    def leaves(self) -> np.ndarray:
        """The sorted leaf values, uint8[n, 32] (memory-mapped for an opened tree)."""
        return self._leaves

    @classmethod
    def build(
        cls,
        leaves: np.ndarray | Iterable[np.ndarray],
        path: str | os.PathLike[str] | None = None,
        *,
        cache_level: int = CACHE_LEVEL,
    ) -> MerkleTree:
        """Build the tree over sorted, unique leaf values.

        ``leaves`` is one uint8[N, 32] array or an iterator of such chunks, together in
        ascending order with no repeats (InputError otherwise). Given ``path``, leaf values
        are streamed to that tree.bin as they arrive (written atomically) and the returned
        tree is memory-mapped from it: memory stays at the stored levels (about 4 bytes a
        leaf) plus one batch. Without ``path`` the tree keeps the leaves in memory (an
        array given whole is kept without a copy).
        """
        if not 0 <= cache_level <= 30:
            raise InputError(f"cache level must be in 0..30, got {cache_level}")
        group = 1 << cache_level
        if BUILD_BATCH % group:
            raise InputError(f"cache level {cache_level} does not divide the build batch")
        sink = None
        tmp_path = None
        if path is not None:
            path = Path(path)
            tmp_path = path.with_name(path.name + ".part")
            sink = open(tmp_path, "wb")  # noqa: SIM115 - closed in the finally below
            sink.write(b"\0" * _HEADER_SIZE)
        kept: list[np.ndarray] = []
        level_parts: list[np.ndarray] = []
        previous_last: bytes | None = None
        n = 0
        try:
            for batch in _batches(leaves):
                keys = _as_sorted_s32(batch)
                if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
                    raise InputError("leaves must be sorted ascending with no repeats")
                if previous_last is not None and not bytes(batch[0]) > previous_last:
                    raise InputError("leaves must be sorted ascending with no repeats")
                previous_last = bytes(batch[-1])
                if sink is not None:
                    sink.write(np.ascontiguousarray(batch).tobytes())
                elif not isinstance(leaves, np.ndarray):
                    kept.append(batch)
                n += len(batch)
                # Reduce this batch's groups to level k; batches start on group bounds.
                level = leaf_hashes(batch)
                for _ in range(cache_level):
                    level = parent_level(level)
                level_parts.append(level)
            if level_parts:
                level_k = np.concatenate(level_parts)
                level_parts.clear()  # free the parts before the upper levels are built
                levels = _levels(level_k)
                del level_k
                root = bytes(levels[-1][0])
            else:
                levels, root = [], EMPTY_ROOT
            if sink is None:
                if isinstance(leaves, np.ndarray):
                    values = leaves
                elif kept:
                    values = np.concatenate(kept)
                else:
                    values = np.empty((0, HASH_SIZE), dtype=np.uint8)
                return cls(values, levels, root, cache_level)
            for level in levels:
                sink.write(level)  # type: ignore[arg-type]  # a buffer: numpy says so for 3.12+
            sink.seek(0)
            sink.write(_header(n, root, cache_level))
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
            os.replace(tmp_path, path)  # type: ignore[arg-type]
            tmp_path = None
        finally:
            if sink is not None and not sink.closed:
                sink.close()
            if tmp_path is not None and tmp_path.exists():
                tmp_path.unlink()
        return cls.open(path)  # type: ignore[arg-type]

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write this tree as tree.bin (atomically: a .part file renamed into place)."""
        path = Path(path)
        tmp_path = path.with_name(path.name + ".part")
        try:
            with open(tmp_path, "wb") as sink:
                sink.write(_header(self.size, self._root, self._cache_level))
                for start in range(0, self.size, BUILD_BATCH):
                    rows = np.ascontiguousarray(self._leaves[start : start + BUILD_BATCH])
                    sink.write(rows)  # type: ignore[arg-type]  # a buffer (see above)
                for level in self._levels:
                    sink.write(np.ascontiguousarray(level).tobytes())
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()

    #: The open tree.bin that proofs read with batched ``pread`` calls (None: the arrays).
    _batched_file: _TreeFile | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, batched: bool = True) -> MerkleTree:
        """Memory-map a tree.bin; InputError naming the file if it is not a whole one.

        The header, the file's length and the stored top level are checked here (cheap);
        :meth:`verify` rehashes everything. With ``batched`` (the default) a proof reads
        what it needs with ``pread``, all of one step's byte ranges announced to the
        kernel at once (see ``_TreeFile.read``), instead of one page fault after another
        through the map; ``batched=False`` keeps the plain memory-mapped reads, the
        reference the tests compare with.
        """
        path = Path(path)
        try:
            with open(path, "rb") as source:
                header = source.read(_HEADER_SIZE)
            file_size = path.stat().st_size
        except OSError as error:
            raise InputError(f"{path}: cannot read tree file ({error.strerror})") from error
        if len(header) < _HEADER_SIZE or header[:8] != TREE_MAGIC:
            raise InputError(f"{path}: not a clearset tree file (bad magic or too short)")
        if hashlib.sha256(header[: _HEADER.size]).digest() != header[_HEADER.size :]:
            raise InputError(f"{path}: tree file header is corrupted (checksum mismatch)")
        _, version, cache_level, n, root = _HEADER.unpack(header[: _HEADER.size])
        if version != TREE_FORMAT_VERSION:
            raise InputError(
                f"{path}: tree file format version {version} is not supported "
                f"(this clearset reads version {TREE_FORMAT_VERSION})"
            )
        sizes = _level_sizes(n, cache_level)
        expected = _HEADER_SIZE + HASH_SIZE * (n + sum(sizes))
        if file_size != expected:
            raise InputError(
                f"{path}: tree file is {file_size} bytes, expected {expected} for "
                f"{n} leaves (truncated or corrupted)"
            )
        if n == 0:
            leaves = np.empty((0, HASH_SIZE), dtype=np.uint8)
            if root != EMPTY_ROOT:
                raise InputError(f"{path}: empty tree file with a non-empty root")
            return cls(leaves, [], root, cache_level, path)
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        leaves = mapped[_HEADER_SIZE : _HEADER_SIZE + HASH_SIZE * n].reshape(n, HASH_SIZE)
        levels = []
        offset = _HEADER_SIZE + HASH_SIZE * n
        for count in sizes:
            levels.append(mapped[offset : offset + HASH_SIZE * count].reshape(count, HASH_SIZE))
            offset += HASH_SIZE * count
        # The top hash by pread, not through the map: a page fault there reads around it
        # (the device's read-ahead, megabytes on some disks) and costs a cold proof more
        # than the proof's own reads.
        reader = _TreeFile(path)
        if reader.read([(offset - HASH_SIZE, HASH_SIZE)])[0] != root:
            raise InputError(f"{path}: tree file's stored levels do not match its root")
        tree = cls(leaves, levels, root, cache_level, path)
        if batched:
            tree._batched_file = reader
        return tree

    def verify(self) -> None:
        """Rehash every leaf and level; InputError if anything differs or is unsorted."""
        name = str(self.path) if self.path else "tree"
        try:
            rebuilt = MerkleTree.build(
                (self._leaves[i : i + BUILD_BATCH] for i in range(0, self.size, BUILD_BATCH)),
                cache_level=self._cache_level,
            )
        except InputError as error:
            raise InputError(f"{name}: {error}") from error
        if rebuilt.root != self._root:
            raise InputError(f"{name}: leaves do not hash to the stored root (corrupted)")
        for stored, fresh in zip(self._levels, rebuilt._levels, strict=True):
            if not np.array_equal(stored, fresh):
                raise InputError(f"{name}: stored tree levels are corrupted")

    def leaf(self, index: int) -> bytes:
        """The leaf value (an item's SHA-256) at ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of size {self.size}")
        if self._batched_file is not None:
            return self._batched_file.read([(_leaf_offset(index), HASH_SIZE)])[0]
        return bytes(self._leaves[index])

    def position(self, sha256: bytes) -> int:
        """Index of the first leaf >= ``sha256`` (``size`` if there is none)."""
        if len(sha256) != HASH_SIZE:
            raise InputError(f"a leaf value is 32 bytes, got {len(sha256)}")
        if self.size == 0:
            return 0
        if self._batched_file is not None:
            return _interpolation_position(self._batched_file, self.size, bytes(sha256))
        keys = self._leaves.view("S32").reshape(self.size)
        return int(np.searchsorted(keys, np.array(bytes(sha256), dtype="S32")))

    def find(self, sha256: bytes) -> int | None:
        """Index of the leaf equal to ``sha256``, or None if the tree does not hold it."""
        index = self.position(sha256)
        if index < self.size and self.leaf(index) == bytes(sha256):
            return index
        return None

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion path of the leaf at ``index``, bottom up."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of size {self.size}")
        k = self._cache_level
        start = (index >> k) << k
        stop = min(start + (1 << k), self.size)
        if self._batched_file is not None:
            # The group's leaves and one sibling a stored level, all asked for at once:
            # on cold pages that is one round of disk reads instead of ~log2(n) in turn.
            sizes = _level_sizes(self.size, k)
            offsets = tree_level_offsets(self.size, k)
            ranges = [(_leaf_offset(start), HASH_SIZE * (stop - start))]
            position = index >> k
            for count, offset in zip(sizes[:-1], offsets, strict=False):
                if position ^ 1 < count:
                    ranges.append((offset + HASH_SIZE * (position ^ 1), HASH_SIZE))
                position >>= 1
            chunks = self._batched_file.read(ranges)
            group = np.frombuffer(chunks[0], dtype=np.uint8).reshape(-1, HASH_SIZE)
            stored = chunks[1:]
        else:
            group = np.asarray(self._leaves[start:stop])
            stored = _path_in_levels(self._levels, index >> k)
        # Levels below k are not stored: recompute them for this leaf's group only. A
        # group starts at a multiple of 2**k, so its pairs are the whole tree's pairs.
        level = leaf_hashes(group)
        below = [level]
        for _ in range(k):
            level = parent_level(level)
            below.append(level)
        return _path_in_levels(below, index - start) + stored


def _header(n: int, root: bytes, cache_level: int) -> bytes:
    fields = _HEADER.pack(TREE_MAGIC, TREE_FORMAT_VERSION, cache_level, n, root)
    return fields + hashlib.sha256(fields).digest()


#: Leaves read in one piece once a search has narrowed to this many (8 KiB: two pages).
SEARCH_WINDOW = 256


def _leaf_offset(index: int) -> int:
    return _HEADER_SIZE + HASH_SIZE * index


class _TreeFile:
    """A tree.bin held open for proofs: the file the tree was opened from, even if a new
    build is renamed over its path later (as the memory map keeps it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):
                # Proof reads are scattered: read-ahead around each would only add disk
                # time (8 MiB a read on some devices).
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
        except OSError as error:
            raise InputError(f"{path}: cannot read tree file ({error.strerror})") from error

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes at each (offset, length), the disk reads queued together.

        Each range is first announced with POSIX_FADV_WILLNEED, which starts its read and
        returns, so the kernel has them all in flight before the first ``pread`` waits: a
        proof's ~30 scattered nodes cost about one disk round trip on cold pages, not 30
        in turn.
        """
        fd = self._fd
        assert fd is not None
        try:
            if len(ranges) > 1 and hasattr(os, "posix_fadvise"):
                for offset, length in ranges:
                    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
            chunks = [os.pread(fd, length, offset) for offset, length in ranges]
        except OSError as error:
            raise InputError(f"{self.path}: cannot read tree file ({error.strerror})") from error
        for (offset, length), chunk in zip(ranges, chunks, strict=True):
            if len(chunk) != length:
                raise InputError(
                    f"{self.path}: tree file ends at {offset + len(chunk)} (truncated)"
                )
        return chunks


def _interpolation_position(source: _TreeFile, size: int, value: bytes) -> int:
    """Index of the first leaf >= ``value`` in a tree.bin, in a few rounds of reads.

    A binary search over the mapped leaves touches ~log2(n) pages one after another (30
    dependent disk reads at 10**9 leaves when the pages are cold). The leaves are SHA-256
    values, so spread evenly: interpolation puts ``value`` within about sqrt(n) leaves of
    its place, and each round reads a few probes around that guess at once (plus the
    midpoint, so an uneven tree still halves the range a round). Two rounds narrow 10**9
    leaves to one window, which is read whole and searched.
    """
    target = int.from_bytes(value, "big")
    lo, hi = 0, size  # the answer lies in [lo, hi]
    lo_key, hi_key = -1, 1 << 256  # leaf lo - 1 (< value) and leaf hi (>= value), if any
    while hi - lo > SEARCH_WINDOW:
        span = hi - lo
        guess = lo + (target - lo_key) * span // (hi_key - lo_key)
        step = max(SEARCH_WINDOW // 4, math.isqrt(span))
        wanted = {(lo + hi) // 2}
        wanted.update(guess + j * step for j in (-2, -1, 0, 1, 2))
        probes = sorted(p for p in wanted if lo <= p < hi)
        chunks = source.read([(_leaf_offset(p), HASH_SIZE) for p in probes])
        for probe, chunk in zip(probes, chunks, strict=True):
            key = int.from_bytes(chunk, "big")
            if key < target:
                lo, lo_key = probe + 1, key
            else:
                hi, hi_key = probe, key
                break
    if hi == lo:
        return lo
    window = source.read([(_leaf_offset(lo), HASH_SIZE * (hi - lo))])[0]
    keys = np.frombuffer(window, dtype="S32")
    return lo + int(np.searchsorted(keys, np.array(value, dtype="S32")))
