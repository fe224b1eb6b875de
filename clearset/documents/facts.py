"""What a run can say about its cleaned copy, and what a person must say instead.

Every document is built from one `RunFacts`: the run's report (`build_report`, so each
number is the report's), the receipt that covers the cleaned copy, the lists by identity,
and what the cleaned manifest and the source's own side files record (URL domains, file
kinds, the collection window and opt-out handling img2dataset writes in its
`_stats.json`). Nothing here reads an item's bytes, and nothing names a matched item.

What clearset cannot know (who the provider is, the licence, the intended use, personal
data...) is a *question*: `QUESTIONS` names each by an answers-file key. A document asks
`Answers.fill(key)`, which gives the operator's answer or a gap,
``GAP: <what a person must supply> [answers: key]``, never a guess. `find_gaps` reads the
gaps back out of a written document.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset import TOOL_NAME, __version__, storage
from clearset.documents.counts import (
    LeafCounts,
    SetCounts,
    clean_identity,
    plural,
    statement_counts,
)
from clearset.documents.report import build_report, run_state
from clearset.errors import InputError, RunFolderError, VerificationError
from clearset.hashing import types as hash_types
from clearset.manifest import read_manifest_files
from clearset.receipts.dsse import envelope_payload, parse_envelope, receipt_digest
from clearset.receipts.issue import source_label
from clearset.receipts.statement import parse_json
from clearset.records import CleanRecord, Report, RunInfo
from clearset.runfolder import RECEIPT_FILE, RunFolder

#: The marker every Markdown document opens with (after a data card's YAML header);
#: `clearset document --check` refuses a file without it.
MARKER = "clearset document:"

GAP_PREFIX = "GAP: "
#: `GAP: what [answers: key]` (or `[command: what to run]` for what clearset makes but the
#: run lacks, e.g. a receipt): the bracket ends a gap, so it is found in any text.
GAP_PATTERN = re.compile(
    r"GAP: (?P<what>[^\[\]\n\"]+?) \[(?P<how>answers|command): (?P<key>[^\]\n\"]+)\]"
)

#: Image counts that bound the EU template's size bands for images (section 1.3).
EU_IMAGE_BANDS = ((1_000_000, "Less than 1 million images"),
                  (1_000_000_000, "1 million to 1 billion images"))  # fmt: skip
EU_IMAGE_TOP_BAND = "More than 1 billion images"
#: The template's video bands, in hours.
EU_VIDEO_BANDS = ((10_000, "Less than 10,000 hours"),
                  (1_000_000, "10,000 to 1 million hours"))  # fmt: skip
EU_VIDEO_TOP_BAND = "More than 1 million hours"

#: The share of domain names the EU template asks to list (the top 10 % by content),
#: and the most a document lists (the template's cap for SMEs is 1,000).
TOP_DOMAIN_SHARE = 0.10
TOP_DOMAINS_MAX = 1_000

#: img2dataset's status for an image it skipped because of an X-Robots-Tag directive
#: (`--disallowed_header_directives`, by default noai, noimageai, noindex, noimageindex).
X_ROBOTS_STATUS = "X-Robots-Tag"

#: Everything a person may have to supply, by answers-file key: what to supply.
QUESTIONS: dict[str, str] = {
    "provider.name": "the provider's (developer's) name",
    "provider.contact": "the provider's contact details",
    "provider.representative": "the provider's authorised representative in the Union, "
    "or 'not applicable'",
    "model.name": "the name and version of each model trained on this data set",
    "model.dependencies": "the model this one modifies or fine-tunes, or 'none'",
    "model.market_date": "the date the model was placed on the Union market",
    "model.first_used": "the date(s) this data set was first used to develop the model",
    "dataset.description": "what the data set is and holds, in a sentence or two",
    "dataset.license": "the licence(s) under which the data set's contents are used",
    "dataset.owners": "the sources or owners of the data set (who made or holds it)",
    "dataset.purpose": "how the data set furthers the intended purpose of the model",
    "dataset.public_datasets": "the publicly available data sets this one is or comes "
    "from (by name and version), or 'none'",
    "dataset.private_datasets": "private data sets obtained from third parties "
    "(licensed or not), or 'none'",
    "dataset.crawler": "the crawler(s) that fetched the items, and how they treat "
    "robots.txt and other reservations",
    "dataset.collection_period": "the period in which the items were collected",
    "dataset.collection_ongoing": "whether collection is ongoing",
    "dataset.opt_out": "the measures taken before training to honour text-and-data-mining "
    "reservations (opt-outs)",
    "dataset.user_data": "data from users of the provider's products or services, or 'none'",
    "dataset.synthetic_data": "whether synthetic (AI-generated) data is used, and which",
    "dataset.other_sources": "any other sources of data, or 'none'",
    "dataset.labels": "whether the items carry labels (e.g. captions) and of which types",
    "dataset.intellectual_property": "whether the data set includes data protected by "
    "copyright, trademark or patent, or is entirely in the public domain",
    "dataset.purchased_or_licensed": "whether the data set was purchased or licensed",
    "dataset.personal_information": "whether the data set includes personal information "
    "(Cal. Civ. Code § 1798.140(v)) or other sensitive data",
    "dataset.aggregate_consumer_information": "whether the data set includes aggregate "
    "consumer information (Cal. Civ. Code § 1798.140(b))",
    "dataset.other_processing": "any cleaning, processing or other modification besides "
    "clearset's, with its purpose, or 'none'",
    "dataset.source_version": "the data set's version before cleaning (MAJOR.MINOR.PATCH)",
    "dataset.url": "the data set's web page",
    "dataset.citation": "how to cite the data set",
    "dataset.date_published": "the date the cleaned copy is published (YYYY-MM-DD)",
    "dataset.lists_description": "what the hash lists hold and who supplies them (e.g. a "
    "hotline's list of known child sexual abuse material)",
    "dataset.biases": "known biases of the data set",
    "dataset.limitations": "known limitations of the data set",
}

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def gap(key: str) -> str:
    """The marked gap for an answers key."""
    return f"{GAP_PREFIX}{QUESTIONS[key]} [answers: {key}]"


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answers:
    """The operator's answers, by key (see `QUESTIONS`); an empty one asks everything."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        assert key in QUESTIONS, key
        return self.values.get(key)

    def fill(self, key: str) -> str:
        """The answer, or the gap a person must fill."""
        found = self.get(key)
        return found if found is not None else gap(key)


