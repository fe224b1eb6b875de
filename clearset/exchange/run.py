"""The exchange's orchestrators: request (builder), answer (holder), apply (builder).

In the builder's run folder:

    RUN/exchange/requests/<request digest>.json   the row-id map: each shard's first row
                                                  id and manifest rows (row id = first +
                                                  manifest row); never leaves the run
    RUN/exchange/answers/<answer digest>/         an applied answer: its three files and
                                                  applied.json (holder key id, lists, count)

Applied answers' matches are merged into RUN/matches/ as match rows (entry left empty:
the builder never sees one) and their lists into run.json's matching lists, each marked
with the answer's digest and holder key id, so clean, report, status, removals and
receipt treat them as local matches. `clearset match` keeps them (see `merge_answers`).
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from clearset import TOOL_NAME, __version__
from clearset.atomic import atomic_path, write_json_atomic
from clearset.documents.counts import manifest_digest, plural
from clearset.engines import Engine, Task
from clearset.errors import InputError, OutputError, RunFolderError, VerificationError
from clearset.exchange import format as fmt
from clearset.exchange.stage import answer_task, request_task
from clearset.matching.matcher import MATCH_SCHEMA, threshold_of
from clearset.matching.review import (
    AllowList,
    Review,
    flood_line,
    mark_allowed,
    summarise,
)
from clearset.receipts.dsse import load_private_key
from clearset.receipts.merkle import root_of
from clearset.receipts.proofs import verify_proof
from clearset.receipts.statement import parse_json
from clearset.records import RunInfo
from clearset.runfolder import RunFolder, file_sha256, refuse_unaccounted, utc_now
from clearset.runs.tasks import DEFAULT_RETRIES, choose_engine, run_or_fail
from clearset.settings import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY
from clearset.stages.match import MatchJob, drop_shared_index

EXCHANGE_DIR = "exchange"


def _exchange(run: RunFolder) -> Path:
    return run.path / EXCHANGE_DIR


def _fresh_out(out: Path) -> Path:
    if out.exists():
        raise OutputError(f"{out}: exists; choose a new --out (an exchange file is never replaced)")
    staging = out.parent / f".tmp-{os.getpid()}-{out.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot be written ({exc.strerror or exc})") from None
    return staging


def _folder(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: does not exist (an exchange {what} is a folder)")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder (an exchange {what} is a folder)")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: missing; is this {what}?") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_index(
    folder: Path, kind: str, name: str, form: str, error: type[Exception]
) -> tuple[str, str, dict[str, Any]]:
    """A request's or answer's index file checked for its format and version: (the SHA-256
    of its bytes - the request's or answer's digest -, its path as errors say it, it)."""
    _folder(folder, kind)
    raw = _read(folder / name, f"a{'n' if kind[0] in 'aeiou' else ''} {kind} folder")
    where = str(folder / name)
    index = parse_json(raw, where)
    if not isinstance(index, dict) or index.get("format") != form:
        raise error(f"{where}: not a clearset exchange {kind}")
    if index.get("version") != fmt.VERSION:
        raise error(f"{where}: {kind} format version {index.get('version')!r}, "
                    f"this clearset reads {fmt.VERSION}")  # fmt: skip
    return fmt.sha256_hex(raw), where, index


# ------------------------------------------------------------------ request (builder)


def make_request(
    run_dir: Path,
    out: Path,
    *,
    hash_types: tuple[str, ...] = fmt.DEFAULT_TYPES,
    key_path: Path | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Write the request folder `out` for a finished scan; its index (with `digest`)."""
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(f"{run.path}: the scan is not finished; re-run it first")
    refuse_unaccounted(run, info)
    key = load_private_key(key_path) if key_path is not None else None
    markers = run.done_markers()
    staging = _fresh_out(out)
    try:
        shards, tasks, first = [], [], 0
        for number, marker in enumerate(markers):
            rows = int(marker["rows"])
            shards.append({"shard_id": marker["shard_id"], "first": first, "rows": rows})
            args = (
                str(run.manifest_file(marker["shard_id"])),
                first,
                hash_types,
                str(staging / fmt.rows_file_name(number)),
            )
            tasks.append(Task(marker["shard_id"], marker["shard"], request_task, args))
            first += rows
        results: dict[str, tuple[int, str]] = {}
        run_or_fail(
            choose_engine(engine, workers),
            tasks,
            label="request",
            show_progress=show_progress,
            console=console,
            retries=retries,
            counts=lambda result: (result[0], 0, 0),
            on_done=lambda task, result: results.__setitem__(task.id, result),
            after="no request was written",
        )
        files = [
            {"name": fmt.rows_file_name(n), "rows": results[m["shard_id"]][0],
             "sha256": results[m["shard_id"]][1]}
            for n, m in enumerate(markers)
        ]  # fmt: skip
        index = {
            "format": fmt.REQUEST_FORMAT,
            "version": fmt.VERSION,
            "hash_types": list(hash_types),
            "rows": sum(int(str(f["rows"])) for f in files),
            "files": files,
        }
        raw = fmt.index_bytes(index)
        digest = fmt.sha256_hex(raw)
        (staging / fmt.REQUEST_INDEX).write_bytes(raw)
        statement = fmt.statement(
            fmt.REQUEST_INDEX,
            digest,
            fmt.REQUEST_PREDICATE,
            {
                "version": fmt.VERSION,
                "rows": index["rows"],
                "hash_types": list(hash_types),
                "run": {"manifest_digest": {"sha256": manifest_digest(run)}},
                "tool": {"name": TOOL_NAME, "version": __version__},
                "time": utc_now()[:19] + "Z",
            },
        )
        envelope = fmt.sign(statement, key)
        (staging / fmt.REQUEST_ENVELOPE).write_text(json.dumps(envelope, indent=2) + "\n")
        write_json_atomic(
            _exchange(run) / "requests" / f"{digest}.json",
            {"digest": digest, "hash_types": list(hash_types), "shards": shards,
             "made": statement["predicate"]["time"]},
        )  # fmt: skip
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**index, "digest": digest, "signed": key is not None}


