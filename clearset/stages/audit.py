"""The audit stage: search one shard of one side against the other side's PDQ hashes.

An audit asks which generated images are near copies of training items. Range search is
symmetric, so the smaller side (usually the generated images) is indexed once and the
larger one (the training run, up to billions of rows) is streamed through it shard by
shard, one engine task per shard: `audit_task`. With `--dihedral` the generated side
carries the 8 rotations and flips of each image (from the scan's `pdq_dihedral`), so a
mirrored copy is found against a training run scanned without them; the training side is
always its plain `pdq`.

A generated image is `R` hash variants (1, or 8 with dihedral); its distance to a training
item is the smallest over its variants, and `rotation` says which variant that was. The
k nearest training items of each generated image are found exactly (faiss
IndexBinaryFlat: every pair compared), per shard, and merged by the orchestrator. Only
rows with a PDQ quality at or above the run's minimum take part, on either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.hashing.item import STATUS_OK
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.matching.pdq_index import PDQIndex
from clearset.runfolder import RunFolder

#: Columns of a manifest an audit reads (identifiers and hashes: never captions or pixels).
ID_COLUMNS = ("key", "shard", "position", "member", "url")
HASH_COLUMNS = ("status", "pdq", "pdq_quality")

#: Files of the index side, saved by the orchestrator for every worker to map.
INDEX_HASHES = "hashes.npy"  # uint8[N * R, 32], the variants of row n at n*R .. n*R+R-1


@dataclass(frozen=True)
class AuditJob:
    """What every audit task needs: small and picklable; the index side's hashes are in
    `index_dir` (`INDEX_HASHES`), mapped by each worker and indexed once per worker."""

    index_dir: str
    index_token: str  # unique to one audit: a worker's loaded side is never another's
    index_variants: int  # R of the index side
    stream_is_training: bool
    threshold: int
    min_quality: int
    k: int
    dihedral: bool


@dataclass
class AuditPart:
    """One streamed shard's findings: `pairs` (within the threshold) and `nearest` (the k
    nearest per generated image, when asked), each with the streamed row's identifiers and
    the index side's row number; and how many of its rows took part."""

    pairs: pa.Table
    nearest: pa.Table | None
    rows: int
    searched: int


def usable(table: pa.Table, min_quality: int) -> pa.Table:
    """The rows with a PDQ hash good enough to compare (hashed images, quality at least
    `min_quality`), in manifest order."""
    if not table.num_rows:
        return table
    mask = pc.and_(
        pc.and_(pc.equal(table.column("status"), STATUS_OK), pc.is_valid(table.column("pdq"))),
        pc.greater_equal(pc.fill_null(table.column("pdq_quality"), -1), min_quality),
    )
    return table.filter(mask)