def load_answers(path: str | Path | None) -> Answers:
    """Read an answers YAML file: `provider:`, `model:` and `dataset:` sections of
    `key: text`. Unknown keys, nesting elsewhere and empty values are refused (a typo
    must not leave a gap silently open)."""
    if path is None:
        return Answers()
    import yaml

    path = Path(path)
    text = read_text(path, "answers file")
    try:
        loaded = yaml.load(text, Loader=_answers_loader())  # a SafeLoader, see there
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise InputError(f"{path}{where}: malformed answers file ({problem})") from None
    if loaded is None:
        return Answers()
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: an answers file is a mapping of sections (provider, ...)")
    values: dict[str, str] = {}
    sections = sorted({key.split(".")[0] for key in QUESTIONS})
    for section, entries in loaded.items():
        if section not in sections:
            raise InputError(f"{path}: unknown section {section!r} (known: {', '.join(sections)})")
        if not isinstance(entries, dict):
            raise InputError(f"{path}: section {section!r} must be a mapping of key: text")
        for name, value in entries.items():
            key = f"{section}.{name}"
            if key not in QUESTIONS:
                near = get_close_matches(key, list(QUESTIONS), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise InputError(f"{path}: unknown key {key!r}{hint}")
            values[key] = _answer_text(path, key, value)
    return Answers(values)


class _YamlBool(str):
    """An unquoted yes/no/on/off/true/false, as typed: YAML 1.1 reads it as a boolean."""

    line = 0  # where it stands in the answers file, from 1


def _answers_loader() -> Any:
    """A SafeLoader that keeps numbers and dates as typed (`1.10` is not 1.1, `010` is
    not 8) and marks booleans, so an answer `no` can be refused with how to write it."""
    import yaml

    class AnswersLoader(yaml.SafeLoader):
        pass

    def as_typed(loader: Any, node: Any) -> str:
        return str(node.value)

    def as_bool(loader: Any, node: Any) -> _YamlBool:
        flag = _YamlBool(node.value)
        flag.line = node.start_mark.line + 1
        return flag

    for tag in ("int", "float", "timestamp"):
        AnswersLoader.add_constructor(f"tag:yaml.org,2002:{tag}", as_typed)
    AnswersLoader.add_constructor("tag:yaml.org,2002:bool", as_bool)
    return AnswersLoader


def _answer_text(path: Path, key: str, value: Any) -> str:
    if value is None:
        raise InputError(f"{path}: {key} is empty; leave the key out to keep its gap")
    flags = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, _YamlBool)]
    if flags:
        name = key.split(".", 1)[1]
        raise InputError(
            f"{path}:{flags[0].line}: {key}: YAML reads an unquoted {flags[0]} as true/false, "
            f"not as text; write it in quotes: {name}: '{flags[0]}'"
        )
    if isinstance(value, list) and value and all(_is_scalar(v) for v in value):
        text = "; ".join(str(v).strip() for v in value)
    elif _is_scalar(value):
        text = value.isoformat() if isinstance(value, date) else str(value).strip()
    else:
        raise InputError(f"{path}: {key} must be text (or a list of texts)")
    if not text:
        raise InputError(f"{path}: {key} is empty; leave the key out to keep its gap")
    text = " ".join(text.split())  # one line: it may land in a table cell or a heading
    if "GAP:" in text:
        raise InputError(f"{path}: {key} holds a gap marker; write the answer itself")
    if key == "dataset.source_version" and not _SEMVER.match(text):
        raise InputError(f"{path}: {key} {text!r} is not MAJOR.MINOR.PATCH (e.g. 1.2.0)")
    if key == "dataset.date_published":
        try:
            date.fromisoformat(text)
        except ValueError:
            raise InputError(f"{path}: {key} {text!r} is not a date (YYYY-MM-DD)") from None
    return text


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | date) and not isinstance(value, bool)


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class Receipt:
    """The signed receipt over the cleaned copy (read, not verified: `clearset verify`
    does that with the signer's public key)."""

    digest: str
    root: str
    size: int
    key_ids: tuple[str, ...]
    dataset_name: str
    source_name: str
    leaves: LeafCounts  # its leaves by kind (total only, for a receipt made before kinds)


