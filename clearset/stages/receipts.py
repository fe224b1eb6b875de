"""The receipt stage's per-task work: the tree over billions of leaves, out of core.

A tree over n sorted unique leaves is built in three kinds of task, each a plain function
of picklable arguments that any engine can run (the orchestrator is
`clearset.runs.receipts`):

1. **extract** (one per group of manifest shards): read the kept items' SHA-256 values
   and split them by their leading ``bits`` bits into buckets, one piece file per bucket:
   ``pieces/<bucket>/<task>.bin``. Buckets are ranges of the byte order, so sorting each
   bucket and concatenating them in bucket order gives the global order.
2. **sort** (one per bucket): read the bucket's pieces, sort and drop repeats (repeats of
   one value always share a bucket), write ``sorted/<bucket>.bin`` and its count, then
   delete the pieces, so the disk holds about one copy of the leaves at any time.
3. **chunk** (one per aligned run of 2**chunk_level leaves, placed by the bucket counts):
   copy the chunk's leaves into the tree file at their final place and compute the
   stored levels ``cache_level .. chunk_level`` over them. RFC 9162's tree over n leaves
   is made of complete subtrees over aligned runs of 2**k leaves, and the level-by-level
   build (an odd last node carried up) pairs nodes only inside such runs, so a chunk's
   levels are exactly the whole tree's nodes over that chunk.

The driver then computes the few levels above ``chunk_level`` and writes the header.
Each task writes its own completion marker after its output is durable, so a build that
is interrupted resumes without redoing finished work. All files of one build live in a
build folder (``RUN/.receipt-build/``), removed when the tree is complete:

    build.json                what is being built (sources' identity, bits, levels)
    extracted/<task>.json     {"rows": r, "counts": [per bucket]} after an extract task
    pieces/<bucket>/<task>.bin  uint8[m, 32] rows of one bucket from one extract task
    sorted/<bucket>.bin       the bucket's leaves, sorted and unique
    sorted/<bucket>.json      {"count": m}: written after the .bin, before the pieces go
    tree.bin.part             the tree file being filled (final size from the start)
    chunks/<chunk>.json       {"leaves": m} once a chunk's leaves and levels are written
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.atomic import atomic_path, write_json_atomic
from clearset.errors import InputError
from clearset.lists.model import sort_unique
from clearset.manifest import STATUS_OK
from clearset.receipts.merkle import (
    BUILD_BATCH,
    HASH_SIZE,
    leaf_hashes,
    level_sizes,
    parent_level,
    tree_file_size,
    tree_level_offsets,
)

#: Version of the build folder's layout (build.json says it; another one is started over).
#: 2: pieces hold the images' values first, and markers count them (image leaves).
BUILD_FORMAT = 2


class LeafSource(Protocol):
    """Where one shard's leaves come from: picklable, read where the task runs."""

    def rows(self) -> int:
        """How many rows (an upper bound on the leaves) the source holds; cheap."""
        ...

    def read(self) -> np.ndarray:
        """The source's leaf values, uint8[m, 32], in any order, repeats allowed."""
        ...

    def identity(self) -> Any:
        """JSON-able value that changes when the source's contents may have changed."""
        ...


def read_by_kind(source: LeafSource) -> tuple[np.ndarray, int]:
    """(the source's leaf values with its images' first, how many are images' values).

    A source that knows which of its values are images' (`ManifestLeaves`) says so with a
    ``read_by_kind`` method; any other source's values count as other members'."""
    split = getattr(source, "read_by_kind", None)
    if split is not None:
        return split()
    return source.read(), 0


def packed_sha256(table_column: Any) -> np.ndarray:
    """A binary(32) Arrow column's non-null values as uint8[N, 32], not via Python objects."""
    array = table_column.combine_chunks().drop_null()
    if not len(array):
        return np.empty((0, HASH_SIZE), np.uint8)
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    start = array.offset * HASH_SIZE
    return data[start : start + len(array) * HASH_SIZE].reshape(-1, HASH_SIZE)


