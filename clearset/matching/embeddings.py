"""Cosine-similarity candidates from descriptor vectors the user computed: an audit's
optional second stage, for copies PDQ cannot see (crops, re-renders).

clearset ships and downloads no model: the user computes vectors for the training items
and for the generated images with a descriptor of their choice (SSCD for copy detection,
CLIP...) and gives two parquet files, each with a `key` column (training: also `shard`,
to tell apart equal keys of different shards) and an `embedding` column of float lists.
Vectors are L2-normalised and compared by inner product in a faiss flat index (every
pair, exactly), so the similarity is the cosine. The results are reported apart from
PDQ's, with the threshold used: the two signals mean different things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.errors import InputError

#: Cosine similarity at or above which a pair is a candidate copy (SSCD's copy-detection
#: threshold as Somepalli et al. 2023 used it); depends on the descriptor: set your own.
EMBEDDING_THRESHOLD = 0.5
VECTOR_COLUMN = "embedding"


@dataclass
class Vectors:
    keys: list[str]
    shards: list[str | None]
    vectors: np.ndarray  # float32[N, D], rows of length 1


def read_vectors(path: str | Path, what: str) -> Vectors:
    """A parquet file of `key` (optional `shard`) and `embedding` rows, normalised."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path}: no such file") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{what} {path}: not a parquet file ({exc})") from None
    missing = [c for c in ("key", VECTOR_COLUMN) if c not in schema.names]
    if missing:
        raise InputError(f"{what} {path}: no {' or '.join(missing)} column (key, embedding)")
    columns = ["key", VECTOR_COLUMN] + (["shard"] if "shard" in schema.names else [])
    table = pq.read_table(path, columns=columns)
    values = table.column(VECTOR_COLUMN).to_pylist()
    if not values:
        raise InputError(f"{what} {path}: no vectors")
    widths = {len(v) if v is not None else 0 for v in values}
    if len(widths) != 1 or 0 in widths:
        raise InputError(f"{what} {path}: every embedding must be a list of the same length")
    vectors = np.asarray(values, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise InputError(f"{what} {path}: an embedding is zero or not finite")
    shards = table.column("shard").to_pylist() if "shard" in columns else [None] * len(values)
    return Vectors(table.column("key").to_pylist(), shards, vectors / norms)


def similar_pairs(
    training: np.ndarray, generated: np.ndarray, threshold: float, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(generated row, training row, similarity, nearest rank or 0) for every pair at or
    above `threshold` and each generated row's k most similar, by faiss flat inner product.
    Sorted by generated row, then similarity (highest first), then training row."""
    import faiss

    if training.shape[1] != generated.shape[1]:
        raise InputError(
            f"--embeddings: training vectors have {training.shape[1]} dimensions, generated "
            f"{generated.shape[1]}: they must come from the same descriptor"
        )
    index = faiss.IndexFlatIP(training.shape[1])
    index.add(np.ascontiguousarray(training, dtype=np.float32))
    queries = np.ascontiguousarray(generated, dtype=np.float32)
    found: dict[tuple[int, int], list[float]] = {}
    # faiss keeps pairs with similarity > radius; a hair below keeps those equal to it.
    lims, sims, rows = index.range_search(queries, float(np.nextafter(threshold, -1.0)))
    for g in range(len(queries)):
        for sim, t in zip(sims[lims[g] : lims[g + 1]], rows[lims[g] : lims[g + 1]], strict=True):
            if sim >= threshold:
                found[(g, int(t))] = [float(sim), 0]
    if k:
        sims, rows = index.search(queries, min(k, len(training)))
        for g in range(len(queries)):
            for rank, (sim, t) in enumerate(zip(sims[g], rows[g], strict=True), start=1):
                found.setdefault((g, int(t)), [float(sim), 0])[1] = rank
    order = sorted(found, key=lambda gt: (gt[0], -found[gt][0], gt[1]))
    g_rows = np.asarray([g for g, _ in order], np.int64)
    t_rows = np.asarray([t for _, t in order], np.int64)
    similarity = np.asarray([found[p][0] for p in order], np.float32)
    ranks = np.asarray([found[p][1] for p in order], np.int64)
    return g_rows, t_rows, similarity, ranks
