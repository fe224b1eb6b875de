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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from clearset.hashing import types
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.lists import HashList, load_list
from clearset.matching.pdq_index import PDQIndex
from clearset.matching.vpdq import (
    VPDQ_QUERY_MATCH_PERCENT,
    VPDQ_TARGET_MATCH_PERCENT,
    VpdqHash,
    VpdqIndex,
    VpdqList,
)
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
        # A video's frame matched (field "pdq_frame": a picture listed by PDQ; "vpdq": a
        # listed video by Meta's rule, its closest frame): the frame and the percentages.
        pa.field("frame_number", pa.int64()),
        pa.field("timestamp", pa.float64()),
        pa.field("query_match_percent", pa.float32()),
        pa.field("target_match_percent", pa.float32()),
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
        return self.load_all()[0]

    def load_all(self) -> tuple[list[HashList], list[VpdqList]]:
        """The file's hash lists, and its vPDQ list when it holds vPDQ entries."""
        videos: list[VpdqList] = []
        lists = load_list(
            self.path,
            name=self.name,
            version=self.version,
            hash_type=self.hash_type,
            fmt=self.fmt,
            column=self.column,
            threshold=self.threshold,
            skip_invalid=self.skip_invalid,
            videos=videos,
        )
        return lists, videos


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
        video_lists: list[VpdqList] | None = None,
        video_indexes: list[tuple[dict[str, Any], VpdqIndex]] | None = None,
    ) -> None:
        self.lists = lists
        self.settings = settings or MatchSettings()
        self._indexes: dict[int, PDQIndex] = dict(indexes or {})
        # vPDQ lists: each one's identity (`VpdqList.identity`) and its index over the
        # listed videos' kept frames, built here or mapped (`clearset.matching.shared`).
        self.video_indexes: list[tuple[dict[str, Any], VpdqIndex]] = list(video_indexes or [])
        for vpdq_list in video_lists or []:
            index = VpdqIndex(vpdq_list, self.settings.min_quality)
            self.video_indexes.append((vpdq_list.identity(), index))

    @classmethod
    def from_specs(cls, specs: Iterable[ListSpec], settings: MatchSettings) -> Matcher:
        """Every spec's lists loaded: hash lists and vPDQ lists."""
        lists: list[HashList] = []
        videos: list[VpdqList] = []
        for spec in specs:
            found, video = spec.load_all()
            lists += found
            videos += video
        return cls(lists, settings, video_lists=videos)

    def video_records(self) -> list[dict[str, Any]]:
        """The vPDQ lists as run.json records them: identity and the match rule."""
        return [
            {
                **identity,
                "threshold": self.settings.pdq_threshold,
                "query_match_percent": VPDQ_QUERY_MATCH_PERCENT,
                "target_match_percent": VPDQ_TARGET_MATCH_PERCENT,
                "skipped": {},
                "skipped_total": 0,
            }
            for identity, _ in self.video_indexes
        ]

    def _index(self, number: int) -> PDQIndex:
        if number not in self._indexes:
            self._indexes[number] = PDQIndex(self.lists[number].hashes)
        return self._indexes[number]

    def match_table(self, manifest: pa.Table, frames: pa.Table | None = None) -> pa.Table:
        """Match rows of a manifest table (any subset of shards) against every list;
        `frames`, the videos' frame table of the same shards, is matched against PDQ
        lists (every frame) and vPDQ lists (each video by Meta's rule)."""
        columns = ManifestColumns(manifest)
        rows = manifest.num_rows
        video = frames_by_row(columns, frames, rows)
        found: list[dict[str, Any]] = []
        for number, hash_list in enumerate(self.lists):
            at: dict[int, tuple[int, float]] = {}
            if not types.get(hash_list.hash_type).exact:
                # PDQ is the one distance type: its search covers the trimmed and
                # rotated hashes too. A second distance type brings its own search here.
                best = self._match_pdq(number, columns, rows, video, at)
            else:
                best = _match_exact(hash_list, columns, rows)
            for row, (field, entry, distance, rotation) in sorted(best.items()):
                frame_number, timestamp = at.get(row, (None, None))
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
                        "frame_number": frame_number,
                        "timestamp": timestamp,
                    }
                )
        for identity, index in self.video_indexes:
            found.extend(self._match_vpdq(identity, index, columns, video))
        return pa.Table.from_pylist(found, schema=MATCH_SCHEMA)

    def _match_vpdq(
        self,
        identity: dict[str, Any],
        index: VpdqIndex,
        columns: Mapping[str, Any],
        video: dict[int, VpdqHash],
    ) -> list[dict[str, Any]]:
        """One row per video matching a listed video by Meta's rule (the best one)."""
        found = []
        rows = sorted(video)
        every = index.match_many([video[row] for row in rows], distance=self.settings.pdq_threshold)
        for row, matches in zip(rows, every, strict=True):
            query = video[row]
            if not matches:
                continue
            best = matches[0]
            first = best.frames[0]
            found.append(
                {
                    **{name: columns[name][row] for name in _ITEM_COLUMNS},
                    "list_name": identity["name"],
                    "list_version": identity["version"],
                    "list_digest": identity["digest"],
                    "hash_type": "vpdq",
                    "field": "vpdq",
                    "entry": best.name,
                    "distance": best.distance,
                    "rotation": None,
                    "frame_number": _frame_number(query, first),
                    "timestamp": float(query.timestamp[first]),
                    "query_match_percent": best.query_match_percent,
                    "target_match_percent": best.target_match_percent,
                }
            )
        return found

    def _match_pdq(
        self,
        number: int,
        columns: Mapping[str, Any],
        rows: int,
        video: dict[int, VpdqHash] | None = None,
        at: dict[int, tuple[int, float]] | None = None,
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
        # Every frame of every video, against the pictures the list holds.
        frame_of: dict[int, tuple[int, float]] = {}
        for row, frames in (video or {}).items():
            for f in range(len(frames.pdq)):
                if frames.quality[f] >= minimum:
                    frame_of[len(variants)] = (_frame_number(frames, f), frames.timestamp[f])
                    variants.append((row, "pdq_frame", None, frames.pdq[f].tobytes()))
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
                if at is not None and q in frame_of:
                    at[row] = (frame_of[q][0], float(frame_of[q][1]))
                elif at is not None:
                    at.pop(row, None)
        return best


class ManifestColumns(Mapping[str, Any]):
    """A manifest table's columns as Python lists, each made when first read (None for a
    column the table lacks). Matching reads the hash columns of every row and the
    naming columns of matched rows only: converting all ~25 columns up front cost ~13 ms
    a 1,000-sample shard, more than the list search at some sizes."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._names = manifest_columns()
        self._known = frozenset(self._names)
        self._lists: dict[str, list[Any] | None] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._lists:
            if name not in self._known:
                raise KeyError(name)
            present = name in self._table.column_names
            self._lists[name] = self._table.column(name).to_pylist() if present else None
        return self._lists[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _frame_number(video: VpdqHash, row: int) -> int:
    return int(video.frame_number[row]) if video.frame_number is not None else row


def frames_by_row(
    columns: Mapping[str, Any], frames: pa.Table | None, rows: int
) -> dict[int, VpdqHash]:
    """Manifest row -> that video's frames (a frame table keyed by shard, position and
    member), for the rows of this manifest table."""
    if frames is None or not frames.num_rows:
        return {}
    where = {
        (columns["shard"][row], columns["position"][row], columns["member"][row]): row
        for row in range(rows)
    }
    keys = zip(
        frames.column("shard").to_pylist(),
        frames.column("position").to_pylist(),
        frames.column("member").to_pylist(),
        strict=True,
    )
    owner = np.array([where.get(key, -1) for key in keys], dtype=np.int64)
    pdq = np.frombuffer(b"".join(frames.column("pdq").to_pylist()), np.uint8).reshape(-1, 32)
    quality = frames.column("quality").to_numpy()
    stamp = frames.column("timestamp").to_numpy()
    number = frames.column("frame_number").to_numpy()
    found = {}
    for row in np.unique(owner[owner >= 0]).tolist():
        mine = owner == row
        found[row] = VpdqHash(pdq[mine], quality[mine], stamp[mine], number[mine])
    return found


def _match_exact(
    hash_list: HashList, columns: Mapping[str, list | None], rows: int
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
