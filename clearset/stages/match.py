"""The match stage: which lists, loaded once per worker; re-matching one scanned shard."""

from __future__ import annotations

import contextlib
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from clearset.atomic import atomic_path
from clearset.matching.matcher import MATCH_SCHEMA, ListSpec, Matcher, MatchSettings
from clearset.matching.review import Review, ReviewedMatcher
from clearset.matching.shared import (
    SHARED_FOLDER_PREFIX,
    IndexArrays,
    MemoryIndex,
    index_arrays,
    matcher_key,
    memory_index_possible,
    open_matcher,
    save_matcher_in_memory,
    shared_matcher,
)
from clearset.runfolder import RunFolder

_worker_matcher: tuple[MatchJob, Matcher] | None = None


#: In a run folder while a scan or match runs on Ray (whose workers may be on other
#: machines) or where memory files are missing (not Linux): the lists' built index, which
#: every worker maps read-only (the page cache holds it once per machine). It holds the
#: lists' entries, so it is owner-only and removed when the command ends (see
#: `drop_shared_index`), or, after a kill, by the next command that opens the run.
SHARED_INDEX_DIR = ".list-index"

#: The index each command (run folder, rank) holds in memory files until it ends.
_held: dict[tuple[str, str | None], MemoryIndex] = {}


class Carried(Protocol):
    """A value an engine carries to its workers on every node (`RayEngine.ship`)."""

    def get(self) -> Any: ...


@dataclass(frozen=True)
class MatchJob:
    """Which lists to match and how: small, picklable, loaded where it is used.

    With `index` (set by `share`), workers map the index the driver built instead of
    loading the lists and building it again each."""

    lists: tuple[ListSpec, ...]
    settings: MatchSettings
    #: A folder, (file name, /proc path) pairs of memory files (see `share`), or the
    #: index's arrays carried by the engine to every node (see `shipped`).
    index: str | tuple[tuple[str, str], ...] | Carried | None = None
    #: The allow list and flood threshold (`clearset.matching.review`).
    review: Review = Review()

    def matcher(self) -> Matcher:
        if self.index is not None and not isinstance(self.index, (str, tuple)):
            arrays = self.index.get()
            assert isinstance(arrays, IndexArrays)
            return ReviewedMatcher(open_matcher(arrays), self.review)
        if isinstance(self.index, tuple):
            return ReviewedMatcher(open_matcher(dict(self.index)), self.review)
        if self.index is not None:
            return ReviewedMatcher(open_matcher(Path(self.index)), self.review)
        return ReviewedMatcher(Matcher.from_specs(self.lists, self.settings), self.review)

    def share(
        self,
        run_dir: Path,
        built: Matcher,
        owner: str | None = None,
        *,
        same_machine: bool = False,
    ) -> tuple[MatchJob, Matcher]:
        """Build the lists' index (`built` from this job) once for every worker, and
        return the job that maps it, with the mapped matcher for the driver's own use
        (drop `built`). Release it with `drop_shared_index` when the command ends.

        With `same_machine` (every worker is a process of this machine), the index is
        built into memory files that no disk holds and the kernel frees when the last
        process using them exits, kill -9 included. Otherwise it is saved in the run
        folder for workers anywhere to map, owner-only. An `owner` (a rank of an array
        job) keeps a copy of its own, which it removes when it ends without pulling the
        index from under ranks still at work."""
        if same_machine and memory_index_possible():
            try:
                index = save_matcher_in_memory(built)
            except OSError:
                pass  # too many open files, no memory files after all: a folder, then
            else:
                drop_shared_index(run_dir, owner)
                _held[(str(run_dir), owner)] = index
                job = replace(self, index=index.files)
                return job, job.matcher()
        root = shared_index_root(run_dir, owner)
        if not owner:
            root.mkdir(mode=0o700, exist_ok=True)
        else:
            root.parent.mkdir(mode=0o700, exist_ok=True)
        mapped = ReviewedMatcher(shared_matcher(built, root), self.review)
        folder = root / f"{SHARED_FOLDER_PREFIX}{matcher_key(mapped)}"
        return replace(self, index=str(folder)), mapped


def shipped(job: MatchJob, engine: Any) -> MatchJob:
    """`job` (its index in a folder on this machine, from `share`) with its index carried
    by `engine` to its workers on every node instead, where the engine can (Ray: one
    copy per node in its object store, which the node's workers read). For outputs on an
    object store: no path but the bucket is shared, and the index never goes there."""
    ship = getattr(engine, "ship", None)
    if ship is None or not isinstance(job.index, str):
        return job
    return replace(job, index=ship(index_arrays(Path(job.index))))


def shared_index_root(run_dir: Path, owner: str | None = None) -> Path:
    return run_dir / SHARED_INDEX_DIR / owner if owner else run_dir / SHARED_INDEX_DIR


def drop_shared_index(run_dir: Path, owner: str | None = None) -> None:
    """Release the lists' index of this run (only `owner`'s copy, when given): no copy of
    a list outlives the command (workers still mapping it keep their pages until they
    exit). Memory files are closed; a folder is removed from the run folder."""
    held = _held.pop((str(run_dir), owner), None)
    if held is not None:
        held.close()
    shutil.rmtree(shared_index_root(run_dir, owner), ignore_errors=True)
    if owner:
        with contextlib.suppress(OSError):  # not empty: another rank's copy is in use
            (run_dir / SHARED_INDEX_DIR).rmdir()


def worker_matcher(job: MatchJob | None) -> Matcher | None:
    """The job's matcher, built once per worker process, not once per shard."""
    global _worker_matcher
    if job is None:
        return None
    if _worker_matcher is None or _worker_matcher[0] != job:
        _worker_matcher = (job, job.matcher())
    return _worker_matcher[1]


def write_shard_matches(run: RunFolder, shard_id: str, matcher: Matcher) -> dict[str, int]:
    """Match one shard's manifest and write RUN/matches/<shard>.parquet atomically."""
    manifest = pq.read_table(run.manifest_file(shard_id))
    matches = matcher.match_table(manifest, shard_frames(run, shard_id))
    with atomic_path(run.matches_file(shard_id)) as tmp:
        pq.write_table(matches.cast(MATCH_SCHEMA), tmp, compression="zstd")
    return dict(Counter(matches.column("list_digest").to_pylist()))


def shard_frames(run: RunFolder, shard_id: str) -> pa.Table | None:
    """The shard's video frames (RUN/frames/<shard>.parquet), None when it has no video."""
    path = run.frames_file(shard_id)
    return pq.read_table(path) if path.exists() else None


def match_task(run_dir: str, shard_id: str, staging_dir: str, job: MatchJob) -> int:
    """Re-match one scanned shard of `run_dir` into the staging folder; its rows."""
    matcher = worker_matcher(job)
    assert matcher is not None
    manifest = pq.read_table(RunFolder(Path(run_dir)).manifest_file(shard_id))
    matches = matcher.match_table(manifest, shard_frames(RunFolder(Path(run_dir)), shard_id))
    with atomic_path(RunFolder(Path(staging_dir)).matches_file(shard_id)) as tmp:
        pq.write_table(matches.cast(MATCH_SCHEMA), tmp, compression="zstd")
    return manifest.num_rows
