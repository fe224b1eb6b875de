"""The scan stage: read one shard, hash it, write its manifest (and match and clean it).

`scan_task` is the unit of work every engine runs. It is a plain function of picklable
arguments, so the local process pool and a Ray cluster drive the same code. It writes
the shard's parquet and completion marker atomically, and does nothing at all for a
shard already done.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from clearset.atomic import TMP_PREFIX, atomic_path, write_json_atomic
from clearset.errors import InputError
from clearset.formats.base import ORIGINAL_SIZE, Item, ShardRef, Source, shard_fingerprint
from clearset.hashing import crypto_digests, hash_bytes
from clearset.hashing.decode import maybe_image
from clearset.hashing.item import STATUS_ERROR, STATUS_MISSING, STATUS_OK
from clearset.hashing.video import hash_video, sniff_video
from clearset.manifest import FRAMES_SCHEMA, STATUS_OTHER, UNREAD, ManifestWriter, row_account
from clearset.matching.matcher import Matcher
from clearset.progress import ProgressFn, report
from clearset.runfolder import RunFolder, file_sha256
from clearset.settings import MANIFEST_ROW_GROUP, MAX_MEMBER_BYTES
from clearset.stages.clean import CleanJob, clean_run_shard
from clearset.stages.match import MatchJob, worker_matcher, write_shard_matches

#: How many items a worker hashes between progress reports.
PROGRESS_EVERY = 32

#: Environment variable: how many threads of a worker hash items (decode, digests, the
#: PDQ kernel: the bulk of that work releases the GIL) while its main thread reads the
#: shard and writes the manifest. Unset or 1: no threads, the worker hashes in its main
#: thread (the default: a worker per core is the engines' default, and handing items to
#: threads then only costs CPU). 2 or more fits a worker with cores to spare (one
#: worker on a machine, or fewer workers than cores): the rows come out in the same
#: order and the manifest is byte for byte the same.
HASH_THREADS_ENV = "CLEARSET_HASH_THREADS"
#: Items handed to a hashing thread at a time (fewer hand-offs: 32 rather than 8 took
#: ~6 % off the CPU and the wall time of a 2-thread worker at 256 px), or fewer when they
#: hold HASH_BATCH_BYTES; and batches in flight per thread: at most threads x
#: HASH_BATCHES_PER_THREAD batches are held.
HASH_BATCH = 32
HASH_BATCH_BYTES = 8 * 1024 * 1024
HASH_BATCHES_PER_THREAD = 2
#: Without hashing threads, items are read this many at a time (or until they hold
#: READ_AHEAD_BYTES), then hashed one after another, then handed on: reading the tar,
#: decoding and writing rows each run back to back instead of taking turns per sample,
#: which keeps each one's code and data in the core's caches (a same-run A/B in one
#: process, docs/benchmarks.md "Fifth pass": ~4-6 % less CPU a sample at 256 px, ~3 %
#: at 512 px).
READ_AHEAD = 64
READ_AHEAD_BYTES = 32 * 1024 * 1024


def hash_threads() -> int:
    """The hashing threads a worker uses (`HASH_THREADS_ENV`); 1 means none besides its
    main thread. A value that is not a positive integer is an error a user can act on."""
    value = os.environ.get(HASH_THREADS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{HASH_THREADS_ENV}={value!r}: expected a positive whole number")
    return int(value)


def manifest_rows(
    items: Iterable[Item], settings: ScanSettings, threads: int = 1
) -> Iterator[dict[str, Any]]:
    """`manifest_row` of each item, in the items' order. Without threads, in batches of
    READ_AHEAD items (read, then hashed, then handed on). With `threads` > 1 the rows are
    made by that many threads while this one goes on reading items: Pillow's decoders,
    hashlib and the compiled PDQ kernel release the GIL, so reading a tar, decoding and
    hashing overlap. Memory stays bounded: at most `threads` x HASH_BATCHES_PER_THREAD
    batches of HASH_BATCH items (or HASH_BATCH_BYTES) are read ahead."""

    def rows_of(batch: list[Item]) -> list[dict[str, Any]]:
        return [manifest_row(item, settings) for item in batch]

    if threads <= 1:
        for batch in _batches(items, READ_AHEAD, READ_AHEAD_BYTES):
            yield from rows_of(batch)
        return
    pending: deque[Future[list[dict[str, Any]]]] = deque()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="clearset-hash")
    try:
        for batch in _batches(items, HASH_BATCH, HASH_BATCH_BYTES):
            pending.append(pool.submit(rows_of, batch))
            while len(pending) >= threads * HASH_BATCHES_PER_THREAD:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        # An error (or a consumer that stops early): drop what has not started, wait for
        # what has, so that no thread outlives the shard.
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Iterable[Item], count: int, nbytes: int) -> Iterator[list[Item]]:
    """`items` in order, in lists of `count`, or fewer once they hold `nbytes` (stored and
    unpacked bytes; the item that reaches it is the last of its list)."""
    batch: list[Item] = []
    held = 0
    for item in items:
        batch.append(item)
        held += len(item.data or b"") + len(item.image_data or b"")
        if len(batch) >= count or held >= nbytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class ScanSettings:
    """Everything that changes what a scan writes. Recorded in run.json."""

    exact_pdq: bool = False
    trim_borders: bool = True
    dihedral: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShardSummary:
    shard_id: str
    shard: str
    rows: int = 0  # members
    samples: int = 0  # distinct keys
    bytes: int = 0
    skipped: bool = False
    status: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    # Rows by how they count in the scan's accounting (see `row_account`), by reason.
    account: dict[str, dict[str, int]] = field(default_factory=dict)
    matches: dict[str, int] | None = None  # match rows per list digest, when matched
    # Rows by status, then by reason's first word ("" for none): the scan's summary table,
    # read from the markers rather than from every shard's parquet.
    by_status: dict[str, dict[str, int]] = field(default_factory=dict)
    # Hashed videos among the ok rows: how many, their seconds and hashed frames.
    videos: int = 0
    video_seconds: float = 0.0
    video_frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def manifest_row(item: Item, settings: ScanSettings) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": item.key,
        "shard": item.shard,
        "position": item.position,
        "member": item.member,
        "members": list(item.members),
        "url": item.url,
        "upstream_sha256": item.upstream_sha256,
        "upstream_md5": item.upstream_md5,
        "upstream_status": item.upstream_status,
        "reason": item.note,
    }
    if "fetch" in item.extra:
        # What the server answered (`scan --fetch`); the bytes are only in `item.data`.
        row.update(item.extra["fetch"])
    if item.streamed is not None:
        big = item.streamed
        row.update(
            size=big.size,
            **big.digests,
            status=STATUS_ERROR if item.expect_image else STATUS_OTHER,
            reason=f"too_large: {big.size} bytes, over the {MAX_MEMBER_BYTES}-byte cap",
        )
        return row
    if item.data is None:
        row.update(status=item.status or STATUS_MISSING, reason=item.missing_reason)
        return row
    picture = item.image_data if item.image_data is not None else item.data
    if sniff_video(picture) is not None:
        return _video_row(row, item, picture)
    if picture and not item.expect_image and not maybe_image(picture):
        # A caption, a .json, a .cls that no image plugin takes: the row `hash_bytes` and
        # the branch below would give it ("not_an_image", accounted as other), without
        # its result object and raised failure (~2/3 of such a member's hashing time).
        row.update(
            size=len(item.data),
            **crypto_digests(item.data),
            **_NO_PICTURE,
            status=STATUS_OTHER,
            reason=NOT_AN_IMAGE,
        )
        return row
    hashes = hash_bytes(
        picture,
        exact_pdq=settings.exact_pdq,
        trim_borders=settings.trim_borders,
        dihedral=settings.dihedral,
        original_size=item.extra.get(ORIGINAL_SIZE),
    )
    if item.image_data is not None:
        # A compressed member: the picture is decoded from its content, but the hashes
        # that name it (and that a cleaned copy holds) are those of the stored bytes.
        hashes.digests = crypto_digests(item.data)
        hashes.size = len(item.data)
    status, reason = hashes.status, hashes.reason
    if status == STATUS_ERROR and not item.expect_image and str(reason).split(":")[0] in NOT_IMAGE:
        # A caption, a .json, a .cls: hashed and accounted for, not an image.
        status, reason = STATUS_OTHER, str(reason).split(":")[0]
    row.update(
        size=hashes.size,
        **hashes.digests,
        pdq=hashes.pdq,
        pdq_quality=hashes.pdq_quality,
        pdq_trimmed=hashes.pdq_trimmed,
        pdq_trimmed_quality=hashes.pdq_trimmed_quality,
        width=hashes.width,
        height=hashes.height,
        format=hashes.format,
        status=status,
        reason=reason or item.note,
    )
    if settings.dihedral and status == STATUS_OK:
        row["pdq_dihedral"] = hashes.pdq_dihedral
    return row


#: Where `manifest_row` hands a video's frames to the shard's frame table (not a column).
FRAMES = "_frames"


def _video_row(row: dict[str, Any], item: Item, video: bytes) -> dict[str, Any]:
    """A video member's row (by content, whatever its name): its byte digests, metadata
    and vPDQ frames (under FRAMES). A file with no video stream (audio only) is `other`."""
    hashes = hash_video(video)
    if item.image_data is not None:
        hashes.digests, hashes.size = crypto_digests(item.data or b""), len(item.data or b"")
    status = hashes.status
    if str(hashes.reason).startswith("no_video_stream"):
        status = STATUS_OTHER
    row.update(
        size=hashes.size,
        **hashes.digests,
        width=hashes.width,
        height=hashes.height,
        format=hashes.container,
        status=status,
        reason=hashes.reason or item.note,
        duration_s=hashes.duration_s,
        frame_rate=hashes.frame_rate,
        codec=hashes.codec,
        rotation=hashes.rotation,
        video_frames=len(hashes.frames) if status == STATUS_OK else None,
    )
    row[FRAMES] = [
        {
            "key": item.key,
            "shard": item.shard,
            "position": item.position,
            "member": item.member,
            "sha256": hashes.digests.get("sha256"),
            "frame_number": frame.frame_number,
            "timestamp": frame.timestamp,
            "pdq": frame.pdq,
            "quality": frame.quality,
        }
        for frame in hashes.frames
    ]
    return row


#: Decode failures that mean "these bytes are no image at all", not "a broken image".
NOT_AN_IMAGE = "not_an_image"
NOT_IMAGE = frozenset({NOT_AN_IMAGE, "empty"})
#: The picture columns of a member that holds none.
_NO_PICTURE: dict[str, None] = dict.fromkeys(
    ("pdq", "pdq_quality", "pdq_trimmed", "pdq_trimmed_quality", "width", "height", "format")
)


def scan_task(
    source: Source,
    shard: ShardRef,
    run_dir: str,
    settings: ScanSettings,
    job: MatchJob | None = None,
    clean: CleanJob | None = None,
) -> ShardSummary:
    """One shard of a scan, as an engine runs it: the lists are loaded once per worker,
    progress goes to whoever the engine listens to, and what an earlier try of this
    shard left under temporary names (its worker was killed) is removed first."""
    run = RunFolder(Path(run_dir))
    sweep_shard_tmp(run, shard.id)
    matcher = worker_matcher(job)
    return scan_shard(source, shard, run.path, settings, report, matcher, clean)


def sweep_shard_tmp(run: RunFolder, shard_id: str) -> None:
    """Remove temporary files an earlier try of this one shard left in the run folder.

    Only this shard's: other shards' writers may be at work beside it (other workers,
    other ranks of an array job writing into the same folder)."""
    targets = (
        run.manifest_file(shard_id),
        run.matches_file(shard_id),
        run.frames_file(shard_id),
        run.done_file(shard_id),
    )
    for target in targets:
        if not target.parent.is_dir():
            continue
        for leftover in target.parent.iterdir():
            writer, _, name = leftover.name.removeprefix(TMP_PREFIX).partition("-")
            if leftover.name.startswith(TMP_PREFIX) and writer.isdigit() and name == target.name:
                leftover.unlink(missing_ok=True)


def scan_shard(
    source: Source,
    shard: ShardRef,
    run_dir: str | Path,
    settings: ScanSettings,
    progress: ProgressFn | None = None,
    matcher: Matcher | None = None,
    clean: CleanJob | None = None,
) -> ShardSummary:
    """Hash every item of `shard` into the run's manifest, and match it against the
    matcher's lists when there is one. Skips a shard already done.

    With `clean`, the shard is then written to the clean destination without its
    matched keys, right away while its files are still in the page cache (a shard
    scanned earlier but not yet cleaned is cleaned now)."""
    run = RunFolder(Path(run_dir))
    if run.is_done(shard.id):
        if clean is not None:
            clean_run_shard(source, shard, run.path, clean)
        return ShardSummary(shard_id=shard.id, shard=shard.name, skipped=True)
    fingerprint = shard_fingerprint(shard)
    if clean is None or is_local(shard.path) or shard.files:
        return _scan_shard(source, shard, run, settings, progress, matcher, clean, fingerprint)
    # Hashing and cleaning both read the shard: from object storage, fetch it once.
    with spooled(shard, run.path) as local:
        return _scan_shard(source, local, run, settings, progress, matcher, clean, fingerprint)


def _scan_shard(
    source: Source,
    shard: ShardRef,
    run: RunFolder,
    settings: ScanSettings,
    progress: ProgressFn | None,
    matcher: Matcher | None,
    clean: CleanJob | None,
    fingerprint: dict[str, Any],
) -> ShardSummary:
    summary = ShardSummary(shard_id=shard.id, shard=shard.name)
    status: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    account: dict[str, Counter[str]] = {}
    by_status: dict[str, Counter[str]] = {}
    read: dict[str, Any] = {}
    keys: set[str] = set()
    pending = [0, 0, 0]
    frames: list[dict[str, Any]] = []
    threads = hash_threads()
    target = run.manifest_file(shard.id)
    with atomic_path(target) as tmp:
        writer = ManifestWriter(tmp, MANIFEST_ROW_GROUP)
        try:
            for row in manifest_rows(source.read_shard(shard, read), settings, threads):
                frames.extend(row.pop(FRAMES, ()))
                writer.add(row)
                status[row["status"]] += 1
                if row.get("video_frames") is not None:
                    summary.videos += 1
                    summary.video_seconds += row.get("duration_s") or 0.0
                    summary.video_frames += row["video_frames"]
                keys.add(row["key"])
                why = (row.get("reason") or "").split(":", 1)[0]
                counted = row_account(row)
                # Get, then make: `setdefault(k, Counter())` would build a Counter a row.
                counts = account.get(counted)
                if counts is None:
                    counts = account[counted] = Counter()
                counts[why] += 1
                counts = by_status.get(row["status"])
                if counts is None:
                    counts = by_status[row["status"]] = Counter()
                counts[why] += 1
                if why:
                    reasons[why] += 1
                size = row.get("size") or 0
                summary.bytes += size
                pending[0] += 1
                pending[1] += counted == UNREAD
                pending[2] += size
                if progress is not None and pending[0] >= PROGRESS_EVERY:
                    progress(*pending)
                    pending = [0, 0, 0]
        except BaseException:
            writer.abort()
            raise
        writer.close()
        summary.rows = writer.count
    summary.samples = len(keys)
    write_frames(run, shard.id, frames)
    if progress is not None and pending[0]:
        progress(*pending)
    summary.status = dict(status)
    summary.reasons = dict(reasons)
    summary.account = {name: dict(counts) for name, counts in account.items()}
    summary.by_status = {name: dict(counts) for name, counts in by_status.items()}
    if matcher is not None:
        summary.matches = write_shard_matches(run, shard.id, matcher)
    marker = summary.to_dict()
    marker["manifest_sha256"] = file_sha256(target)
    marker["source_fingerprint"] = fingerprint
    # The whole shard file's SHA-256 as the scan read it (tar and parquet shards):
    # clean copies a file only when it still has exactly these bytes.
    marker["source_file"] = read or None
    write_json_atomic(run.done_file(shard.id), marker)
    if clean is not None:
        # After the scan marker: a failed clean costs a re-clean, never a re-hash. The
        # bytes were read a moment ago (or spooled), so no need to check them again.
        clean_run_shard(source, shard, run.path, clean, check_source=False)
    return summary


def write_frames(run: RunFolder, shard_id: str, frames: list[dict[str, Any]]) -> None:
    """RUN/frames/<shard>.parquet, atomically, before the shard's marker: its videos'
    frames. A shard without videos has none (and no file left from an earlier try)."""
    target = run.frames_file(shard_id)
    if not frames:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        pq.write_table(pa.Table.from_pylist(frames, schema=FRAMES_SCHEMA), tmp, compression="zstd")


def is_local(url: str) -> bool:
    """Whether a shard's URL is on local disk (re-reading it costs no network)."""
    protocol = fsspec.core.split_protocol(url)[0]
    return protocol in (None, "file", "local")


@contextmanager
def spooled(shard: ShardRef, run_dir: Path) -> Iterator[ShardRef]:
    """A local copy of a remote shard file and its img2dataset side files, removed after."""
    folder = run_dir / f".tmp-spool-{os.getpid()}-{shard.id}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        base = shard.path.rsplit("/", 1)[0]
        name = shard.path.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        for sibling in (name, f"{stem}.parquet", f"{stem}_stats.json"):
            fs, path = fsspec.core.url_to_fs(f"{base}/{sibling}")
            if sibling == name or (sibling != name and fs.exists(path)):
                fs.get_file(path, str(folder / sibling))
        yield replace(shard, path=(folder / name).as_uri())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
