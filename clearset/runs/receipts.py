"""The receipt's orchestrator: the Merkle tree over a run's kept items, out of core and
in parallel, written as the same tree.bin the single-process builder writes.

The work is three rounds of tasks on an engine (see `clearset.stages.receipts`): extract
the kept SHA-256 values into buckets by leading bits, sort each bucket, then hash aligned
chunks of the globally sorted leaves straight into their place in the tree file. The
driver only plans, places the chunks from the buckets' counts, deletes what is no longer
needed (so the disk holds about one copy of the leaves plus the tree's 4 bytes a leaf of
levels) and hashes the few levels above the chunks. Every task leaves a marker, so
running the same build again after an interruption redoes only unfinished tasks.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from clearset.atomic import is_output_error, output_error, write_json_atomic
from clearset.engines import Engine, Task
from clearset.errors import InputError, OutputError
from clearset.receipts.merkle import (
    CACHE_LEVEL,
    EMPTY_ROOT,
    HASH_SIZE,
    MerkleTree,
    level_sizes,
    parent_level,
    tree_file_size,
    tree_header,
    tree_level_offsets,
)
from clearset.runfolder import cleaned_manifest_shards
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, run_or_fail
from clearset.stages import receipts as stage
from clearset.stages.receipts import (
    BUILD_FORMAT,
    ChunkJob,
    LeafSource,
    ManifestLeaves,
    chunk_marker,
    extract_marker,
    part_path,
    read_marker,
    sorted_marker,
    sorted_path,
    sources_identity,
)

#: The build folder inside a run, removed once tree.bin is in place.
BUILD_DIR = ".receipt-build"
#: Rows a bucket should hold at most (128 MiB of leaves): sets the number of buckets.
BUCKET_ROWS = 1 << 22
#: At most 2**12 buckets: beyond that the piece files get too small to be worth a file.
MAX_BUCKET_BITS = 12
#: Rows one extract task reads (manifest shards are grouped up to this): 256 MiB of
#: leaves, so a task's piece files are not too many tiny ones.
EXTRACT_ROWS = 1 << 23
#: Leaves per chunk task, as a power of two (2**22: 128 MiB of leaves read per task).
CHUNK_LEVEL = 22


def bucket_bits_for(rows: int) -> int:
    """Leading bits to bucket by so that a bucket holds about BUCKET_ROWS rows at most."""
    if rows <= BUCKET_ROWS:
        return 0
    return min(MAX_BUCKET_BITS, math.ceil(math.log2(rows / BUCKET_ROWS)))


def run_sources(run_dir: Path) -> list[ManifestLeaves]:
    """The cleaned copy's manifest shards: the kept items (see `kept_hashes`).

    Row counts and identities come from the shards' completion markers, so planning a
    build over hundreds of thousands of shards reads no parquet footer and stats no file."""
    return [
        ManifestLeaves(str(path), marker.get("rows"), marker.get("manifest_sha256"))
        for path, marker in cleaned_manifest_shards(run_dir)
    ]


def build_run_tree(run_dir: str | Path, tree_path: str | Path, **options: Any) -> MerkleTree:
    """`build_tree` over a cleaned run's kept items, its build folder in the run."""
    return build_kept_tree(run_dir, tree_path, **options)[0]


def build_kept_tree(
    run_dir: str | Path, tree_path: str | Path, **options: Any
) -> tuple[MerkleTree, int]:
    """`build_run_tree`, with how many of its leaves are image leaves (distinct SHA-256
    of kept images; the others are other members' only)."""
    run = Path(run_dir)
    found: list[int] = []
    tree = build_tree(run_sources(run), tree_path, run / BUILD_DIR, image_leaves=found, **options)
    return tree, found[0]