def read_request(
    req: Path, requester_key: Ed25519PublicKey | None = None
) -> tuple[dict[str, Any], str, str | None]:
    """A request folder checked: (index, digest, signer key id or None). Every rows
    file must be the one request.json names (its SHA-256) and of the format's schema."""
    digest, where, index = _read_index(
        req, "request", fmt.REQUEST_INDEX, fmt.REQUEST_FORMAT, InputError
    )
    hash_types = index.get("hash_types")
    files = index.get("files")
    if (
        not isinstance(hash_types, list)
        or not hash_types
        or any(h not in fmt.REQUEST_TYPES for h in hash_types)
        or not isinstance(files, list)
    ):
        raise InputError(f"{where}: hash_types or files malformed")
    schema = fmt.request_schema(tuple(hash_types))
    for entry in files:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not fmt.ROWS_FILE.fullmatch(name):
            raise InputError(f"{where}: names a rows file that is not rows-NNNNN.parquet")
        path = req / name
        if not path.exists():
            raise InputError(f"{path}: missing (request.json names it)")
        if file_sha256(path) != entry.get("sha256"):
            raise InputError(f"{path}: its SHA-256 differs from request.json's (altered)")
        try:
            found = pq.read_schema(path)
        except (OSError, pa.ArrowException):
            raise InputError(f"{path}: not a parquet file") from None
        if found.remove_metadata() != schema:
            raise InputError(
                f"{path}: columns are not the format's ({', '.join(schema.names)} with their types)"
            )
    envelope_path = req / fmt.REQUEST_ENVELOPE
    signer = None
    if envelope_path.exists() or requester_key is not None:
        data = _read(envelope_path, "a request folder")
        try:
            statement, signer = fmt.open_envelope(
                data, str(envelope_path), fmt.REQUEST_PREDICATE, requester_key
            )
        except VerificationError as error:
            raise InputError(str(error)) from None
        if fmt.subject_digest(statement) != digest:
            raise InputError(f"{envelope_path}: signs another request.json (digest differs)")
    return index, digest, signer


# ------------------------------------------------------------------ answer (holder)


