"""Commands that read a data set: demo, scan, match and hash."""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer
from rich.table import Table

from clearset.atomic import atomic_path
from clearset.cli.app import (
    AddressOpt,
    EngineOpt,
    ExactPdqOpt,
    ListOpt,
    MinQualityOpt,
    ProgressOpt,
    RetriesOpt,
    SkipInvalidOpt,
    ThresholdOpt,
    WorkersOpt,
    app,
    console,
    engine_for,
    local_folder,
    match_job,
    out,
    run_folder,
    show_progress,
)
from clearset.cli.clean import print_clean
from clearset.cli.documents import demo_documents
from clearset.cli.options import (
    DRY_RUN_SAMPLE,
    FETCH_PANEL,
    AllowListOpt,
    CleanToOptions,
    DryRunOptions,
    EngineOptions,
    FetchOptions,
    FloodThresholdOpt,
    MatchOptions,
    ScanOptions,
    SourceOptions,
    UrlListOptions,
    grouped,
    review_job,
)
from clearset.demo import DemoData, _edit, build_demo_data, encode_jpeg, watched_originals
from clearset.documents.counts import plural, run_counts, scanned_counts
from clearset.documents.report import write_report
from clearset.errors import InputError
from clearset.formats import (
    FetchSettings,
    absolute_url,
    detect,
    is_folder,
    open_source,
)
from clearset.formats.urls import dry_run
from clearset.hashing import types as hash_types
from clearset.hashing.files import check_regular_file, hash_file
from clearset.hashing.video import VideoHashes, hash_video, sniff_video
from clearset.lists.export import DEFAULT_LIST_TYPES, check_list_output, list_text, needs_type
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.matching.review import FLOOD_THRESHOLD, review_lines
from clearset.matching.vpdq import to_signal
from clearset.receipts import generate_keypair, load_public_key, proof_to_json, verify
from clearset.runfolder import RunFolder, accounting_line, read_cleaned_manifest
from clearset.runs import MatchJob, ScanSettings, run_match, run_scan
from clearset.runs.audit import AuditSettings, run_audit
from clearset.runs.issue import issue_receipt, prove_item, removed_hashes
from clearset.runs.scan import status_reasons
from clearset.runs.status import run_status, status_lines
from clearset.runs.tasks import DEFAULT_RETRIES
from clearset.settings import MAX_MEMBER_BYTES, PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY
from clearset.stages.clean import CleanJob, CleanOptions

#: FetchSettings field -> the scan option that sets it.
_FETCH_FLAGS = {
    "concurrency": "--concurrency",
    "per_host": "--per-host",
    "connect_timeout": "--connect-timeout",
    "read_timeout": "--read-timeout",
    "retries": "--fetch-retries",
    "backoff": "--backoff",
    "max_bytes": "--max-bytes",
    "user_agent": "--user-agent",
    "respect_noai": "--ignore-noai",
}


