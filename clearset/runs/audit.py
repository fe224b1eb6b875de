"""The audit command's orchestrator: does a model reproduce items of its training set?

It scans the generated images (the same hashing code as any scan) into a run folder of
their own, indexes the smaller side (usually the generated images), streams the larger
one shard by shard through it as engine tasks (`clearset.stages.audit.audit_task`), and
gathers what they find into AUDIT/audit.parquet, AUDIT/audit.json and AUDIT/audit.html.
Everything is written in a temporary folder beside AUDIT and renamed into place at the
end: a failed audit leaves no partial output.

What an audit can and cannot show is said in `LIMITS`, which every output carries.
"""

from __future__ import annotations

import heapq
import os
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from clearset import __version__, storage
from clearset.atomic import write_json_atomic
from clearset.documents.audit_page import HTML_IMAGE_ROWS, render_audit_html, thumbnail
from clearset.documents.counts import manifest_digest
from clearset.engines import Engine, Task
from clearset.errors import ClearsetError, InputError, RunFolderError, VerificationError
from clearset.formats import open_source
from clearset.formats.base import Source
from clearset.hashing.item import STATUS_OK
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.matching.embeddings import (
    EMBEDDING_THRESHOLD,
    Vectors,
    read_vectors,
    similar_pairs,
)
from clearset.matching.matcher import frames_by_row
from clearset.matching.reference import check_threshold
from clearset.matching.vpdq import VPDQ_QUERY_MATCH_PERCENT, VpdqHash, VpdqIndex, VpdqList
from clearset.receipts.dsse import parse_envelope, receipt_digest
from clearset.receipts.issue import source_label
from clearset.records import RunInfo
from clearset.runfolder import RECEIPT_FILE, RunFolder, utc_now
from clearset.runs.scan import run_scan
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, run_or_fail
from clearset.settings import PDQ_MATCH_THRESHOLD
from clearset.stages.audit import (
    INDEX_HASHES,
    AuditJob,
    AuditPart,
    audit_task,
    read_side,
)
from clearset.stages.scan import ScanSettings

#: What a PDQ audit can and cannot show; in audit.json, on the page and in docs/guides/audit.md.
LIMITS = (
    "A PDQ match finds near-verbatim copies: re-encoded, resized or slightly cropped "
    "versions of a training image. It misses copies that are re-composed, strongly "
    'cropped or stylised. "No copy found" means none at these settings for these '
    "generated images, not that the model cannot reproduce its training data."
)
#: What the video part of an audit can and cannot show (every output with videos says it).
VIDEO_LIMITS = (
    "A generated video reproduces a training video by Meta's vPDQ rule: at least 80 % of "
    "its frames (one a second, quality 50 or more) within PDQ's distance of some frame of "
    "the training video. It finds re-encoded, resized, trimmed and lightly cropped copies "
    "of a training video; it misses copies that are re-composed, mirrored, strongly "
    "cropped, re-timed far from one frame a second or stylised, and a short copied "
    "passage inside a longer generated video (under 80 % of its frames) is reported only "
    "as a lower match percentage, not a reproduction."
)
AUDIT_VIDEOS_PARQUET = "audit-videos.parquet"
AUDIT_VIDEO_SCHEMA = pa.schema(
    [
        ("generated_key", pa.string()),
        ("generated_file", pa.string()),
        ("training_key", pa.string()),
        ("training_shard", pa.string()),
        ("training_member", pa.string()),
        ("query_match_percent", pa.float32()),  # of the generated video's frames
        ("target_match_percent", pa.float32()),  # of the training video's frames
        ("frames_matched", pa.int32()),
        ("distance", pa.int16()),  # closest pair of frames
        ("reproduces", pa.bool_()),  # by Meta's rule (query % >= 80)
    ]
)

#: The generated images' run folder inside AUDIT.
GENERATED_RUN = "generated-run"
AUDIT_PARQUET = "audit.parquet"
AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
EMBEDDINGS_PARQUET = "embeddings.parquet"
INDEX_DIR = ".audit-index"
INDEX_SIDES = ("auto", "generated", "training")