def answer_request(
    req: Path,
    job: MatchJob,
    key_path: Path,
    out: Path,
    *,
    requester_key: Ed25519PublicKey | None = None,
    label: str | None = None,
    commit_salts: Path | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    show_progress: bool = False,
    console: Console | None = None,
    retries: int = DEFAULT_RETRIES,
) -> dict[str, Any]:
    """Match a request against the holder's lists and write the answer folder `out`;
    returns its statement's predicate (with `digest`)."""
    key = load_private_key(key_path)
    index, digest, signer = read_request(req, requester_key)
    matcher = job.matcher()  # fail early on a bad list
    named = [(hl.identity.name, hl.hash_type) for hl in matcher.lists]
    if len(set(named)) != len(named):
        raise InputError("two lists have the same name and hash type; name them (PATH,name=N)")
    engine = choose_engine(engine, workers, *(spec.path for spec in job.lists))
    staging = _fresh_out(out)
    try:
        same_machine = getattr(engine, "name", None) == "local"
        job, matcher = job.share(staging, matcher, same_machine=same_machine)
        tasks = [
            Task(entry["name"], entry["name"], answer_task,
                 (str(req / entry["name"]), job, str(staging / f"part-{n:05d}.parquet")))
            for n, entry in enumerate(index["files"])
        ]  # fmt: skip
        searched: dict[str, tuple[int, pa.Table]] = {}
        try:
            run_or_fail(
                engine,
                tasks,
                label="answer",
                show_progress=show_progress,
                console=console,
                retries=retries,
                counts=lambda result: (result[0], 0, 0),
                on_done=lambda task, result: searched.__setitem__(task.id, result),
                error=InputError,
                after="no answer was written",
            )
        finally:
            drop_shared_index(staging)
        parts = [staging / f"part-{n:05d}.parquet" for n in range(len(tasks))]
        tables = [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables) if tables else fmt.ANSWER_SCHEMA.empty_table()
        table = table.sort_by([("row_id", "ascending"), ("list", "ascending")])
        for part in parts:
            part.unlink()
        pq.write_table(table.cast(fmt.ANSWER_SCHEMA), staging / fmt.ANSWER_ROWS, compression="zstd")
        answer_index = {
            "format": fmt.ANSWER_FORMAT,
            "version": fmt.VERSION,
            "request": {"sha256": digest},
            "rows": table.num_rows,
            "files": [
                {"name": fmt.ANSWER_ROWS, "rows": table.num_rows,
                 "sha256": file_sha256(staging / fmt.ANSWER_ROWS)}
            ],
        }  # fmt: skip
        raw = fmt.index_bytes(answer_index)
        (staging / fmt.ANSWER_INDEX).write_bytes(raw)
        salts: dict[str, str] = {}
        lists = []
        for hl in matcher.lists:
            entry: dict[str, Any] = {
                "name": hl.identity.name,
                "version": hl.identity.version,
                "hash_type": hl.hash_type,
                "entries": len(hl),
                "threshold": None if hl.hash_type != "pdq" else threshold_of(hl, job.settings),
            }
            if commit_salts is None:
                entry["digest"] = hl.identity.digest
            else:
                salt = os.urandom(32)
                entry["commitment"] = fmt.list_commitment(hl.identity.digest, salt)
                salts[f"{hl.identity.name}/{hl.hash_type}"] = salt.hex()
            lists.append(entry)
        per_list = {f"{n}/{t}": 0 for n, t in named}
        for name, kind in zip(
            table.column("list").to_pylist(), table.column("hash_type").to_pylist(), strict=True
        ):
            per_list[f"{name}/{kind}"] += 1
        predicate = {
            "version": fmt.VERSION,
            "request": {"sha256": digest, "signed_by": signer},
            "rows_searched": sum(rows for rows, _ in searched.values()),
            "lists": lists,
            "thresholds": {
                "pdq_threshold": job.settings.pdq_threshold,
                "min_quality": job.settings.min_quality,
            },
            "matched": {
                "rows": table.num_rows,
                "row_ids": pc.count_distinct(table.column("row_id")).as_py(),
                "per_list": per_list,
            },
            "review": answer_review(
                [review for _, review in searched.values()], matcher.lists, job.review, lists
            ),
            "label": label,
            "tool": {"name": TOOL_NAME, "version": __version__},
            "time": utc_now()[:19] + "Z",
        }
        answer_digest = fmt.sha256_hex(raw)
        statement = fmt.statement(fmt.ANSWER_INDEX, answer_digest, fmt.ANSWER_PREDICATE, predicate)
        envelope = fmt.sign(statement, key)
        (staging / fmt.ANSWER_ENVELOPE).write_text(json.dumps(envelope, indent=2) + "\n")
        if commit_salts is not None:
            with atomic_path(commit_salts) as tmp:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps({"answer": answer_digest, "salts": salts}) + "\n")
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**predicate, "digest": answer_digest}


#: What an answer statement says of each flooding entry: its list, its ordinal, counts.
_FLOOD_FIELDS = ("list_name", "list_version", "hash_type", "entry_ordinal", "entries", "images",
                 "samples")  # fmt: skip


def answer_review(
    tables: list[pa.Table], hash_lists: list[Any], review: Review, disclosed: list[dict[str, Any]]
) -> dict[str, Any]:
    """The answer statement's review: the holder's allow list (digest and entries, never
    values) and the rows it held back, and every flooding entry by list and ordinal (never
    its value). Request rows are members; a row's group is its sample."""
    table = pa.concat_tables(tables) if tables else None
    summary: dict[str, Any]
    if table is None or table.num_rows == 0:
        summary = {"allowed": {"rows": 0, "samples": 0}, "floods": []}
    else:
        summary = summarise(table, hash_lists, review)
    held = summary["allowed"]
    names = {(e["name"], e["hash_type"]) for e in disclosed}
    return {
        "allow_list": None if review.allow is None else review.allow.identity(),
        "held_back": {"rows": held["rows"], "samples": held["samples"]},
        "flood_threshold": review.flood_threshold,
        "floods": [
            {k: f[k] for k in _FLOOD_FIELDS}
            for f in summary["floods"]
            if (f["list_name"], f["hash_type"]) in names
        ],
    }


