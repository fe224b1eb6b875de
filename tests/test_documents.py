"""Training-data documents (issue 17): each format from the demo run and from a
metadata-only run; the numbers are the report's, the receipt and the lists are cited by
identity, what the run cannot know is a gap until an answers file fills it, Croissant
validates with mlcroissant and hashes the cleaned files, and bad input is one line with
nothing written."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from clearset.demo import DemoData, demo_items, write_webdataset
from clearset.documents import FORMATS, QUESTIONS, check_document, write_documents
from clearset.documents.facts import GAP_PATTERN, load_answers
from clearset.documents.report import build_report
from clearset.errors import ClearsetError, InputError, OutputError, RunFolderError
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.receipts import generate_keypair
from clearset.receipts.dsse import receipt_digest
from clearset.runfolder import read_cleaned_manifest
from clearset.runs import MatchJob, ScanSettings, run_scan
from clearset.runs.issue import issue_receipt
from clearset.stages.clean import CleanJob
from tests.conftest import cli, run_cli, the_demo_items

MARKDOWN = ("eu-ai-act", "ab2013", "datacard")


# ---------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def demo_run(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's run: scanned, matched, cleaned in the same pass, and receipted."""
    root = tmp_path_factory.mktemp("docs-demo")
    job = MatchJob(
        (ListSpec(str(demo_data.pdq_list)), ListSpec(str(demo_data.md5_list))), MatchSettings()
    )
    run_scan(
        open_source(str(demo_data.webdataset)),
        root / "run",
        ScanSettings(dihedral=True),
        workers=2,
        show_progress=False,
        match=job,
        clean=CleanJob(str(root / "cleaned")),
    )
    key, _ = generate_keypair(root / "keys")
    envelope = issue_receipt(root / "run", key, dataset_name="clearset-demo")
    lists = [demo_data.pdq_list, demo_data.md5_list]
    return {"run": root / "run", "dest": root / "cleaned", "envelope": envelope,
            "source": demo_data.webdataset, "lists": lists}  # fmt: skip


HOSTS = ["a.example.org"] * 12 + ["b.example.net"] * 5 + ["c.example.com"] * 3


def _metadata_parquet(path: Path) -> list[str]:
    """LAION-style metadata: keys, URLs on three hosts, MD5s, captions; no image bytes."""
    md5s = [hashlib.md5(f"image {n}".encode()).hexdigest() for n in range(len(HOSTS))]
    pq.write_table(
        pa.table({
            "key": [f"{n:05d}" for n in range(len(HOSTS))],
            "url": [f"https://{h}/img/{n}.jpg?size=large" for n, h in enumerate(HOSTS)],
            "md5": md5s,
            "caption": [f"benign caption {n}" for n in range(len(HOSTS))],
        }),
        path,
    )  # fmt: skip
    return md5s


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A metadata-only run (URLs and MD5s, no bytes), accepted with --allow-missing and
    cleaned; no receipt, so its documents carry that gap too."""
    root = tmp_path_factory.mktemp("docs-meta")
    md5s = _metadata_parquet(root / "meta.parquet")
    watched = root / "md5.txt"
    watched.write_text(f"{md5s[2]}\n{md5s[13]}\n")  # one on a.example.org, one on b
    run_scan(
        open_source(str(root / "meta.parquet")),
        root / "run",
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=MatchJob((ListSpec(str(watched), hash_type="md5"),), MatchSettings()),
        clean=CleanJob(str(root / "clean")),
        allow_missing=True,
    )
    return {"run": root / "run", "dest": root / "clean", "envelope": None,
            "source": root / "meta.parquet", "lists": [watched], "md5s": md5s}  # fmt: skip


@pytest.fixture(scope="module")
def documents(demo_run: dict, meta_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every format for both runs, with no answers: {(run, format): path}."""
    out = tmp_path_factory.mktemp("docs-out")
    made = {}
    for name, run in (("demo", demo_run), ("meta", meta_run)):
        for fmt in FORMATS:
            (made[name, fmt],) = write_documents(run["run"], [fmt], out=out / name / fmt)
    return made


RUNS = ("demo", "meta")


def _run(name: str, demo_run: dict, meta_run: dict) -> dict:
    return demo_run if name == "demo" else meta_run


# ---------------------------------------------------------------- numbers