AUDIT_SCHEMA = pa.schema(
    [
        ("generated_file", pa.string()),  # the file or member the generated image came from
        ("generated_key", pa.string()),
        ("generated_shard", pa.string()),
        ("training_key", pa.string()),
        ("training_shard", pa.string()),
        ("training_position", pa.int64()),
        ("url", pa.string()),
        ("distance", pa.int16()),
        # The rotation/flip of the generated image that is this close (with --dihedral).
        ("rotation", pa.string()),
        ("within_threshold", pa.bool_()),
        # 1 for the nearest training item of this generated image, ... k (with --k).
        ("nearest_rank", pa.int16()),
    ]
)


class AuditError(ClearsetError):
    """Some shards could not be searched; nothing was written."""


@dataclass(frozen=True)
class AuditSettings:
    """Everything that changes what an audit finds. Recorded in audit.json."""

    threshold: int = PDQ_MATCH_THRESHOLD
    k: int = 0
    dihedral: bool = False
    # --embeddings TRAIN.parquet,GEN.parquet: vectors the user computed (see
    # `clearset.matching.embeddings`), compared apart from PDQ.
    embeddings: tuple[str, str] | None = None
    embedding_threshold: float = EMBEDDING_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["embeddings"], record["embedding_threshold"]  # in "embeddings" instead
        return record


@dataclass
class AuditResult:
    out: Path
    summary: dict[str, Any]
    table: pa.Table = field(repr=False)
    embeddings: pa.Table | None = field(default=None, repr=False)


def run_audit(
    generated: str,
    run_dir: str | Path,
    out: str | Path,
    settings: AuditSettings | None = None,
    *,
    workers: int | None = None,
    engine: Engine | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
    index: str = "auto",
) -> AuditResult:
    """Audit the images at `generated` (any source) against the training run `run_dir`,
    into the new folder `out`.

    `index` says which side is indexed, the other being streamed through it shard by
    shard: "auto" (the one with fewer rows), "generated" or "training" (for tests and
    benchmarks; the results are the same)."""
    if index not in INDEX_SIDES:
        raise InputError(f"index {index!r}: one of {', '.join(INDEX_SIDES)}")
    settings = settings or AuditSettings()
    check_threshold(settings.threshold)
    if settings.k < 0:
        raise InputError(f"--k {settings.k}: must be 0 (none) or more")
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same `clearset scan` first"
        )
    markers = run.done_markers()
    if not markers:
        raise RunFolderError(f"{run.path}: the manifest is empty (was it scanned?)")
    min_quality = info.min_quality
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not empty; give a new --out or remove it")
    target = out.resolve()
    if target == run.path.resolve() or run.path.resolve() in target.parents:
        raise InputError(f"{out}: lies in the run folder {run.path}; choose an --out outside it")
    receipt = _receipt_digest(run)
    vectors = None
    if settings.embeddings is not None:
        train_file, generated_file = settings.embeddings
        vectors = (
            read_vectors(train_file, "--embeddings training"),
            read_vectors(generated_file, "--embeddings generated"),
        )
        if vectors[0].vectors.shape[1] != vectors[1].vectors.shape[1]:
            raise InputError(
                f"--embeddings: training vectors have {vectors[0].vectors.shape[1]} dimensions, "
                f"generated {vectors[1].vectors.shape[1]}: they must come from one descriptor"
            )
    source = open_source(generated)
    engine = choose_engine(engine, workers, source.url)
    staging = target.parent / f".tmp-audit-{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = _audit(
            source, run, markers, staging, settings, min_quality, engine,
            show_progress, console, retries, index,
        )  # fmt: skip
        result.summary["training"]["manifest_digest"] = _manifest_digest(run)
        result.summary["training"]["receipt_digest"] = receipt
        # Places by their last part, as a receipt names them: the page is shared.
        result.summary["generated"]["source"] = source_label(source.url)
        if vectors is not None:
            result.embeddings = _embedding_stage(result, settings, *vectors)
        _write(staging, result, _thumbnails(source, result.table))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out = out
    return result


def _manifest_digest(run: RunFolder) -> str:
    return manifest_digest(run)