@app.command()
@grouped
def scan(
    source: Annotated[str, typer.Argument(help="Folder, tar shards, parquet, or fsspec URL.")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder to write (needed by every scan but a --dry-run).",
            callback=local_folder,
        ),
    ] = None,
    *,
    reading: SourceOptions,
    running: EngineOptions,
    hashing: ScanOptions,
    matching: MatchOptions,
    progress: ProgressOpt = None,
    cleaning: CleanToOptions,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Accept a scan that hashed no image, or could not read more than 5% of "
            "its items (default: such a scan fails, and clean and receipt refuse it).",
        ),
    ] = False,
    urls: UrlListOptions,
    fetching: FetchOptions,
    keep_unfetched: Annotated[
        bool,
        typer.Option(
            "--keep-unfetched",
            help="With --fetch --clean-to: keep rows whose image could not be fetched "
            "(default: they are removed, since nothing they serve was hashed).",
            rich_help_panel=FETCH_PANEL,
        ),
    ] = False,
    estimate: DryRunOptions,
) -> None:
    """Hash every item of SOURCE into the run folder --out and match it against --list lists.

    Re-running the same command resumes: shards already done are skipped.
    """
    fetch = urls.fetch or reading.kind == "fetch"
    fetch_settings = fetching.settings()
    if not fetch:
        # An option that would change nothing is a mistake to say, not to ignore.
        defaults = FetchSettings()
        given = [
            flag
            for flag, value in (
                ("--url-column", urls.url_column is not None),
                ("--shard-rows", urls.shard_rows is not None),
                *(
                    (_FETCH_FLAGS[f], getattr(fetch_settings, f) != getattr(defaults, f))
                    for f in _FETCH_FLAGS
                ),
                ("--keep-unfetched", keep_unfetched),
                ("--dry-run", estimate.dry_run),
                ("--sample", estimate.sample != DRY_RUN_SAMPLE),
            )
            if value
        ]
        if given:
            verb = "goes" if len(given) == 1 else "go"
            raise InputError(f"scan: {', '.join(given)} {verb} with --fetch (SOURCE as a URL list)")
    if estimate.dry_run:
        _dry_run(
            source,
            urls.url_column,
            urls.shard_rows,
            fetch_settings,
            estimate.sample,
            running.workers,
        )
        return
    if out_dir is None:
        # Not a required option to Typer: a dry run writes nothing, so it needs none.
        raise InputError("scan: give --out RUN, the run folder to write")
    settings = hashing.settings()
    job = matching.job()
    clean_to, drop_undecodable = cleaning.clean_to, cleaning.drop_undecodable
    if clean_to is not None and job is None and not drop_undecodable:
        raise InputError("scan: --clean-to needs at least one --list to remove matches of")
    clean = (
        CleanJob(
            str(clean_to.resolve()),
            CleanOptions(drop_undecodable=drop_undecodable, keep_unfetched=keep_unfetched),
        )
        if clean_to is not None
        else None
    )
    if reading.kind is None and not fetch and is_folder(source):
        # A folder can hold several layouts: say which one was chosen, and from what.
        survey = detect(absolute_url(source))
        said = f"reading {source} as {survey.kind}: {survey.describe()}".rstrip(": ")
        out.print(said, markup=False, highlight=False, soft_wrap=True)
    split = running.split()
    src = open_source(
        source,
        kind="fetch" if fetch else reading.kind,
        image_column=reading.image_column,
        base_dir=reading.base_dir,
        url_column=urls.url_column,
        shard_rows=urls.shard_rows,
        fetch=fetch_settings if fetch else None,
    )
    show = show_progress(progress)
    with engine_for(running.engine, running.address, running.workers) as runner:
        result = run_scan(
            src,
            out_dir,
            settings,
            engine=runner,
            show_progress=show,
            console=console,
            match=job,
            clean=clean,
            allow_missing=allow_missing,
            retries=running.retries,
            split=split,
        )
    if split is not None and not result.finished:
        said = (
            f"{split.label}: {result.shards_mine - result.shards_skipped:,} shards scanned now, "
            f"{result.shards_skipped:,} were done before; {result.counts['shards_done']:,} of "
            f"{result.shards_total:,} shards of the run are done; "
        )
        if result.finishing_elsewhere:
            said += (
                f"another rank is finishing the run (it holds {out_dir / '.finishing'}; if "
                "none is, remove that file and re-run this command)"
            )
        else:
            said += f"the last rank to end finishes the run (see clearset status {out_dir})"
        out.print(said)
        return
    _print_summary(out_dir, result.shards_skipped, result.seconds)
    out.print(accounting_line(result.accounting))
    if result.accounting["verdict"] == "accepted":
        console.print(f"scan: accepted with --allow-missing: {result.accounting['problem']}")
    if job is not None:
        _print_matches(result.counts["matches"], out_dir)
    else:
        # Hashing only is a use of its own; but a first scan without --list must not
        # read as "nothing matched".
        out.print(
            "no --list given: nothing was matched; to match this run against a hash list "
            f"(no image is read again): clearset match {shlex.quote(str(out_dir))} --list LIST",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if clean_to is not None:
        print_clean(result.counts["clean"], out_dir, clean_to)


def _dry_run(
    source: str,
    url_column: str | None,
    shard_rows: int | None,
    settings: Any,
    sample: int,
    workers: int | None,
) -> None:
    """`scan --fetch --dry-run`: hosts, and the time a sample took, scaled up."""
    import os

    src = open_source(
        source, kind="fetch", url_column=url_column, shard_rows=shard_rows, fetch=settings
    )
    found = dry_run(src, sample)  # type: ignore[arg-type]
    hosts = found.hosts
    out.print(
        f"{found.urls:,} URLs on {len(hosts):,} hosts"
        + (f"; {found.rows_without_url:,} rows without a URL" if found.rows_without_url else "")
    )
    for host, count in hosts.most_common(10):
        out.print(f"  {count:>12,}  {count / max(1, found.urls):6.1%}  {host}", markup=False)
    if len(hosts) > 10:
        rest = found.urls - sum(c for _, c in hosts.most_common(10))
        out.print(
            f"  {rest:>12,}  {rest / max(1, found.urls):6.1%}  ({len(hosts) - 10:,} other hosts)"
        )
    if not found.sampled:
        return
    rate = found.sampled / found.sample_seconds if found.sample_seconds else 0.0
    out.print(
        f"sample: {found.sampled:,} URLs fetched and hashed in {found.sample_seconds:.2f} s "
        f"({rate:,.1f}/s in one worker); {found.sample_ok:,} fetched"
        + "".join(f", {n:,} {why}" for why, n in found.sample_reasons.most_common()),
        markup=False,
    )
    procs = workers or os.cpu_count() or 1
    estimate = found.estimate_seconds(procs)
    if estimate is not None:
        out.print(
            f"estimate: {_duration(estimate)} for {found.urls:,} URLs with {procs} workers "
            "(from a small sample: the per-host limit and the hosts' speed change it)"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def match(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder made by `clearset scan`.", callback=run_folder)
    ],
    lists: ListOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    threshold: ThresholdOpt = PDQ_MATCH_THRESHOLD,
    min_quality: MinQualityOpt = PDQ_MIN_QUALITY,
    allow_list: AllowListOpt = None,
    flood_threshold: FloodThresholdOpt = FLOOD_THRESHOLD,
    workers: WorkersOpt = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    retries: RetriesOpt = DEFAULT_RETRIES,
    progress: ProgressOpt = None,
) -> None:
    """Match an existing run's manifest against new or updated lists (no image is read).

    The run's earlier matches are kept in RUN/history/match-N/.
    """
    job = review_job(
        match_job(lists, skip_invalid, threshold, min_quality), allow_list, flood_threshold
    )
    if job is None:
        raise InputError("match: give at least one --list")
    show = show_progress(progress)
    with engine_for(engine, address, workers) as runner:
        summary = run_match(
            run_dir, job, engine=runner, show_progress=show, console=console, retries=retries
        )
    _print_matches(summary, run_dir)
    replaced = RunFolder(run_dir).read_history()[-1].get("replaced")
    if replaced:
        out.print(f"the matches this replaced are kept in {run_dir / replaced}")


def _print_matches(summary: dict, run_dir: Path) -> None:
    table = Table(title="matches")
    table.add_column("list")
    table.add_column("type")
    table.add_column("matched samples", justify="right")
    for entry in summary["per_list"]:
        table.add_row(entry["name"], entry["hash_type"], f"{entry.get('samples', 0):,}")
    out.print(table)
    out.print(f"{matched_items_note(summary, run_dir)}; rows: {run_dir / 'matches.parquet'}")
    for line in review_lines(summary):
        said = console if line.startswith("warning:") else out
        said.print(line, markup=False, highlight=False, soft_wrap=True)


def matched_items_note(summary: dict, run_dir: Path) -> str:
    """ "N samples matched", saying why the table's rows add up to more than N."""
    text = f"{plural(summary['items'], 'sample')} matched"
    if summary["rows"] <= summary["items"]:
        return text
    table = pq.read_table(run_dir / "matches.parquet", columns=["shard", "key", "list_digest"])
    lists_per_item: dict[tuple[str, str], set[str]] = {}
    for shard, key, digest in zip(
        *(table.column(c).to_pylist() for c in ("shard", "key", "list_digest")), strict=True
    ):
        lists_per_item.setdefault((shard, key), set()).add(digest)
    several = Counter(len(d) for d in lists_per_item.values() if len(d) > 1)
    why = [f"{plural(n, 'sample')} matched {lists} lists" for lists, n in sorted(several.items())]
    extra = summary["rows"] - sum(len(d) for d in lists_per_item.values())
    if extra:
        why.append(f"{extra:,} more row{'s' if extra != 1 else ''} for the same sample and list")
    return f"{text} ({summary['rows']:,} match rows: {'; '.join(why)})"


def _print_summary(run_dir: Path, skipped: int, seconds: float) -> None:
    # From the shards' completion markers, not their parquet files (10^5 shards).
    counts = status_reasons(RunFolder(run_dir))
    table = Table(title=f"scan of {run_dir}", show_lines=False)
    table.add_column("status")
    table.add_column("reason")
    table.add_column("members", justify="right")
    for (status, why), count in sorted(counts.items()):
        table.add_row(status, why, f"{count:,}")
    out.print(table)
    scanned = scanned_counts(RunFolder(run_dir))
    note = f" ({skipped} shards already done)" if skipped else ""
    out.print(f"{scanned.text()} in {seconds:.1f}s{note}; manifest: {run_dir / 'manifest'}")


@app.command("hash")
def hash_files(
    files: Annotated[list[Path], typer.Argument(help="Image files to hash.")],
    exact_pdq: ExactPdqOpt = False,
    as_list: Annotated[
        str | None,
        typer.Option(
            "--as-list",
            metavar="FORMAT",
            help="Write a hash list that --list reads instead of one line per file: "
            "threatexchange (`pdq HEX` lines), csv (a header naming a column per type) or "
            "text (one hash a line, one --type; a 64-hex type loads with ,type=T).",
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="With --as-list: a hash type to write "
            f"({', '.join(t.name for t in hash_types.file_types())}); repeat "
            "for several (default: pdq and md5).",
        ),
    ] = None,
    list_out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="With --as-list: write the list to this file (whole or not at all).",
            callback=local_folder,
        ),
    ] = None,
) -> None:
    """Print each file's hashes on one line, or write them as a hash list (--as-list).

    One line per file gives PDQ hex as threatexchange lists use it. With --as-list the
    output is a list that --list reads: `clearset hash --as-list threatexchange *.jpg >
    list.txt`, then `clearset scan SRC --out RUN --list list.txt`.

    Only regular files are read (a FIFO, device, folder or socket is refused before any
    file is hashed); a file over the scan's size cap is hashed while streaming, not decoded.
    """
    if as_list is None and (types or list_out is not None):
        raise InputError("hash: --type and --out go with --as-list FORMAT")
    wanted = tuple(types or DEFAULT_LIST_TYPES)
    if as_list is not None:
        if types is None and as_list == "text":
            wanted = ("pdq",)
        check_list_output(as_list, wanted)
    for path in files:  # every path before any output: a list is whole or not written
        check_regular_file(path)
    hashed = []
    video_lines: list[str] = []
    for path in files:
        if as_list is None and print_video(path):
            continue
        hashes = hash_file(path, exact_pdq=exact_pdq)
        if as_list is not None:
            hashed.append(hashes)
            # A video's vPDQ goes in a threatexchange list as python-threatexchange does.
            video = _video_of(path) if as_list == "threatexchange" and "pdq" in wanted else None
            if video is not None and video.frames:
                video_lines.append(f"vpdq {_signal(video)}\n")
            elif "pdq" in wanted and hashes.pdq is None:
                why = (hashes.reason or hashes.status).split(":", 1)[0]
                console.print(f"{path}: no PDQ ({why}); its other hashes are listed",
                              markup=False, highlight=False)  # fmt: skip
            continue
        pdq = hashes.pdq.hex() if hashes.pdq else "-"
        quality = hashes.pdq_quality if hashes.pdq_quality is not None else "-"
        line = (
            f"pdq={pdq} quality={quality} "
            + "".join(f"{name}={digest.hex()} " for name, digest in hashes.digests.items())
            + f"status={hashes.status}"
        )
        if hashes.reason:
            line += f" reason={hashes.reason.split(':', 1)[0]}"
        print(f"{line} {path}")
    if as_list is None:
        return
    text, entries = list_text(hashed, as_list, wanted)
    video_lines = list(dict.fromkeys(video_lines))
    text, entries = text + "".join(video_lines), entries + len(video_lines)
    if not entries:
        raise InputError(f"hash: no {', '.join(wanted)} hash in any file given: no list written")
    if list_out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(list_out) as tmp:
            tmp.write_text(text)
    declare = needs_type(as_list, wanted)
    if declare is not None:
        where = list_out if list_out is not None else "LIST"
        console.print(f"a text list of 64-hex hashes loads with --list {where},type={declare}",
                      markup=False, highlight=False)  # fmt: skip