def _field(report: dict, path: str) -> int:
    """A report.json field by dotted path; `a + b` and `a - b` as sums."""
    parts = re.split(r" ([+-]) ", path)
    total, sign = 0, 1
    for part in parts:
        if part in "+-":
            sign = 1 if part == "+" else -1
            continue
        value: object = report
        head, _, last = part.rpartition(".by_list.")
        steps = (head.split(".") + ["by_list", last]) if last and head else part.split(".")
        for number, step in enumerate(steps):
            if number == len(steps) - 1 and steps[-2] == "status" and step not in value:
                value = 0  # the report leaves out a status no row has
                break
            value = value[step]  # type: ignore[index]
        total += sign * int(value)  # type: ignore[call-overload]
    return total


@pytest.mark.parametrize("name", RUNS)
@pytest.mark.parametrize("fmt", MARKDOWN)
def test_every_figure_equals_the_report(
    name: str, fmt: str, documents: dict, demo_run: dict, meta_run: dict
) -> None:
    run = _run(name, demo_run, meta_run)
    text = documents[name, fmt].read_text()
    report = build_report(run["run"])
    rows = re.findall(r"^\| (.+?) \| ([\d,]+) \| `([^`]+)` \|$", text, re.M)
    assert len(rows) >= 10 + len(report["lists"])
    for what, shown, where in rows:
        assert int(shown.replace(",", "")) == _field(report, where), (what, where)
    # The figures the table cites are the cleaned copy's own, counted here from its manifest.
    kept = read_cleaned_manifest(run["run"], columns=["key", "shard", "status"]).to_pylist()
    images_kept = sum(row["status"] == "ok" for row in kept)
    samples_kept = len({(row["shard"], row["key"]) for row in kept})
    assert f"| images kept in the cleaned copy | {images_kept:,} |" in text
    assert f"| samples kept in the cleaned copy | {samples_kept:,} |" in text
    assert f"| members kept in the cleaned copy | {len(kept):,} |" in text
    assert report["clean"]["counts"]["keys_removed"] == report["items"]["matched"] > 0


@pytest.mark.parametrize("name", RUNS)
def test_narrative_numbers_are_the_reports_too(
    name: str, documents: dict, demo_run: dict, meta_run: dict
) -> None:
    run = _run(name, demo_run, meta_run)
    report = build_report(run["run"])
    counts = report["counts"]
    for fmt in FORMATS:
        text = documents[name, fmt].read_text()
        if fmt == "croissant":
            text = json.loads(text)["rai:dataManipulationProtocol"]
        found = re.search(
            r"Of ([\d,]+) members in ([\d,]+) samples \(([\d,]+) images, .*?\) scanned, "
            r"([\d,]+) samples? matched a list; the cleaned copy removed ([\d,]+) samples? "
            r"\(([\d,]+) members?: .*? and kept ([\d,]+) samples? \(([\d,]+) members",
            text,
        )
        assert found, fmt
        numbers = [int(g.replace(",", "")) for g in found.groups()]
        scanned, kept, removed = counts["scanned"], counts["kept"], counts["removed"]
        assert numbers == [scanned["members"], scanned["samples"], scanned["images"],
                           report["items"]["matched"], removed["samples"], removed["members"],
                           kept["samples"], kept["members"]]  # fmt: skip


# ---------------------------------------------------------------- receipt and lists


@pytest.mark.parametrize("name", RUNS)
def test_documents_cite_the_receipt_and_the_lists_by_identity(
    name: str, documents: dict, demo_run: dict, meta_run: dict
) -> None:
    run = _run(name, demo_run, meta_run)
    info = json.loads((run["run"] / "run.json").read_text())
    digests = [entry["digest"] for entry in info["settings"]["matching"]["lists"]]
    for fmt in FORMATS:
        text = documents[name, fmt].read_text()
        for digest in digests:
            assert digest in text, fmt
        if run["envelope"] is not None:
            statement_root = json.loads(__import__("base64").b64decode(run["envelope"]["payload"]))[
                "predicate"
            ]["tree"]["root"]
            assert receipt_digest(run["envelope"]) in text and statement_root in text
        else:
            assert "[command: clearset receipt RUN --key KEY" in text
            _, gaps = check_document(documents[name, fmt])
            assert any(g.how == "command" for g in gaps)


@pytest.mark.parametrize("name", RUNS)
def test_no_list_entry_caption_pixels_or_local_path(
    name: str, documents: dict, demo_run: dict, meta_run: dict, demo_data: DemoData
) -> None:
    run = _run(name, demo_run, meta_run)
    entries: set[str] = set()
    for path in run["lists"]:
        for line in path.read_text().splitlines():
            entries |= {w for w in re.split(r"[\s,]+", line) if re.fullmatch(r"[0-9a-f]{32,}", w)}
    assert entries
    removed = pq.read_table(run["run"] / "removals.parquet").to_pylist()
    removed_keys = {r["key"] for r in removed}
    captions = (
        {i.caption for i in the_demo_items() if i.key in removed_keys}
        if name == "demo"
        else {f"benign caption {int(k)}" for k in removed_keys}
    )
    for fmt in FORMATS:
        text = documents[name, fmt].read_text()
        assert not [e for e in entries if e in text], fmt
        assert not [c for c in captions if c in text], fmt
        assert not [r["url"] for r in removed if r["url"] and r["url"] in text], fmt
        assert str(run["source"]) not in text and str(run["dest"]) not in text, fmt
        assert "data:image" not in text and "base64" not in text


