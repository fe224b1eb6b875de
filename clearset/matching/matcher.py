"""Match a manifest's rows against loaded hash lists; every match says why.

Which lists match exactly and which by distance, and the manifest columns each type is
checked against, are the hash type registry's (`clearset.hashing.types`). Exact lists
(MD5, SHA-1, SHA-256) are checked against the hashes of the stored bytes and
against the hashes the source already carried (img2dataset's and LAION's `md5`/`sha256`
columns), so metadata-only parquet can be screened with no image at all. URL lists are
checked against the row's URL (its SHA-256 for ``url``, MD5 for ``url_md5``). PDQ lists
are searched with the exact Hamming index for every item of sufficient quality, on the
hash as stored, on the border-trimmed hash when there is one, and on the 7 other
rotations/flips when the scan kept them. A low quality never skips the exact checks.

Each match row names one item, one list (by identity) and the single closest entry of that
list: never more of a list's contents than that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from clearset.hashing import types
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.lists import HashList, load_list
from clearset.matching.pdq_index import PDQIndex
from clearset.settings import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY

MATCH_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("member", pa.string()),
        pa.field("url", pa.string()),
        pa.field("sha256", pa.binary(32)),
        pa.field("list_name", pa.string(), nullable=False),
        pa.field("list_version", pa.string()),
        pa.field("list_digest", pa.string(), nullable=False),
        pa.field("hash_type", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),  # which of the item's hashes matched
        pa.field("entry", pa.string(), nullable=False),  # the one list entry it matched, hex
        pa.field("distance", pa.int16(), nullable=False),
        pa.field("rotation", pa.string()),  # for dihedral PDQ matches
        pa.field("allowed", pa.bool_()),  # the item is on the review's allow list: kept
    ]
)

#: Manifest columns every match row names the item by.
_ITEM_COLUMNS = ("key", "shard", "position", "member", "url", "sha256")


def manifest_columns() -> list[str]:
    """The manifest columns matching reads: the item's, and every type's hashes and the
    columns exact types are checked against (`upstream_*`)."""
    wanted = dict.fromkeys(_ITEM_COLUMNS)
    for hash_type in types.all_types():
        wanted.update(dict.fromkeys(f.name for f in hash_type.manifest_columns))
        wanted.update(dict.fromkeys(hash_type.match_fields))
    return list(wanted)


@dataclass(frozen=True)
class ListSpec:
    """How to load one list: what the operator said on the command line."""

    path: str
    name: str | None = None
    version: str | None = None
    hash_type: str | None = None
    fmt: str | None = None
    column: str | None = None
    threshold: int | None = None
    skip_invalid: bool = False

    def load(self) -> list[HashList]:
        return load_list(
            self.path,
            name=self.name,
            version=self.version,
            hash_type=self.hash_type,
            fmt=self.fmt,
            column=self.column,
            threshold=self.threshold,
            skip_invalid=self.skip_invalid,
        )


@dataclass(frozen=True)
class MatchSettings:
    pdq_threshold: int = PDQ_MATCH_THRESHOLD
    min_quality: int = PDQ_MIN_QUALITY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_record(hash_list: HashList, settings: MatchSettings) -> dict[str, Any]:
    """A list as outputs name it: identity, threshold and what loading skipped (by kind,
    never entries)."""
    record = hash_list.identity.to_dict()
    if not types.get(hash_list.hash_type).exact:
        record["threshold"] = threshold_of(hash_list, settings)
    else:
        record["threshold"] = 0
    record["skipped"] = dict(hash_list.skipped)
    record["skipped_total"] = sum(hash_list.skipped.values())
    if hash_list.skipped:
        record["digest_covers"] = "the accepted entries, not the file"
    return record


def threshold_of(hash_list: HashList, settings: MatchSettings) -> int:
    return hash_list.threshold if hash_list.threshold is not None else settings.pdq_threshold


class Matcher:
    """Lists loaded once, PDQ indexes built once; then any number of manifest batches.

    `indexes` (list number -> index) are PDQ indexes built before, e.g. mapped from a
    folder by `clearset.matching.shared.open_matcher`; the others are built on first use.
    """

    def __init__(
        self,
        lists: list[HashList],
        settings: MatchSettings | None = None,
        *,
        indexes: dict[int, PDQIndex] | None = None,
    ) -> None:
        self.lists = lists
        self.settings = settings or MatchSettings()
        self._indexes: dict[int, PDQIndex] = dict(indexes or {})

    def _index(self, number: int) -> PDQIndex:
        if number not in self._indexes:
            self._indexes[number] = PDQIndex(self.lists[number].hashes)
        return self._indexes[number]

    def match_table(self, manifest: pa.Table) -> pa.Table:
        """Match rows of a manifest table (any subset of shards) against every list."""
        columns: dict[str, Any] = {
            name: manifest.column(name).to_pylist() if name in manifest.column_names else None
            for name in manifest_columns()
        }
        rows = manifest.num_rows
        found: list[dict[str, Any]] = []
        for number, hash_list in enumerate(self.lists):
            if not types.get(hash_list.hash_type).exact:
                # PDQ is the one distance type: its search covers the trimmed and
                # rotated hashes too. A second distance type brings its own search here.
                best = self._match_pdq(number, columns, rows)
            else:
                best = _match_exact(hash_list, columns, rows)
            for row, (field, entry, distance, rotation) in sorted(best.items()):
                found.append(
                    {
                        "key": columns["key"][row],
                        "shard": columns["shard"][row],
                        "position": columns["position"][row],
                        "member": columns["member"][row],
                        "url": columns["url"][row],
                        "sha256": columns["sha256"][row],
                        "list_name": hash_list.identity.name,
                        "list_version": hash_list.identity.version,
                        "list_digest": hash_list.identity.digest,
                        "hash_type": hash_list.hash_type,
                        "field": field,
                        "entry": entry,
                        "distance": distance,
                        "rotation": rotation,
                    }
                )
        return pa.Table.from_pylist(found, schema=MATCH_SCHEMA)

    def _match_pdq(
        self, number: int, columns: dict[str, Any], rows: int
    ) -> dict[int, tuple[str, str, int, str | None]]:
        hash_list = self.lists[number]
        threshold = threshold_of(hash_list, self.settings)
        minimum = self.settings.min_quality
        # (row, field, rotation, hash): every variant of every item good enough to match.
        variants: list[tuple[int, str, str | None, bytes]] = []
        pdq, quality = columns["pdq"], columns["pdq_quality"]
        trimmed, trimmed_quality = columns["pdq_trimmed"], columns["pdq_trimmed_quality"]
        dihedral = columns["pdq_dihedral"]
        for row in range(rows):
            if pdq is not None and pdq[row] is not None and (quality[row] or 0) >= minimum:
                variants.append((row, "pdq", "original" if dihedral else None, pdq[row]))
                if dihedral is not None and dihedral[row] is not None:
                    others = dihedral[row]
                    for turn in range(1, len(DIHEDRAL_NAMES)):
                        chunk = others[(turn - 1) * 32 : turn * 32]
                        variants.append((row, "pdq", DIHEDRAL_NAMES[turn], chunk))
            if (
                trimmed is not None
                and trimmed[row] is not None
                and (trimmed_quality[row] or 0) >= minimum
            ):
                variants.append((row, "pdq_trimmed", None, trimmed[row]))
        if not variants or not len(hash_list):
            return {}
        queries = np.frombuffer(b"".join(v[3] for v in variants), dtype=np.uint8).reshape(-1, 32)
        query_rows, entry_rows, distances = self._index(number).search(queries, threshold)
        best: dict[int, tuple[str, str, int, str | None]] = {}
        for q, e, d in zip(
            query_rows.tolist(), entry_rows.tolist(), distances.tolist(), strict=True
        ):
            row, field, rotation, _ = variants[q]
            if row not in best or d < best[row][2]:
                best[row] = (field, hash_list.hashes[e].tobytes().hex(), int(d), rotation)
        return best


def _match_exact(
    hash_list: HashList, columns: dict[str, list | None], rows: int
) -> dict[int, tuple[str, str, int, str | None]]:
    best: dict[int, tuple[str, str, int, str | None]] = {}
    width = hash_list.hashes.shape[1]
    hash_type = types.get(hash_list.hash_type)
    for field in hash_type.match_fields:
        values = columns.get(field)
        if values is None:
            continue
        candidates: list[int] = []
        packed: list[bytes] = []
        for row in range(rows):
            if row in best or values[row] is None:
                continue
            if hash_type.url_forms is not None:
                forms = hash_type.url_forms(values[row])
            else:
                value = _as_bytes(field, values[row], width)
                forms = () if value is None else (value,)
            for value in forms:
                candidates.append(row)
                packed.append(value)
        if not candidates:
            continue
        batch = np.frombuffer(b"".join(packed), dtype=np.uint8).reshape(-1, width)
        hits = hash_list.contains(batch)
        for index in np.flatnonzero(hits).tolist():
            best.setdefault(candidates[index], (field, packed[index].hex(), 0, None))
    return best


def _as_bytes(field: str, value: Any, width: int) -> bytes | None:
    """A manifest cell as packed bytes of the list's width, or None if it cannot be."""
    if isinstance(value, bytes):
        return value if len(value) == width else None
    # upstream_* columns are hex text from someone else's tool: tolerate, don't trust.
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == width else None
