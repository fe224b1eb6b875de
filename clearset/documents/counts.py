"""How many samples, members, images and leaves: the one set of counts every command gives.

The words (docs/concepts.md, "Samples, members and leaves"):

- a **sample** (or **key**) is one training example: a webdataset key, a parquet row, a
  folder's files sharing a stem, a URL-list row. A clean keeps or removes whole samples.
- a **member** is one file of a sample (its .jpg, its .txt, its .json): one manifest row.
  A member that decoded as a picture is an **image**, one hashed as a video (vPDQ) a
  **video** (with its hours and hashed frames beside it); the others are unreadable ones,
  members without bytes (failed downloads, URL-only rows), and **other members**
  (captions, metadata).
- a **leaf** is one entry of a receipt's Merkle tree: one distinct SHA-256 of a kept
  member (members with identical bytes share a leaf).

Scan, clean, status, report, receipt and documents all print these counts from here, read
from the completion markers (scan markers for the data set as scanned, the clean's markers
for the cleaned copy), so they cannot disagree. Markers written before the sample counts
were recorded are completed from their manifest shard's key column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset import storage
from clearset.errors import ClearsetError
from clearset.manifest import STATUS_ERROR, STATUS_MISSING, STATUS_OK, STATUS_OTHER
from clearset.progress import plural as plural  # where every layer finds it
from clearset.receipts.issue import source_label
from clearset.receipts.statement import canonical_json
from clearset.records import CleanRecord
from clearset.runfolder import RunFolder, cleaned_manifest_files

_VIDEO_EXTRAS = ("video_seconds", "video_frames")


@dataclass(frozen=True)
class SetCounts:
    """One data set's (or cleaned copy's) samples and members, by kind of member."""

    samples: int = 0
    members: int = 0
    images: int = 0
    unreadable: int = 0  # members expected to be images that did not decode
    without_bytes: int = 0  # failed downloads, URL-only rows
    other_members: int = 0  # captions, metadata: hashed, not images
    videos: int = 0  # members hashed as videos (vPDQ): not counted in images
    video_seconds: float = 0.0  # their duration, together
    video_frames: int = 0  # their hashed (vPDQ) frames

    @classmethod
    def from_status(
        cls, samples: int, status: Mapping[str, int], videos: Mapping[str, Any] | None = None
    ) -> SetCounts:
        """From the manifest rows by status (ok, error, missing, other), and the videos
        among the ok rows (`videos`: count, seconds, frames)."""
        videos = videos or {}
        return cls(
            samples=samples,
            members=sum(status.values()),
            images=status.get(STATUS_OK, 0) - videos.get("count", 0),
            unreadable=status.get(STATUS_ERROR, 0),
            without_bytes=status.get(STATUS_MISSING, 0),
            other_members=status.get(STATUS_OTHER, 0),
            videos=videos.get("count", 0),
            video_seconds=videos.get("seconds", 0.0),
            video_frames=videos.get("frames", 0),
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts; the video ones only for a set that holds videos (an image set's
        record is as it was)."""
        found = asdict(self)
        if not self.videos:
            for name in ("videos", "video_seconds", "video_frames"):
                del found[name]
        return found

    def receipt_dict(self) -> dict[str, int]:
        """The member counts a receipt carries (integers only: no hours, no frames)."""
        return {k: v for k, v in self.to_dict().items() if k not in _VIDEO_EXTRAS}

    @property
    def video_hours(self) -> float:
        return self.video_seconds / 3600

    def kinds(self) -> str:
        """'56 images, 56 other members' (a kind that holds none is left out)."""
        parts = [plural(self.images, "image")]
        if self.videos:
            parts.append(
                f"{plural(self.videos, 'video')} ({self.video_hours:,.2f} hours, "
                f"{plural(self.video_frames, 'frame')} hashed)"
            )
        if self.unreadable:
            parts.append(f"{self.unreadable:,} unreadable")
        if self.without_bytes:
            parts.append(f"{self.without_bytes:,} without bytes")
        parts.append(plural(self.other_members, "other member"))
        return ", ".join(parts)

    def text(self) -> str:
        """'112 members in 56 samples (56 images, 56 other members)'."""
        return (
            f"{plural(self.members, 'member')} in {plural(self.samples, 'sample')} ({self.kinds()})"
        )