def _receipt_digest(run: RunFolder) -> str | None:
    """The digest of RUN's receipt, if it has one (not verified: `clearset verify` does)."""
    path = run.path / RECEIPT_FILE
    if not path.exists():
        return None
    try:
        return receipt_digest(parse_envelope(path.read_bytes(), str(path)))
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read the receipt ({exc.strerror or exc})") from None
    except VerificationError as exc:
        raise RunFolderError(f"{path}: not a readable receipt ({exc})") from None


def _audit(
    source: Source,
    run: RunFolder,
    markers: list[dict[str, Any]],
    staging: Path,
    settings: AuditSettings,
    min_quality: int,
    engine: Engine,
    show_progress: bool,
    console: Console | None,
    retries: int,
    index: str,
) -> AuditResult:
    generated_run = RunFolder(staging / GENERATED_RUN)
    # Hashed as the training run was (fast or exact PDQ, border trimming), so that the
    # two sides' hashes differ only where the pictures do.
    scanned = run.read_info().get("settings", {})
    hashing = ScanSettings(
        exact_pdq=bool(scanned.get("exact_pdq", False)),
        trim_borders=bool(scanned.get("trim_borders", True)),
        dihedral=settings.dihedral,
    )
    run_scan(
        source,
        generated_run.path,
        hashing,
        engine=engine,
        show_progress=show_progress,
        console=console,
        allow_missing=True,  # said below, in the generated side's own words
        retries=retries,
    )
    images = _hashed_images(generated_run)
    videos = _run_videos(generated_run)
    if not images and not videos:
        raise InputError(
            f"{source.url}: no images or videos to audit ({_rows(generated_run):,} files "
            "read, none a decodable image or video)"
        )
    generated_files = generated_run.manifest_files()
    sides = [read_side(f, min_quality, settings.dihedral) for f in generated_files]
    generated_ids = pa.concat_tables([ids for ids, _ in sides])
    turns = len(DIHEDRAL_NAMES) if settings.dihedral else 1
    generated_hashes = np.concatenate([h for _, h in sides]).reshape(-1, turns, 32)
    training_rows = sum(int(m.get("rows", 0)) for m in markers)
    if index == "auto":
        stream_training = training_rows >= len(generated_ids)
    else:
        stream_training = index == "generated"
    index_dir = staging / INDEX_DIR
    index_dir.mkdir()
    if stream_training:
        index_ids, index_hashes, index_turns = generated_ids, generated_hashes, turns
        stream_run, stream_markers = run, markers
    else:
        training = [
            read_side(run.manifest_file(m["shard_id"]), min_quality, False) for m in markers
        ]
        index_ids = pa.concat_tables([ids for ids, _ in training])
        index_hashes = np.concatenate([h for _, h in training])
        index_turns = 1
        stream_run, stream_markers = generated_run, generated_run.done_markers()
    np.save(index_dir / INDEX_HASHES, np.ascontiguousarray(index_hashes.reshape(-1, 32)))
    job = AuditJob(
        index_dir=str(index_dir),
        index_token=uuid.uuid4().hex,
        index_variants=index_turns,
        stream_is_training=stream_training,
        threshold=settings.threshold,
        min_quality=min_quality,
        k=settings.k,
        dihedral=settings.dihedral,
    )
    tasks = [
        Task(m["shard_id"], m["shard"], audit_task, (str(stream_run.path), m["shard_id"], job))
        for m in stream_markers
    ]
    gather = _Gather(index_ids, stream_training, settings)
    try:
        run_or_fail(
            engine,
            tasks,
            label="audit",
            show_progress=show_progress,
            console=console,
            retries=retries,
            counts=lambda part: (part.rows, 0, 0),
            on_done=lambda task, part: gather.add(part),
            error=AuditError,
            after="no audit was written",
        )
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    table = gather.table(settings.dihedral)
    searched_training = gather.searched if stream_training else len(index_ids)
    summary = _summary(
        table, settings, min_quality, stream_training,
        generated={"images": images, "searched": len(generated_ids), "rows": _rows(generated_run)},
        training={"run": source_label(storage.url_of(run.path)), "shards": len(markers),
                  "rows": training_rows, "searched": searched_training},
    )  # fmt: skip
    if videos:
        summary["videos"] = _audit_videos(videos, _run_videos(run), settings, staging)
    return AuditResult(staging, summary, table)


