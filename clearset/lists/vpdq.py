"""vPDQ lists: the file shapes python-threatexchange, HMA and Meta's `vpdq` write.

A vPDQ hash is a video's list of frame features (PDQ, quality, timestamp). Lists of them
come as python-threatexchange and HMA write them: a signal string that is a JSON list of
``"pdq_hex,quality,seconds"`` strings (`vpdq_to_json`), one per listed video, in a
threatexchange text file (``vpdq <signal>`` or ``video_vpdq <signal>`` lines), a CSV/TSV
export with a signal type and a signal column, or JSON lines ``{"signal_type": "vpdq",
"signal": ...}``; and as Meta's `vpdq` tools write one video's hash file, one
``frame_number,quality,pdq_hex,seconds`` line per frame. Matching them is
`clearset.matching.vpdq`'s.
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

#: Frames below this PDQ quality are left out on both sides (Meta's VPDQ_QUALITY_THRESHOLD).
VPDQ_MIN_QUALITY = 50

#: Signal type names of vPDQ entries in threatexchange, HMA and CSV/JSON exports.
VPDQ_SIGNALS = frozenset({"vpdq", "video_vpdq", "hash_vpdq"})


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
    source: str = ""
    version: str | None = None

    @property
    def frames(self) -> int:
        return sum(len(video.pdq) for video in self.videos)

    def identity(self) -> dict[str, object]:
        """How run.json, reports and receipts name the list (like a hash list's
        `ListIdentity`): never by its contents. `entries` counts listed videos."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "hash_type": "vpdq",
            "entries": len(self.videos),
            "frames": self.frames,
            "source": self.source,
        }

    @property
    def digest(self) -> str:
        """SHA-256 over the listed videos' signals in a canonical form (each video's
        frames as `to_signal` writes them, one line each, sorted): the list's identity."""
        lines = sorted(
            to_signal(v.pdq, v.quality.tolist(), v.timestamp.tolist()) for v in self.videos
        )
        text = "clearset-vpdqlist-v1\n" + "".join(line + "\n" for line in lines)
        return hashlib.sha256(text.encode()).hexdigest()


def load_vpdq_list(
    path: str, text: str | None = None, name: str | None = None, version: str | None = None
) -> VpdqList:
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
                if kind in VPDQ_SIGNALS:
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
                if kind.strip() in VPDQ_SIGNALS:
                    signal = fields.get("signal") or fields.get("signal_str") or ""
                    names.append(fields.get("id") or str(number))
                    videos.append(parse_signal(signal))
        else:
            for number, line in enumerate(lines, 1):
                kind, _, signal = line.strip().partition(" ")
                if kind.lower() in VPDQ_SIGNALS:
                    names.append(str(number))
                    videos.append(parse_signal(signal.strip()))
    except (ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: not a vPDQ list ({exc})") from None
    if not videos:
        raise InputError(f"{path}: no vPDQ entry found")
    return VpdqList(name or path.rsplit("/", 1)[-1], tuple(names), tuple(videos), path, version)


def looks_like_vpdq_file(head: str) -> bool:
    """Whether a file starting with `head` is one video's vPDQ as a whole: Meta's hash
    file (``frame_number,quality,pdq_hex,seconds`` lines) or one bare signal (a JSON list
    of ``"pdq_hex,quality,seconds"`` strings)."""
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    parts = first.split(",")
    if len(parts) == 4 and parts[0].isdigit() and len(parts[2]) == 64:
        return all(c in "0123456789abcdefABCDEF" for c in parts[2])
    return first.startswith('["') and first[2:66].isalnum() and first[66:67] == ","
