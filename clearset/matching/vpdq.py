"""vPDQ lists and Meta's video match rule, on the same exact PDQ index the images use.

A vPDQ hash is a video's list of frame features (PDQ, quality, timestamp). Lists of them
come as python-threatexchange and HMA write them: a signal string that is a JSON list of
``"pdq_hex,quality,seconds"`` strings (`vpdq_to_json`), one per listed video, in a
threatexchange text file (``vpdq <signal>`` or ``video_vpdq <signal>`` lines), a CSV/TSV
export with a signal type and a signal column, or JSON lines ``{"signal_type": "vpdq",
"signal": ...}``; and as Meta's `vpdq` tools write one video's hash file, one
``frame_number,quality,pdq_hex,seconds`` line per frame.

Meta's rule (`vpdq_brute_matcher.match_VPDQ_hash_brute`): drop frames below quality 50
and frames whose hash repeats one already kept (per video), on both sides; a query frame
matches a listed frame within distance 31; the query match percentage is the share of the
query's kept frames that match some frame of the listed video, the target (compared)
percentage the share of the listed video's kept frames that some query frame matches. A
video matches when both are at least their thresholds (Meta's defaults: 80 and 0).

Here every listed video's kept frames go into one `PDQIndex`, with the video each came
from; a query video's kept frames are searched once, and the percentages are counted from
the (query frame, listed frame) pairs found, per listed video: the same numbers as the
brute-force rule (`brute_force_match`, kept beside it as its twin), never comparing all
pairs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from clearset.errors import InputError
from clearset.matching.pdq_index import PDQIndex

#: Frames below this PDQ quality are left out on both sides (Meta's VPDQ_QUALITY_THRESHOLD).
VPDQ_MIN_QUALITY = 50
#: Frame distance at or below which two frames match (Meta's VPDQ_DISTANCE_THRESHOLD).
VPDQ_DISTANCE = 31
#: Share (percent) of the query's frames that must match (Meta's default, 80).
VPDQ_QUERY_MATCH_PERCENT = 80.0
#: Share (percent) of the listed video's frames that must be matched (Meta's default, 0).
VPDQ_TARGET_MATCH_PERCENT = 0.0

_SIGNAL_NAMES = frozenset({"vpdq", "video_vpdq", "hash_vpdq"})


@dataclass(frozen=True)
class VpdqHash:
    """One video's vPDQ: `pdq` uint8[n, 32], `quality` int[n], `timestamp` float[n], and
    where known (a scan's frame table) `frame_number` int[n]."""

    pdq: np.ndarray
    quality: np.ndarray
    timestamp: np.ndarray
    frame_number: np.ndarray | None = None

    def kept(self, min_quality: int = VPDQ_MIN_QUALITY) -> np.ndarray:
        """Row numbers of the frames Meta's rule keeps: the first frame of each distinct
        hash (`dedupe`), of quality at least `min_quality`."""
        seen: set[bytes] = set()
        rows = []
        for row in range(len(self.pdq)):
            value = self.pdq[row].tobytes()
            if value in seen:
                continue
            seen.add(value)
            if self.quality[row] >= min_quality:
                rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    @classmethod
    def from_features(cls, features: Iterable[tuple[str, int, float]]) -> VpdqHash:
        """From (pdq_hex, quality, seconds) triples."""
        hexes, qualities, stamps = [], [], []
        for pdq_hex, quality, stamp in features:
            raw = bytes.fromhex(pdq_hex)
            if len(raw) != 32 or not 0 <= int(quality) <= 100 or float(stamp) < 0:
                raise ValueError(f"not a vPDQ feature: {pdq_hex[:70]},{quality},{stamp}")
            hexes.append(raw)
            qualities.append(int(quality))
            stamps.append(float(stamp))
        pdq = np.frombuffer(b"".join(hexes), dtype=np.uint8).reshape(-1, 32)
        return cls(pdq, np.asarray(qualities, dtype=np.int16), np.asarray(stamps))


def parse_signal(signal: str) -> VpdqHash:
    """python-threatexchange's vPDQ signal string (`vpdq_to_json`): a JSON list of
    ``"pdq_hex,quality,seconds"``. ValueError when it is not one."""
    strings = json.loads(signal or "[]")
    if not isinstance(strings, list):
        raise ValueError("a vPDQ signal is a JSON list")
    features = []
    for text in strings:
        parts = str(text).split(",")
        if len(parts) != 3:
            raise ValueError(f"not a vPDQ feature: {str(text)[:80]}")
        features.append((parts[0], int(parts[1]), float(parts[2])))
    return VpdqHash.from_features(features)


def to_signal(pdq: Iterable[bytes], quality: Iterable[int], timestamp: Iterable[float]) -> str:
    """The signal string python-threatexchange and HMA store (`vpdq_to_json`'s shape)."""
    return json.dumps(
        separators=(",", ":"),
        obj=[
            f"{bytes(p).hex()},{q},{t:.3f}" for p, q, t in zip(pdq, quality, timestamp, strict=True)
        ],
    )


def parse_vpdq_file(text: str) -> VpdqHash:
    """Meta's `vpdq` hash file of one video: ``frame_number,quality,pdq_hex,seconds``."""
    features = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 4:
            raise ValueError(f"not a vpdq hash line: {line[:80]}")
        features.append((parts[2], int(parts[1]), float(parts[3])))
    return VpdqHash.from_features(features)


@dataclass(frozen=True)
class VpdqList:
    """A list of listed videos: `names` (each video's id in the list, or its line number)
    and their hashes."""

    name: str
    names: tuple[str, ...]
    videos: tuple[VpdqHash, ...]

    @property
    def digest(self) -> str:
        """SHA-256 over the listed videos' signals in a canonical form (each video's
        frames as `to_signal` writes them, one line each, sorted): the list's identity."""
        lines = sorted(
            to_signal(v.pdq, v.quality.tolist(), v.timestamp.tolist()) for v in self.videos
        )
        text = "clearset-vpdqlist-v1\n" + "".join(line + "\n" for line in lines)
        return hashlib.sha256(text.encode()).hexdigest()


def load_vpdq_list(path: str, text: str | None = None, name: str | None = None) -> VpdqList:
    """A vPDQ list file in any of the shapes the module names. InputError naming the file
    and the line when it is none of them."""
    if text is None:
        try:
            with open(path, encoding="utf-8-sig") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the vPDQ list ({exc})") from None
    names: list[str] = []
    videos: list[VpdqHash] = []
    lines = [line for line in text.splitlines() if line.strip()]
    first = lines[0].strip() if lines else ""
    try:
        if first and first[0].isdigit() and first.count(",") == 3 and "[" not in first:
            videos.append(parse_vpdq_file(text))
            names.append("1")
        elif first.startswith("{"):
            for number, line in enumerate(lines, 1):
                record = json.loads(line)
                kind = str(record.get("signal_type", record.get("type", "vpdq"))).lower()
                if kind in _SIGNAL_NAMES:
                    names.append(str(record.get("id", number)))
                    videos.append(parse_signal(record.get("signal", record.get("hash", ""))))
        elif first.startswith("["):
            videos.append(parse_signal(text))
            names.append("1")
        elif "," in first.split("[", 1)[0] or "\t" in first:
            dialect = "excel-tab" if "\t" in first else "excel"
            reader = csv.DictReader(io.StringIO(text), dialect=dialect)
            for number, record in enumerate(reader, 2):
                fields = {k.strip().lower(): v for k, v in record.items() if k}
                kind = (fields.get("signal_type") or fields.get("type") or "vpdq").lower()
                if kind.strip() in _SIGNAL_NAMES:
                    signal = fields.get("signal") or fields.get("signal_str") or ""
                    names.append(fields.get("id") or str(number))
                    videos.append(parse_signal(signal))
        else:
            for number, line in enumerate(lines, 1):
                kind, _, signal = line.strip().partition(" ")
                if kind.lower() in _SIGNAL_NAMES:
                    names.append(str(number))
                    videos.append(parse_signal(signal.strip()))
    except (ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: not a vPDQ list ({exc})") from None
    if not videos:
        raise InputError(f"{path}: no vPDQ entry found")
    return VpdqList(name or path.rsplit("/", 1)[-1], tuple(names), tuple(videos))


@dataclass(frozen=True)
class VideoMatch:
    """A query video matched one listed video: which, the two percentages, and the
    query's matched frames (row numbers of its frames) with their closest distance."""

    video: int
    name: str
    query_match_percent: float
    target_match_percent: float
    frames: tuple[int, ...]
    distance: int


class VpdqIndex:
    """Every listed video's kept frames in one `PDQIndex`, each frame knowing its video."""

    def __init__(self, vpdq_list: VpdqList, min_quality: int = VPDQ_MIN_QUALITY) -> None:
        self.list = vpdq_list
        self.min_quality = min_quality
        blocks, owners = [], []
        self.kept_counts = np.zeros(len(vpdq_list.videos), dtype=np.int64)
        for number, video in enumerate(vpdq_list.videos):
            kept = video.kept(min_quality)
            self.kept_counts[number] = len(kept)
            blocks.append(video.pdq[kept])
            owners.append(np.full(len(kept), number, dtype=np.int64))
        entries = np.concatenate(blocks) if blocks else np.zeros((0, 32), np.uint8)
        self.owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        self.index = PDQIndex(np.ascontiguousarray(entries))

    def match(
        self,
        query: VpdqHash,
        *,
        distance: int = VPDQ_DISTANCE,
        query_percent: float = VPDQ_QUERY_MATCH_PERCENT,
        target_percent: float = VPDQ_TARGET_MATCH_PERCENT,
    ) -> list[VideoMatch]:
        """The listed videos `query` matches by Meta's rule, best first."""
        return self.match_many(
            [query], distance=distance, query_percent=query_percent, target_percent=target_percent
        )[0]

    def match_many(
        self,
        queries: list[VpdqHash],
        *,
        distance: int = VPDQ_DISTANCE,
        query_percent: float = VPDQ_QUERY_MATCH_PERCENT,
        target_percent: float = VPDQ_TARGET_MATCH_PERCENT,
    ) -> list[list[VideoMatch]]:
        """`match` for many query videos, searched in one batch."""
        return [
            [
                m
                for m in found
                if m.query_match_percent >= query_percent
                and m.target_match_percent >= target_percent
            ]
            for found in self.scores_many(queries, distance=distance)
        ]

    def scores(self, query: VpdqHash, *, distance: int = VPDQ_DISTANCE) -> list[VideoMatch]:
        """Both percentages for every listed video sharing at least one frame."""
        return self.scores_many([query], distance=distance)[0]

    def scores_many(
        self, queries: list[VpdqHash], *, distance: int = VPDQ_DISTANCE
    ) -> list[list[VideoMatch]]:
        """`scores` of each query: every query's kept frames go to the index at once."""
        kept = [query.kept(self.min_quality) for query in queries]
        results: list[list[VideoMatch]] = [[] for _ in queries]
        if not len(self.owner) or not sum(len(k) for k in kept):
            return results
        starts = np.cumsum([0, *(len(k) for k in kept)])
        batch = np.concatenate([q.pdq[k] for q, k in zip(queries, kept, strict=True)])
        rows, entries, distances = self.index.search(np.ascontiguousarray(batch), distance)
        which = np.searchsorted(starts, rows, side="right") - 1
        order = np.argsort(which, kind="stable")
        rows, entries, distances, which = (
            rows[order],
            entries[order],
            distances[order],
            which[order],
        )
        bounds = np.searchsorted(which, np.arange(len(queries) + 1))
        for number in range(len(queries)):
            lo, hi = bounds[number], bounds[number + 1]
            if lo == hi:
                continue
            results[number] = self._scores(
                kept[number], rows[lo:hi] - starts[number], entries[lo:hi], distances[lo:hi]
            )
        return results

    def _scores(
        self, kept: np.ndarray, rows: np.ndarray, entries: np.ndarray, distances: np.ndarray
    ) -> list[VideoMatch]:
        found: list[VideoMatch] = []
        videos = self.owner[entries]
        for video in np.unique(videos).tolist():
            here = videos == video
            query_rows = np.unique(rows[here])
            target_rows = np.unique(entries[here])
            found.append(
                VideoMatch(
                    video=video,
                    name=self.list.names[video],
                    query_match_percent=100.0 * len(query_rows) / len(kept),
                    target_match_percent=100.0 * len(target_rows) / self.kept_counts[video],
                    frames=tuple(int(kept[r]) for r in query_rows),
                    distance=int(distances[here].min()),
                )
            )
        found.sort(key=lambda m: (-m.query_match_percent, -m.target_match_percent, m.video))
        return found


def brute_force_match(
    query: VpdqHash,
    target: VpdqHash,
    *,
    distance: int = VPDQ_DISTANCE,
    min_quality: int = VPDQ_MIN_QUALITY,
) -> tuple[float, float]:
    """Meta's rule by comparing every pair: (query match %, target match %). The twin
    `VpdqIndex` is tested against."""
    q = query.pdq[query.kept(min_quality)]
    t = target.pdq[target.kept(min_quality)]
    if not len(q) or not len(t):
        return 0.0, 0.0
    bits = np.unpackbits(q[:, None, :] ^ t[None, :, :], axis=2).sum(axis=2)
    close = bits <= distance
    return 100.0 * close.any(axis=1).mean(), 100.0 * close.any(axis=0).mean()
