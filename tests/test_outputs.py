"""A run folder's outputs: removal lists that carry the source's own hashes, a manifest
folder any parquet reader loads as it is, keys unique across a run, and a history that
keeps what a later match or clean replaced."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoItem, demo_items, write_folder
from clearset.errors import RunFolderError
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runfolder import RunFolder
from clearset.runs import MatchJob, ScanSettings, apply_removals, clean_run, run_match, run_scan
from clearset.stages.clean import CleanJob


def _images(count: int, seed: int = 11) -> list[DemoItem]:
    return [item for item in demo_items(seed=seed, count=count) if item.broken is None]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_list(path: Path, items: list[DemoItem]) -> ListSpec:
    path.write_text("".join(_sha256(item.data) + "\n" for item in items))
    return ListSpec(str(path), hash_type="sha256")


def _scan(source: str, run: Path, lists: tuple[ListSpec, ...] = (), **kw) -> None:
    run_scan(
        open_source(source),
        run,
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=MatchJob(lists, MatchSettings()) if lists else None,
        **kw,
    )


# ---------------------------------------------------------------- removals


def test_metadata_only_removals_reach_a_copy_held_under_other_urls(tmp_path: Path) -> None:
    images = _images(6)
    # LAION-style metadata: URLs and the sha256 of each original download, no bytes.
    meta = pa.table(
        {
            "url": [f"https://origin.example/{n}.jpg" for n in range(len(images))],
            "sha256": [_sha256(item.data).upper() for item in images],
        }
    )
    (tmp_path / "meta").mkdir()
    pq.write_table(meta, tmp_path / "meta" / "meta.parquet")
    watched = _sha256_list(tmp_path / "watch.txt", [images[2]])
    run = tmp_path / "run"
    _scan(
        str(tmp_path / "meta"),
        run,
        (watched,),
        allow_missing=True,
        clean=CleanJob(str(tmp_path / "meta-clean")),
    )
    removals = pq.read_table(run / "removals.parquet").to_pylist()
    assert len(removals) == 1
    assert removals[0]["sha256"] is None  # no bytes of ours: a metadata-only scan
    assert removals[0]["upstream_sha256"] == _sha256(images[2].data)  # hex, lower case
    # Someone else's copy holds the images themselves, fetched from a mirror.
    mirror = pa.table(
        {
            "url": [f"https://mirror.example/{n}.jpg" for n in range(len(images))],
            "image": pa.array([item.data for item in images], pa.binary()),
        }
    )
    (tmp_path / "mirror").mkdir()
    pq.write_table(mirror, tmp_path / "mirror" / "copy.parquet")
    counts = apply_removals(
        str(tmp_path / "mirror"), str(run / "removals.parquet"), tmp_path / "mirror-clean"
    )
    assert counts["keys_removed"] == 1
    kept = pq.read_table(tmp_path / "mirror-clean" / "copy.parquet").column("image").to_pylist()
    assert images[2].data not in kept and len(kept) == len(images) - 1


# ---------------------------------------------------------------- the manifest folder


@pytest.fixture()
def keyless(tmp_path: Path) -> dict:
    """Two parquet shards with no key column: positions repeat across them."""
    images = _images(8)
    (tmp_path / "src").mkdir()
    column = pa.array([item.data for item in images], pa.binary())
    pq.write_table(pa.table({"image": column.slice(0, 3)}), tmp_path / "src" / "a.parquet")
    pq.write_table(pa.table({"image": column.slice(3)}), tmp_path / "src" / "b.parquet")
    # The first row of a and the second row of b: positions 0 and 1, one in each shard.
    watched = _sha256_list(tmp_path / "watch.txt", [images[0], images[4]])
    run = tmp_path / "run"
    _scan(str(tmp_path / "src"), run, (watched,), clean=CleanJob(str(tmp_path / "clean")))
    return {"run": run, "images": images, "dest": tmp_path / "clean", "cache": tmp_path / "hf"}


def test_manifest_folder_is_a_parquet_data_set_every_reader_loads(keyless: dict) -> None:
    import datasets
    import duckdb
    import pyarrow.dataset as pads

    run, total = keyless["run"], len(keyless["images"])
    for folder, rows in ((run / "manifest", total), (run / "cleaned" / "manifest", total - 2)):
        assert {p.suffix for p in folder.iterdir()} == {".parquet"}
        loaded = datasets.load_dataset(
            "parquet", data_dir=str(folder), split="train", cache_dir=str(keyless["cache"])
        )
        assert loaded.num_rows == rows
        assert pads.dataset(folder).count_rows() == rows
        found = duckdb.sql(f"SELECT count(*), count(DISTINCT key) FROM '{folder}/*.parquet'")
        assert found.fetchall() == [(rows, rows)]
    assert sorted(p.name for p in (run / "markers").iterdir()) == [
        "a.parquet.done.json",
        "b.parquet.done.json",
    ]


def test_positional_keys_are_unique_in_a_run_and_clean_finds_them(keyless: dict) -> None:
    run = keyless["run"]
    keys = RunFolder(run).read_manifest(columns=["key"]).column("key").to_pylist()
    assert len(set(keys)) == len(keys) == len(keyless["images"])
    assert keys[:2] == ["a.parquet/000000000", "a.parquet/000000001"]
    removed = pq.read_table(run / "removals.parquet").column("key").to_pylist()
    assert sorted(removed) == ["a.parquet/000000000", "b.parquet/000000001"]
    images = keyless["images"]
    for name, expected in (("a.parquet", images[1:3]), ("b.parquet", [images[3], *images[5:]])):
        kept = pq.read_table(keyless["dest"] / name).column("image").to_pylist()
        assert kept == [item.data for item in expected], name


def test_a_run_folder_of_the_old_format_is_refused_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": 1, "source": {}, "settings": {}}))
    with pytest.raises(RunFolderError, match="format 1") as caught:
        RunFolder(run).read_info()
    assert "\n" not in str(caught.value) and "new --out" in str(caught.value)


# ---------------------------------------------------------------- history


def test_match_and_clean_keep_what_they_replace_and_say_so(tmp_path: Path) -> None:
    images = _images(8)
    write_folder(tmp_path / "src", images)
    first = _sha256_list(tmp_path / "first.txt", [images[0]])
    second = _sha256_list(tmp_path / "second.txt", [images[1], images[2]])
    run = tmp_path / "run"
    _scan(str(tmp_path / "src"), run, (first,), clean=CleanJob(str(tmp_path / "clean-1")))
    first_matches = pq.read_table(run / "matches.parquet")

    run_match(run, MatchJob((second,), MatchSettings()))
    kept = run / "history" / "match-1"
    assert pq.read_table(kept / "matches.parquet").equals(first_matches)
    assert [x["name"] for x in json.loads((kept / "matching.json").read_text())["lists"]] == [
        "first"
    ]
    matched = pq.read_table(run / "matches.parquet").column("key").to_pylist()
    assert sorted(set(matched)) == sorted(item.key for item in images[1:3])

    # The original scan, re-run, would put the first list's matches back: refused, saying
    # why and what to do instead.
    with pytest.raises(RunFolderError, match="re-matched this run") as caught:
        _scan(str(tmp_path / "src"), run, (first,))
    assert "against second" in str(caught.value) and "clearset match" in str(caught.value)

    first_removals = pq.read_table(run / "removals.parquet")
    clean_run(run, tmp_path / "clean-2")
    archived = run / "history" / "clean-1"
    record = json.loads((archived / "cleaned" / "clean.json").read_text())
    assert record["destination"] == str((tmp_path / "clean-1").resolve())
    assert pq.read_table(archived / "removals.parquet").equals(first_removals)
    assert (tmp_path / "clean-1").is_dir()  # the earlier copy itself is never touched
    now = json.loads((run / "cleaned" / "clean.json").read_text())
    assert now["destination"] == str((tmp_path / "clean-2").resolve())
    removed = pq.read_table(run / "removals.parquet").column("key").to_pylist()
    assert sorted(removed) == sorted(item.key for item in images[1:3])

    history = RunFolder(run).read_history()
    assert [entry["op"] for entry in history] == ["scan", "clean", "match", "clean"]
    scan, clean_1, match, clean_2 = history
    assert [x["name"] for x in scan["lists"]] == ["first"] and scan["finished"]
    assert clean_1["destination"].endswith("clean-1") and clean_1["keys_removed"] == 1
    assert match["replaced"] == "history/match-1"
    assert [x["name"] for x in match["replaced_lists"]] == ["first"]
    assert [x["name"] for x in match["lists"]] == ["second"] and match["matched_items"] == 2
    assert clean_2["replaced"] == "history/clean-1" and clean_2["keys_removed"] == 2
    assert all(len(x["digest"]) == 64 for x in scan["lists"] + match["lists"])

    # Resuming the same clean replaces nothing and keeps the history as it is.
    clean_run(run, tmp_path / "clean-2")
    assert not (run / "history" / "clean-2").exists()
    assert len(RunFolder(run).read_history()) == 5


def test_a_receipt_covers_the_latest_clean_after_a_second_one(tmp_path: Path) -> None:
    from clearset.receipts import generate_keypair
    from clearset.runs.issue import issue_receipt

    images = _images(6)
    write_folder(tmp_path / "src", images)
    listed = _sha256_list(tmp_path / "watch.txt", [images[0]])
    run = tmp_path / "run"
    _scan(str(tmp_path / "src"), run, (listed,), clean=CleanJob(str(tmp_path / "one")))
    key, _ = generate_keypair(tmp_path / "keys")
    issue_receipt(run, key)
    first_receipt = (run / "receipt.dsse.json").read_bytes()
    clean_run(run, tmp_path / "two")
    # The first receipt and its tree stay with the clean they cover.
    assert (run / "history" / "clean-1" / "receipt.dsse.json").read_bytes() == first_receipt
    assert (run / "history" / "clean-1" / "tree.bin").exists()
    assert not (run / "receipt.dsse.json").exists()
    import base64

    earlier = run / "history" / "clean-1" / "receipt.dsse.json"
    envelope = issue_receipt(run, key, previous=earlier)
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert predicate["clean"]["destination"] == "two"
    assert predicate["previous"]["receipt_digest"]