@dataclass(frozen=True)
class CleanedFile:
    """One file of the cleaned copy, relative to its root."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Collection:
    """What the source's side files record about how its items were collected."""

    recorded_by: str | None = None  # e.g. "img2dataset _stats.json (4 shards)"
    start: datetime | None = None
    end: datetime | None = None
    x_robots_skipped: int | None = None  # None: the source records no statuses


@dataclass(frozen=True)
class RunFacts:
    run: Path
    report: dict[str, Any]
    answers: Answers
    source_kind: str
    source_name: str  # the source's last path part (or the receipt's name): never a path
    dataset_name: str
    destination: Path  # the cleaned copy, local
    destination_name: str
    receipt: Receipt | None
    lists: list[dict[str, Any]]  # identity and matched items, never entries
    domains: list[tuple[str, int]]  # kept items by URL host, most first
    urls: int  # kept items with a URL
    image_formats: dict[str, int]  # kept hashed images by format
    member_kinds: dict[str, int]  # kept non-image members by extension
    dimensions: tuple[int, int, int, int] | None  # min/max width, min/max height
    collection: Collection
    files: list[str]  # the cleaned copy's files, relative to its root
    accounting: dict[str, Any]  # run.json's: verdict, problem, totals

    # --- the report's numbers, by name (see `figures`)
    @property
    def counts(self) -> dict[str, Any]:
        return self.report["clean"]["counts"]

    @property
    def rows(self) -> int:
        return self.report["items"]["total"]

    @property
    def images_scanned(self) -> int:
        """Items that are (or should be) images: every manifest row but other members."""
        return self.rows - self.report["items"]["status"].get("other", 0)

    @property
    def items_kept(self) -> int:
        return self.counts["items_kept"]

    @property
    def items_removed(self) -> int:
        return self.counts["items_removed"]

    @property
    def matched(self) -> int:
        return self.report["items"]["matched"]

    @property
    def scanned(self) -> SetCounts:
        """The data set as scanned: samples and members by kind (report.json `counts`)."""
        return SetCounts(**self.report["counts"]["scanned"])

    @property
    def kept(self) -> SetCounts:
        """The cleaned copy: samples and members by kind."""
        return SetCounts(**self.report["counts"]["kept"])

    @property
    def removed(self) -> dict[str, int]:
        """{samples, members} the clean removed."""
        return self.report["counts"]["removed"]

    def kept_text(self) -> str:
        """'56 samples (112 members: 56 images, 56 other members)'."""
        kept = self.kept
        return (
            f"{plural(kept.samples, 'sample')} ({plural(kept.members, 'member')}: {kept.kinds()})"
        )

    def clean_text(self) -> str:
        """Which clean these counts describe: the copy's name, finish and manifest digest."""
        clean = self.report["counts"]["clean"]
        return (
            f"the cleaned copy {clean['destination']!r} made by the clean that finished "
            f"{clean['finished']} (cleaned manifest SHA-256 {clean['manifest_digest']})"
        )

    def figures(self) -> list[tuple[str, int, str]]:
        """(what, number, where in report.json): the numbers every document quotes.

        A `where` of `a + b` or `a - b` is that sum or difference of report fields."""
        scanned, kept = self.scanned, self.kept
        figures = [
            ("samples scanned", scanned.samples, "counts.scanned.samples"),
            ("members scanned (images and their side members)", scanned.members,
             "counts.scanned.members"),
            ("images hashed", scanned.images, "counts.scanned.images"),
            ("unreadable images (kept unless --drop-undecodable)", scanned.unreadable,
             "counts.scanned.unreadable"),
            ("members without bytes (failed downloads, URL-only rows)", scanned.without_bytes,
             "counts.scanned.without_bytes"),
            ("other members (captions, metadata)", scanned.other_members,
             "counts.scanned.other_members"),
            ("samples matched by a list", self.matched, "items.matched"),
            ("samples kept in the cleaned copy", kept.samples, "counts.kept.samples"),
            ("members kept in the cleaned copy", kept.members, "counts.kept.members"),
            ("images kept in the cleaned copy", kept.images, "counts.kept.images"),
            ("samples removed", self.removed["samples"], "counts.removed.samples"),
            ("members removed", self.removed["members"], "counts.removed.members"),
        ]  # fmt: skip
        for entry in self.lists:
            figures.append(
                (f"samples matched by list {entry['name']}", entry["matched_items"],
                 f"matches.by_list.{entry['name']}")
            )  # fmt: skip
        return figures

    # --- shared wording
    def size_band(self) -> str:
        for bound, label in EU_IMAGE_BANDS:
            if self.kept.images < bound:
                return label
        return EU_IMAGE_TOP_BAND

    def video_band(self) -> str:
        for bound, label in EU_VIDEO_BANDS:
            if self.kept.video_hours < bound:
                return label
        return EU_VIDEO_TOP_BAND

    def top_domains(self) -> list[tuple[str, int]]:
        if not self.domains:
            return []
        count = min(TOP_DOMAINS_MAX, max(1, math.ceil(len(self.domains) * TOP_DOMAIN_SHARE)))
        return self.domains[:count]

    def collection_period(self) -> str:
        """The collection window the source records, else the operator's answer or a gap."""
        answered = self.answers.get("dataset.collection_period")
        if self.collection.start and self.collection.end:
            recorded = (
                f"{_day(self.collection.start)} to {_day(self.collection.end)} "
                f"(download times recorded by {self.collection.recorded_by})"
            )
            return f"{recorded}; {answered}" if answered else recorded
        return answered or gap("dataset.collection_period")

    def receipt_text(self) -> str:
        if self.receipt is not None and self.receipt.size == 0 and self.items_kept:
            return (
                f"receipt digest {self.receipt.digest}, Merkle root {self.receipt.root} over no "
                "item: the run held no bytes of its items (URLs and hashes only), so the "
                "receipt vouches for the lists, the counts and the removed-items commitment, "
                "and proves no single item's presence; signed by key "
                f"{', '.join(self.receipt.key_ids)}"
            )
        if self.receipt is None:
            return (
                f"{GAP_PREFIX}a signed receipt over the cleaned copy, to cite here "
                "[command: clearset receipt RUN --key KEY, then make this document again]"
            )
        return (
            f"receipt digest {self.receipt.digest}, Merkle root {self.receipt.root} (RFC 9162) "
            f"over {self.receipt.leaves.text()} (members with identical bytes share a leaf), "
            f"built from the cleaned copy's {self.kept_text()}; signed by key "
            f"{', '.join(self.receipt.key_ids)}"
        )

    def lists_text(self) -> str:
        if not self.lists:
            return "no hash list"
        return "; ".join(list_identity_text(entry) for entry in self.lists)

    def provenance(self) -> str:
        return (
            f"{TOOL_NAME} {__version__} from the run of source {self.source_name!r} "
            f"({self.source_kind}), scanned {_day(self.report['run']['started'])}, cleaned "
            f"copy {self.destination_name!r} finished {_day(self.report['clean']['finished'])}"
        )