@dataclass(frozen=True)
class LeafCounts:
    """A receipt's leaves: distinct SHA-256 of kept members, by kind of member.

    A leaf is an image leaf when an image holds those bytes, else an other-member leaf
    (captions and metadata, unreadable images, the recorded SHA-256 of a member without
    bytes). Receipts made before the kinds were recorded know only the total."""

    total: int
    images: int | None = None
    other_members: int | None = None

    def text(self) -> str:
        """'67 leaves (56 image, 11 other-member): distinct SHA-256 of the kept members'."""
        kinds = ""
        if self.images is not None and self.other_members is not None:
            kinds = f" ({self.images:,} image, {self.other_members:,} other-member)"
        leaves = plural(self.total, "leaf", "leaves")
        return f"{leaves}{kinds}: distinct SHA-256 of the kept members"


def statement_counts(statement: Mapping[str, Any]) -> tuple[SetCounts | None, LeafCounts]:
    """What a receipt statement says it was built from (None for a receipt made before
    that was recorded) and its leaves."""
    predicate = statement["predicate"]
    size = predicate["tree"]["size"]
    kept = predicate.get("kept")
    if not kept:
        return None, LeafCounts(size)
    leaves = kept["leaves"]
    members = SetCounts(**{k: v for k, v in kept.items() if k != "leaves"})
    return members, LeafCounts(size, leaves["images"], leaves["other_members"])


def marker_samples(marker: Mapping[str, Any], manifest: Path, field: str = "samples") -> int:
    """A marker's sample count; for a marker written before it was recorded, the number
    of distinct keys in its manifest shard."""
    recorded = marker.get(field)
    if isinstance(recorded, int):
        return recorded
    storage.fetch(manifest)  # a bucket run: read on first use
    try:
        keys = pq.read_table(manifest, columns=["key"]).column("key")
    except (OSError, ValueError):
        return 0
    return len(pc.unique(keys))


def scanned_counts(run: RunFolder, markers: Iterable[Mapping[str, Any]] | None = None) -> SetCounts:
    """The data set as scanned: over the run's completed shards."""
    samples = members = 0
    status: dict[str, int] = {}
    videos: dict[str, Any] = {"count": 0, "seconds": 0.0, "frames": 0}
    for marker in run.done_markers() if markers is None else markers:
        samples += marker_samples(marker, run.manifest_file(marker["shard_id"]))
        for name, count in marker.get("status", {}).items():
            status[name] = status.get(name, 0) + count
        members += marker.get("rows", 0)
        videos["count"] += marker.get("videos", 0)
        videos["seconds"] += marker.get("video_seconds", 0.0)
        videos["frames"] += marker.get("video_frames", 0)
    return SetCounts.from_status(samples, status, videos)


def manifest_videos(manifest: Path) -> tuple[int, float, int]:
    """(videos, seconds, hashed frames) of a manifest shard: its hashed video rows."""
    try:
        table = pq.read_table(manifest, columns=["video_frames", "duration_s"])
    except (OSError, ValueError, KeyError):
        return 0, 0.0, 0  # a manifest from before videos (no such columns)
    frames = table.column("video_frames")
    hashed = pc.is_valid(frames)
    seconds = pc.sum(pc.filter(table.column("duration_s"), hashed)).as_py() or 0.0
    return pc.sum(hashed.cast("int64")).as_py() or 0, float(seconds), pc.sum(frames).as_py() or 0