def _video_of(path: Path) -> VideoHashes | None:
    """The video's hashes, or None when the file is no video (by its content)."""
    with path.open("rb") as handle:
        if sniff_video(handle.read(64)) is None or path.stat().st_size > MAX_MEMBER_BYTES:
            return None  # a larger video is hashed while streaming, as any file
    return hash_video(path.read_bytes())


def _signal(video: VideoHashes) -> str:
    return to_signal([f.pdq for f in video.frames], [f.quality for f in video.frames],
                     [f.timestamp for f in video.frames])  # fmt: skip


def print_video(path: Path) -> bool:
    """A video file's line (`vpdq=SIGNAL`, the signal string threatexchange and HMA list,
    and its byte digests); False when the file is no video (by its content)."""
    video = _video_of(path)
    if video is None:
        return False
    signal = _signal(video)
    line = (
        f"vpdq={signal if video.frames else '-'} frames={len(video.frames)} "
        + "".join(f"{name}={digest.hex()} " for name, digest in video.digests.items())
        + f"status={video.status}"
    )
    if video.reason:
        line += f" reason={video.reason.split(':', 1)[0]}"
    print(f"{line} {path}")
    return True


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo data and runs.")
    ] = Path("clearset-demo"),
    workers: WorkersOpt = None,
) -> None:
    """Build a benign demo data set and watch list; scan, clean, report, receipt, audit it.

    Each step is printed as the `clearset` command that does the same by hand.
    """
    data = DemoData(out_dir / "data")
    if not (data.root / ".complete").exists():
        console.print(f"building the benign demo data set in {data.root}")
        build_demo_data(data.root)
        (data.root / ".complete").write_text("demo data complete\n")
    run_dir = out_dir / "run"
    cleaned = out_dir / "cleaned"
    _say("scan", str(data.webdataset), "--out", run_dir, "--list", data.pdq_list,
         "--list", data.md5_list, "--dihedral", "--clean-to", cleaned)  # fmt: skip
    out.print(
        "  (the demo turns on --dihedral, which also matches the 7 rotations and flips of "
        "each picture: one planted copy is a mirror image, so without it the same command "
        "finds 5 of the 6 planted copies)"
    )
    job = MatchJob((ListSpec(str(data.pdq_list)), ListSpec(str(data.md5_list))), MatchSettings())
    clean = CleanJob(str(cleaned.resolve()))
    result = run_scan(
        open_source(str(data.webdataset)),
        run_dir,
        ScanSettings(dihedral=True),
        workers=workers,
        console=console,
        show_progress=show_progress(None),
        match=job,
        clean=clean,
    )
    _print_summary(run_dir, result.shards_skipped, result.seconds)
    out.print(accounting_line(result.accounting))
    _print_matches(result.counts["matches"], run_dir)
    planted = data.planted()
    matches = pq.read_table(run_dir / "matches.parquet", columns=["key"])
    found = set(matches.column("key").to_pylist())
    missed = sorted(edit for key, edit in planted.items() if key not in found)
    out.print(
        f"planted copies of watched pictures: {len(planted)}; found: "
        f"{len(planted) - len(missed)}" + (f" (missed: {', '.join(missed)})" if missed else "")
    )
    out.print(f"cleaned copy: {cleaned}: {run_counts(run_dir).clean_text()}")
    _say("report", run_dir)
    _, html = write_report(run_dir)
    out.print(f"report: {html}")
    _demo_receipt(out_dir, run_dir)

    demo_documents(run_dir)
    _demo_audit(out_dir, run_dir, data, workers)