def list_identity_text(entry: dict[str, Any]) -> str:
    how = (
        f"{hash_types.label(entry.get('hash_type'))} within {entry.get('threshold')} bits"
        if not hash_types.is_exact(entry.get("hash_type"))
        else f"exact {str(entry.get('hash_type')).upper()}"
    )
    version = entry.get("version") or "no version given"
    return f"{entry['name']} ({version}; {how}; list digest sha256:{entry['digest']})"


def _day(stamp: Any) -> str:
    if isinstance(stamp, datetime):
        return stamp.strftime("%Y-%m-%d")
    return str(stamp or "")[:10] or "unknown"


# ---------------------------------------------------------------- gathering


def gather(run_dir: str | Path, answers: Answers | None = None) -> RunFacts:
    """Everything a document may state about RUN's cleaned copy; refuses a run that
    backs no document (not a run, scan unfinished or unaccounted, never cleaned, cleaned
    against older lists, or a receipt for another clean)."""
    run = RunFolder(Path(run_dir))
    if not run.path.is_dir():
        raise RunFolderError(f"{run.path}: not a clearset run folder (no such folder)")
    info = RunInfo.read(run)
    state = run_state(run, info)
    if state["partial"]:
        # A document is for a regulator: it states whole figures or is not written.
        raise RunFolderError(
            f"{run.path}: {state['problem']}; a document needs the whole run: "
            f"{state['to_finish']}, then write the document again"
        )
    record = CleanRecord.read(run.path)
    if record is None:
        raise RunFolderError(
            f"{run.path}: has no cleaned copy; documents describe the cleaned copy: "
            "run `clearset clean RUN --to OUT` first"
        )
    if not record.finished:
        raise RunFolderError(
            f"{run.path}: the clean to {record.destination} is not finished; "
            "re-run the same `clearset clean` to complete it"
        )
    report = Report.of(build_report(run.path))
    if report.clean["stale"]:
        raise RunFolderError(
            f"{run.path}: the cleaned copy was made before the last `clearset match`; "
            "clean again before documenting it"
        )
    cleaned = RunFolder(run.path / "cleaned")
    markers = cleaned.done_markers()
    manifest = read_manifest_files(
        cleaned.manifest_files(),
        ["member", "url", "status", "format", "width", "height"],
    )
    source = info.source
    receipt = _receipt(run)
    source_name = receipt.source_name if receipt else source_label(str(source.get("url") or ""))
    destination = storage.local_path(str(record.destination))
    files = sorted({name for marker in markers for name in marker.get("files") or []})
    lists = [
        {k: entry.get(k) for k in ("name", "version", "digest", "hash_type", "threshold")}
        | {"matched_items": entry.get("matched_items", 0)}
        for entry in report.lists
    ]
    return RunFacts(
        run=run.path,
        report=report.raw,
        answers=answers or Answers(),
        source_kind=str(source.get("kind") or "unknown"),
        source_name=source_name,
        dataset_name=receipt.dataset_name if receipt else source_name,
        destination=destination,
        destination_name=source_label(str(record.destination)),
        receipt=receipt,
        lists=lists,
        domains=_domains(manifest),
        urls=_count_urls(manifest),
        image_formats=_image_formats(manifest),
        member_kinds=_member_kinds(manifest),
        dimensions=_dimensions(manifest),
        collection=_collection(destination, files),
        files=files,
        accounting=info.accounting,
    )


