"""vPDQ lists and Meta's video match rule, on the same exact PDQ index the images use.

A vPDQ hash is a video's list of frame features (PDQ, quality, timestamp); the list
files that hold them are read by `clearset.lists.vpdq`, which says their shapes.

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

from dataclasses import dataclass

import numpy as np

from clearset.lists.vpdq import (
    VPDQ_MIN_QUALITY,
    VPDQ_SIGNALS,
    VpdqHash,
    VpdqList,
    load_vpdq_list,
    parse_signal,
    parse_vpdq_file,
    to_signal,
)
from clearset.matching.pdq_index import PDQIndex

__all__ = [
    "VPDQ_MIN_QUALITY",
    "VPDQ_SIGNALS",
    "VideoMatch",
    "VpdqHash",
    "VpdqIndex",
    "VpdqList",
    "brute_force_match",
    "load_vpdq_list",
    "parse_signal",
    "parse_vpdq_file",
    "to_signal",
]
#: Frame distance at or below which two frames match (Meta's VPDQ_DISTANCE_THRESHOLD).
VPDQ_DISTANCE = 31
#: Share (percent) of the query's frames that must match (Meta's default, 80).
VPDQ_QUERY_MATCH_PERCENT = 80.0
#: Share (percent) of the listed video's frames that must be matched (Meta's default, 0).
VPDQ_TARGET_MATCH_PERCENT = 0.0


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

    def __init__(
        self,
        vpdq_list: VpdqList | None,
        min_quality: int = VPDQ_MIN_QUALITY,
        *,
        arrays: tuple[np.ndarray, np.ndarray, PDQIndex] | None = None,
        names: tuple[str, ...] = (),
    ) -> None:
        """From a loaded list, or (`arrays`: kept counts per video, each kept frame's
        video, and their built `PDQIndex`; `names`) from a saved one
        (`clearset.matching.shared`)."""
        self.min_quality = min_quality
        if arrays is not None:
            self.names = tuple(names)
            self.kept_counts, self.owner, self.index = arrays
            return
        assert vpdq_list is not None
        self.names = vpdq_list.names
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
                    name=self.names[video],
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
