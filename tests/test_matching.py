"""Matching a run against lists: exact and near, metadata-only screening, per-list
thresholds, quality gating that never silences the exact check, and re-matching a run
without reading images. Match rows name one list entry each, nothing more."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.formats import open_source
from clearset.lists import load_list
from clearset.matching.matcher import ListSpec, Matcher, MatchSettings
from clearset.matching.reference import hamming_distance
from clearset.runfolder import RunFolder
from clearset.runs import MatchJob, ScanSettings, run_match, run_scan
from tests.conftest import cli, run_cli


@pytest.fixture(scope="module")
def matched_run(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("matched") / "run"
    job = MatchJob(
        (ListSpec(str(demo_data.pdq_list)), ListSpec(str(demo_data.md5_list))), MatchSettings()
    )
    run_scan(
        open_source(str(demo_data.webdataset)),
        run,
        ScanSettings(dihedral=True),
        workers=2,
        show_progress=False,
        match=job,
    )
    return run


def test_planted_copies_are_found(demo_data: DemoData, matched_run: Path) -> None:
    matches = pq.read_table(matched_run / "matches.parquet").to_pylist()
    found = {m["key"] for m in matches}
    planted = demo_data.planted()
    # Letterboxed copies need border trimming; everything else must be found as is.
    expected = {k for k, edit in planted.items() if edit != "letterbox"}
    assert expected <= found
    assert found <= set(planted), "a match on an item that was not planted"
    flip = next(k for k, e in planted.items() if e == "flip")
    assert {m["rotation"] for m in matches if m["key"] == flip} == {"flip_horizontal"}
    exact = next(k for k, e in planted.items() if e == "exact")
    assert {(m["hash_type"], m["distance"]) for m in matches if m["key"] == exact} == {
        ("pdq", 0),
        ("md5", 0),
    }


def test_match_rows_name_one_true_entry_and_no_content(
    demo_data: DemoData, matched_run: Path
) -> None:
    table = pq.read_table(matched_run / "matches.parquet")
    assert "caption" not in table.column_names and "pdq" not in table.column_names
    rows = RunFolder(matched_run).read_manifest().to_pylist()
    manifest = {r["key"]: r for r in rows if r["status"] != "other"}  # the image rows
    pdq_entries = {
        line.split()[1]
        for line in demo_data.pdq_list.read_text().splitlines()
        if line.startswith("pdq")
    }
    for match in table.to_pylist():
        row = manifest[match["key"]]
        if match["hash_type"] == "pdq":
            assert match["entry"] in pdq_entries
            variants = [row["pdq"]]
            if row["pdq_dihedral"]:
                variants += [row["pdq_dihedral"][i : i + 32] for i in range(0, 224, 32)]
            if row["pdq_trimmed"]:
                variants.append(row["pdq_trimmed"])
            entry = np.frombuffer(bytes.fromhex(match["entry"]), np.uint8)[None]
            distances = [
                int(hamming_distance(np.frombuffer(v, np.uint8)[None], entry)[0]) for v in variants
            ]
            assert match["distance"] == min(distances) <= 31
        else:
            assert match["entry"] == row["md5"].hex()
        assert match["sha256"] == row["sha256"] and match["url"] == row["url"]


def test_run_json_names_lists_by_identity_only(demo_data: DemoData, matched_run: Path) -> None:
    info = json.loads((matched_run / "run.json").read_text())
    lists = info["settings"]["matching"]["lists"]
    assert [entry["name"] for entry in lists] == ["watch-pdq", "watch-md5"]
    assert lists[0]["threshold"] == 31 and len(lists[0]["digest"]) == 64
    text = (matched_run / "run.json").read_text()
    for line in demo_data.pdq_list.read_text().splitlines()[1:]:
        assert line.split()[1] not in text
    assert info["counts"]["matches"]["items"] >= 5


def test_rematch_reads_no_image_and_agrees_with_scan(
    demo_data: DemoData, matched_run: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(matched_run, copy)
    summary = run_match(
        copy,
        MatchJob(
            (ListSpec(str(demo_data.pdq_list)), ListSpec(str(demo_data.md5_list))), MatchSettings()
        ),
    )
    assert pq.read_table(copy / "matches.parquet").equals(
        pq.read_table(matched_run / "matches.parquet")
    )
    # With a list of one entry and a tighter threshold, only closer copies remain.
    tight = run_match(
        copy, MatchJob((ListSpec(str(demo_data.pdq_list), threshold=0),), MatchSettings())
    )
    rows = pq.read_table(copy / "matches.parquet").to_pylist()
    assert all(r["distance"] == 0 for r in rows)
    assert tight["items"] < summary["items"]
    assert not [p for p in copy.iterdir() if p.name.startswith(".tmp-")]


def _metadata_parquet(path: Path) -> list[str]:
    urls = [f"https://images.example.com/meta/{n}.jpg" for n in range(6)]
    md5s = [hashlib.md5(f"image {n}".encode()).hexdigest() for n in range(6)]
    pq.write_table(pa.table({"url": urls, "md5": md5s, "caption": ["benign"] * 6}), path)
    return md5s


def test_metadata_only_parquet_is_screened_by_md5_and_url(tmp_path: Path) -> None:
    md5s = _metadata_parquet(tmp_path / "meta.parquet")
    (tmp_path / "md5.txt").write_text(f"{md5s[1]}\n{md5s[4].upper()}\n")
    (tmp_path / "urls.txt").write_text("https://images.example.com/meta/2.jpg\n")
    proc = cli(
        "scan", str(tmp_path / "meta.parquet"), "--out", str(tmp_path / "run"), "--allow-missing",
        "--list", str(tmp_path / "md5.txt"), "--list", f"{tmp_path / 'urls.txt'},type=url",
        check=True,
    )  # fmt: skip
    rows = pq.read_table(tmp_path / "run" / "matches.parquet").to_pylist()
    assert sorted((r["key"], r["field"]) for r in rows) == [
        ("meta.parquet/000000001", "upstream_md5"),
        ("meta.parquet/000000002", "url"),
        ("meta.parquet/000000004", "upstream_md5"),
    ]
    assert "3 samples matched" in proc.stdout


def _manifest(rows: list[dict]) -> pa.Table:
    from clearset.manifest import MANIFEST_SCHEMA

    full = [{"shard": "s", "position": i, "status": "ok", **r} for i, r in enumerate(rows)]
    return pa.Table.from_pylist(full, schema=MANIFEST_SCHEMA)


def _pdq_list(tmp_path: Path, hashes: list[bytes], **kw) -> list:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"pdq {h.hex()}\n" for h in hashes))
    return load_list(str(path), **kw)


def test_low_quality_skips_pdq_but_not_the_exact_check(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pdq = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    md5 = hashlib.md5(b"x").digest()
    (tmp_path / "m.txt").write_text(md5.hex() + "\n")
    lists = _pdq_list(tmp_path, [pdq]) + load_list(str(tmp_path / "m.txt"))
    table = _manifest([{"key": "a", "pdq": pdq, "pdq_quality": 10, "md5": md5}])
    rows = Matcher(lists, MatchSettings(min_quality=50)).match_table(table).to_pylist()
    assert [(r["hash_type"], r["field"]) for r in rows] == [("md5", "md5")]
    rows = Matcher(lists, MatchSettings(min_quality=5)).match_table(table).to_pylist()
    assert sorted(r["hash_type"] for r in rows) == ["md5", "pdq"]


@pytest.mark.parametrize("threshold", [0, 10, 31, 40])
def test_pdq_threshold_boundary_and_per_list_override(tmp_path: Path, threshold: int) -> None:
    rng = np.random.default_rng(threshold)
    entry = rng.integers(0, 256, 32, dtype=np.uint8)
    items = []
    for flips in (threshold, threshold + 1):
        bits = np.unpackbits(entry)
        bits[rng.choice(256, flips, replace=False)] ^= 1
        items.append({"key": f"d{flips}", "pdq": np.packbits(bits).tobytes(), "pdq_quality": 100})
    table = _manifest(items)
    by_default = Matcher(
        _pdq_list(tmp_path, [entry.tobytes()]), MatchSettings(pdq_threshold=threshold)
    )
    assert [(r["key"], r["distance"]) for r in by_default.match_table(table).to_pylist()] == [
        (f"d{threshold}", threshold)
    ]
    override = Matcher(
        _pdq_list(tmp_path, [entry.tobytes()], threshold=threshold), MatchSettings(pdq_threshold=0)
    )
    assert [r["key"] for r in override.match_table(table).to_pylist()] == [f"d{threshold}"]


def test_closest_entry_is_the_one_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    item = rng.integers(0, 256, 32, dtype=np.uint8)
    entries = []
    for flips in (20, 3, 12):
        bits = np.unpackbits(item)
        bits[rng.choice(256, flips, replace=False)] ^= 1
        entries.append(np.packbits(bits).tobytes())
    rows = (
        Matcher(_pdq_list(tmp_path, entries))
        .match_table(_manifest([{"key": "a", "pdq": item.tobytes(), "pdq_quality": 90}]))
        .to_pylist()
    )
    assert len(rows) == 1 and rows[0]["distance"] == 3 and rows[0]["entry"] == entries[1].hex()


def test_bad_list_fails_before_any_scan(demo_data: DemoData, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("pdq " + "0" * 64 + "\n")
    proc = cli("scan", str(demo_data.folder), "--out", str(tmp_path / "run"), "--list", str(bad))
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad.txt:1" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_bad_list_option_is_one_line(demo_data: DemoData, tmp_path: Path) -> None:
    proc = run_cli("match", str(tmp_path), "--list", f"{demo_data.pdq_list},colour=red")
    assert proc.returncode != 0 and "bad option 'colour=red'" in proc.stderr


def test_changed_list_or_unfinished_scan_says_what_is_wrong(
    demo_data: DemoData, tmp_path: Path
) -> None:
    import shutil

    from clearset.errors import RunFolderError

    listed = tmp_path / "watch.txt"
    shutil.copy(demo_data.pdq_list, listed)
    job = MatchJob((ListSpec(str(listed)),), MatchSettings())
    source = open_source(str(demo_data.hf_parquet))
    run = tmp_path / "run"
    run_scan(source, run, ScanSettings(), workers=1, show_progress=False, match=job)
    listed.write_text(
        listed.read_text().splitlines()[0] + "\n" + listed.read_text().splitlines()[1] + "\n"
    )
    with pytest.raises(RunFolderError, match=r"scanned with other lists \(watch changed\)"):
        run_scan(source, run, ScanSettings(), workers=1, show_progress=False, match=job)
    info = json.loads((run / "run.json").read_text())
    info["finished"] = None
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunFolderError, match="scan is not finished"):
        run_match(run, job)


def test_manifest_columns_are_made_when_read() -> None:
    # Matching reads a manifest's columns through `ManifestColumns`: a column the table
    # lacks reads as None, one matching never reads is never converted, a name that is
    # not a matching column is an error (a typo must not read as an empty column).
    from clearset.matching.matcher import ManifestColumns, manifest_columns

    table = pa.table({"key": ["a", "b"], "pdq": [b"\x00" * 32, None], "caption": ["x", "y"]})
    columns = ManifestColumns(table)
    assert list(columns) == manifest_columns() and len(columns) == len(manifest_columns())
    assert columns["pdq"] == [b"\x00" * 32, None]
    assert columns["url"] is None  # a matching column this table lacks
    assert set(columns._lists) == {"pdq", "url"}  # nothing else converted
    with pytest.raises(KeyError):
        columns["caption"]
