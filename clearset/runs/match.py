"""The match command's orchestrator: re-match a scanned run against (new) lists."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from clearset.atomic import write_json_atomic
from clearset.engines import Engine, Task
from clearset.errors import RunFolderError
from clearset.exchange.run import applied_answers, merge_answers
from clearset.matching.review import review_of
from clearset.records import RunInfo
from clearset.runfolder import RunFolder, lists_identity, utc_now
from clearset.runlock import run_lock
from clearset.runs.scan import gather_matches, matching_record
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, in_memory, run_or_fail
from clearset.stages.match import MatchJob, drop_shared_index, match_task


def run_match(
    run_dir: str | Path,
    match: MatchJob,
    *,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Match an existing run's manifest against (new) lists, reading no image.

    The new matches replace the old ones as a whole: they are written to a temporary
    folder which is swapped in when every shard is done. The old ones are kept: the
    per-shard files, matches.parquet and the lists' record move to
    RUN/history/match-<n>/, and RUN/history.jsonl gets a line naming both.
    """
    run = RunFolder(Path(run_dir))
    with run_lock(run.path, "match", advice="wait for it, then run the match again") as alone:
        if alone:
            drop_shared_index(run.path)  # what a killed command left: none other uses the run
        return _match(run, match, workers, engine, show_progress, console, retries)


def _match(
    run: RunFolder,
    match: MatchJob,
    workers: int | None,
    engine: Engine | None,
    show_progress: bool,
    console: Console | None,
    retries: int,
) -> dict[str, Any]:
    info = run.read_info()
    if not RunInfo.of(info).finished:
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same `clearset scan` first"
        )
    matcher = match.matcher()  # fail early on a bad list
    lists = [spec.path for spec in match.lists]
    engine = choose_engine(engine, workers, *lists)
    if not in_memory(*lists):
        # Every worker maps one built index instead of loading the lists again.
        same_machine = getattr(engine, "name", None) == "local"  # not Ray: workers anywhere
        match, matcher = match.share(run.path, matcher, same_machine=same_machine)
    staging = RunFolder(run.path / f".tmp-match-{os.getpid()}")
    shutil.rmtree(staging.path, ignore_errors=True)
    staging.matches_dir.mkdir(parents=True)
    markers = run.done_markers()
    tasks = [
        Task(
            m["shard_id"],
            m["shard"],
            match_task,
            (str(run.path), m["shard_id"], str(staging.path), match),
        )
        for m in markers
    ]
    try:
        run_or_fail(
            engine,
            tasks,
            label="match",
            show_progress=show_progress,
            console=console,
            retries=retries,
            counts=lambda rows: (rows, 0, 0),
            after="nothing was replaced",
        )
        previous = RunInfo.of(info).matching
        # The report made from the old matches goes with them: left in place it would
        # present them as the run's.
        replaced = run.archive(
            "match",
            [run.matches_dir, run.path / "matches.parquet"]
            + [run.path / name for name in ("report.json", "report.html")],
        )
        if replaced is not None:
            write_json_atomic(run.path / replaced / "matching.json", previous)
        os.replace(staging.matches_dir, run.matches_dir)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
        drop_shared_index(run.path)
    summary = gather_matches(run, matcher)
    info["settings"]["matching"] = matching_record(matcher)
    info.setdefault("counts", {})["matches"] = summary
    info["matched"] = utc_now()
    run.write_info(info)
    if applied_answers(run):  # a holder's answers combine with the new local matches
        merge_answers(run, review_of(matcher).allow)
        summary = run.read_info()["counts"]["matches"]
    run.record(
        "match",
        lists=lists_identity(info["settings"]["matching"]),
        replaced_lists=lists_identity(previous),
        matched_items=summary["items"],
        match_rows=summary["rows"],
        replaced=replaced,
    )
    return summary
