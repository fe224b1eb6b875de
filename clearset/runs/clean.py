"""The clean and apply-removals commands' orchestrators: every shard of a source written
again without what goes, by `clean_run_shard` / `apply_shard` on an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from clearset.engines import Engine, Task
from clearset.errors import InputError, RunFolderError
from clearset.records import CleanRecord, RunInfo
from clearset.runfolder import RunFolder
from clearset.runlock import run_lock
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, run_or_fail
from clearset.sinks.atomic import sweep_tmp
from clearset.sinks.clean import (
    CleanJob,
    CleanOptions,
    CleanShardSummary,
    clean_run_shard,
    drop_state,
    finish_clean,
    keep_set,
    prepare_clean,
    prepare_destination,
    publish_cards,
    record_clean,
    refuse_overlap,
    sweep_dest_tmp,
)
from clearset.sinks.removals import (
    REASON_REMOVAL_LIST,
    _url_sha256,
    apply_shard,
    read_removals,
)
from clearset.sources import open_source, source_from_spec


def clean_run(
    run_dir: str | Path,
    to: str | Path,
    *,
    link: bool = False,
    drop_undecodable: bool = False,
    drop_empty_shards: bool = False,
    keep_list: str | None = None,
    keep_unfetched: bool = False,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Write the scanned source of `run_dir` to `to` without its matched items.

    Resumes an interrupted clean into the same destination; returns clean.json's counts.
    """
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same scan before cleaning"
        )
    # One writer at a time: a second clean of this run (into any copy) would rewrite
    # RUN/cleaned under the first, and a scan or match would change what it keeps.
    with run_lock(run.path, "clean", advice="wait for it, then run the clean again"):
        source = source_from_spec(info.source)
        shards = source.shards()
        job = CleanJob(
            dest=str(Path(to).resolve()),
            options=CleanOptions(
                link=link,
                drop_undecodable=drop_undecodable,
                drop_empty_shards=drop_empty_shards,
                keep_list=keep_list,
                keep_unfetched=keep_unfetched,
            ),
        )
        if prepare_clean(run, info, job, shards):
            record_clean(run)  # the same clean, finished before: nothing to write
            record = CleanRecord.read(run.path)
            return record.counts if record else {}
        engine = choose_engine(engine, workers, source.url, keep_list)
        tasks = [
            Task(shard.id, shard.name, clean_run_shard, (source, shard, str(run.path), job))
            for shard in shards
        ]
        try:
            run_shard_tasks(
                engine, tasks, show_progress=show_progress, console=console, retries=retries
            )
        except BaseException:
            # Workers remove their own temporary files when stopped, unless killed inside a
            # long call: this clean is the only writer of both places, so it sweeps them now.
            sweep_dest_tmp(Path(job.dest))
            cleaned = RunFolder(run.path / "cleaned")
            for folder in (cleaned.manifest_dir, cleaned.markers_dir, cleaned.path / "removals"):
                sweep_tmp(folder)
            raise
        # The copy is finished: the card joins it, and its bookkeeping leaves it (last).
        cards = publish_cards(Path(job.dest), info.source)
        counts = finish_clean(run, cards)
        record_clean(run)
        drop_state(Path(job.dest))
        return counts


def apply_removals(
    source_url: str,
    removals_path: str | None,
    to: str | Path,
    *,
    keep_list: str | None = None,
    kind: str | None = None,
    image_column: str | None = None,
    link: bool = False,
    drop_empty_shards: bool = False,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Write `source_url` to `to` without the items a removal list names (by URL or by
    the SHA-256 of the bytes), and/or keeping only what a keep list holds.

    For holders of another copy of a cleaned data set: no run folder and no list is
    needed, only the published removal list. A whole key goes when any member matches.
    """
    if removals_path is None and keep_list is None:
        raise InputError("apply-removals: give a removal list, --keep-list, or both")
    source = open_source(source_url, kind=kind, image_column=image_column)
    shards = source.shards()
    options = CleanOptions(link=link, drop_empty_shards=drop_empty_shards, keep_list=keep_list)
    removal_digest = None
    removal_rows = 0
    if removals_path is not None:
        # Fail early on something that is not a removal list, or one that cannot match.
        _, removal_rows = read_removals(removals_path)
        removal_digest = _url_sha256(removals_path)
    if keep_list is not None:
        keep_set(keep_list)
    dest = Path(to).resolve()
    refuse_overlap(source_url, shards, dest)
    identity = {
        "source": source.spec(),
        "removals": removals_path,
        "removals_sha256": removal_digest,
        "options": options.identity(),
    }
    prepare_destination(dest, identity)
    engine = choose_engine(engine, workers, source_url, removals_path, keep_list)
    tasks = [
        Task(shard.id, shard.name, apply_shard, (source, shard, str(dest), removals_path, options))
        for shard in shards
    ]
    done = run_shard_tasks(
        engine, tasks, label="apply", show_progress=show_progress, console=console, retries=retries
    )
    # No run folder remembers this copy: once it is whole, its card joins it and every
    # trace of the clean (local paths, markers) leaves it, so a finished copy is not redone.
    cards = publish_cards(dest, source.spec())
    drop_state(dest)
    # A shard with nothing to remove is copied whole, unread, so its keys are not
    # counted: "kept" covers the rewritten shards only, and says so.
    return {
        "shards": len(done),
        "keys_removed": sum(s.keys_removed for s in done),
        "members_removed": sum(s.members_removed for s in done),
        "keys_kept_in_rewritten_shards": sum(s.rows for s in done if not s.copied_whole),
        "shards_copied_whole": sum(s.copied_whole for s in done),
        "shards_skipped": sum(s.skipped for s in done),
        "card_files": cards,
        "removal_rows": removal_rows,
        "keys_removed_by_removal_list": sum(
            count
            for s in done
            for reason, count in s.removed_by_reason.items()
            if REASON_REMOVAL_LIST in reason.split(", ")
        ),
    }


def run_shard_tasks(
    engine: Engine,
    tasks: list[Task],
    *,
    label: str = "clean",
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> list[CleanShardSummary]:
    """Run clean tasks with a progress bar. A shard that fails every try keeps no marker
    (a re-run retries it); the first failure is raised once the others are done."""
    done = run_or_fail(
        engine,
        tasks,
        label=label,
        show_progress=show_progress,
        console=console,
        retries=retries,
        counts=lambda summary: (summary.rows, summary.keys_removed, 0),
        errors_label="keys removed",
    )
    return [done.done[task.id] for task in tasks]
