"""Cleaning: the copy holds exactly the original keys minus the removed ones, byte for
byte, in the source's own format; the source is untouched; an interrupted clean resumes
to the same bytes; destinations that are not ours are refused; removal and keep lists
carry the same removals to other copies of the data set."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData, demo_items, write_folder, write_webdataset
from clearset.errors import OutputError, RunFolderError
from clearset.formats import FORMATS, open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runfolder import read_cleaned_manifest
from clearset.runs import MatchJob, ScanSettings, clean_run, run_scan
from clearset.stages.clean import CleanJob
from tests.conftest import cli, run_cli


def tree_bytes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, hidden clean state left out."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".clearset-clean" not in p.parts
    }


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def demo_job(demo: DemoData) -> MatchJob:
    return MatchJob((ListSpec(str(demo.pdq_list)), ListSpec(str(demo.md5_list))), MatchSettings())


@pytest.fixture(scope="module")
def cleaned(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scan of the demo shards that also cleans in the same pass (scan --clean-to)."""
    root = tmp_path_factory.mktemp("clean")
    source_before = tree_bytes(demo_data.webdataset)
    run_scan(
        open_source(str(demo_data.webdataset)),
        root / "run",
        ScanSettings(),
        workers=2,
        show_progress=False,
        match=demo_job(demo_data),
        clean=CleanJob(str(root / "same-pass")),
    )
    assert tree_bytes(demo_data.webdataset) == source_before
    return {"root": root, "run": root / "run", "same_pass": root / "same-pass"}


def test_cleaned_webdataset_reads_and_is_the_original_minus_removed(
    demo_data: DemoData, cleaned: dict[str, Path]
) -> None:
    import webdataset as wds

    removals = pq.read_table(cleaned["run"] / "removals.parquet").to_pylist()
    removed = {r["key"] for r in removals}
    planted = demo_data.planted()
    assert removed and removed <= set(planted)
    assert {r["reason"] for r in removals} <= {"watch-pdq", "watch-md5", "watch-md5, watch-pdq"}
    source_tars = sorted(demo_data.webdataset.glob("*.tar"))
    out_tars = sorted(cleaned["same_pass"].glob("*.tar"))
    assert [p.name for p in out_tars] == [p.name for p in source_tars]
    original = {
        s["__key__"] for s in wds.WebDataset([str(p) for p in source_tars], shardshuffle=False)
    }
    kept = [s for s in wds.WebDataset([str(p) for p in out_tars], shardshuffle=False)]
    assert {s["__key__"] for s in kept} == original - removed
    assert len(kept) == len(original) - len(removed)
    for src, dst in zip(source_tars, out_tars, strict=True):
        before, after = tar_members(src), tar_members(dst)
        assert after == {n: b for n, b in before.items() if n.split(".", 1)[0] not in removed}
        if not any(n.split(".", 1)[0] in removed for n in before):
            assert dst.read_bytes() == src.read_bytes()  # untouched shards copied whole


def test_side_files_are_rewritten_with_counts_corrected(
    demo_data: DemoData, cleaned: dict[str, Path]
) -> None:
    removed = {r["key"] for r in pq.read_table(cleaned["run"] / "removals.parquet").to_pylist()}
    for src in sorted(demo_data.webdataset.glob("*.parquet")):
        dst = cleaned["same_pass"] / src.name
        before, after = pq.read_table(src), pq.read_table(dst)
        assert after.schema.equals(before.schema, check_metadata=True)
        assert after.column("key").to_pylist() == [
            k for k in before.column("key").to_pylist() if k not in removed
        ]
        stats = json.loads((dst.parent / f"{src.stem}_stats.json").read_text())
        statuses = after.column("status").to_pylist()
        assert stats["count"] == len(statuses)
        assert stats["successes"] == statuses.count("success") == stats["status_dict"]["success"]


def test_cleaned_manifest_and_clean_record(cleaned: dict[str, Path]) -> None:
    from clearset.runfolder import RunFolder

    kept = read_cleaned_manifest(cleaned["run"])
    full = RunFolder(cleaned["run"]).read_manifest()
    removed = {r["key"] for r in pq.read_table(cleaned["run"] / "removals.parquet").to_pylist()}
    assert kept.schema.equals(full.schema)
    assert kept.column("key").to_pylist() == [
        k for k in full.column("key").to_pylist() if k not in removed
    ]
    record = json.loads((cleaned["run"] / "cleaned" / "clean.json").read_text())
    assert record["finished"] and record["destination"] == str(cleaned["same_pass"].resolve())
    assert record["counts"]["keys_removed"] == len(removed)
    assert [entry["name"] for entry in record["matching"]["lists"]] == ["watch-pdq", "watch-md5"]
    assert record["counts"]["undecodable_kept"] == 4  # kept by default, and counted