def build_tree(
    sources: Sequence[LeafSource],
    tree_path: str | Path,
    build_dir: str | Path,
    *,
    engine: Engine | None = None,
    workers: int | None = None,
    retries: int = DEFAULT_RETRIES,
    show_progress: bool = False,
    console: Console | None = None,
    bucket_bits: int | None = None,
    chunk_level: int = CHUNK_LEVEL,
    cache_level: int = CACHE_LEVEL,
    extract_rows: int = EXTRACT_ROWS,
    image_leaves: list[int] | None = None,
) -> MerkleTree:
    """Write tree.bin over the sorted unique leaves of ``sources``; the opened tree.

    The same file, root and levels as ``MerkleTree.build`` over the same leaves. Work
    files go to ``build_dir``, which is kept if the build stops (run it again to resume:
    finished tasks are not redone) and removed when the tree is in place. With an
    ``image_leaves`` list, the count of image leaves (see `read_by_kind`) is appended.
    """
    if not 0 <= cache_level <= chunk_level <= 40:
        raise InputError(f"need 0 <= cache level <= chunk level <= 40, got {cache_level}, "
                         f"{chunk_level}")  # fmt: skip
    sources = list(sources)
    rows = [source.rows() for source in sources]
    bits = bucket_bits_for(sum(rows)) if bucket_bits is None else bucket_bits
    if not 0 <= bits <= 16:
        raise InputError(f"bucket bits must be in 0..16, got {bits}")
    build = Path(build_dir)
    plan = {
        "format": BUILD_FORMAT,
        "sources": sources_identity(sources),
        "bits": bits,
        "chunk_level": chunk_level,
        "cache_level": cache_level,
        "extract_rows": extract_rows,
    }
    _start_or_resume(build, plan)
    engine = choose_engine(engine, workers)
    common: dict[str, Any] = {
        "show_progress": show_progress,
        "console": console,
        "retries": retries,
        "counts": lambda done: (done, 0, 0),
    }
    groups = _group(sources, rows, extract_rows)
    counts = _extract(engine, build, groups, bits, common)
    bucket_counts, bucket_images = _sort(engine, build, counts, common)
    size = int(bucket_counts.sum())
    if image_leaves is not None:
        image_leaves.append(int(bucket_images.sum()))
    _chunks(engine, build, bucket_counts, ChunkJob(str(build), size, chunk_level, cache_level),
            common)  # fmt: skip
    _finish(build, Path(tree_path), size, chunk_level, cache_level)
    return MerkleTree.open(tree_path)


def _start_or_resume(build: Path, plan: dict[str, Any]) -> None:
    """Resume a build folder made for the same plan; start over one made for another."""
    plan_file = build / "build.json"
    if build.exists():
        try:
            held = json.loads(plan_file.read_text())
        except FileNotFoundError:
            held = None  # stopped before it was planned: nothing in it to keep
        except (OSError, ValueError):
            raise InputError(
                f"{plan_file}: damaged receipt build plan; remove {build} to start over"
            ) from None
        if held == plan:
            return
        shutil.rmtree(build)
    try:
        build.mkdir(parents=True)
        write_json_atomic(plan_file, plan)
    except OSError as error:
        if is_output_error(error):
            raise output_error(build, error) from error
        raise


def _group(
    sources: list[LeafSource], rows: list[int], extract_rows: int
) -> list[tuple[LeafSource, ...]]:
    """Consecutive sources together, up to ``extract_rows`` rows a group (one at least)."""
    groups: list[tuple[LeafSource, ...]] = []
    current: list[LeafSource] = []
    held = 0
    for source, count in zip(sources, rows, strict=True):
        if current and held + count > extract_rows:
            groups.append(tuple(current))
            current, held = [], 0
        current.append(source)
        held += count
    if current:
        groups.append(tuple(current))
    return groups