def answer_review_lines(review: dict[str, Any]) -> list[str]:
    """The holder's review in words: what its allow list held back, and each flood."""
    lines = []
    allow = review.get("allow_list")
    if allow is not None:
        held = review["held_back"]
        lines.append(
            f"held back {plural(held['rows'], 'match row')} ({plural(held['samples'], 'sample')}) "
            f"the holder's review allowed: allow list {allow['digest']}, "
            f"{plural(allow['entries'], 'entry', 'entries')}"
        )
    hint = (
        "review the request rows matching this list, and add reviewed false positives to "
        "an --allow-list"
    )
    threshold = review.get("flood_threshold")
    lines += [flood_line(f, threshold, hint) for f in review.get("floods") or []]
    return lines


# ------------------------------------------------------------------ reading an answer


def read_answer(
    ans: Path, holder_key: Ed25519PublicKey | None
) -> tuple[dict[str, Any], str, str | None, pa.Table]:
    """An answer folder checked: (statement predicate, answer digest, signer, rows).
    VerificationError with one line for anything that makes it not this holder's answer."""
    digest, where, index = _read_index(
        ans, "answer", fmt.ANSWER_INDEX, fmt.ANSWER_FORMAT, VerificationError
    )
    data = _read(ans / fmt.ANSWER_ENVELOPE, "an answer folder")
    statement, signer = fmt.open_envelope(
        data, str(ans / fmt.ANSWER_ENVELOPE), fmt.ANSWER_PREDICATE, holder_key
    )
    if fmt.subject_digest(statement) != digest:
        raise VerificationError(f"{where}: is not the answer the holder signed (digest differs)")
    predicate = statement["predicate"]
    request = predicate.get("request")
    if not isinstance(request, dict) or index.get("request") != {"sha256": request.get("sha256")}:
        raise VerificationError(f"{where}: names another request than its signed statement")
    lists = predicate.get("lists")
    if not isinstance(lists, list):
        raise VerificationError(f"{where}: the statement names no lists")
    for entry in lists:
        fmt.check_disclosed_list(entry, str(ans / fmt.ANSWER_ENVELOPE))
    rows_path = ans / fmt.ANSWER_ROWS
    files = index.get("files")
    if (
        not isinstance(files, list)
        or len(files) != 1
        or not isinstance(files[0], dict)
        or files[0].get("name") != fmt.ANSWER_ROWS
    ):
        raise VerificationError(f"{where}: files must name {fmt.ANSWER_ROWS} alone")
    if not rows_path.exists():
        raise VerificationError(f"{rows_path}: missing (answer.json names it)")
    if file_sha256(rows_path) != files[0]["sha256"]:
        raise VerificationError(f"{rows_path}: altered (its SHA-256 differs from answer.json's)")
    try:
        table = pq.read_table(rows_path)
    except (OSError, pa.ArrowException):
        raise VerificationError(f"{rows_path}: not a parquet file") from None
    if table.schema.names != fmt.ANSWER_SCHEMA.names:
        raise VerificationError(
            f"{rows_path}: holds columns {', '.join(table.schema.names)}, not "
            f"{', '.join(fmt.ANSWER_SCHEMA.names)} (an answer never lists entries)"
        )
    try:
        table = table.cast(fmt.ANSWER_SCHEMA)
    except (pa.ArrowException, ValueError):
        raise VerificationError(f"{rows_path}: columns of the wrong types") from None
    if table.num_rows != index.get("rows"):
        raise VerificationError(f"{rows_path}: holds another row count than answer.json says")
    disclosed = {(e["name"], e["hash_type"]) for e in lists}
    pairs = set(zip(table.column("list").to_pylist(), table.column("hash_type").to_pylist(),
                    strict=True))  # fmt: skip
    unknown = sorted(pairs - disclosed)
    if unknown:
        raise VerificationError(f"{rows_path}: names list {unknown[0][0]!r} ({unknown[0][1]}), "
                                "which the statement does not disclose")  # fmt: skip
    return predicate, digest, signer, table


# ------------------------------------------------------------------ apply (builder)


def _request_map(run: RunFolder, request_digest: str, ans: Path) -> dict[str, Any]:
    path = _exchange(run) / "requests" / f"{request_digest}.json"
    if not path.exists():
        raise VerificationError(
            f"{ans}: answers request {request_digest}, which this run did not make"
        )
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def _locate(request: dict[str, Any], row_ids: list[int]) -> dict[str, list[tuple[int, int]]]:
    """shard id -> [(row id, manifest row)] of these row ids; VerificationError on one the
    request does not hold."""
    shards = request["shards"]
    firsts = [s["first"] for s in shards]
    found: dict[str, list[tuple[int, int]]] = {}
    for row_id in row_ids:
        at = bisect.bisect_right(firsts, row_id) - 1
        if at < 0 or row_id - firsts[at] >= shards[at]["rows"]:
            raise VerificationError(f"names row id {row_id}, which the request does not hold")
        found.setdefault(shards[at]["shard_id"], []).append((row_id, row_id - firsts[at]))
    return found