def test_clean_later_equals_same_pass_and_resumes_identically(
    cleaned: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tree_bytes(cleaned["same_pass"])
    dest = cleaned["root"] / "later"
    real = FORMATS["webdataset"].rewriter
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            (dest / ".tmp-999-00002.tar").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(FORMATS["webdataset"], "rewriter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clean_run(cleaned["run"], dest, workers=1)
    monkeypatch.setattr(FORMATS["webdataset"], "rewriter", real)
    with pytest.raises(RunFolderError, match="not finished"):
        read_cleaned_manifest(cleaned["run"])
    counts = clean_run(cleaned["run"], dest, workers=2)
    assert tree_bytes(dest) == reference
    assert not list(dest.rglob(".tmp-*"))
    assert counts["keys_removed"] == len(pq.read_table(cleaned["run"] / "removals.parquet"))


def test_destinations_that_are_not_ours_are_refused(
    demo_data: DemoData, cleaned: dict[str, Path], tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's")
    proc = run_cli("clean", str(cleaned["run"]), "--to", str(foreign))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "not a clearset clean output" in proc.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(OutputError, match="overlaps the source"):
        clean_run(cleaned["run"], demo_data.webdataset / "cleaned")
    with pytest.raises(OutputError, match="other options"):
        clean_run(cleaned["run"], cleaned["same_pass"], drop_undecodable=True)


def test_drop_undecodable_and_empty_shards(tmp_path: Path) -> None:
    items = [i for i in demo_items(count=4) if not i.broken][:4] + [
        i for i in demo_items(count=4) if i.broken
    ][:2]
    src = tmp_path / "src"
    write_webdataset(src, items, shard_size=2)
    md5 = tmp_path / "md5.txt"
    md5.write_text("".join(hashlib.md5(i.data).hexdigest() + "\n" for i in items[2:4]))
    cli(
        "scan",
        str(src),
        "--out",
        str(tmp_path / "run"),
        "--list",
        str(md5),
        "--allow-missing",
        check=True,
    )  # 2 of 6 undecodable on purpose: over the share a scan accepts unasked
    cli("clean", str(tmp_path / "run"), "--to", str(tmp_path / "a"), check=True)
    assert tar_members(tmp_path / "a" / "00001.tar") == {}  # written, empty
    assert len(tar_members(tmp_path / "a" / "00002.tar")) == 6  # undecodable kept
    proc = cli(
        "clean", str(tmp_path / "run"), "--to", str(tmp_path / "b"),
        "--drop-undecodable", "--drop-empty-shards", check=True,
    )  # fmt: skip
    assert "undecodable: 2 samples" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "b").glob("*.tar")) == ["00000.tar"]
    reasons = pq.read_table(tmp_path / "run" / "removals.parquet").column("reason").to_pylist()
    assert sorted(reasons) == ["md5", "md5", "undecodable", "undecodable"]


def _hf_parquet(path: Path, count: int) -> list:
    items = [i for i in demo_items(count=count) if not i.broken]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    meta = {"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}})}
    schema = pa.schema([("key", pa.string()), ("image", image)], metadata=meta)
    rows = [{"key": i.key, "image": {"bytes": i.data, "path": None}} for i in items]
    rows.append({"key": "path-only", "image": {"bytes": None, "path": "elsewhere/x.jpg"}})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=3)
    return items


def test_parquet_round_trip_keeps_schema_row_groups_and_path_only_rows(tmp_path: Path) -> None:
    items = _hf_parquet(tmp_path / "train.parquet", 7)
    md5 = tmp_path / "md5.txt"
    md5.write_text(hashlib.md5(items[1].data).hexdigest() + "\n")
    cli("scan", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "run"),
            "--list", str(md5), "--allow-missing", check=True)  # fmt: skip
    counts = clean_run(tmp_path / "run", tmp_path / "out", workers=1)
    before, after = (
        pq.ParquetFile(tmp_path / "train.parquet"),
        pq.ParquetFile(tmp_path / "out" / "train.parquet"),
    )
    assert after.schema_arrow.equals(before.schema_arrow, check_metadata=True)
    assert b"huggingface" in after.schema_arrow.metadata
    assert after.metadata.row_group(0).num_rows == 3
    kept = after.read().to_pylist()
    assert [r["key"] for r in kept] == [i.key for i in items if i is not items[1]] + ["path-only"]
    assert kept[0]["image"]["bytes"] == items[0].data
    assert counts["path_only_kept"] == 1 and counts["kept_without_bytes"] == 1


