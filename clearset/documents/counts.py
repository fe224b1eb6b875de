"""How many samples, members, images and leaves: the one set of counts every command gives.

The words (docs/concepts.md, "Samples, members and leaves"):

- a **sample** (or **key**) is one training example: a webdataset key, a parquet row, a
  folder's files sharing a stem, a URL-list row. A clean keeps or removes whole samples.
- a **member** is one file of a sample (its .jpg, its .txt, its .json): one manifest row.
  A member that decoded as a picture is an **image**; the others are unreadable images,
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

from clearset.errors import ClearsetError
from clearset.manifest import STATUS_ERROR, STATUS_MISSING, STATUS_OK, STATUS_OTHER
from clearset.receipts.issue import source_label
from clearset.receipts.statement import canonical_json
from clearset.records import CleanRecord
from clearset.runfolder import RunFolder, cleaned_manifest_files


@dataclass(frozen=True)
class SetCounts:
    """One data set's (or cleaned copy's) samples and members, by kind of member."""

    samples: int = 0
    members: int = 0
    images: int = 0
    unreadable: int = 0  # members expected to be images that did not decode
    without_bytes: int = 0  # failed downloads, URL-only rows
    other_members: int = 0  # captions, metadata: hashed, not images

    @classmethod
    def from_status(cls, samples: int, status: Mapping[str, int]) -> SetCounts:
        """From the manifest rows by status (ok, error, missing, other)."""
        return cls(
            samples=samples,
            members=sum(status.values()),
            images=status.get(STATUS_OK, 0),
            unreadable=status.get(STATUS_ERROR, 0),
            without_bytes=status.get(STATUS_MISSING, 0),
            other_members=status.get(STATUS_OTHER, 0),
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def kinds(self) -> str:
        """'56 images, 56 other members' (a kind that holds none is left out)."""
        parts = [plural(self.images, "image")]
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


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else words or word + 's'}"


def marker_samples(marker: Mapping[str, Any], manifest: Path, field: str = "samples") -> int:
    """A marker's sample count; for a marker written before it was recorded, the number
    of distinct keys in its manifest shard."""
    recorded = marker.get(field)
    if isinstance(recorded, int):
        return recorded
    try:
        keys = pq.read_table(manifest, columns=["key"]).column("key")
    except (OSError, ValueError):
        return 0
    return len(pc.unique(keys))


def scanned_counts(run: RunFolder, markers: Iterable[Mapping[str, Any]] | None = None) -> SetCounts:
    """The data set as scanned: over the run's completed shards."""
    samples = members = 0
    status: dict[str, int] = {}
    for marker in run.done_markers() if markers is None else markers:
        samples += marker_samples(marker, run.manifest_file(marker["shard_id"]))
        for name, count in marker.get("status", {}).items():
            status[name] = status.get(name, 0) + count
        members += marker.get("rows", 0)
    return SetCounts.from_status(samples, status)


def kept_counts(run: RunFolder) -> SetCounts:
    """The cleaned copy: the members and samples the last clean kept (see its markers)."""
    cleaned = run.cleaned
    samples = members = image_rows = unreadable = without_bytes = 0
    for marker in cleaned.done_markers():
        samples += marker_samples(marker, cleaned.manifest_file(marker["shard_id"]), "samples_kept")
        members += marker["rows"]
        image_rows += marker.get("items_kept", marker["rows"])  # rows that are not other
        unreadable += marker.get("undecodable_kept", 0)
        without_bytes += marker.get("kept_without_bytes", 0)
    return SetCounts(
        samples=samples,
        members=members,
        images=image_rows - unreadable - without_bytes,
        unreadable=unreadable,
        without_bytes=without_bytes,
        other_members=members - image_rows,
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