def _extract(
    engine: Engine,
    build: Path,
    groups: list[tuple[LeafSource, ...]],
    bits: int,
    common: dict[str, Any],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run the extract tasks not yet done; every task's per-bucket counts (all rows,
    images' rows)."""
    ids = [f"e{i:06d}" for i in range(len(groups))]
    tasks = [
        Task(task_id, f"extract {task_id}", stage.extract_task, (str(build), task_id, group, bits))
        for task_id, group in zip(ids, groups, strict=True)
        if read_marker(extract_marker(build, task_id), "counts") is None
    ]
    if tasks:
        run_or_fail(engine, tasks, label="receipt: extract", after="finished ones are kept",
                    **common)  # fmt: skip
    counts = {}
    for task_id in ids:
        marker = extract_marker(build, task_id)
        held, images = read_marker(marker, "counts"), read_marker(marker, "images")
        if not all(isinstance(v, list) and len(v) == 1 << bits for v in (held, images)):
            raise InputError(f"{marker}: damaged receipt build marker; remove {build} to "
                             "start over")  # fmt: skip
        counts[task_id] = (np.asarray(held, np.int64), np.asarray(images, np.int64))
    return counts


def _sort(
    engine: Engine,
    build: Path,
    counts: dict[str, tuple[np.ndarray, np.ndarray]],
    common: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Run the sort tasks not yet done; every bucket's unique leaves, and image leaves."""
    buckets = len(next(iter(counts.values()))[0]) if counts else 1
    tasks = []
    for bucket in range(buckets):
        if read_marker(sorted_marker(build, bucket), "count") is not None:
            # Sorted, but stopped before its pieces were all deleted.
            shutil.rmtree(stage.piece_path(build, bucket, "x").parent, ignore_errors=True)
            continue
        pieces = tuple(
            (task_id, int(held[bucket]), int(images[bucket]))
            for task_id, (held, images) in counts.items()
            if held[bucket]
        )
        tasks.append(Task(f"b{bucket}", f"bucket {stage.bucket_name(bucket)}",
                          stage.sort_task, (str(build), bucket, pieces)))  # fmt: skip
    if tasks:
        run_or_fail(engine, tasks, label="receipt: sort", after="finished ones are kept",
                    **common)  # fmt: skip
    shutil.rmtree(build / "pieces", ignore_errors=True)
    result = np.zeros(buckets, np.int64)
    images = np.zeros(buckets, np.int64)
    for bucket in range(buckets):
        marker = sorted_marker(build, bucket)
        count, held = read_marker(marker, "count"), read_marker(marker, "images")
        if not all(isinstance(v, int) and v >= 0 for v in (count, held)) or held > count:
            raise InputError(f"{marker}: damaged receipt build marker; remove {build} to "
                             "start over")  # fmt: skip
        result[bucket], images[bucket] = count, held
    return result, images


def _chunks(
    engine: Engine,
    build: Path,
    bucket_counts: np.ndarray,
    job: ChunkJob,
    common: dict[str, Any],
) -> None:
    """Run the chunk tasks not yet done, deleting each sorted bucket once every chunk
    over it is done: the leaves then live only in the tree file."""
    size, c = job.size, job.chunk_level
    part = part_path(build)
    expected = tree_file_size(size, job.cache_level)
    starts = np.concatenate([[0], np.cumsum(bucket_counts)])
    chunks = -(-size // (1 << c))
    done = {chunk for chunk in range(chunks) if read_marker(chunk_marker(build, chunk),
                                                            "leaves") is not None}  # fmt: skip
    if part.exists() and part.stat().st_size != expected:
        if done:
            raise InputError(f"{part}: is {part.stat().st_size} bytes, expected {expected} "
                             f"(damaged); remove {build} to start over")  # fmt: skip
        part.unlink()
    if not part.exists():
        try:
            with open(part, "wb") as sink:
                sink.truncate(expected)  # sparse: space is taken as chunks fill it
        except OSError as error:
            if is_output_error(error):
                raise output_error(part, error) from error
            raise

    def spans(chunk: int) -> tuple[tuple[int, int, int], ...]:
        lo, hi = chunk << c, min((chunk + 1) << c, size)
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        found = []
        for bucket in range(first, len(bucket_counts)):
            if starts[bucket] >= hi:
                break
            a, b = max(lo, starts[bucket]), min(hi, starts[bucket + 1])
            if b > a:
                found.append((bucket, int(a - starts[bucket]), int(b - a)))
        return tuple(found)

    def release(chunk: int) -> None:
        """Delete the sorted buckets whose every chunk is done."""
        for bucket, _, _ in spans(chunk):
            first, last = starts[bucket] >> c, (starts[bucket + 1] - 1) >> c
            if all(other in done for other in range(int(first), int(last) + 1)):
                sorted_path(build, bucket).unlink(missing_ok=True)

    tasks = []
    for chunk in range(chunks):
        if chunk in done:
            release(chunk)
            continue
        for bucket, _, _ in spans(chunk):
            path = sorted_path(build, bucket)
            if not path.exists() or path.stat().st_size != HASH_SIZE * int(bucket_counts[bucket]):
                raise InputError(f"{path}: sorted bucket is missing or not the size its marker "
                                 f"says (damaged); remove {build} to start over")  # fmt: skip
        tasks.append(Task(f"c{chunk}", f"chunk {chunk}", stage.chunk_task,
                          (job, chunk, spans(chunk))))  # fmt: skip

    def on_done(task: Task, leaves: int) -> None:
        done.add(task.args[1])
        release(task.args[1])

    if tasks:
        run_or_fail(engine, tasks, label="receipt: hash", after="finished ones are kept",
                    on_done=on_done, **common)  # fmt: skip


def _finish(build: Path, tree_path: Path, size: int, chunk_level: int, cache_level: int) -> None:
    """Hash the levels above the chunks, write the header and move the tree into place."""
    part = part_path(build)
    fd = os.open(part, os.O_RDWR)
    try:
        root = EMPTY_ROOT
        if size:
            sizes = level_sizes(size, cache_level)
            offsets = tree_level_offsets(size, cache_level)
            top = cache_level + len(sizes) - 1
            height = min(chunk_level, top)
            count = sizes[height - cache_level]
            raw = os.pread(fd, HASH_SIZE * count, offsets[height - cache_level])
            level = np.frombuffer(raw, np.uint8).reshape(count, HASH_SIZE)
            while height < top:
                level = parent_level(level)
                height += 1
                stage._pwrite_all(fd, level, offsets[height - cache_level])
            root = bytes(level[0])
        os.pwrite(fd, tree_header(size, root, cache_level), 0)
        os.fsync(fd)
    except OSError as error:
        if is_output_error(error):
            raise output_error(part, error) from error
        raise
    finally:
        os.close(fd)
    try:
        os.replace(part, tree_path)
    except OSError as error:
        raise OutputError(f"{tree_path}: cannot move the built tree into place "
                          f"({error.strerror}); re-run the same command") from None  # fmt: skip
    shutil.rmtree(build, ignore_errors=True)