def test_folder_link_and_apply_removals_and_keep_list(
    demo_data: DemoData, cleaned: dict[str, Path], tmp_path: Path
) -> None:
    removals = pq.read_table(cleaned["run"] / "removals.parquet").to_pylist()
    removed = {r["key"] for r in removals}
    # Another holder's copy, in another format: the removal list applies by URL / SHA-256.
    proc = run_cli(
        "apply-removals", str(demo_data.folder), str(cleaned["run"] / "removals.parquet"),
        "--to", str(tmp_path / "folder"), "--link", check=True,
    )  # fmt: skip
    assert f"removed {len(removed)}" in proc.stdout
    names = {p.name for p in (tmp_path / "folder").iterdir() if p.is_file()}
    source_names = {p.name for p in demo_data.folder.iterdir()}
    assert names == {n for n in source_names if n.split(".", 1)[0] not in removed}
    kept = next(iter(names))
    assert (tmp_path / "folder" / kept).stat().st_ino == (demo_data.folder / kept).stat().st_ino
    # The other direction: keep only what a newer release's metadata still lists.
    side = pq.read_table(demo_data.webdataset / "00000.parquet")
    urls = [u for u in side.column("url").to_pylist()][3:]
    pq.write_table(pa.table({"url": urls}), tmp_path / "new-release.parquet")
    out = tmp_path / "kept"
    cli(
        "apply-removals", str(demo_data.webdataset / "00000.tar"), "--to", str(out),
        "--keep-list", str(tmp_path / "new-release.parquet"), check=True,
    )  # fmt: skip
    keys = {n.split(".", 1)[0] for n in tar_members(out / "00000.tar")}
    rows = side.to_pylist()[3:]
    assert keys == {r["key"] for r in rows if r["status"] == "success"}  # failed: not in tar