#: The demo's "generated" images: edited copies of training pictures, and unrelated ones.
DEMO_AUDIT_EDITS = ("reencode", "resize", "crop", "flip")
DEMO_AUDIT_UNRELATED = 3


def _demo_audit(out_dir: Path, run_dir: Path, data: Any, workers: int | None) -> None:
    """Audit a handful of stand-in "generated" images: benign edited copies of kept
    training pictures (what a memorising model would output) and unrelated pictures."""
    import io
    import shutil

    import numpy as np
    from PIL import Image

    generated, audit_dir = out_dir / "generated", out_dir / "audit"
    shutil.rmtree(generated, ignore_errors=True)
    shutil.rmtree(audit_dir, ignore_errors=True)  # the demo's own folder, made again
    generated.mkdir(parents=True)
    manifest = RunFolder(run_dir).read_manifest(columns=["key", "status", "pdq_quality"])
    matches = pq.read_table(run_dir / "matches.parquet", columns=["key"])
    matched = set(matches.column("key").to_pylist())  # removed: never "generated" from
    detailed = [
        row["key"]
        for row in manifest.to_pylist()
        if row["status"] == "ok"
        and (row["pdq_quality"] or 0) >= 80
        and row["key"] not in matched
        and (data.folder / f"{row['key']}.jpg").exists()
    ]
    rng = np.random.default_rng(17)
    for key, edit in zip(detailed[:: max(1, len(detailed) // 8)], DEMO_AUDIT_EDITS, strict=False):
        picture = Image.open(io.BytesIO((data.folder / f"{key}.jpg").read_bytes())).convert("RGB")
        (generated / f"copy-of-{key}-{edit}.jpg").write_bytes(_edit(picture, edit, rng))
    for number, picture in enumerate(watched_originals(seed=31, count=DEMO_AUDIT_UNRELATED)):
        (generated / f"unrelated-{number}.jpg").write_bytes(encode_jpeg(picture, 85))
    _say("audit", generated, "--run", run_dir, "--out", audit_dir, "--dihedral")
    result = run_audit(str(generated), run_dir, audit_dir, AuditSettings(dihedral=True),
                       workers=workers, console=console)  # fmt: skip
    found = result.summary["results"]["generated_with_copy"]
    searched = result.summary["generated"]["searched"]
    out.print(
        f"generated images with a training copy: {found} of {searched} (made: "
        f"{len(DEMO_AUDIT_EDITS)} edited copies of training pictures, {DEMO_AUDIT_UNRELATED} "
        f"unrelated pictures); page: {audit_dir / 'audit.html'}"
    )


def _say(*argv: object) -> None:
    """Print the command line that does by hand what the demo does next."""
    out.print("\n$ " + shlex.join(["clearset", *(str(a) for a in argv)]))


def _demo_receipt(out_dir: Path, run_dir: Path) -> None:
    """Sign a receipt, then prove and verify one kept and one removed item."""
    keys = out_dir / "keys"
    if not (keys / "clearset.key").exists():
        _say("keygen", keys)
        generate_keypair(keys)
    _say("receipt", run_dir, "--key", keys / "clearset.key", "--name", "clearset-demo")
    envelope = issue_receipt(run_dir, keys / "clearset.key", dataset_name="clearset-demo")
    pub = load_public_key(keys / "clearset.pub")
    kept = read_cleaned_manifest(run_dir, columns=["sha256"]).column("sha256")
    kept_hash = next(h for h in kept.to_pylist() if h is not None)
    removed = removed_hashes(run_dir)
    out.print(f"receipt: {run_dir / 'receipt.dsse.json'} (public key: {keys / 'clearset.pub'})")
    for label, sha256 in (("a kept item", kept_hash), ("a removed item", removed[0])):
        proof = prove_item(run_dir, sha256)
        path = out_dir / f"proof-{proof['type']}.json"
        _say("prove", run_dir, "--sha256", sha256.hex(), "--out", path)
        with atomic_path(path) as tmp:
            tmp.write_text(proof_to_json(proof))
        _say("verify", run_dir / "receipt.dsse.json", "--pubkey", keys / "clearset.pub",
             "--proof", path)  # fmt: skip
        verify(envelope, proof, pub)
        out.print(f"{label}: {proof['type']} proof verified ({path})")


@app.command()
def status(
    run_dir: Annotated[
        Path,
        typer.Argument(help="A run folder (a scan may still be writing it).", callback=run_folder),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Say where a scan stands: shards done, failed (and why), not done; what to re-run.

    Exits 0 when the run is finished, 1 when it is not.
    """
    found = run_status(run_dir)
    if as_json:
        print(json.dumps(found, indent=2, sort_keys=True))
    else:
        for line in status_lines(found):
            out.print(line)
    if not found["finished"]:
        raise typer.Exit(1)
