"""Every byte accounted for: in every layout the real tools write, a scan hashes every
member and file, a cleaned copy holds only bytes the scan hashed, and a scan that could
not read its source fails instead of passing it through (issue 9)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clearset.demo import generate_image
from clearset.errors import ClearsetError, InputError, OutputError
from clearset.formats import detect, open_source
from clearset.runfolder import RunFolder
from clearset.runs import ScanSettings, clean_run, run_scan
from tests.conftest import built_once, cli, run_img2dataset, the_demo_items, tree_state


def _jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    import numpy as np

    image = generate_image(np.random.default_rng(seed)).resize(size)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _sha256_list(path: Path, *data: bytes) -> str:
    path.write_text("".join(hashlib.sha256(d).hexdigest() + "\n" for d in data))
    return f"{path},type=sha256,name=watch"


def _pdq_list(path: Path, *data: bytes) -> str:
    from clearset.hashing import hash_bytes

    lines = [hash_bytes(d, exact_pdq=True).pdq.hex() for d in data]
    path.write_text("".join(f"{h}\n" for h in lines))
    return f"{path},type=pdq,name=watch"


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _tar_bytes(path: Path) -> list[bytes]:
    """Every regular member's bytes in a tar (or .tar.gz)."""
    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()]


def _all_bytes(root: Path) -> bytes:
    """Everything a cleaned copy holds: file bytes and tar members' bytes, concatenated."""
    chunks = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".clearset-clean" not in path.parts:
            raw = path.read_bytes()
            chunks.append(raw)
            if path.suffix == ".parquet":
                chunks.append(repr(pq.read_table(path).to_pylist()).encode())
            if path.name.endswith((".tar", ".tar.gz")):
                chunks.extend(_tar_bytes(path))
                if path.name.endswith(".gz"):
                    chunks.extend(
                        gzip.decompress(b) for b in _tar_bytes(path) if b[:2] == b"\x1f\x8b"
                    )
    return b"\0".join(chunks)


def _said(text: str) -> str:
    """What the CLI printed, with line wrapping undone."""
    return " ".join(text.split())


def _manifest(run: Path) -> list[dict]:
    return RunFolder(run).read_manifest().to_pylist()


def _scan_clean(src: Path | str, tmp_path: Path, lst: str, *extra: str) -> tuple[Path, Path]:
    run, out = tmp_path / "run", tmp_path / "clean"
    proc = cli("scan", str(src), "--out", str(run), "--list", lst, "--clean-to", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return run, out


# ---------------------------------------------------------------- 1. shards one folder down


def test_tar_shards_one_folder_down_are_read_as_shards(tmp_path: Path) -> None:
    import webdataset as wds

    listed, other = _jpeg(1), _jpeg(2)
    (tmp_path / "s" / "train").mkdir(parents=True)
    with wds.ShardWriter(str(tmp_path / "s" / "train" / "%05d.tar"), maxcount=1) as sink:
        sink.write({"__key__": "a", "jpg": listed, "txt": "one"})
        sink.write({"__key__": "b", "jpg": other, "txt": "two"})
    (tmp_path / "s" / "README.md").write_text("# a data set\n")
    assert detect(str(tmp_path / "s")).kind == "webdataset"
    run, out = _scan_clean(tmp_path / "s", tmp_path, _sha256_list(tmp_path / "l.txt", listed))
    rows = _manifest(run)
    assert sorted(r["shard"] for r in rows if r["status"] == "ok") == [
        "train/00000.tar",
        "train/00001.tar",
    ]
    held = _all_bytes(out)
    assert listed not in held and other in held
    assert (out / "train" / "00001.tar").exists()


def test_hugging_face_hub_layout_written_by_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    listed, other = _jpeg(3), _jpeg(4)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": listed, "path": None}, {"bytes": other, "path": None}]}
    ).cast_column("image", datasets.Image())
    for n in range(2):
        ds.shard(2, n).to_parquet(str(repo / "data" / f"train-0000{n}-of-00002.parquet"))
    (repo / "README.md").write_text("---\nlicense: cc0\n---\n")
    (repo / ".gitattributes").write_text("*.parquet filter=lfs\n")
    survey = detect(str(repo))
    assert survey.kind == "parquet" and survey.files == 2 and survey.metadata_files == 2
    run, out = _scan_clean(repo, tmp_path, _sha256_list(tmp_path / "l.txt", listed))
    assert sum(r["status"] == "ok" for r in _manifest(run)) == 2
    kept = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert [row["image"].size for row in kept] == [Image.open(io.BytesIO(other)).size]