def test_read_cleaned_manifest_needs_a_clean(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no cleaned copy"):
        read_cleaned_manifest(tmp_path)


def test_folder_source_clean_copies_whole_keys(tmp_path: Path) -> None:
    items = [i for i in demo_items(count=5) if not i.broken]
    write_folder(tmp_path / "src", items)
    md5 = tmp_path / "md5.txt"
    md5.write_text(hashlib.md5(items[2].data).hexdigest() + "\n")
    cli("scan", str(tmp_path / "src"), "--out", str(tmp_path / "run"), "--list", str(md5),
            check=True)  # fmt: skip
    clean_run(tmp_path / "run", tmp_path / "out", workers=1)
    got = tree_bytes(tmp_path / "out")
    want = {k: v for k, v in tree_bytes(tmp_path / "src").items() if not k.startswith(items[2].key)}
    assert got == want
    # A scan of the cleaned copy sees only data: the clean state is invisible to it.
    rows = open_source(str(tmp_path / "out")).read_shard(
        open_source(str(tmp_path / "out")).shards()[0]
    )
    assert {r.key for r in rows} == {i.key for i in items} - {items[2].key}


def test_scan_clean_to_reads_a_remote_shard_once(demo_data: DemoData, tmp_path: Path) -> None:
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    from clearset.matching.matcher import ListSpec, MatchSettings
    from clearset.runs import MatchJob, ScanSettings, run_scan
    from clearset.stages.clean import CleanJob

    opened: list[str] = []

    class CountingMemory(MemoryFileSystem):
        """An object store stand-in that counts every read of a file."""

        protocol = "countmem"

        @classmethod
        def _strip_protocol(cls, path):  # type: ignore[no-untyped-def]
            return super()._strip_protocol(path.replace("countmem://", "memory://"))

        def _open(self, path, mode="rb", **kwargs):  # type: ignore[no-untyped-def]
            if "r" in mode:
                opened.append(path.rsplit("/", 1)[-1])
            return super()._open(path, mode, **kwargs)

    fsspec.register_implementation("countmem", CountingMemory, clobber=True)
    remote = fsspec.filesystem("countmem")
    for path in demo_data.webdataset.iterdir():
        remote.pipe(f"/remote-wds/{path.name}", path.read_bytes())
    job = MatchJob((ListSpec(str(demo_data.pdq_list)),), MatchSettings())
    try:
        run_scan(
            open_source("countmem://remote-wds"), tmp_path / "run", ScanSettings(), workers=1,
            show_progress=False, match=job, clean=CleanJob(str(tmp_path / "out")),
        )  # fmt: skip
    finally:
        remote.rm("/remote-wds", recursive=True)
    tars = [name for name in opened if name.endswith(".tar")]
    assert sorted(tars) == sorted(p.name for p in demo_data.webdataset.glob("*.tar"))
    local = tmp_path / "local"
    run_scan(
        open_source(str(demo_data.webdataset)), local / "run", ScanSettings(), workers=1,
        show_progress=False, match=job, clean=CleanJob(str(local / "out")),
    )  # fmt: skip
    for path in sorted((local / "out").glob("*.tar")):
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes()
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_clean_refuses_a_shard_changed_since_the_scan(demo_data: DemoData, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(demo_data.webdataset, src)
    run = tmp_path / "run"
    job = MatchJob((ListSpec(str(demo_data.md5_list)),), MatchSettings())
    run_scan(open_source(str(src)), run, ScanSettings(), workers=1, show_progress=False, match=job)
    with tarfile.open(src / "00001.tar", "a") as tar:  # someone adds an unscanned image
        data = (demo_data.folder / "000000003.jpg").read_bytes()
        info = tarfile.TarInfo("999999999.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    proc = cli("clean", str(run), "--to", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "00001.tar: changed since it was scanned" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "00001.tar").exists()


def _tar_keys(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return {name.split(".", 1)[0] for name in tar.getnames()}


def test_apply_removals_counts_are_true_on_a_rerun(
    demo_data: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearset.runs import apply_removals

    run = tmp_path / "run"
    job = MatchJob((ListSpec(str(demo_data.pdq_list)),), MatchSettings())
    run_scan(
        open_source(str(demo_data.webdataset)), run, ScanSettings(), workers=1,
        show_progress=False, match=job,
    )  # fmt: skip
    removed = set(pq.read_table(run / "matches.parquet").column("key").to_pylist())
    first = apply_removals(str(demo_data.webdataset), str(_removals(run)), tmp_path / "out")
    # A re-run that resumes a stopped apply counts the shards done before it too.
    real, calls = FORMATS["webdataset"].rewriter, []

    def stopped(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(FORMATS["webdataset"], "rewriter", stopped)
    with pytest.raises(KeyboardInterrupt):
        apply_removals(
            str(demo_data.webdataset), str(_removals(run)), tmp_path / "again", workers=1
        )
    monkeypatch.setattr(FORMATS["webdataset"], "rewriter", real)
    again = apply_removals(str(demo_data.webdataset), str(_removals(run)), tmp_path / "again")
    assert first["keys_removed"] == len(removed) == again["keys_removed"]
    assert again["shards_skipped"] == 2 and first["shards_skipped"] == 0
    assert tree_bytes(tmp_path / "again") == tree_bytes(tmp_path / "out")
    # A finished copy keeps no state, so it is never taken for one in progress.
    with pytest.raises(OutputError, match="a finished clean keeps no state"):
        apply_removals(str(demo_data.webdataset), str(_removals(run)), tmp_path / "out")
    untouched = [p for p in demo_data.webdataset.glob("*.tar") if not _tar_keys(p) & removed]
    assert first["shards_copied_whole"] == len(untouched) >= 1
    kept = sum(len(_tar_keys(p)) for p in (tmp_path / "out").glob("*.tar"))
    assert first["keys_kept_in_rewritten_shards"] == kept - sum(
        len(_tar_keys(p)) for p in untouched
    )
    assert again["keys_kept_in_rewritten_shards"] == first["keys_kept_in_rewritten_shards"]


def _removals(run: Path) -> Path:
    """A removal list for the run's matches, as `clearset clean` would write it."""
    rows = pq.read_table(run / "matches.parquet").to_pylist()
    table = pa.table(
        {
            "key": [r["key"] for r in rows],
            "shard": [r["shard"] for r in rows],
            "member": [r["member"] for r in rows],
            "url": [r["url"] for r in rows],
            "sha256": [r["sha256"].hex() for r in rows],
            "reason": [r["list_name"] for r in rows],
        }
    )
    path = run / "my-removals.parquet"
    pq.write_table(table, path)
    return path