def _receipt(run: RunFolder) -> Receipt | None:
    path = run.path / RECEIPT_FILE
    if not path.exists():
        return None
    try:
        envelope = parse_envelope(path.read_bytes(), str(path))
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read the receipt ({exc.strerror or exc})") from None
    except VerificationError as exc:
        raise RunFolderError(f"{path}: not a readable receipt ({exc})") from None
    statement = parse_json(envelope_payload(envelope), str(path))
    predicate = statement["predicate"]
    covered = (predicate.get("clean") or {}).get("manifest_digest", {}).get("sha256")
    if covered != clean_identity(run.path)["manifest_digest"]:
        raise RunFolderError(
            f"{path}: the receipt covers an earlier cleaned copy, not the current one; "
            f"sign a new one (`clearset receipt {run.path} --key KEY`) before documenting"
        )
    return Receipt(
        digest=receipt_digest(envelope),
        root=predicate["tree"]["root"],
        size=predicate["tree"]["size"],
        key_ids=tuple(s.get("keyid", "?") for s in envelope.get("signatures", [])),
        dataset_name=statement["subject"][0]["name"],
        source_name=predicate["source"]["name"],
        leaves=statement_counts(statement)[1],
    )


def _images(manifest: pa.Table) -> pa.Table:
    return manifest.filter(pc.not_equal(manifest.column("status"), "other"))