@dataclass(frozen=True)
class ManifestLeaves:
    """One cleaned manifest shard: every row with a SHA-256 is a kept item.

    This is the rule `clearset.runs.issue.kept_hashes` applies to the whole manifest,
    applied to one shard file. ``count`` and ``digest`` are the file's row count and
    SHA-256 from its completion marker, when known: then planning reads neither the
    footer nor the file's stat, and reading checks the count."""

    path: str
    count: int | None = None
    digest: str | None = None

    def rows(self) -> int:
        if self.count is not None:
            return self.count
        try:
            return int(pq.ParquetFile(self.path).metadata.num_rows)
        except (OSError, ValueError) as error:
            raise InputError(f"{self.path}: cannot read the manifest shard ({error})") from None

    def read(self) -> np.ndarray:
        try:
            table = pq.read_table(self.path, columns=["sha256"])
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{self.path}: cannot read the manifest shard ({error})") from None
        if self.count is not None and table.num_rows != self.count:
            raise InputError(
                f"{self.path}: holds {table.num_rows} rows but its completion marker says "
                f"{self.count} (changed after the clean?); re-run `clearset clean`"
            )
        return packed_sha256(table.column("sha256"))

    def read_by_kind(self) -> tuple[np.ndarray, int]:
        """The leaf values, the images' first, and how many are images' (see `read`)."""
        try:
            table = pq.read_table(self.path, columns=["sha256", "status"])
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{self.path}: cannot read the manifest shard ({error})") from None
        if self.count is not None and table.num_rows != self.count:
            raise InputError(
                f"{self.path}: holds {table.num_rows} rows but its completion marker says "
                f"{self.count} (changed after the clean?); re-run `clearset clean`"
            )
        image = pc.equal(table.column("status"), STATUS_OK).fill_null(False)
        images = packed_sha256(table.column("sha256").filter(image))
        others = packed_sha256(table.column("sha256").filter(pc.invert(image)))
        return np.concatenate([images, others]), len(images)

    def identity(self) -> Any:
        if self.digest is not None:
            return [os.path.basename(self.path), self.digest]
        stat = os.stat(self.path)
        return [os.path.basename(self.path), stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class RandomLeaves:
    """Deterministic random leaves, for benchmarks and tests: ``count`` values from
    ``seed``; every ``repeat_every``-th value (if set) repeats one of ``repeat_seed``'s,
    so that different sources share values as shards of a real set can."""

    seed: int
    count: int
    repeat_every: int = 0
    repeat_seed: int = -1

    def rows(self) -> int:
        return self.count

    def read(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        values = np.frombuffer(rng.bytes(HASH_SIZE * self.count), np.uint8).reshape(-1, 32)
        if self.repeat_every and self.repeat_seed >= 0:
            values = values.copy()
            shared = RandomLeaves(self.repeat_seed, self.count).read()
            values[:: self.repeat_every] = shared[:: self.repeat_every]
        return values

    def identity(self) -> Any:
        return ["random", self.seed, self.count, self.repeat_every, self.repeat_seed]


def sources_identity(sources: Sequence[LeafSource]) -> str:
    """SHA-256 over the sources' identities: a build folder is resumed only for the same."""
    text = json.dumps([s.identity() for s in sources], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- the folder ---------------------------------------------------------------------


def bucket_name(bucket: int) -> str:
    return f"{bucket:04x}"


def piece_path(build_dir: Path, bucket: int, task_id: str) -> Path:
    return build_dir / "pieces" / bucket_name(bucket) / f"{task_id}.bin"


def sorted_path(build_dir: Path, bucket: int) -> Path:
    return build_dir / "sorted" / f"{bucket_name(bucket)}.bin"


def sorted_marker(build_dir: Path, bucket: int) -> Path:
    return build_dir / "sorted" / f"{bucket_name(bucket)}.json"


def extract_marker(build_dir: Path, task_id: str) -> Path:
    return build_dir / "extracted" / f"{task_id}.json"


def chunk_marker(build_dir: Path, chunk: int) -> Path:
    return build_dir / "chunks" / f"{chunk:08d}.json"


def part_path(build_dir: Path) -> Path:
    return build_dir / "tree.bin.part"


def read_marker(path: Path, field: str) -> Any:
    """A marker's field, or None if the marker is absent; InputError naming a damaged one."""
    try:
        value = json.loads(path.read_text())[field]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{path}: damaged receipt build marker; remove {path.parent.parent} to start over"
        ) from None
    return value


def read_rows(path: Path, count: int, offset_rows: int = 0) -> np.ndarray:
    """``count`` 32-byte rows of a build file from row ``offset_rows``; InputError naming
    the file if it is missing or shorter than the markers say."""
    try:
        with open(path, "rb") as source:
            source.seek(offset_rows * HASH_SIZE)
            data = source.read(count * HASH_SIZE)
    except OSError as error:
        raise InputError(
            f"{path}: cannot read a receipt build file ({error.strerror}); remove "
            f"{_build_root(path)} to start over"
        ) from None
    if len(data) != count * HASH_SIZE:
        raise InputError(
            f"{path}: receipt build file is shorter than its marker says (damaged); remove "
            f"{_build_root(path)} to start over"
        )
    return np.frombuffer(data, np.uint8).reshape(count, HASH_SIZE)


def _build_root(path: Path) -> Path:
    for parent in path.parents:
        if (parent / "build.json").exists():
            return parent
    return path.parent


# --- the tasks ----------------------------------------------------------------------


def bucket_of(rows: np.ndarray, bits: int) -> np.ndarray:
    """Each row's bucket: its leading ``bits`` bits (0 <= bits <= 16) as an integer."""
    if bits == 0:
        return np.zeros(len(rows), np.uint16)
    head = rows[:, 0].astype(np.uint16) << 8 | rows[:, 1]
    return head >> np.uint16(16 - bits)


def split_by_bucket(rows: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows grouped by bucket in bucket order, rows a bucket); within a bucket the rows
    keep their order."""
    buckets = bucket_of(rows, bits)
    counts = np.bincount(buckets, minlength=1 << bits)
    if bits == 0:
        return rows, counts
    # A stable argsort of 16-bit keys is a radix sort (linear; int64 keys took 4x longer);
    # gathering whole rows as one void item each is several times faster than rows[order].
    order = np.argsort(buckets, kind="stable")
    as_items = np.ascontiguousarray(rows).view(np.dtype((np.void, HASH_SIZE))).ravel()
    return np.take(as_items, order).view(np.uint8).reshape(len(rows), HASH_SIZE), counts


def extract_task(build_dir: str, task_id: str, sources: tuple[LeafSource, ...], bits: int) -> int:
    """Split the sources' leaves into per-bucket piece files; the rows written.

    A piece holds the images' values first; the marker counts them per bucket
    (``images``), so the sort can count the image leaves."""
    build = Path(build_dir)
    image_parts, other_parts = [], []
    for source in sources:
        values, images = read_by_kind(source)
        image_parts.append(values[:images])
        other_parts.append(values[images:])
    empty = np.empty((0, HASH_SIZE), np.uint8)
    image_rows = np.concatenate(image_parts) if image_parts else empty
    other_rows = np.concatenate(other_parts) if other_parts else empty
    del image_parts, other_parts
    image_grouped, image_counts = split_by_bucket(image_rows, bits)
    del image_rows
    other_grouped, other_counts = split_by_bucket(other_rows, bits)
    del other_rows
    counts = image_counts + other_counts
    image_start = other_start = 0
    for bucket in np.flatnonzero(counts):
        image_stop = image_start + int(image_counts[bucket])
        other_stop = other_start + int(other_counts[bucket])
        # A retried task rewrites each piece whole: a reader sees the old or the new one.
        with atomic_path(piece_path(build, int(bucket), task_id)) as tmp, open(tmp, "wb") as sink:
            sink.write(np.ascontiguousarray(image_grouped[image_start:image_stop]).data)
            sink.write(np.ascontiguousarray(other_grouped[other_start:other_stop]).data)
        image_start, other_start = image_stop, other_stop
    rows = image_start + other_start
    write_json_atomic(
        extract_marker(build, task_id),
        {"rows": int(rows), "counts": counts.tolist(), "images": image_counts.tolist()},
    )
    return int(rows)


def sort_task(build_dir: str, bucket: int, pieces: tuple[tuple[str, int, int], ...]) -> int:
    """Sort one bucket's pieces (task id, rows, images' rows first) into its unique
    leaves; their count. The marker also counts the image leaves (distinct values of
    images).

    The pieces are deleted only after the sorted file and its marker are written, so an
    interruption at any point leaves either the pieces or the finished bucket."""
    build = Path(build_dir)
    parts = [read_rows(piece_path(build, bucket, task_id), count) for task_id, count, _ in pieces]
    image_leaves = 0
    if any(images for _, _, images in pieces):
        image_rows = np.concatenate(
            [p[:images] for p, (_, _, images) in zip(parts, pieces, strict=True)]
        )
        image_leaves = len(sort_unique(image_rows)[0])
        del image_rows
    rows = np.concatenate(parts) if parts else np.empty((0, HASH_SIZE), np.uint8)
    del parts
    leaves, _ = sort_unique(rows)
    del rows
    with atomic_path(sorted_path(build, bucket)) as tmp:
        np.ascontiguousarray(leaves).tofile(tmp)
    write_json_atomic(sorted_marker(build, bucket), {"count": len(leaves), "images": image_leaves})
    shutil.rmtree(piece_path(build, bucket, "x").parent, ignore_errors=True)
    return len(leaves)


@dataclass(frozen=True)
class ChunkJob:
    """What a chunk task needs to know about the whole tree."""

    build_dir: str
    size: int  # n, the tree's leaves
    chunk_level: int
    cache_level: int


def chunk_task(job: ChunkJob, chunk: int, spans: tuple[tuple[int, int, int], ...]) -> int:
    """Write chunk ``chunk``'s leaves and its levels cache_level..chunk_level into
    tree.bin.part; its leaves. ``spans`` are (bucket, first row in it, rows), in order."""
    build = Path(job.build_dir)
    lo = chunk << job.chunk_level
    parts = [read_rows(sorted_path(build, b), count, first) for b, first, count in spans]
    leaves = np.concatenate(parts) if len(parts) != 1 else parts[0]
    del parts
    k, c = job.cache_level, job.chunk_level
    sizes = level_sizes(job.size, k)
    top = k + len(sizes) - 1  # the level holding the root alone
    # Reduce a batch at a time to level k (batches start on 2**k bounds, as in
    # MerkleTree.build), then climb inside the chunk up to level c or the root.
    level = np.concatenate(
        [_reduce(leaves[i : i + BUILD_BATCH], k) for i in range(0, len(leaves), BUILD_BATCH)]
    )
    offsets = tree_level_offsets(job.size, k)
    fd = os.open(part_path(build), os.O_WRONLY)
    try:
        _pwrite_all(fd, np.ascontiguousarray(leaves), tree_file_size(0, k) + HASH_SIZE * lo)
        for height in range(k, min(c, top) + 1):
            if height > k:
                level = parent_level(level)
            first = lo >> height
            _pwrite_all(fd, level, offsets[height - k] + HASH_SIZE * first)
        os.fsync(fd)
    finally:
        os.close(fd)
    write_json_atomic(chunk_marker(build, chunk), {"leaves": len(leaves)})
    return len(leaves)


def _reduce(batch: np.ndarray, k: int) -> np.ndarray:
    level = leaf_hashes(batch)
    for _ in range(k):
        level = parent_level(level)
    return level


def _pwrite_all(fd: int, values: np.ndarray, offset: int) -> None:
    view = memoryview(values).cast("B")  # type: ignore[arg-type]  # numpy: a buffer on 3.12+
    while len(view):
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
