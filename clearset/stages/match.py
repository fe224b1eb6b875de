"""The match stage: which lists, loaded once per worker; re-matching one scanned shard."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from clearset.matching.matcher import MATCH_SCHEMA, ListSpec, Matcher, MatchSettings
from clearset.runfolder import RunFolder
from clearset.sinks.atomic import atomic_path

_worker_matcher: tuple[MatchJob, Matcher] | None = None


@dataclass(frozen=True)
class MatchJob:
    """Which lists to match and how: small, picklable, loaded where it is used."""

    lists: tuple[ListSpec, ...]
    settings: MatchSettings

    def matcher(self) -> Matcher:
        return Matcher([hl for spec in self.lists for hl in spec.load()], self.settings)


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
    matches = matcher.match_table(manifest)
    with atomic_path(run.matches_file(shard_id)) as tmp:
        pq.write_table(matches.cast(MATCH_SCHEMA), tmp, compression="zstd")
    return dict(Counter(matches.column("list_digest").to_pylist()))


def match_task(run_dir: str, shard_id: str, staging_dir: str, job: MatchJob) -> int:
    """Re-match one scanned shard of `run_dir` into the staging folder; its rows."""
    matcher = worker_matcher(job)
    assert matcher is not None
    manifest = pq.read_table(RunFolder(Path(run_dir)).manifest_file(shard_id))
    matches = matcher.match_table(manifest)
    with atomic_path(RunFolder(Path(staging_dir)).matches_file(shard_id)) as tmp:
        pq.write_table(matches.cast(MATCH_SCHEMA), tmp, compression="zstd")
    return manifest.num_rows