# ---------------------------------------------------------------- 2. img2dataset, all formats


@pytest.fixture(scope="module")
def img2dataset_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """img2dataset's own output in its three formats, downloaded from a loopback server
    of benign generated images (one URL fails on purpose)."""
    images = [_jpeg(10 + n) for n in range(5)]
    options = {"thread_count": 2, "resize_mode": "no", "number_sample_per_shard": 3}
    runs = {fmt: {**options, "output_format": fmt} for fmt in ("webdataset", "parquet", "files")}
    root = built_once(
        tmp_path_factory,
        "i2d-formats",
        lambda root: run_img2dataset(root, images, runs, missing=("gone.jpg",)),
    )
    return {"root": root, "images": images}


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "files"])
def test_img2dataset_output_formats(img2dataset_outputs: dict, tmp_path: Path, fmt: str) -> None:
    images = img2dataset_outputs["images"]
    src = img2dataset_outputs["root"] / fmt
    assert detect(str(src)).kind == {"files": "folder"}.get(fmt, fmt)
    before = tree_state(src)
    # img2dataset re-encodes what it downloads: the list is the PDQ of the original.
    run, out = _scan_clean(src, tmp_path, _pdq_list(tmp_path / "l.txt", images[0]))
    rows = _manifest(run)
    originals = {hashlib.sha256(d).hexdigest() for d in images}
    assert {r["upstream_sha256"] for r in rows if r["status"] == "ok"} == originals
    assert not any(
        r["member"] and r["member"].endswith(".parquet") and r["status"] == "ok" for r in rows
    )
    info = json.loads((run / "run.json").read_text())
    assert info["accounting"]["verdict"] == "ok"
    assert info["accounting"]["totals"]["hashed"] == 5
    # The URL that failed (the files layout records it only in its side parquet).
    assert info["accounting"]["totals"]["upstream_failed"] == 1
    assert tree_state(src) == before
    # Read the cleaned copy back: the listed picture is gone, the others are all there,
    # and no metadata of the removed item (its URL) remains anywhere in it.
    again = tmp_path / "again"
    proc = cli("scan", str(out), "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    kept = {r["upstream_sha256"] for r in _manifest(again) if r["status"] == "ok"}
    assert kept == originals - {hashlib.sha256(images[0]).hexdigest()}
    removed_url = next(
        r["url"] for r in rows if r["upstream_sha256"] == hashlib.sha256(images[0]).hexdigest()
    )
    assert removed_url.encode() not in _all_bytes(out)


# ---------------------------------------------------------------- 3. path-only Image parquet


def test_path_only_image_parquet_from_datasets_is_hashed(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "pics"
    folder.mkdir()
    pictures = [_jpeg(20 + n) for n in range(3)]
    for n, data in enumerate(pictures):
        (folder / f"{n}.jpg").write_bytes(data)
    absolute = datasets.Dataset.from_dict({"image": [str(folder / f"{n}.jpg") for n in range(3)]})
    absolute.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "abs.parquet"))
    cell = pq.read_table(tmp_path / "abs.parquet").column("image")[0].as_py()
    assert cell["bytes"] is None and cell["path"]  # what `datasets` really writes
    run = tmp_path / "run-abs"
    proc = cli("scan", str(tmp_path / "abs.parquet"), "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert {r["sha256"] for r in _manifest(run)} == {hashlib.sha256(d).digest() for d in pictures}

    # Relative paths: against the parquet's folder by default, or --base-dir.
    meta = tmp_path / "meta"
    meta.mkdir()
    relative = datasets.Dataset.from_dict({"image": [f"{n}.jpg" for n in range(3)]})
    table = relative.cast_column("image", datasets.Image(decode=False)).data.table
    rows = [{"image": {"bytes": None, "path": f"{n}.jpg"}} for n in range(3)]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), meta / "rel.parquet")
    proc = cli("scan", str(meta / "rel.parquet"), "--out", str(tmp_path / "r1"))
    assert proc.returncode == 1 and "hashed no image in 3 manifest rows" in _said(proc.stderr)
    assert "unread (path_only 3)" in _said(proc.stderr)
    proc = cli(
        "scan", str(meta / "rel.parquet"), "--out", str(tmp_path / "r2"), "--base-dir", str(folder)
    )
    assert proc.returncode == 0, proc.stderr
    assert sum(r["status"] == "ok" for r in _manifest(tmp_path / "r2")) == 3


