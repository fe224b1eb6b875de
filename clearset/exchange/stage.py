"""The exchange's per-shard work, a plain function of picklable arguments for any engine:
one manifest shard into one request rows file (builder), one rows file matched against
the holder's lists (holder)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.atomic import atomic_path
from clearset.errors import InputError
from clearset.exchange.format import ANSWER_SCHEMA, request_schema
from clearset.matching.review import not_allowed, with_allowed_column
from clearset.runfolder import file_sha256
from clearset.stages.match import MatchJob, worker_matcher


def request_task(
    manifest_path: str, first_row_id: int, hash_types: tuple[str, ...], out_path: str
) -> tuple[int, str]:
    """Write one shard's request rows (hashed members only); (rows, file SHA-256).

    Row ``first_row_id + i`` is the shard's manifest row i; ``group`` is the row id of
    the first member of the same sample (key)."""
    schema = request_schema(hash_types)
    wanted = [name for name in schema.names if name not in ("row_id", "group")]
    table = pq.read_table(manifest_path, columns=["key", *wanted])
    keys = table.column("key").to_pylist()
    first_of: dict[str, int] = {}
    groups = []
    for index, key in enumerate(keys):
        groups.append(first_row_id + first_of.setdefault(key, index))
    row_ids = pa.array(range(first_row_id, first_row_id + table.num_rows), pa.int64())
    columns = {"row_id": row_ids, "group": pa.array(groups, pa.int64())}
    for name in wanted:
        columns[name] = table.column(name)
    rows = pa.table(columns).cast(schema)
    rows = rows.filter(pc.is_valid(rows.column("sha256"))) if "sha256" in wanted else rows
    with atomic_path(Path(out_path)) as tmp:
        pq.write_table(rows, tmp, compression="zstd")
    return rows.num_rows, file_sha256(Path(out_path))


#: What `answer_task` hands back to the holder's own process for review (`summarise`):
#: the match rows' list, entry and sample. Entries stay in the holder's memory: they are
#: never written to the answer.
REVIEW_COLUMNS = ("list_digest", "list_name", "list_version", "hash_type", "entry", "shard",
                  "key", "allowed")  # fmt: skip


def answer_task(rows_path: str, job: MatchJob, out_path: str) -> tuple[int, pa.Table]:
    """Match one request rows file; write its matches (row id, list, type, field,
    distance: never an entry) to `out_path`, less those the holder's allow list holds
    (`job.review`). Returns (rows searched, every match row's `REVIEW_COLUMNS`, allowed
    ones included, for the holder's flood count and held-back count)."""
    matcher = worker_matcher(job)
    assert matcher is not None
    table = pq.read_table(rows_path)
    ids = table.column("row_id")
    if ids.null_count:
        raise InputError(f"{rows_path}: a row has no row_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise InputError(f"{rows_path}: a row_id is repeated")
    n = table.num_rows
    empty = pa.nulls(n, pa.string())
    # A request row is one member; its group (the first member's row id) is its sample.
    group = table.column("group") if "group" in table.column_names else ids
    query = table.append_column("key", pc.cast(pc.fill_null(group, ids), pa.string()))
    query = query.append_column("shard", pa.array([""] * n, pa.string()))
    query = query.append_column("position", ids)
    query = query.append_column("member", empty).append_column("url", empty)
    if "sha256" not in query.column_names:
        query = query.append_column("sha256", pa.nulls(n, pa.binary(32)))
    matches = with_allowed_column(matcher.match_table(query))
    review = matches.select(list(REVIEW_COLUMNS))
    matches = not_allowed(matches)  # reviewed false positives: held back, counted
    answer = pa.table(
        {
            "row_id": matches.column("position"),
            "list": matches.column("list_name"),
            "hash_type": matches.column("hash_type"),
            "field": matches.column("field"),
            "distance": matches.column("distance"),
        }
    ).cast(ANSWER_SCHEMA)
    with atomic_path(Path(out_path)) as tmp:
        pq.write_table(answer, tmp, compression="zstd")
    return n, review