def kept_counts(run: RunFolder) -> SetCounts:
    """The cleaned copy: the members and samples the last clean kept (see its markers)."""
    cleaned = run.cleaned
    samples = members = image_rows = unreadable = without_bytes = videos = frames = 0
    seconds = 0.0
    for marker in cleaned.done_markers():
        manifest = cleaned.manifest_file(marker["shard_id"])
        samples += marker_samples(marker, manifest, "samples_kept")
        members += marker["rows"]
        image_rows += marker.get("items_kept", marker["rows"])  # rows that are not other
        unreadable += marker.get("undecodable_kept", 0)
        without_bytes += marker.get("kept_without_bytes", 0)
        if storage.exists(run.frames_file(marker["shard_id"])):  # the shard held videos
            storage.fetch(manifest)
            found = manifest_videos(manifest)
            videos, seconds, frames = videos + found[0], seconds + found[1], frames + found[2]
    return SetCounts(
        samples=samples,
        members=members,
        images=image_rows - unreadable - without_bytes - videos,
        unreadable=unreadable,
        without_bytes=without_bytes,
        other_members=members - image_rows,
        videos=videos,
        video_seconds=seconds,
        video_frames=frames,
    )


@dataclass(frozen=True)
class RunCounts:
    """A run's counts: the data set as scanned, and the cleaned copy its last finished
    clean wrote (with which clean that was), if any."""

    scanned: SetCounts
    kept: SetCounts | None = None
    clean: dict[str, str] | None = None  # destination (name), finished, manifest_digest

    @property
    def removed_samples(self) -> int:
        return self.scanned.samples - self.kept.samples if self.kept else 0

    @property
    def removed_members(self) -> int:
        return self.scanned.members - self.kept.members if self.kept else 0

    def clean_text(self) -> str:
        """'kept 56 samples (112 members: ...), removed 4 samples (8 members)'."""
        if self.kept is None:
            return "not cleaned"
        kept = self.kept
        return (
            f"kept {plural(kept.samples, 'sample')} ({plural(kept.members, 'member')}: "
            f"{kept.kinds()}), removed {plural(self.removed_samples, 'sample')} "
            f"({plural(self.removed_members, 'member')})"
        )

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"scanned": self.scanned.to_dict(), "kept": None, "removed": None}
        if self.kept is not None:
            found["kept"] = self.kept.to_dict()
            found["removed"] = {"samples": self.removed_samples, "members": self.removed_members}
        found["clean"] = self.clean
        return found


def run_counts(run_dir: str | Path) -> RunCounts:
    """`RunCounts` from RUN's markers and clean record (the clean only once finished)."""
    run = RunFolder(Path(run_dir))
    scanned = scanned_counts(run)
    record = CleanRecord.read(run.path)
    if not record or not record.finished:
        return RunCounts(scanned)
    try:
        clean = clean_identity(run.path)
    except ClearsetError:
        return RunCounts(scanned)  # e.g. a scan whose accounting failed backs no copy
    return RunCounts(scanned, kept_counts(run), clean)


def manifest_digest(run: RunFolder) -> str:
    """SHA-256 over the run's shards and their manifest files' SHA-256: the digest a receipt
    names (see `clearset.runs.issue`)."""
    pairs = [[m["shard_id"], m["manifest_sha256"]] for m in run.done_markers()]
    return hashlib.sha256(canonical_json(pairs)).hexdigest()


def clean_identity(run_dir: Path) -> dict[str, str]:
    """Which cleaned copy a receipt covers: its name, finish time and manifest digest."""
    cleaned_manifest_files(run_dir)  # refuses a run never cleaned, or a clean unfinished
    record = CleanRecord.read(run_dir) or CleanRecord.of({})
    return {
        "destination": source_label(str(record.destination or "cleaned")),
        "finished": str(record.finished)[:19] + "Z",
        "manifest_digest": manifest_digest(RunFolder(Path(run_dir)).cleaned),
    }


__all__ = [
    "clean_identity",
    "manifest_digest",
    "RunCounts",
    "LeafCounts",
    "SetCounts",
    "kept_counts",
    "marker_samples",
    "plural",
    "run_counts",
    "scanned_counts",
    "statement_counts",
]