# ---------------------------------------------------------------- 4. members by content

ODD_NAMES = {
    "jpe": ("k0.jpe", "JPEG"),
    "ppm": ("k1.ppm", "PPM"),
    "pgm": ("k2.pgm", "PPM"),
    "jp2": ("k3.jp2", "JPEG2000"),
    "tga": ("k4.tga", "TGA"),
    "apng": ("k5.apng", "PNG"),
    "dib": ("k6.dib", "BMP"),
    "pcx": ("k7.pcx", "PCX"),
    "ico": ("k8.ico", "ICO"),
    "noext": ("k9", "PNG"),
    "meta": ("__meta__/x.jpg", "JPEG"),
}


def test_members_of_any_name_are_hashed_and_removed_by_content(tmp_path: Path) -> None:
    import numpy as np

    picture = generate_image(np.random.default_rng(7)).resize((128, 128)).convert("RGB")
    members = []
    for label, (name, fmt) in ODD_NAMES.items():
        image = picture.convert("L") if label == "pgm" else picture
        members.append((name, _encode(image, fmt)))
    members.append(("k10.jpg.gz", gzip.compress(_encode(picture, "JPEG"), mtime=0)))
    kept_picture = _jpeg(99)
    members.append(("keep.jpg", kept_picture))
    members.append(("keep.txt", b"a caption"))
    _tar(tmp_path / "s" / "00000.tar", members)
    lst = _pdq_list(tmp_path / "l.txt", _encode(picture, "PNG"))
    run, out = _scan_clean(tmp_path / "s", tmp_path, lst)
    rows = {r["member"]: r for r in _manifest(run)}
    assert set(rows) == {name for name, _ in members}
    for name, _ in members[:-2]:
        assert rows[name]["status"] == "ok" and rows[name]["pdq"] is not None, name
    assert rows["keep.txt"]["status"] == "other" and rows["keep.txt"]["sha256"] is not None
    cleaned = _tar_bytes(out / "00000.tar")
    assert cleaned == [kept_picture, b"a caption"]