def apply_answer(
    run_dir: Path, ans: Path, holder_key: Ed25519PublicKey, allow: AllowList | None = None
) -> dict[str, Any]:
    """Check an answer and record its matches in the run (see the module doc). With
    `allow` (the builder's allow list), every match row of the run whose member it holds is
    marked allowed (kept by clean, counted in the receipt), and it becomes the run's allow
    list; without it, a run whose matches were reviewed with one is refused (the new
    rows could not be reviewed the same way)."""
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(f"{run.path}: the scan is not finished; re-run it first")
    had = (info.matching or {}).get("allow_list")
    if allow is None and had is not None:
        raise InputError(
            f"{run.path}: its matches were reviewed with allow list {had['digest']} "
            f"({plural(had['entries'], 'entry', 'entries')}); give it with --allow-list so "
            "this answer's matches are reviewed too"
        )
    try:
        predicate, digest, signer, table = read_answer(ans, holder_key)
        request = _request_map(run, predicate["request"]["sha256"], ans)
        rows_by_shard = _locate(request, sorted(set(table.column("row_id").to_pylist())))
    except VerificationError as error:
        text = str(error)
        raise VerificationError(text if text.startswith(str(ans)) else f"{ans}: {text}") from None
    lists = {(e["name"], e["hash_type"]): e for e in predicate["lists"]}
    by_row: dict[int, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_row.setdefault(row["row_id"], []).append(row)
    item_columns = ["key", "shard", "position", "member", "url", "sha256"]
    per_shard: dict[str, pa.Table] = {}
    located_rows = [r for located in rows_by_shard.values() for r in located]
    samples = 0
    for shard_id, located in rows_by_shard.items():
        manifest = pq.read_table(run.manifest_file(shard_id), columns=item_columns)
        found = []
        for row_id, index in located:
            item = {c: manifest.column(c)[index].as_py() for c in item_columns}
            if item["sha256"] is None:
                raise VerificationError(
                    f"{ans}: names row id {row_id}, which the request does not hold"
                )
            for match in by_row[row_id]:
                disclosed = lists[(match["list"], match["hash_type"])]
                found.append({
                    **item,
                    "list_name": match["list"],
                    "list_version": disclosed.get("version"),
                    "list_digest": fmt.list_identity_digest(disclosed),
                    "hash_type": match["hash_type"],
                    "field": match["field"],
                    "entry": "",
                    "distance": match["distance"],
                    "rotation": None,
                })  # fmt: skip
        samples += len({(row["shard"], row["key"]) for row in found})
        per_shard[shard_id] = mark_allowed(pa.Table.from_pylist(found, schema=MATCH_SCHEMA), allow)
    folder = _exchange(run) / "answers" / digest
    staging = folder.with_name(f".tmp-{os.getpid()}-{digest}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (fmt.ANSWER_INDEX, fmt.ANSWER_ENVELOPE, fmt.ANSWER_ROWS):
        shutil.copyfile(ans / name, staging / name)
    for shard_id, matches in per_shard.items():
        (staging / "matches").mkdir(exist_ok=True)
        pq.write_table(matches, staging / "matches" / f"{shard_id}.parquet")
    applied = {
        "answer_digest": digest,
        "request_digest": predicate["request"]["sha256"],
        "holder_key_id": signer,
        "label": predicate.get("label"),
        "lists": predicate["lists"],
        "matched": {"rows": table.num_rows, "members": len(located_rows), "samples": samples},
        "review": predicate.get("review"),
        "applied": utc_now(),
    }  # fmt: skip
    write_json_atomic(staging / "applied.json", applied)
    shutil.rmtree(folder, ignore_errors=True)  # the same answer applied again
    os.replace(staging, folder)
    merge_answers(run, allow)
    run.record("exchange-apply", answer=digest, holder_key_id=signer,
               matched_samples=samples, matched_members=len(located_rows),
               allow_list=None if allow is None else allow.identity())  # fmt: skip
    return applied


def applied_answers(run: RunFolder) -> list[dict[str, Any]]:
    root = _exchange(run) / "answers"
    return [
        json.loads((folder / "applied.json").read_text())
        for folder in sorted(root.glob("[!.]*"))
        if (folder / "applied.json").exists()
    ]


def answer_list_records(applied: dict[str, Any]) -> list[dict[str, Any]]:
    """An applied answer's lists as run.json's matching records them."""
    return [
        {
            "name": e["name"],
            "version": e.get("version"),
            "digest": fmt.list_identity_digest(e),
            "hash_type": e["hash_type"],
            "threshold": e.get("threshold") if e["hash_type"] == "pdq" else 0,
            "entries": e.get("entries"),
            "skipped": {},
            "skipped_total": 0,
            "answer": applied["answer_digest"],
            "holder_key_id": applied["holder_key_id"],
            "holder": applied.get("label"),
        }
        for e in applied["lists"]
    ]


def merge_answers(run: RunFolder, allow: AllowList | None = None) -> None:
    """Put every applied answer's matches in RUN/matches/ beside the local ones, its lists
    in run.json's matching, and gather RUN/matches.parquet again. Every row is marked
    allowed or not by `allow`, the run's allow list from now on (`mark_allowed`); the
    holders' floods join the local ones in the match counts."""
    applied = applied_answers(run)
    info = run.read_info()
    matching = info["settings"].get("matching") or {
        "pdq_threshold": PDQ_MATCH_THRESHOLD, "min_quality": PDQ_MIN_QUALITY, "lists": [],
    }  # fmt: skip
    local = [lst for lst in matching.get("lists", []) if "answer" not in lst]
    answer_records = [r for a in applied for r in answer_list_records(a)]
    answer_digests = {r["digest"] for r in answer_records} | {
        lst["digest"] for lst in matching.get("lists", []) if "answer" in lst
    }
    tables = []
    for marker in run.done_markers():
        shard_id = marker["shard_id"]
        path = run.matches_file(shard_id)
        own = pq.read_table(path) if path.exists() else MATCH_SCHEMA.empty_table()
        theirs = pa.array(sorted(answer_digests), pa.string())
        own = own.filter(pc.invert(pc.is_in(own.column("list_digest"), theirs)))
        parts = [own.cast(MATCH_SCHEMA)]
        for a in applied:
            extra = (
                _exchange(run) / "answers" / a["answer_digest"] / "matches" / f"{shard_id}.parquet"
            )
            if extra.exists():
                parts.append(pq.read_table(extra).cast(MATCH_SCHEMA))
        table = mark_allowed(pa.concat_tables(parts), allow)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        tables.append(table)
    table = pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()
    with atomic_path(run.path / "matches.parquet") as tmp:
        pq.write_table(table, tmp, compression="zstd")
    matching["lists"] = local + answer_records
    info["settings"]["matching"] = matching
    keys = set(zip(table.column("shard").to_pylist(), table.column("key").to_pylist(), strict=True))
    per_list = []
    digests = table.column("list_digest").to_pylist()
    kinds = table.column("hash_type").to_pylist()
    shards = table.column("shard").to_pylist()
    names = table.column("key").to_pylist()
    for lst in matching["lists"]:
        hits = [i for i, (d, k) in enumerate(zip(digests, kinds, strict=True))
                if d == lst["digest"] and k == lst["hash_type"]]  # fmt: skip
        per_list.append({"name": lst["name"], "hash_type": lst["hash_type"], "matches": len(hits),
                         "samples": len({(shards[i], names[i]) for i in hits})})  # fmt: skip
    review = Review(allow)
    matching.pop("allow_list", None)
    matching.update(review.record())
    before = info.setdefault("counts", {}).get("matches") or {}
    summary = summarise(table, [], review)
    local_floods = [f for f in before.get("floods") or [] if "answer" not in f]
    holder_floods = [
        {**f, "holder": a.get("label"), "holder_key_id": a["holder_key_id"],
         "answer": a["answer_digest"]}
        for a in applied for f in (a.get("review") or {}).get("floods") or []
    ]  # fmt: skip
    info["counts"]["matches"] = {
        "rows": table.num_rows, "items": len(keys), "per_list": per_list,
        "allow_list": summary["allow_list"], "allowed": summary["allowed"],
        "flood_threshold": before.get("flood_threshold", review.flood_threshold),
        "floods": local_floods + holder_floods,
    }  # fmt: skip
    info["exchange"] = {
        "answers": [{k: a[k] for k in ("answer_digest", "request_digest", "holder_key_id",
                                        "label", "matched")} for a in applied],
    }  # fmt: skip
    run.write_info(info)


def exchange_record(run_dir: Path) -> dict[str, Any] | None:
    """What a receipt cites of the run's applied answers (None when there is none)."""
    applied = applied_answers(RunFolder(Path(run_dir)))
    if not applied:
        return None
    return {
        "version": fmt.VERSION,
        "requests": sorted({a["request_digest"] for a in applied}),
        "answers": [
            {
                "digest": a["answer_digest"],
                "request": a["request_digest"],
                "holder_key_id": a["holder_key_id"],
                "label": a.get("label"),
                "lists": a["lists"],
                "matched": {k: a["matched"][k] for k in ("samples", "members")},
                "review": a.get("review"),
            }
            for a in applied
        ],
    }


# ------------------------------------------------------------------ prove and verify


def _matched_members(matched: Any) -> int:
    if isinstance(matched, dict) and isinstance(matched.get("members"), int):
        return int(matched["members"])
    raise VerificationError("the receipt's exchange citation has no matched members count")


def matched_text(matched: Any) -> str:
    """An applied answer's matched counts in words: "5 samples matched (6 members)"."""
    if not isinstance(matched, dict):
        return "? samples matched"
    samples, members = matched.get("samples"), matched.get("members")
    text = f"{plural(int(samples or 0), 'sample')} matched"
    return text + f" ({plural(int(members or 0), 'member')})"


def answer_matched_sha256(run_dir: Path, ans: Path) -> tuple[str, list[bytes]]:
    """(answer digest, the SHA-256 of every member an applied answer matched), sorted."""
    run = RunFolder(Path(run_dir))
    digest = fmt.sha256_hex(_read(ans / fmt.ANSWER_INDEX, "an answer folder"))
    folder = _exchange(run) / "answers" / digest
    if not (folder / "applied.json").exists():
        raise InputError(f"{ans}: was not applied to {run.path}; run `clearset exchange apply`")
    values: set[bytes] = set()
    for path in sorted((folder / "matches").glob("*.parquet")):
        table = pq.read_table(path, columns=["sha256"])
        values.update(v for v in table.column("sha256").to_pylist() if v)
    return digest, sorted(values)


def _cited(
    statement: dict[str, Any], ans: Path, holder_key: Ed25519PublicKey
) -> tuple[dict[str, Any], str, pa.Table, dict[str, Any], str]:
    """One answer checked against the receipt: (predicate, digest, rows, citation, signer)."""
    predicate, digest, signer, table = read_answer(ans, holder_key)
    cited = (statement["predicate"].get("exchange") or {}).get("answers") or []
    mine = [a for a in cited if isinstance(a, dict) and a.get("digest") == digest]
    if not mine:
        raise VerificationError(f"the receipt does not cite answer {digest}")
    if mine[0].get("holder_key_id") != signer:
        raise VerificationError(f"the receipt cites answer {digest} with another holder key")
    if mine[0].get("request") != predicate["request"]["sha256"]:
        raise VerificationError("the receipt cites the answer for another request")
    return predicate, digest, table, mine[0], str(signer)


def _kept_group(
    leaves: list[bytes], extra: int, root: str, groups: dict[int, set[bytes]],
    matched: dict[int, bytes],
) -> bytes | None:  # fmt: skip
    """The matched item whose sample, put back among `leaves`, gives `root` (the kept one),
    searched only where that is cheap; None when not found."""
    known = set(leaves)
    if len(groups) > 256 or len(leaves) > 10**6:
        return None
    for group, values in sorted(groups.items()):
        back = values - known
        if len(back) == extra and root_of(sorted(known | back)).hex() == root:
            return matched[group]
    return None


def _same_scan(statement: dict[str, Any], req: Path) -> str:
    """The request's statement and the receipt name the same scan's manifest (the line
    saying so), or VerificationError: the request is not of the scan the receipt covers."""
    where = req / fmt.REQUEST_ENVELOPE
    try:
        request_statement, _ = fmt.open_envelope(
            _read(where, "a request folder"), str(where), fmt.REQUEST_PREDICATE, None
        )
        theirs = request_statement["predicate"]["run"]["manifest_digest"]["sha256"]
        ours = statement["predicate"]["run"]["manifest_digest"]["sha256"]
    except (KeyError, TypeError):
        raise VerificationError(f"{where}: its statement names no run manifest digest") from None
    if theirs != ours:
        raise VerificationError(
            f"{req}: made from scan manifest {theirs}, but the receipt's scan manifest is {ours} "
            "(a request of another scan)"
        )
    return f"request and receipt name the same scan manifest {ours}"


def verify_exchange(
    statement: dict[str, Any],
    answers: list[tuple[Path, Ed25519PublicKey]],
    *,
    proofs: Any = None,
    req: Path | None = None,
) -> list[str]:
    """Check a verified receipt statement against holders' answers (and their request);
    the lines saying what was shown. VerificationError, one line, on the first failure.

    With the request, the receipt's root is compared with the request's SHA-256 values
    less every sample the given answers matched, when they are all the answers the receipt
    cites; a tree larger than that holds a matched item. Otherwise (or when the builder
    removed more) a proofs batch from `clearset prove RUN --answer ANS` shows the matched
    items are not in the tree."""
    if not answers:
        raise VerificationError("give at least one --answer with its --holder-pubkey")
    checked = [_cited(statement, ans, key) for ans, key in answers]
    lines = [
        f"answer {digest} signed by holder key {signer}, cited by the receipt "
        f"({matched_text(mine.get('matched'))} by the holder)"
        for _, digest, _, mine, signer in checked
    ]
    cited = {a.get("digest") for a in (statement["predicate"].get("exchange") or {}).get(
        "answers") or [] if isinstance(a, dict)}  # fmt: skip
    all_given = cited <= {digest for _, digest, _, _, _ in checked}
    tree_size, root = statement["predicate"]["tree"]["size"], statement["predicate"]["tree"]["root"]
    matched_sha: set[bytes] | None = None
    if req is not None:
        index, digest_req, _ = read_request(req)
        lines.append(_same_scan(statement, req))
        rows = pa.concat_tables(
            [pq.read_table(req / f["name"], columns=["row_id", "group", "sha256"])
             for f in index["files"]]
        )  # fmt: skip
        known = set(rows.column("row_id").to_pylist())
        matched_ids: set[int] = set()
        for (ans, _), (predicate, _, table, _, _) in zip(answers, checked, strict=True):
            if predicate["request"]["sha256"] != digest_req:
                raise VerificationError(
                    f"{ans}: answers request {predicate['request']['sha256']}, not {req} "
                    f"({digest_req})"
                )
            ids = set(table.column("row_id").to_pylist())
            unknown = sorted(ids - known)
            if unknown:
                raise VerificationError(
                    f"{ans}: names row id {unknown[0]}, which the request does not hold"
                )
            matched_ids |= ids
        hit = rows.filter(
            pc.is_in(rows.column("row_id"), pa.array(sorted(matched_ids), pa.int64()))
        )
        matched_sha = {bytes(v) for v in hit.column("sha256").to_pylist()}
        first_of: dict[int, bytes] = {}
        for group, value in zip(hit.column("group").to_pylist(),
                                hit.column("sha256").to_pylist(), strict=True):  # fmt: skip
            first_of.setdefault(group, bytes(value))
        groups = pa.array(sorted(first_of), pa.int64())
        kept = rows.filter(pc.invert(pc.is_in(rows.column("group"), groups)))
        leaves = sorted({bytes(v) for v in kept.column("sha256").to_pylist()})
        in_kept = matched_sha & set(leaves)
        if in_kept:
            raise VerificationError(
                f"a member the holder matched (SHA-256 {sorted(in_kept)[0].hex()}) "
                "is kept in the set"
            )
        if tree_size > len(leaves):
            members: dict[int, set[bytes]] = {}
            removed = rows.filter(pc.is_in(rows.column("group"), groups))
            for group, value in zip(removed.column("group").to_pylist(),
                                    removed.column("sha256").to_pylist(), strict=True):  # fmt: skip
                members.setdefault(group, set()).add(bytes(value))
            found = _kept_group(leaves, tree_size - len(leaves), root, members, first_of)
            named = f" (SHA-256 {found.hex()})" if found is not None else ""
            raise VerificationError(
                f"a member the holder matched{named} is kept in the set: the tree holds "
                f"{tree_size:,} leaves, more than the request's {len(leaves):,} left after the "
                "holders' matches"
            )
        if all_given and tree_size == len(leaves):
            if root_of(leaves).hex() != root:
                raise VerificationError(
                    "the receipt's root is not the request's rows less the holders' matches"
                )
            lines.append(
                f"root {root} is the request's rows less the samples the holders "
                f"matched ({plural(len(leaves), 'leaf', 'leaves')}): no matched member is in "
                "the tree"
            )
            return lines
        lines.append(
            "root not compared: "
            + ("the builder removed more than these answers matched" if all_given
               else "the receipt cites answers not given here (give each with --answer)")
        )  # fmt: skip
        if proofs is None:
            raise VerificationError(
                "give --proof (`clearset prove RUN --answer ANS`) to show the matched members "
                "are not in the tree" + ("" if all_given else ", or every answer the receipt cites")
            )
    elif proofs is None:
        raise VerificationError(
            "give --proof (`clearset prove RUN --answer ANS`) or --request REQ to show the "
            "holder's matches are not in the tree"
        )
    if len(checked) != 1:
        raise VerificationError("a --proof batch is for one answer: give that --answer alone")
    ans_digest, mine = checked[0][1], checked[0][3]
    if not isinstance(proofs, dict) or proofs.get("type") != "exchange-batch":
        raise VerificationError("--proof is not a batch made by `clearset prove RUN --answer ANS`")
    if proofs.get("answer") != ans_digest:
        raise VerificationError("the proofs batch is for another answer")
    shown = set()
    for proof in proofs.get("proofs") or []:
        verify_proof(proof, statement)
        if proof.get("type") != "non-inclusion":
            raise VerificationError(
                f"a member the holder matched (SHA-256 {proof.get('sha256')}) is kept in the set"
            )
        shown.add(bytes.fromhex(proof["sha256"]))
    if matched_sha is not None and len(checked) == 1 and not matched_sha <= shown:
        raise VerificationError("the proofs batch leaves out a member the holder matched")
    if len(shown) < _matched_members(mine.get("matched")):
        raise VerificationError("the proofs batch proves fewer members than the holder matched")
    lines.append(f"{plural(len(shown), 'matched member')} (by SHA-256) proven not in the tree")
    return lines