# scheme://[user@]host[:port]/...: the host, lower-cased; never the path or query.
_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^/:?#]+)"


def _domains(manifest: pa.Table) -> list[tuple[str, int]]:
    urls = _images(manifest).column("url").drop_null()
    if not len(urls):
        return []
    hosts = pc.struct_field(pc.extract_regex(urls, _HOST), [0]).drop_null()
    counts = Counter(dict(zip(*_value_counts(pc.utf8_lower(hosts)), strict=True)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _value_counts(array: pa.Array | pa.ChunkedArray) -> tuple[list[Any], list[int]]:
    counted = pc.value_counts(array)
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist()


def _count_urls(manifest: pa.Table) -> int:
    return len(_images(manifest).column("url").drop_null())


def _image_formats(manifest: pa.Table) -> dict[str, int]:
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok")).column("format")
    values, counts = _value_counts(ok.fill_null("unknown"))
    return dict(sorted(zip(values, counts, strict=True), key=lambda kv: (-kv[1], kv[0])))


def _member_kinds(manifest: pa.Table) -> dict[str, int]:
    other = manifest.filter(pc.equal(manifest.column("status"), "other")).column("member")
    if not len(other):
        return {}
    ext = pc.struct_field(pc.extract_regex(other.drop_null(), r"(?P<ext>\.[^./]+)$"), [0])
    values, counts = _value_counts(pc.utf8_lower(ext.drop_null()))
    return dict(sorted(zip(values, counts, strict=True), key=lambda kv: (-kv[1], kv[0])))


def _dimensions(manifest: pa.Table) -> tuple[int, int, int, int] | None:
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok"))
    if not ok.num_rows:
        return None
    width, height = pc.min_max(ok.column("width")), pc.min_max(ok.column("height"))
    found = [width["min"], width["max"], height["min"], height["max"]]
    values = [v.as_py() for v in found]
    return None if None in values else tuple(values)


def _collection(destination: Path, files: list[str]) -> Collection:
    """img2dataset's `_stats.json` (kept in the cleaned copy, counts corrected): its
    download window and the images it skipped for an X-Robots-Tag directive."""
    stats = [destination / name for name in files if name.endswith("_stats.json")]
    storage.fetch(*stats)  # a cleaned copy in a bucket: its stats, as they are there
    starts: list[float] = []
    ends: list[float] = []
    skipped = 0
    read = 0
    for path in stats:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a copy moved away or edited: its stats are simply not cited
        if not isinstance(record, dict):
            continue
        read += 1
        if _is_number(record.get("start_time")):
            starts.append(float(record["start_time"]))
        if _is_number(record.get("end_time")):
            ends.append(float(record["end_time"]))
        statuses = record.get("status_dict")
        if isinstance(statuses, dict):
            skipped += sum(
                int(n) for k, n in statuses.items() if X_ROBOTS_STATUS in str(k) and _is_number(n)
            )
    if not read:
        return Collection()
    return Collection(
        recorded_by=f"img2dataset _stats.json ({read} shard{'s' if read != 1 else ''})",
        start=datetime.fromtimestamp(min(starts), UTC) if starts else None,
        end=datetime.fromtimestamp(max(ends), UTC) if ends else None,
        x_robots_skipped=skipped,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parquet_columns(path: Path) -> pa.Schema | None:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException):
        return None


# ---------------------------------------------------------------- gaps in a document


@dataclass(frozen=True)
class Gap:
    key: str  # the answers key, or the command to run for a `[command: ...]` gap
    what: str
    line: int
    how: str = "answers"


def read_text(path: Path, what: str) -> str:
    """A UTF-8 file's text, or one InputError line naming it and the problem."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InputError(f"{path}: cannot read the {what} ({reason})") from None


def find_gaps(path: str | Path) -> tuple[str, list[Gap]]:
    """(format, gaps) of a document `clearset document` wrote; InputError for any
    other file."""
    path = Path(path)
    text = read_text(path, "document")
    kind = document_kind(text)
    if kind is None:
        raise InputError(
            f"{path}: not a document made by `clearset document` (no {MARKER!r} marker "
            "and not Croissant JSON-LD)"
        )
    gaps = []
    for number, line in enumerate(text.splitlines(), 1):
        for found in GAP_PATTERN.finditer(line):
            gaps.append(Gap(found["key"], found["what"], number, found["how"]))
    return kind, gaps


def document_kind(text: str) -> str | None:
    """The format a document declares, or None for a file that is not one."""
    found = re.search(r"<!-- clearset document: (?P<kind>[a-z0-9-]+)\b", text)
    if found:
        return found["kind"]
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and "croissant" in str(value.get("conformsTo", "")):
        return "croissant"
    return None


def marker_line(kind: str) -> str:
    return (
        f"<!-- {MARKER} {kind}; made by {TOOL_NAME} {__version__}; a draft for the "
        "operator's legal review; `clearset document --check FILE` lists its gaps -->"
    )


# ---------------------------------------------------------------- shared Markdown


def md_cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value: int) -> str:
    return f"{value:,}"


def figures_section(facts: RunFacts, heading: str = "##") -> str:
    """The run's numbers, each with the report.json field it equals, so a reader can
    check every figure against `clearset report RUN`."""
    rows = [[what, number(value), f"`{where}`"] for what, value, where in facts.figures()]
    return (
        f"{heading} Figures from the run\n\n"
        f"They describe {facts.clean_text()}. A sample is one training example (a key), a "
        "member one file of it (its image, caption or metadata), a leaf one distinct "
        "SHA-256 of a kept member. Each number equals the named field of the run's report "
        "(`clearset report RUN` writes it to RUN/report.json; a status it leaves out "
        "counts 0).\n\n" + md_table(["figure", "number", "report.json field"], rows)
    )


def lists_table(facts: RunFacts) -> str:
    if not facts.lists:
        return "The run was matched against no hash list."
    rows = [
        [entry["name"], entry.get("version") or "not given", entry.get("hash_type"),
         "exact" if hash_types.is_exact(entry.get("hash_type")) else entry.get("threshold"),
         f"`{entry['digest']}`", number(entry["matched_items"])]
        for entry in facts.lists
    ]  # fmt: skip
    return md_table(
        ["list", "version", "hash", "threshold (bits)", "list digest (SHA-256)", "samples matched"],
        rows,
    )


def removal_paragraph(facts: RunFacts) -> str:
    """How known abuse material was removed, in numbers, with what verifies them."""
    accepted = ""
    if facts.accounting.get("verdict") == "accepted":
        accepted = (
            f" The scan was accepted with --allow-missing although it "
            f"{facts.accounting.get('problem')}."
        )
    return (
        f"Every item of the source was hashed by {TOOL_NAME} {__version__} "
        f"({hash_types.labels('bytes')} of its bytes, {hash_types.labels('pixels')} of its "
        "pixels) and matched against the hash lists below, "
        "which are named by identity only: their entries appear nowhere in this document. "
        f"Of {facts.scanned.text()} scanned, {plural(facts.matched, 'sample')} matched "
        f"a list; the cleaned copy removed {plural(facts.removed['samples'], 'sample')} "
        f"({plural(facts.removed['members'], 'member')}: their images with their captions "
        f"and metadata) and kept {facts.kept_text()}.{accepted} No removed item was "
        "viewed, and none is described here beyond these counts."
    )


def verify_paragraph(facts: RunFacts) -> str:
    if facts.receipt is None:
        return f"Receipt: {facts.receipt_text()}."
    return (
        f"Receipt: {facts.receipt_text()}. Anyone with the receipt (`receipt.dsse.json`) "
        "and the signer's public key can check it with `clearset verify receipt.dsse.json "
        "--pubkey KEY`, and check whether any one image is in the cleaned copy with a proof "
        "from `clearset prove`."
    )