def test_folder_members_of_any_name_are_hashed(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    listed = _jpeg(5)
    (tmp_path / "s" / "w.jpe").write_bytes(listed)
    (tmp_path / "s" / "v.jpg").write_bytes(_jpeg(6))
    run, out = _scan_clean(tmp_path / "s", tmp_path, _sha256_list(tmp_path / "l.txt", listed))
    assert {r["member"]: r["status"] for r in _manifest(run)} == {"w.jpe": "ok", "v.jpg": "ok"}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["v.jpg"]


def test_non_regular_tar_members_are_rows_and_never_reach_removed_bytes(tmp_path: Path) -> None:
    listed, kept = _jpeg(30), _jpeg(31)
    path = tmp_path / "s" / "00000.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.jpg", listed), ("b.jpg", kept)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        specials = [
            ("d", tarfile.DIRTYPE, ""),
            ("c.jpg", tarfile.LNKTYPE, "a.jpg"),  # a hard link to the removed member
            ("e.jpg", tarfile.LNKTYPE, "b.jpg"),  # a hard link to a kept member
            ("f.jpg", tarfile.SYMTYPE, "/etc/hostname"),
            ("g.jpg", tarfile.FIFOTYPE, ""),
            ("h.jpg", tarfile.CHRTYPE, ""),
        ]
        for name, kind, target in specials:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    run, out = _scan_clean(tmp_path / "s", tmp_path, _sha256_list(tmp_path / "l.txt", listed))
    rows = {r["member"]: r for r in _manifest(run)}
    assert set(rows) == {"a.jpg", "b.jpg", "d", "c.jpg", "e.jpg", "f.jpg", "g.jpg", "h.jpg"}
    assert rows["c.jpg"]["status"] == "other"
    assert rows["c.jpg"]["reason"] == "not_a_file: hardlink to a.jpg"
    assert rows["g.jpg"]["reason"] == "not_a_file: fifo"
    with tarfile.open(out / "00000.tar") as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert set(names) == {"b.jpg", "d", "e.jpg"}  # e.jpg links to a kept member
    assert names["e.jpg"].linkname == "b.jpg"


# ---------------------------------------------------------------- 5. shard-id collisions