def _run_videos(run: RunFolder) -> list[tuple[dict[str, Any], VpdqHash]]:
    """Every hashed video of a run (its frame tables): (its manifest row's names, vPDQ)."""
    found = []
    for marker in run.done_markers():
        path = run.frames_file(marker["shard_id"])
        if not path.exists():
            continue
        frames = pq.read_table(path)
        manifest = pq.read_table(run.manifest_file(marker["shard_id"]))
        videos = frames_by_row(
            {name: manifest.column(name).to_pylist() for name in ("shard", "position", "member")},
            frames,
            manifest.num_rows,
        )
        keys = manifest.column("key").to_pylist()
        for row, video in sorted(videos.items()):
            names = {"key": keys[row], "shard": marker["shard"],
                     "member": manifest.column("member")[row].as_py()}  # fmt: skip
            found.append((names, video))
    return found


def _audit_videos(
    generated: list[tuple[dict[str, Any], VpdqHash]],
    training: list[tuple[dict[str, Any], VpdqHash]],
    settings: AuditSettings,
    staging: Path,
) -> dict[str, Any]:
    """Which training videos each generated video reproduces: the training videos' frames
    in one PDQ index, every generated video's frames searched in one batch (Meta's rule,
    `clearset.matching.vpdq`). Writes AUDIT/audit-videos.parquet; the summary's part."""
    rows: list[dict[str, Any]] = []
    if training:
        listed = VpdqList("training", tuple(str(n) for n in range(len(training))),
                          tuple(video for _, video in training))  # fmt: skip
        index = VpdqIndex(listed)
        scores = index.scores_many([video for _, video in generated], distance=settings.threshold)
        for (names, _), found in zip(generated, scores, strict=True):
            for match in found:
                train = training[match.video][0]
                rows.append({
                    "generated_key": names["key"],
                    "generated_file": names["member"] or names["key"],
                    "training_key": train["key"], "training_shard": train["shard"],
                    "training_member": train["member"],
                    "query_match_percent": match.query_match_percent,
                    "target_match_percent": match.target_match_percent,
                    "frames_matched": len(match.frames), "distance": match.distance,
                    "reproduces": match.query_match_percent >= VPDQ_QUERY_MATCH_PERCENT,
                })  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=AUDIT_VIDEO_SCHEMA)
    pq.write_table(table, staging / AUDIT_VIDEOS_PARQUET, compression="zstd")
    reproducing = {r["generated_key"] for r in rows if r["reproduces"]}
    return {
        "generated": len(generated),
        "training": len(training),
        "generated_reproducing": len(reproducing),
        "pairs": len(rows),
        "reproduced": [
            {
                k: r[k]
                for k in (
                    "generated_file",
                    "training_key",
                    "training_shard",
                    "query_match_percent",
                    "target_match_percent",
                )
            }  # fmt: skip
            for r in rows
            if r["reproduces"]
        ],
        "limits": VIDEO_LIMITS,
    }


def _rows(run: RunFolder) -> int:
    return sum(int(m.get("rows", 0)) for m in run.done_markers())


def _hashed_images(run: RunFolder) -> int:
    """Images of a run that have a PDQ hash, whatever its quality."""
    total = 0
    for path in run.manifest_files():
        table = pq.read_table(path, columns=["status", "pdq"])
        hashed = pc.and_(
            pc.equal(table.column("status"), STATUS_OK), pc.is_valid(table.column("pdq"))
        )
        total += int(pc.sum(hashed.cast(pa.int64())).as_py() or 0)
    return total


