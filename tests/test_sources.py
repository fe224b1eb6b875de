"""Sources: every kind yields the same items for the same images, streams, and keeps the
img2dataset facts (completion order, failed downloads, upstream hashes, dotted keys)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData, demo_items, write_webdataset
from clearset.errors import InputError
from clearset.formats import detect_kind, open_source
from clearset.runfolder import RunFolder
from clearset.runs import ScanSettings, run_scan
from tests.conftest import the_demo_items


def _rows_by_key(run_dir: Path) -> dict[str, tuple]:
    table = RunFolder(run_dir).read_manifest()
    columns = ["sha256", "md5", "sha1", "pdq", "pdq_quality", "width", "height", "status", "url"]
    out = {}
    for row in table.select(["key", "reason", *columns]).to_pylist():
        if row["status"] == "other":
            continue  # captions and .json side files: accounted for, not images
        reason = (row["reason"] or "").split(":", 1)[0]
        out[row["key"]] = (*(row[c] for c in columns), reason)
    return out


def _scan(url: str, run_dir: Path, **kw) -> dict[str, tuple]:
    run_scan(open_source(url, **kw), run_dir, ScanSettings(), workers=1, show_progress=False)
    return _rows_by_key(run_dir)


def test_every_source_kind_yields_the_same_rows(demo_data: DemoData, tmp_path: Path) -> None:
    wds = _scan(str(demo_data.webdataset), tmp_path / "wds")
    folder = _scan(str(demo_data.folder), tmp_path / "folder")
    hf = _scan(str(demo_data.hf_parquet), tmp_path / "hf")
    # The webdataset side file also knows one failed download, which has no image.
    failed = {k for k, v in wds.items() if v[-1] == "not_in_shard"}
    assert len(failed) == 1
    assert {k: v for k, v in wds.items() if k not in failed} == folder == hf
    assert len(folder) == len(the_demo_items())


def test_kind_detection(demo_data: DemoData) -> None:
    assert detect_kind(str(demo_data.webdataset)) == "webdataset"
    assert detect_kind(str(demo_data.webdataset / "00000.tar")) == "webdataset"
    assert detect_kind(str(demo_data.folder)) == "folder"
    assert detect_kind(str(demo_data.hf_parquet)) == "parquet"
    assert detect_kind(str(demo_data.hf_parquet.parent)) == "parquet"
    assert detect_kind(str(demo_data.webdataset / "{00000..00001}.tar")) == "webdataset"


def test_brace_pattern_selects_shards(demo_data: DemoData) -> None:
    source = open_source(str(demo_data.webdataset / "{00001..00002}.tar"))
    assert [s.name for s in source.shards()] == ["00001.tar", "00002.tar"]


def test_file_url_and_memory_url_read_like_a_path(demo_data: DemoData, tmp_path: Path) -> None:
    plain = _scan(str(demo_data.webdataset), tmp_path / "plain")
    assert _scan(f"file://{demo_data.webdataset}", tmp_path / "file") == plain
    memory = fsspec.filesystem("memory")
    for path in demo_data.webdataset.iterdir():
        memory.pipe(f"/demo-wds/{path.name}", path.read_bytes())
    try:
        assert _scan("memory://demo-wds", tmp_path / "memory") == plain
    finally:
        memory.rm("/demo-wds", recursive=True)


def test_tar_members_in_completion_order_and_failed_downloads(demo_data: DemoData) -> None:
    source = open_source(str(demo_data.webdataset))
    shard = source.shards()[0]
    items = list(source.read_shard(shard))
    keys = [i.key for i in items if i.data is not None]
    assert keys != sorted(keys), "demo shards are in completion order, not key order"
    missing = [i for i in items if i.data is None]
    assert len(missing) == 1 and missing[0].upstream_status == "failed_to_download"
    assert missing[0].url and missing[0].missing_reason.startswith("not_in_shard")
    # every member of a key is listed, the image is the hashed one
    first = next(i for i in items if i.data is not None)
    assert set(first.members) == {f"{first.key}.{e}" for e in ("jpg", "txt", "json")} or set(
        first.members
    ) == {f"{first.key}.{e}" for e in ("png", "txt", "json")}


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_dotted_keys_group_as_webdataset_does(tmp_path: Path) -> None:
    jpeg = demo_items(count=1)[0].data
    _tar(
        tmp_path / "s.tar",
        [("a.b.jpg", jpeg), ("a.b.json", b"{}"), ("dir/c.jpg", jpeg), ("dir/c.txt", b"x")],
    )
    items = list(
        open_source(str(tmp_path / "s.tar")).read_shard(
            open_source(str(tmp_path / "s.tar")).shards()[0]
        )
    )
    # Every member is a row (the design: nothing goes unaccounted); keys as webdataset.
    assert [(i.key, i.member) for i in items] == [
        ("a", "a.b.jpg"),
        ("a", "a.b.json"),
        ("dir/c", "dir/c.jpg"),
        ("dir/c", "dir/c.txt"),
    ]
    assert items[0].members == ("a.b.jpg", "a.b.json")


def test_upstream_hashes_are_kept_apart_from_ours(tmp_path: Path) -> None:
    item = demo_items(count=1)[0]
    original = hashlib.sha256(b"the original download, before re-encoding").hexdigest()
    meta = {"key": item.key, "url": "https://images.example.com/x.jpg", "sha256": original.upper()}
    _tar(
        tmp_path / "s.tar",
        [(f"{item.key}.jpg", item.data), (f"{item.key}.json", json.dumps(meta).encode())],
    )
    run = tmp_path / "run"
    run_scan(
        open_source(str(tmp_path / "s.tar")), run, ScanSettings(), workers=1, show_progress=False
    )
    row = RunFolder(run).read_manifest().to_pylist()[0]
    assert row["upstream_sha256"] == original
    assert row["sha256"] == hashlib.sha256(item.data).digest()
    assert row["url"] == meta["url"]


def test_metadata_only_parquet_is_a_source(tmp_path: Path) -> None:
    table = pa.table(
        {
            "url": ["https://images.example.com/1.jpg", "https://images.example.com/2.jpg"],
            "md5": ["0" * 31 + "1", "A" * 32],
            "caption": ["one", "two"],
        }
    )
    pq.write_table(table, tmp_path / "meta.parquet")
    run = tmp_path / "run"
    run_scan(
        open_source(str(tmp_path / "meta.parquet")),
        run,
        ScanSettings(),
        allow_missing=True,  # no image bytes at all: screened by its hashes and URLs only
        workers=1,
        show_progress=False,
    )
    rows = RunFolder(run).read_manifest().to_pylist()
    assert [r["status"] for r in rows] == ["missing", "missing"]
    assert rows[1]["upstream_md5"] == "a" * 32
    assert rows[0]["reason"].startswith("metadata_only")
    assert [r["key"] for r in rows] == ["meta.parquet/000000000", "meta.parquet/000000001"]


def test_hf_rows_with_a_path_but_no_bytes_are_rows(tmp_path: Path) -> None:
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    jpeg = demo_items(count=1)[0].data
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": jpeg, "path": "a.jpg"}, {"bytes": None, "path": "b.jpg"}], image_type
            )
        }
    )
    pq.write_table(table, tmp_path / "hf.parquet")
    source = open_source(str(tmp_path / "hf.parquet"))
    items = list(source.read_shard(source.shards()[0]))
    assert items[0].data == jpeg
    assert items[1].data is None and items[1].missing_reason.startswith("path_only")


def test_image_column_errors_name_the_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1]}), tmp_path / "t.parquet")
    source = open_source(str(tmp_path / "t.parquet"), image_column="image")
    with pytest.raises(InputError, match=r"t\.parquet: no column 'image'"):
        list(source.read_shard(source.shards()[0]))
    source = open_source(str(tmp_path / "t.parquet"), image_column="x")
    with pytest.raises(InputError, match="not image bytes"):
        list(source.read_shard(source.shards()[0]))


def test_missing_source_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        open_source(str(tmp_path / "nothing-here"))


def test_folder_source_recurses_and_keeps_keys_whole(tmp_path: Path) -> None:
    items = demo_items(count=5)[:5]
    for number, item in enumerate(items):
        sub = tmp_path / "data" / f"sub{number % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{item.key}.{item.ext}").write_bytes(item.data)
        (sub / f"{item.key}.json").write_text(json.dumps({"url": f"https://x.example/{number}"}))
    (tmp_path / "data" / "README.txt").write_text("not an item")
    from clearset.formats import FolderSource

    source = FolderSource(url=str(tmp_path / "data"), shard_size=2)
    shards = source.shards()
    assert len(shards) == 3  # 5 keys and a README, 2 keys a shard
    read = [i for s in shards for i in source.read_shard(s)]
    # Every file is a row, the README too (it is no image: its status comes from its bytes).
    assert sorted({i.key for i in read}) == sorted(
        ["README", *(f"sub{n % 2}/{it.key}" for n, it in enumerate(items))]
    )
    assert len(read) == 11
    assert all(i.url and i.url.startswith("https://x.example/") for i in read if i.key != "README")


def test_reading_a_shard_streams(tmp_path: Path) -> None:
    # A shard far larger than what reading it holds at once: the reader must not load it.
    import tracemalloc

    items = demo_items(count=4)
    many = [type(items[0])(f"{n:09d}", "jpg", items[n % 4].data, 1, 1, "c") for n in range(400)]
    write_webdataset(tmp_path / "big", many, shard_size=400)
    shard_bytes = (tmp_path / "big" / "00000.tar").stat().st_size
    source = open_source(str(tmp_path / "big"))
    tracemalloc.start()
    count = sum(1 for _ in source.read_shard(source.shards()[0]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 1200  # every member: jpg, json and txt of 400 keys
    assert peak < shard_bytes / 4, (peak, shard_bytes)


def test_folder_key_is_never_split_across_shards(tmp_path: Path) -> None:
    from clearset.formats import FolderSource

    jpeg = demo_items(count=1)[0].data
    root = tmp_path / "data"
    (root / "a.d").mkdir(parents=True)
    (root / "a.b.jpg").write_bytes(jpeg)  # key "a"
    (root / "a.d" / "x.jpg").write_bytes(jpeg)  # key "a.d/x", sorts between a's files
    (root / "a.json").write_text('{"url": "https://x.example/a"}')  # key "a" again
    source = FolderSource(url=str(root), shard_size=1)
    shards = source.shards()
    assert sorted(s.files for s in shards) == [("a.b.jpg", "a.json"), ("a.d/x.jpg",)]
    items = [i for s in shards for i in source.read_shard(s)]
    assert {i.key: i.url for i in items} == {"a": "https://x.example/a", "a.d/x": None}