@pytest.mark.parametrize(
    ("files", "pattern", "expected"),
    [
        (["a/b.tar", "a__b.tar"], "", 2),
        (["x.tar", "x.tar.gz"], "", 2),
        (["p/00000.tar", "q/00000.tar", "r/00000.tar"], "{p,q,r}/00000.tar", 3),
    ],
)
def test_shards_with_similar_names_are_all_scanned_and_cleaned(
    tmp_path: Path, files: list[str], pattern: str, expected: int
) -> None:
    src = tmp_path / "s"
    pictures = []
    for n, name in enumerate(files):
        data = _jpeg(40 + n)
        pictures.append(data)
        if name.endswith(".gz"):
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w") as tar:
                info = tarfile.TarInfo(f"k{n}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            (src / name).write_bytes(gzip.compress(raw.getvalue()))
        else:
            _tar(src / name, [(f"k{n}.jpg", data)])
    url = f"{src}/{pattern}" if pattern else str(src)
    lst = _sha256_list(tmp_path / "l.txt", pictures[0])
    run, out = tmp_path / "run", tmp_path / "clean"
    proc = cli("scan", url, "--out", str(run), "--list", lst, "-w", "2")
    assert proc.returncode == 0, proc.stderr
    rows = _manifest(run)
    assert len(rows) == expected and len({r["shard"] for r in rows}) == expected
    proc = cli("clean", str(run), "--to", str(out), "-w", "2")
    assert proc.returncode == 0, proc.stderr
    held = _all_bytes(out)
    assert pictures[0] not in held and all(p in held for p in pictures[1:])


def test_shard_ids_are_unique_by_construction() -> None:
    from clearset.formats.base import shard_id_for

    names = ["a/b.tar", "a__b.tar", "a%2Fb.tar", "x.tar", "x.tar.gz", ".tmp-x.tar", "é.tar"]
    names += ["long/" * 60 + "a.tar", "long/" * 60 + "b.tar"]
    ids = [shard_id_for(n) for n in names]
    assert len(set(ids)) == len(names)
    assert all(len(i) <= 200 and not i.startswith(".") and "/" not in i for i in ids)


def test_case_insensitive_id_collision_is_refused(tmp_path: Path) -> None:
    _tar(tmp_path / "s" / "A.tar", [("k.jpg", _jpeg(1))])
    _tar(tmp_path / "s" / "a.tar", [("k.jpg", _jpeg(2))])
    with pytest.raises(InputError, match="would share one name"):
        open_source(str(tmp_path / "s")).shards()


# ---------------------------------------------------------------- 6. folders and links


def test_folder_never_follows_links_or_opens_fifos(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    kept = _jpeg(50)
    (src / "ok.jpg").write_bytes(kept)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the cleaned copy")
    (src / "x.jpg").symlink_to(secret)
    (src / "zero.jpg").symlink_to("/dev/zero")
    (src / "dir-link").symlink_to(tmp_path)
    os.mkfifo(src / "fifo.jpg")
    lst = _sha256_list(tmp_path / "l.txt", b"nothing listed here")
    for link in ([], ["--link"]):
        run, out = tmp_path / f"run{len(link)}", tmp_path / f"clean{len(link)}"
        proc = cli("scan", str(src), "--out", str(run), "--list", lst)
        assert proc.returncode == 0, proc.stderr
        rows = {r["member"]: r for r in _manifest(run)}
        assert rows["x.jpg"]["reason"] == "not_a_file: symlink"
        assert rows["fifo.jpg"]["reason"] == "not_a_file: fifo"
        assert rows["dir-link"]["status"] == "other"
        proc = cli("clean", str(run), "--to", str(out), *link)
        assert proc.returncode == 0, proc.stderr
        copied = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        assert copied == ["ok.jpg"]
        assert b"not for the cleaned copy" not in _all_bytes(out)


# ---------------------------------------------------------------- 7. run folder placement


def test_scan_out_inside_the_source_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(60))
    before = tree_state(src)
    proc = cli("scan", str(src), "--out", str(src / "run"))
    assert proc.returncode != 0
    assert "overlaps the source" in _said(proc.stderr) and "Traceback" not in proc.stderr
    assert tree_state(src) == before and not (src / "run").exists()


def test_relative_source_is_stored_absolute_and_cleans_from_elsewhere(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "work" / "s").mkdir(parents=True)
    listed = _jpeg(61)
    (tmp_path / "work" / "s" / "a.jpg").write_bytes(listed)
    (tmp_path / "work" / "s" / "b.jpg").write_bytes(_jpeg(62))
    lst = _sha256_list(tmp_path / "l.txt", listed)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    scan = [sys.executable, "-m", "clearset.cli", "scan", "s", "--out", str(tmp_path / "run")]
    proc = subprocess.run(
        [*scan, "--list", lst], cwd=tmp_path / "work", capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["source"]["url"] == str(tmp_path / "work" / "s")
    proc = cli("clean", str(tmp_path / "run"), "--to", str(tmp_path / "clean"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "clean").glob("*.jpg")) == ["b.jpg"]


# ---------------------------------------------------------------- by design: smuggling


def test_clean_refuses_a_member_the_scan_never_hashed(tmp_path: Path) -> None:
    listed, kept = _jpeg(70), _jpeg(71)
    shard = tmp_path / "s" / "00000.tar"
    _tar(shard, [("a.jpg", listed), ("b.jpg", kept)])
    lst = _sha256_list(tmp_path / "l.txt", listed)
    run = tmp_path / "run"
    assert cli("scan", str(tmp_path / "s"), "--out", str(run), "--list", lst).returncode == 0
    stat = shard.stat()
    # The same size and time stamp, another member: only the bytes can tell.
    _tar(shard, [("a.jpg", listed), ("c.jpg", kept)])
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert shard.stat().st_size == stat.st_size
    out = tmp_path / "clean"
    proc = cli("clean", str(run), "--to", str(out))
    assert proc.returncode == 1
    assert "00000.tar" in _said(proc.stderr) and "c.jpg" in _said(proc.stderr)
    assert not (out / "00000.tar").exists()
    assert not [p for p in out.rglob("*") if p.is_file() and ".clearset-clean" not in p.parts]


def test_whole_copy_refuses_changed_bytes(tmp_path: Path) -> None:
    shard = tmp_path / "s" / "00000.tar"
    _tar(shard, [("a.jpg", _jpeg(72))])
    lst = _sha256_list(tmp_path / "l.txt", b"nothing")
    run = tmp_path / "run"
    assert cli("scan", str(tmp_path / "s"), "--out", str(run), "--list", lst).returncode == 0
    stat = shard.stat()
    _tar(shard, [("a.jpg", _jpeg(73))])  # same name, other picture
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if shard.stat().st_size != stat.st_size:
        pytest.skip("the two JPEGs tar to different sizes")
    proc = cli("clean", str(run), "--to", str(tmp_path / "clean"))
    assert proc.returncode == 1 and "changed since it was scanned" in _said(proc.stderr)
    assert not (tmp_path / "clean" / "00000.tar").exists()


def test_writer_refuses_a_member_without_a_manifest_row(tmp_path: Path) -> None:
    from clearset.formats.base import ShardRef
    from clearset.formats.rewriting import ShardContents
    from clearset.formats.webdataset import write_webdataset_shard

    _tar(tmp_path / "x.tar", [("a.jpg", b"1"), ("b.jpg", b"2")])
    contents = ShardContents(members={"a.jpg": [hashlib.sha256(b"1").digest()]})
    shard = ShardRef(id="x.tar", name="x.tar", path=(tmp_path / "x.tar").as_uri())
    with pytest.raises(OutputError, match=r"member b\.jpg has no row"):
        write_webdataset_shard(shard, tmp_path / "out", {"zz"}, any_removed=True, contents=contents)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


# ---------------------------------------------------------------- by design: accounting


def test_a_scan_that_hashed_nothing_fails_and_cannot_be_cleaned(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    for n in range(3):
        (src / f"{n}.txt").write_text("no picture here")
    lst = _sha256_list(tmp_path / "l.txt", b"x")
    run = tmp_path / "run"
    proc = cli("scan", str(src), "--out", str(run), "--list", lst)
    assert proc.returncode == 1
    assert "hashed no image in 3 manifest rows" in _said(proc.stderr)
    assert "Traceback" not in _said(proc.stderr)
    proc = cli("clean", str(run), "--to", str(tmp_path / "clean"))
    assert proc.returncode == 1 and "hashed no image" in _said(proc.stderr)
    assert not (tmp_path / "clean").exists()
    proc = cli("scan", str(src), "--out", str(tmp_path / "run2"), "--list", lst, "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    assert "accepted with --allow-missing" in _said(proc.stderr)


def test_a_scan_that_could_not_read_its_items_fails(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    for n in range(9):
        (src / f"{n}.jpg").write_bytes(_jpeg(80 + n))
    (src / "9.jpg").write_bytes(b"\xff\xd8 a broken picture")  # 1 of 10 > 5 %
    proc = cli("scan", str(src), "--out", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert "could not read 1 of 10 items (10.0%" in _said(proc.stderr)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["accounting"]["verdict"] == "failed"
    assert info["accounting"]["totals"] == {"hashed": 9, "unread": 1}


def test_every_scan_prints_its_accounting_line(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg(90))
    (src / "a.txt").write_text("caption")
    proc = cli("scan", str(src), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "accounting: 2 members: 1 image hashed; 0 unread; 1 other member hashed" in _said(
        proc.stdout
    )


def test_library_scan_raises_on_unaccounted(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.txt").write_text("x")
    with pytest.raises(ClearsetError, match="hashed no image"):
        run_scan(
            open_source(str(src)), tmp_path / "run", ScanSettings(), workers=1, show_progress=False
        )
    result = run_scan(
        open_source(str(src)),
        tmp_path / "run2",
        ScanSettings(),
        workers=1,
        show_progress=False,
        allow_missing=True,
    )
    assert result.accounting["verdict"] == "accepted"
    with pytest.raises(ClearsetError, match="hashed no image"):
        clean_run(tmp_path / "run", tmp_path / "clean")


def test_demo_items_are_unchanged_by_accounting() -> None:
    # The demo's broken members are few enough that the demo's own scan passes.
    items = the_demo_items()
    broken = sum(i.broken is not None for i in items)
    assert 0 < broken / len(items) < 0.05