class _Gather:
    """The tasks' parts, merged as they arrive: every pair within the threshold, and the
    k nearest per generated image over all shards so far (bounded: k per image)."""

    def __init__(self, index_ids: pa.Table, stream_training: bool, settings: AuditSettings):
        self.index_ids = index_ids.to_pylist()
        self.stream_training = stream_training
        self.settings = settings
        self.pairs: dict[tuple[str, str, str, str], list[Any]] = {}
        self.nearest: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self.searched = 0

    def _rows(self, part: pa.Table) -> list[tuple[dict[str, Any], dict[str, Any], int, int]]:
        """(generated ids, training ids, distance, turn) of each row of a part."""
        rows = []
        for row in part.to_pylist():
            stream = {
                "key": row["stream_key"], "shard": row["stream_shard"],
                "position": row["stream_position"], "member": row["stream_member"],
                "url": row["stream_url"],
            }  # fmt: skip
            other = self.index_ids[row["index_row"]]
            generated, training = (other, stream) if self.stream_training else (stream, other)
            rows.append((generated, training, row["distance"], row["turn"]))
        return rows

    def add(self, part: AuditPart) -> None:
        self.searched += part.searched
        for generated, training, distance, turn in self._rows(part.pairs):
            key = (generated["shard"], generated["key"], training["shard"], training["key"])
            self.pairs[key] = [generated, training, distance, turn]
        if part.nearest is None:
            return
        for generated, training, distance, turn in self._rows(part.nearest):
            g = (generated["shard"], generated["key"])
            entry = (distance, training["shard"], training["position"], training["key"],
                     generated, training, turn)  # fmt: skip
            self.nearest.setdefault(g, []).append(entry)
        for g, entries in self.nearest.items():
            if len(entries) > self.settings.k:
                self.nearest[g] = heapq.nsmallest(self.settings.k, entries, key=lambda e: e[:4])

    def table(self, dihedral: bool) -> pa.Table:
        rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}

        def row(generated: dict, training: dict, distance: int, turn: int) -> dict[str, Any]:
            return {
                "generated_file": generated["member"] or generated["key"],
                "generated_key": generated["key"],
                "generated_shard": generated["shard"],
                "training_key": training["key"],
                "training_shard": training["shard"],
                "training_position": training["position"],
                "url": training["url"],
                "distance": distance,
                "rotation": DIHEDRAL_NAMES[turn] if dihedral else None,
                "within_threshold": distance <= self.settings.threshold,
                "nearest_rank": None,
            }

        for key, (generated, training, distance, turn) in self.pairs.items():
            rows[key] = row(generated, training, distance, turn)
        for (g_shard, g_key), entries in self.nearest.items():
            for rank, entry in enumerate(sorted(entries, key=lambda e: e[:4]), start=1):
                _, t_shard, _, t_key, generated, training, turn = entry
                key = (g_shard, g_key, t_shard, t_key)
                if key not in rows:
                    rows[key] = row(generated, training, entry[0], turn)
                rows[key]["nearest_rank"] = rank
        ordered = sorted(
            rows.values(),
            key=lambda r: (r["generated_shard"], r["generated_key"], r["distance"],
                           r["training_shard"], r["training_position"]),
        )  # fmt: skip
        return pa.Table.from_pylist(ordered, schema=AUDIT_SCHEMA)