def test_metadata_run_lists_its_domains_by_items_kept(documents: dict, meta_run: dict) -> None:
    text = documents["meta", "eu-ai-act"].read_text()
    kept = read_cleaned_manifest(meta_run["run"], columns=["url"]).column("url").to_pylist()
    hosts = [u.split("/")[2] for u in kept]
    assert f"{len(kept)} kept items carry a source URL, from 3 host names" in text
    top = max(set(hosts), key=hosts.count)
    assert f"| {top} | {hosts.count(top)} |" in text
    assert "?size=large" not in text  # host names only, never a path or query
    assert "Less than 1 million images" in text


# ---------------------------------------------------------------- croissant


def _croissant_files(path: Path) -> dict[str, str]:
    meta = json.loads(path.read_text())
    return {
        d["contentUrl"]: d["sha256"] for d in meta["distribution"] if d["@type"] == "cr:FileObject"
    }


@pytest.mark.parametrize("name", RUNS)
def test_croissant_validates_and_hashes_the_cleaned_files(
    name: str, documents: dict, demo_run: dict, meta_run: dict
) -> None:
    run = _run(name, demo_run, meta_run)
    path = documents[name, "croissant"]
    proc = subprocess.run(
        [sys.executable, "-c", "from mlcroissant.scripts.validate import main; "
         "from absl import app; app.run(main)", "--jsonld", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    on_disk = {
        str(p.relative_to(run["dest"])): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in run["dest"].rglob("*")
        if p.is_file() and ".clearset-clean" not in p.parts
    }
    assert _croissant_files(path) == on_disk
    meta = json.loads(path.read_text())
    assert meta["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert meta["@context"]["rai"] == "http://mlcommons.org/croissant/RAI/"
    # The RAI fields the run fills: only what a person must add is a gap in them.
    may_ask = {
        "rai:dataCollection": {"dataset.collection_period", "dataset.crawler"},
        "rai:dataPreprocessingProtocol": set(),
        "rai:dataManipulationProtocol": {"dataset.lists_description",
                                         "clearset receipt RUN --key KEY, then make this "
                                         "document again"},
    }  # fmt: skip
    for field, allowed in may_ask.items():
        text = json.dumps(meta[field])
        assert text.startswith(('"The items', '["Every item', '"Every item')), field
        assert {m["key"] for m in GAP_PATTERN.finditer(text)} <= allowed, field


@pytest.mark.parametrize("name", RUNS)
def test_croissant_records_are_the_kept_items(
    name: str, documents: dict, demo_run: dict, meta_run: dict, tmp_path: Path
) -> None:
    """Loaded through mlcroissant beside a copy of the cleaned copy, the items record set
    has one record per kept item."""
    import mlcroissant as mlc

    run = _run(name, demo_run, meta_run)
    copy = tmp_path / "copy"
    shutil.copytree(run["dest"], copy)
    shutil.copy(documents[name, "croissant"], copy / "croissant.json")
    records = list(mlc.Dataset(jsonld=str(copy / "croissant.json")).records("items"))
    kept = read_cleaned_manifest(run["run"], columns=["key", "status"]).to_pylist()
    kept_keys = {r["key"] for r in kept if r["status"] != "other"}
    assert {r["items/key"].decode() for r in records} == kept_keys
    assert len(records) == build_report(run["run"])["clean"]["counts"]["items_kept"]


# ---------------------------------------------------------------- gaps and answers


def _all_answers(path: Path) -> dict[str, str]:
    answers = {key: f"answer to {key}" for key in QUESTIONS}
    answers["dataset.source_version"] = "1.4.2"
    answers["dataset.date_published"] = "2026-12-01"
    answers["dataset.url"] = "https://example.org/data"
    answers["dataset.license"] = "cc-by-4.0"
    nested: dict[str, dict[str, str]] = {}
    for key, value in answers.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    path.write_text(yaml.safe_dump(nested))
    return answers


@pytest.mark.parametrize("name", RUNS)
def test_gaps_are_listed_and_answers_fill_them(
    name: str, documents: dict, demo_run: dict, meta_run: dict, tmp_path: Path
) -> None:
    run = _run(name, demo_run, meta_run)
    answers = _all_answers(tmp_path / "answers.yaml")
    for fmt in FORMATS:
        _, gaps = check_document(documents[name, fmt])
        asked = {g.key for g in gaps if g.how == "answers"}
        assert asked and asked <= set(QUESTIONS), fmt
        assert "provider.name" in asked, fmt
        if fmt != "eu-ai-act":  # the EU template does not ask it
            assert "dataset.personal_information" in asked, fmt
        if fmt in ("croissant", "datacard"):
            assert "dataset.license" in asked, fmt
        (filled,) = write_documents(
            run["run"], [fmt], out=tmp_path / f"{fmt}.filled", answers=tmp_path / "answers.yaml"
        )
        text = filled.read_text()
        _, left = check_document(filled)
        assert not [g for g in left if g.how == "answers"], fmt
        for key in asked - {"dataset.source_version"}:
            assert answers[key] in text, (fmt, key)
        assert "answer to" not in documents[name, fmt].read_text()  # nothing invented


def test_filled_croissant_is_the_next_major_version_with_no_warning(
    demo_run: dict, tmp_path: Path
) -> None:
    import mlcroissant as mlc

    _all_answers(tmp_path / "answers.yaml")
    (path,) = write_documents(
        demo_run["run"], ["croissant"], out=tmp_path / "c.json", answers=tmp_path / "answers.yaml"
    )
    meta = json.loads(path.read_text())
    assert meta["version"] == "2.0.0" and meta["license"] == "cc-by-4.0"
    dataset = mlc.Dataset(jsonld=str(path))
    assert not dataset.metadata.ctx.issues.warnings, dataset.metadata.ctx.issues.report()
    card = write_documents(
        demo_run["run"], ["datacard"], out=tmp_path / "README.md", answers=tmp_path / "answers.yaml"
    )[0].read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["size_categories"] == ["n<1K"]
    assert "2.0.0 (a new major version of 1.4.2" in card


def test_datacard_config_points_at_the_cleaned_parquet(documents: dict, meta_run: dict) -> None:
    text = documents["meta", "datacard"].read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    (config,) = header["configs"]
    paths = config["data_files"][0]["path"]
    assert paths == ["meta.parquet"] and (meta_run["dest"] / "meta.parquet").exists()
    assert "license" not in header  # no licence was given: none is claimed
    assert "GAP: the licence(s)" in text


def test_check_cli_lists_gaps_and_exits_by_what_is_left(
    documents: dict, demo_run: dict, tmp_path: Path
) -> None:
    path = documents["demo", "ab2013"]
    proc = cli("document", "--check", str(path))
    assert proc.returncode == 1, proc.stderr
    listed = re.findall(r"GAP \(answers key ([a-z_.]+)\)", proc.stdout)
    assert sorted(set(listed)) == sorted({m["key"] for m in GAP_PATTERN.finditer(path.read_text())})
    _all_answers(tmp_path / "answers.yaml")
    out = tmp_path / "ab2013.md"
    proc = cli("document", str(demo_run["run"]), "--format", "ab2013", "--out", str(out),
                   "--answers", str(tmp_path / "answers.yaml"))  # fmt: skip
    assert proc.returncode == 0 and str(out) in proc.stdout, proc.stderr
    proc = cli("document", "--check", str(out))
    assert proc.returncode == 0 and "no gaps left" in proc.stdout


# ---------------------------------------------------------------- bad input


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clearset: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_check_refuses_a_file_that_is_no_document(demo_run: dict, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\nGAP: nothing [answers: dataset.license]\n")
    _one_line_error(cli("document", "--check", str(notes)), str(notes), "not a document")
    proc = cli("document", "--check", str(demo_run["run"] / "run.json"))
    _one_line_error(proc, "run.json", "not a document")
    assert proc.returncode == 2


def test_not_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = cli("document", str(tmp_path / "empty"), "--format", "ab2013")
    _one_line_error(proc, str(tmp_path / "empty"), "not a clearset run folder")
    assert not (tmp_path / "empty" / "documents").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("provider: [unclosed\n", "answers.yaml:"),
        ("dataset:\n  licence: CC-BY\n", "did you mean 'dataset.license'"),
        ("owner: someone\n", "unknown section 'owner'"),
        ("dataset:\n  license: ''\n", "is empty"),
        ("dataset:\n  license:\n", "dataset.license is empty"),
        ("dataset:\n  source_version: v2\n", "MAJOR.MINOR.PATCH"),
        ("- a list\n", "mapping"),
    ],
)
def test_a_bad_answers_file_is_one_line_and_writes_nothing(
    demo_run: dict, tmp_path: Path, content: str, needle: str
) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(content)
    out = tmp_path / "doc.md"
    proc = cli("document", str(demo_run["run"]), "--format", "eu-ai-act", "--out", str(out),
                   "--answers", str(answers))  # fmt: skip
    _one_line_error(proc, needle)
    assert proc.returncode == 2 and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_an_unaccounted_scan_backs_no_document(tmp_path: Path) -> None:
    """A metadata-only scan without --allow-missing hashed nothing: no document."""
    md5s = _metadata_parquet(tmp_path / "meta.parquet")
    (tmp_path / "md5.txt").write_text(md5s[0] + "\n")
    with pytest.raises(ClearsetError):
        run_scan(
            open_source(str(tmp_path / "meta.parquet")),
            tmp_path / "run",
            ScanSettings(),
            workers=1,
            show_progress=False,
            match=MatchJob(
                (ListSpec(str(tmp_path / "md5.txt"), hash_type="md5"),), MatchSettings()
            ),
        )
    with pytest.raises(RunFolderError, match="hashed no image"):
        write_documents(tmp_path / "run", ["ab2013"])
    assert not (tmp_path / "run" / "documents").exists()


def test_an_uncleaned_run_backs_no_document(demo_data: DemoData, tmp_path: Path) -> None:
    items = [item for item in demo_items(count=4) if not item.broken]
    write_webdataset(tmp_path / "src", items, shard_size=4)
    run_scan(open_source(str(tmp_path / "src")), tmp_path / "run", ScanSettings(), workers=1,
             show_progress=False)  # fmt: skip
    with pytest.raises(RunFolderError, match="has no cleaned copy"):
        write_documents(tmp_path / "run", ["croissant"])


def test_a_document_is_never_written_into_the_cleaned_copy(demo_run: dict) -> None:
    target = demo_run["dest"] / "README.md"
    with pytest.raises(OutputError, match="inside the cleaned copy"):
        write_documents(demo_run["run"], ["datacard"], out=target)
    assert not target.exists()


def test_unknown_format_and_missing_arguments(demo_run: dict) -> None:
    _one_line_error(run_cli("document", str(demo_run["run"]), "--format", "gdpr"), "'gdpr'")
    _one_line_error(run_cli("document", str(demo_run["run"])), "--format")
    with pytest.raises(InputError):
        load_answers(demo_run["run"] / "no-such.yaml")


# ---------------------------------------------------------------- what img2dataset records


def test_img2dataset_download_window_and_opt_outs_are_reported(tmp_path: Path) -> None:
    """img2dataset's _stats.json records when it downloaded and how many images an
    X-Robots-Tag directive (noai...) kept out: the documents report both."""
    items = [item for item in demo_items(count=8) if not item.broken]
    write_webdataset(tmp_path / "src", items, shard_size=4)
    windows = [(1_735_689_600.0, 1_735_700_000.0), (1_738_368_000.0, 1_738_400_000.0)]
    skipped = [3, 4]
    for number, ((start, end), n) in enumerate(zip(windows, skipped, strict=True)):
        stats_path = tmp_path / "src" / f"{number:05d}_stats.json"
        stats = json.loads(stats_path.read_text())
        stats.update(start_time=start, end_time=end)
        stats["status_dict"]["Use of image disallowed by X-Robots-Tag directive"] = n
        stats_path.write_text(json.dumps(stats))
    with tarfile.open(tmp_path / "src" / "00000.tar") as tar:
        first = next(m for m in tar if m.name.endswith(".jpg"))
        watched = hashlib.md5(tar.extractfile(first).read()).hexdigest()
    (tmp_path / "md5.txt").write_text(watched + "\n")
    run_scan(
        open_source(str(tmp_path / "src")),
        tmp_path / "run",
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=MatchJob((ListSpec(str(tmp_path / "md5.txt"), hash_type="md5"),), MatchSettings()),
        clean=CleanJob(str(tmp_path / "clean")),
    )
    eu, croissant = write_documents(tmp_path / "run", ["eu-ai-act", "croissant"])
    text = eu.read_text()
    assert "2025-01-01 to 2025-02-01 (download times recorded by img2dataset" in text
    assert f"record {sum(skipped)} images that img2dataset did not download" in text
    meta = json.loads(croissant.read_text())
    stamps = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
              for t in (windows[0][0], windows[1][1])]  # fmt: skip
    assert meta["rai:dataCollectionTimeframe"] == stamps