def packed(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed_size_binary column without nulls as uint8[N, width]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not len(array):
        return np.empty((0, width), np.uint8)
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    start = array.offset * width
    return data[start : start + len(array) * width].reshape(-1, width)


def variants(table: pa.Table, dihedral: bool) -> np.ndarray:
    """The hash variants of usable rows as uint8[N, R, 32]: R = 8 with `dihedral` (in
    DIHEDRAL_NAMES order; a row without rotations repeats its plain hash, which changes
    no minimum), else 1."""
    plain = packed(table.column("pdq"), 32)
    if not dihedral:
        return plain.reshape(-1, 1, 32).copy()
    out = np.repeat(plain[:, None, :], len(DIHEDRAL_NAMES), axis=1)
    if "pdq_dihedral" in table.column_names:
        others = table.column("pdq_dihedral").to_pylist()
        for row, value in enumerate(others):
            if value is not None:
                out[row, 1:] = np.frombuffer(value, np.uint8).reshape(-1, 32)
    return out


def read_side(path: Path, min_quality: int, dihedral: bool) -> tuple[pa.Table, np.ndarray]:
    """A manifest file's usable rows (identifiers only) and their hash variants."""
    names = pq.read_schema(path).names
    columns = [*ID_COLUMNS, *HASH_COLUMNS]
    if dihedral and "pdq_dihedral" in names:
        columns.append("pdq_dihedral")
    table = usable(pq.read_table(path, columns=columns), min_quality)
    return table.select(list(ID_COLUMNS)), variants(table, dihedral)


def best_pairs(
    query_rows: np.ndarray,
    entry_rows: np.ndarray,
    distances: np.ndarray,
    query_variants: int,
    entry_variants: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hits between variants -> one (query row, entry row, distance, query turn, entry
    turn) per pair of rows, keeping the smallest distance (the first turn on ties)."""
    q_row, q_turn = np.divmod(query_rows, query_variants)
    e_row, e_turn = np.divmod(entry_rows, entry_variants)
    order = np.lexsort((e_turn, q_turn, distances, e_row, q_row))
    q_row, e_row, distances = q_row[order], e_row[order], distances[order]
    q_turn, e_turn = q_turn[order], e_turn[order]
    first = np.ones(len(order), bool)
    first[1:] = (q_row[1:] != q_row[:-1]) | (e_row[1:] != e_row[:-1])
    return q_row[first], e_row[first], distances[first], q_turn[first], e_turn[first]


def range_search(
    side: IndexSide,
    queries: np.ndarray,
    threshold: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, index-side row) pair within `threshold` bits, at its smallest
    distance over the variants of both: see `best_pairs`.

    Range search is symmetric, and an index's cost grows with its queries far faster
    than with its entries: a shard with more hashes than the index side is indexed
    itself (cheap: ~0.07 s for 1e5 hashes) and searched with the index side's hashes
    (measured 2.2x faster for 1e4 generated hashes against a 1e5-row shard)."""
    flat = np.ascontiguousarray(queries.reshape(-1, 32))
    if len(flat) > len(side.hashes):
        found = PDQIndex(flat).search(np.ascontiguousarray(side.hashes), threshold)
        i_row, q_row, distance, i_turn, q_turn = best_pairs(*found, side.variants, queries.shape[1])
        order = np.lexsort((i_row, q_row))  # the same order either way
        return q_row[order], i_row[order], distance[order], q_turn[order], i_turn[order]
    found = side.index().search(flat, threshold)
    return best_pairs(*found, queries.shape[1], side.variants)


def nearest(
    generated: np.ndarray, training: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest training rows of each generated row, exactly (every pair compared).

    `generated` is uint8[G, R, 32] (the distance is the smallest over its R variants),
    `training` uint8[T, 32]. Returns (generated row, training row, distance, turn), for
    each generated row its min(k, T) nearest, by distance then training row (on equal
    distances at the k-th place, which of them is kept is faiss's choice).

    faiss `IndexBinaryFlat` gives each variant's k nearest; a row's k nearest by its
    smallest distance over variants are among the union of its variants' (an item in
    the row's true k nearest, at distance d from variant r, has fewer than k items
    closer than d to r, since each of those is closer than d to the row too)."""
    import faiss

    g_count, turns, _ = generated.shape
    keep = min(k, len(training))
    if not g_count or not keep:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.int16), empty
    index = faiss.IndexBinaryFlat(256)
    index.add(np.ascontiguousarray(training))
    distances, rows = index.search(np.ascontiguousarray(generated.reshape(-1, 32)), keep)
    g_row = np.repeat(np.arange(g_count), turns * keep)
    turn = np.tile(np.repeat(np.arange(turns), keep), g_count)
    t_row, distance = rows.ravel().astype(np.int64), distances.ravel().astype(np.int16)
    # One entry per (generated row, training row): its smallest distance, first turn.
    order = np.lexsort((turn, distance, t_row, g_row))
    g_row, t_row, distance, turn = g_row[order], t_row[order], distance[order], turn[order]
    first = np.ones(len(order), bool)
    first[1:] = (g_row[1:] != g_row[:-1]) | (t_row[1:] != t_row[:-1])
    g_row, t_row, distance, turn = g_row[first], t_row[first], distance[first], turn[first]
    # Then each generated row's `keep` smallest, by distance then training row.
    order = np.lexsort((t_row, distance, g_row))
    g_row, t_row, distance, turn = g_row[order], t_row[order], distance[order], turn[order]
    starts = np.searchsorted(g_row, g_row, side="left")
    kept = (np.arange(len(g_row)) - starts) < keep
    return g_row[kept], t_row[kept], distance[kept], turn[kept]


class IndexSide:
    """The index side's hashes (uint8[N * R, 32], R variants a row) and their PDQIndex,
    built the first time a shard needs it."""

    def __init__(self, hashes: np.ndarray, variants: int) -> None:
        self.hashes, self.variants = hashes, variants
        self._index: PDQIndex | None = None

    def index(self) -> PDQIndex:
        if self._index is None:
            self._index = PDQIndex(np.ascontiguousarray(self.hashes))
        return self._index


_worker_side: tuple[str, IndexSide] | None = None


def worker_side(job: AuditJob) -> IndexSide:
    """The job's index side, loaded once per worker process, not once per shard."""
    global _worker_side
    if _worker_side is None or _worker_side[0] != job.index_token:
        hashes = np.load(Path(job.index_dir) / INDEX_HASHES)
        _worker_side = (job.index_token, IndexSide(hashes, job.index_variants))
    return _worker_side[1]


PART_SCHEMA = pa.schema(
    [
        ("stream_key", pa.string()),
        ("stream_shard", pa.string()),
        ("stream_position", pa.int64()),
        ("stream_member", pa.string()),
        ("stream_url", pa.string()),
        ("index_row", pa.int64()),
        ("distance", pa.int16()),
        ("turn", pa.int8()),  # the generated side's variant (0 = as generated)
    ]
)


def _part(ids: pa.Table, stream_rows: np.ndarray, index_rows: np.ndarray,
          distances: np.ndarray, turns: np.ndarray) -> pa.Table:  # fmt: skip
    taken = ids.take(pa.array(stream_rows, pa.int64()))
    return pa.table(
        {
            "stream_key": taken.column("key"),
            "stream_shard": taken.column("shard"),
            "stream_position": taken.column("position"),
            "stream_member": taken.column("member"),
            "stream_url": taken.column("url"),
            "index_row": pa.array(index_rows, pa.int64()),
            "distance": pa.array(distances, pa.int16()),
            "turn": pa.array(turns, pa.int8()),
        },
        schema=PART_SCHEMA,
    )


def audit_task(stream_run: str, shard_id: str, job: AuditJob) -> AuditPart:
    """Search one shard of the streamed side (a manifest file of `stream_run`) against the
    index side: its pairs within the threshold and, with k, the k nearest per generated
    image (of this shard's rows when the training side is streamed)."""
    path = RunFolder(Path(stream_run)).manifest_file(shard_id)
    rows = pq.ParquetFile(path).metadata.num_rows
    stream_dihedral = job.dihedral and not job.stream_is_training
    ids, queries = read_side(path, job.min_quality, stream_dihedral)
    side = worker_side(job)
    hashes = side.hashes
    s_row, i_row, distance, s_turn, i_turn = range_search(side, queries, job.threshold)
    turn = i_turn if job.stream_is_training else s_turn
    pairs = _part(ids, s_row, i_row, distance, turn)
    found_nearest = None
    if job.k:
        if job.stream_is_training:
            generated = np.asarray(hashes).reshape(-1, job.index_variants, 32)
            g_row, t_row, d, t = nearest(generated, queries.reshape(-1, 32), job.k)
            found_nearest = _part(ids, t_row, g_row, d, t)
        else:
            training = np.asarray(hashes)
            g_row, t_row, d, t = nearest(queries, training, job.k)
            found_nearest = _part(ids, g_row, t_row, d, t)
    return AuditPart(pairs, found_nearest, rows, ids.num_rows)