def _summary(
    table: pa.Table,
    settings: AuditSettings,
    min_quality: int,
    stream_training: bool,
    generated: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    within = table.filter(table.column("within_threshold")) if table.num_rows else table
    closest: dict[tuple[str, str], int] = {}
    for shard, key, distance in zip(
        within.column("generated_shard").to_pylist(),
        within.column("generated_key").to_pylist(),
        within.column("distance").to_pylist(),
        strict=True,
    ):
        closest[(shard, key)] = min(distance, closest.get((shard, key), distance))
    return {
        "tool": {"name": "clearset", "version": __version__},
        "created": utc_now(),
        "settings": {
            **settings.to_dict(),
            "min_quality": min_quality,
            "signal": "pdq",
            "indexed": "generated" if stream_training else "training",
        },
        "generated": {**generated, "low_quality": generated["images"] - generated["searched"]},
        "training": {
            **training,
            "not_searched": training["rows"] - training["searched"],
        },
        "results": {
            "generated_with_copy": len(closest),
            "generated_without_copy": generated["searched"] - len(closest),
            "pairs_within_threshold": within.num_rows,
            # Each generated image with a copy, by the distance of its closest copy.
            "closest_distance_histogram": _histogram(closest.values()),
            "pair_distance_histogram": _histogram(within.column("distance").to_pylist()),
        },
        "limits": LIMITS,
    }


def _histogram(values: Any) -> list[dict[str, int]]:
    counts = Counter(int(v) for v in values)
    return [{"distance": d, "count": counts[d]} for d in sorted(counts)]


def _thumbnails(source: Source, table: pa.Table) -> dict[tuple[str, str], str]:
    """Thumbnails of the generated images with a copy (those the page lists), read again
    from the generated source: never anything of the training side."""
    within = table.filter(table.column("within_threshold")).to_pylist() if table.num_rows else []
    closest: dict[tuple[str, str], tuple[int, str]] = {}
    for row in within:
        key = (row["generated_shard"], row["generated_key"])
        if key not in closest or row["distance"] < closest[key][0]:
            closest[key] = (row["distance"], row["generated_file"])
    listed = sorted(closest.items(), key=lambda kv: (kv[1][0], kv[1][1]))[:HTML_IMAGE_ROWS]
    wanted = {key: member for key, (_, member) in listed}
    shards = {shard for shard, _ in wanted}
    found: dict[tuple[str, str], str] = {}
    for shard in source.shards():
        if shard.name not in shards:
            continue
        for item in source.read_shard(shard):
            key = (item.shard, item.key)
            if item.data is not None and wanted.get(key) in (item.member, item.key):
                uri = thumbnail(item.image_data if item.image_data is not None else item.data)
                if uri is not None:
                    found[key] = uri
    return found


def _write(staging: Path, result: AuditResult, thumbnails: dict[tuple[str, str], str]) -> None:
    pq.write_table(result.table, staging / AUDIT_PARQUET, compression="zstd")
    write_json_atomic(staging / AUDIT_JSON, result.summary)
    within = result.table.filter(result.table.column("within_threshold"))
    candidates = None
    if result.embeddings is not None:
        embedded = result.embeddings
        candidates = embedded.filter(embedded.column("within_threshold")).to_pylist()
    page = render_audit_html(result.summary, within.to_pylist(), thumbnails, candidates)
    if result.embeddings is not None:
        pq.write_table(result.embeddings, staging / EMBEDDINGS_PARQUET, compression="zstd")
    (staging / AUDIT_HTML).write_text(page, encoding="utf-8")


EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("generated_key", pa.string()),
        ("training_key", pa.string()),
        ("training_shard", pa.string()),
        ("similarity", pa.float32()),
        ("within_threshold", pa.bool_()),
        ("nearest_rank", pa.int16()),
    ]
)


def _embedding_stage(
    result: AuditResult, settings: AuditSettings, training: Vectors, generated: Vectors
) -> pa.Table:
    """Cosine candidates from the user's vectors: AUDIT/embeddings.parquet, and their own
    section of audit.json (never mixed with PDQ's counts)."""
    threshold = settings.embedding_threshold
    g_rows, t_rows, similarity, ranks = similar_pairs(
        training.vectors, generated.vectors, threshold, settings.k
    )
    rows = [
        {
            "generated_key": generated.keys[g],
            "training_key": training.keys[t],
            "training_shard": training.shards[t],
            "similarity": float(sim),
            "within_threshold": bool(sim >= threshold),
            "nearest_rank": int(rank) or None,
        }
        for g, t, sim, rank in zip(g_rows, t_rows, similarity, ranks, strict=True)
    ]
    table = pa.Table.from_pylist(rows, schema=EMBEDDINGS_SCHEMA)
    within = [r for r in rows if r["within_threshold"]]
    assert settings.embeddings is not None
    result.summary["embeddings"] = {
        "training_file": Path(settings.embeddings[0]).name,
        "generated_file": Path(settings.embeddings[1]).name,
        "dimensions": int(training.vectors.shape[1]),
        "training_vectors": len(training.keys),
        "generated_vectors": len(generated.keys),
        "similarity": "cosine (inner product of L2-normalised vectors, faiss IndexFlatIP)",
        "threshold": threshold,
        "k": settings.k,
        "generated_with_candidate": len({r["generated_key"] for r in within}),
        "pairs_within_threshold": len(within),
        "note": "from the user's own descriptor vectors; reported apart from PDQ, whose "
        "counts above do not include these",
    }
    return table
