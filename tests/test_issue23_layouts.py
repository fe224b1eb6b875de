"""Layouts that were misread (issue 23, point 4) and an empty tar (point 9).

img2dataset's files layout where one shard downloaded nothing (its folder empty or
absent, its parquet and stats still there) is the files layout, not a parquet source; a
metadata-only parquet screened by its hash columns cleans in one pass as in two; a scan
of an empty tar fails as every scan that hashed no image does.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clearset.demo import generate_image
from clearset.formats import detect
from tests.conftest import cli, run_img2dataset, tree_state


def _jpeg(seed: int) -> bytes:
    image = generate_image(np.random.default_rng(seed)).resize((160, 120))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _said(text: str) -> str:
    return " ".join(text.split())


def _manifest(run: Path) -> list[dict]:
    return pq.read_table(run / "manifest").to_pylist()


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


@pytest.fixture(scope="module")
def files_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """img2dataset's files layout of 4 pictures and 2 dead links, 2 URLs a shard: shards
    00000 and 00001 hold the pictures, shard 00002 downloaded nothing (HTTP 404)."""
    root = tmp_path_factory.mktemp("i2d-files")
    options = {"output_format": "files", "thread_count": 2, "number_sample_per_shard": 2}
    run_img2dataset(
        root,
        [_jpeg(40 + n) for n in range(4)],
        {"out": {**options, "resize_mode": "no"}},
        missing=("gone-a.jpg", "gone-b.jpg"),
    )
    out = root / "out"
    assert (out / "00002.parquet").exists() and (out / "00002_stats.json").exists()
    assert not any((out / "00002").iterdir())  # what img2dataset leaves: an empty folder
    return out


@pytest.mark.parametrize("shard_folder", ["empty", "absent"])
def test_files_layout_with_a_shard_that_downloaded_nothing(
    files_layout: Path, tmp_path: Path, shard_folder: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(files_layout, src)
    if shard_folder == "absent":
        (src / "00002").rmdir()
    before = tree_state(src)
    survey = detect(str(src))
    assert survey.kind == "folder" and survey.side_files == 6, survey
    pictures = sorted(src.glob("0000[01]/*.jpg"))
    assert len(pictures) == 4
    listed = tmp_path / "list.txt"
    listed.write_text(hashlib.sha256(pictures[0].read_bytes()).hexdigest() + "\n")
    run, dest = tmp_path / "run", tmp_path / "dest"
    proc = cli(
        "scan", str(src), "--out", str(run), "--list", f"{listed},type=sha256",
        "--clean-to", str(dest),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = _said(proc.stdout)
    assert "as folder: 8 files; 6 img2dataset side files" in said
    assert "parquet" not in said.split("scan of")[0]
    info = json.loads((run / "run.json").read_text())
    assert info["accounting"]["verdict"] == "ok"
    assert info["accounting"]["totals"]["hashed"] == 4
    # The dead links are accounted as the failures the side parquet records.
    assert info["accounting"]["totals"]["upstream_failed"] == 2
    failed = [r for r in _manifest(run) if r["status"] == "missing"]
    assert sorted(r["url"].rsplit("/", 1)[-1] for r in failed) == ["gone-a.jpg", "gone-b.jpg"]
    assert all(r["key"].startswith("00002/") and r["member"] is None for r in failed)
    # The copy holds the kept samples' files and nothing else: no side file, no stray.
    kept = {str(p.relative_to(src)) for p in pictures[1:]}
    kept |= {name[: -len(".jpg")] + ".json" for name in kept}
    assert _files(dest) == kept
    assert tree_state(src) == before


def test_survey_counts_are_pluralised(tmp_path: Path) -> None:
    table = pa.table({"url": ["http://example.invalid/a.jpg"], "md5": ["0" * 32]})
    for n in (1, 3):
        folder = tmp_path / f"p{n}"
        folder.mkdir()
        for i in range(n):
            pq.write_table(table, folder / f"{i}.parquet")
        said = detect(str(folder)).describe()
        assert said == ("1 parquet file" if n == 1 else "3 parquet files"), said


def _metadata_parquet(tmp_path: Path) -> tuple[Path, Path]:
    """A LAION-style parquet of URLs and MD5s (no image column), and a list naming the
    MD5 of one of its rows."""
    src = tmp_path / "meta"
    src.mkdir()
    md5s = [hashlib.md5(f"picture {n}".encode()).hexdigest() for n in range(10)]
    urls = [f"http://example.invalid/{n}.jpg" for n in range(10)]
    pq.write_table(pa.table({"url": urls, "md5": md5s}), src / "part-0.parquet")
    listed = tmp_path / "md5.txt"
    listed.write_text(md5s[3] + "\n")
    return src, listed


def test_metadata_only_parquet_cleans_in_one_pass_after_a_refused_scan(tmp_path: Path) -> None:
    src, listed = _metadata_parquet(tmp_path)
    run, dest = tmp_path / "run", tmp_path / "dest"
    args = ("scan", str(src), "--out", str(run), "--list", str(listed), "--clean-to", str(dest))
    proc = cli(*args)
    assert proc.returncode == 1
    assert "re-run the same command with --allow-missing" in _said(proc.stderr)
    # Following that hint cleans, as `scan --allow-missing` then `clean` does.
    proc = cli(*args, "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    kept = pq.read_table(dest / "part-0.parquet")
    assert kept.num_rows == 9 and listed.read_text().strip() not in kept.column("md5").to_pylist()

    two_run, two_dest = tmp_path / "run2", tmp_path / "dest2"
    cli(
        "scan",
        str(src),
        "--out",
        str(two_run),
        "--list",
        str(listed),
        "--allow-missing",
        check=True,
    )
    cli("clean", str(two_run), "--to", str(two_dest), check=True)
    assert pq.read_table(two_dest / "part-0.parquet").equals(kept)


def test_clean_of_an_unaccounted_scan_names_the_way_on(tmp_path: Path) -> None:
    src, listed = _metadata_parquet(tmp_path)
    run = tmp_path / "run"
    assert cli("scan", str(src), "--out", str(run), "--list", str(listed)).returncode == 1
    proc = cli("clean", str(run), "--to", str(tmp_path / "dest"))
    assert proc.returncode == 1 and "--allow-missing" in _said(proc.stderr)
    assert not (tmp_path / "dest").exists()


def test_scan_of_an_empty_tar_fails(tmp_path: Path) -> None:
    shard = tmp_path / "empty.tar"
    tarfile.open(shard, "w").close()
    proc = cli("scan", str(shard), "--out", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert "hashed no image" in _said(proc.stderr) and "Traceback" not in proc.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["accounting"]["verdict"] == "failed"
    proc = cli("scan", str(shard), "--out", str(tmp_path / "run2"), "--allow-missing")
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- img2dataset's border mode


def _centred_product(name: str, size: tuple[int, int]) -> bytes:
    """A product shot: an elliptical cut-out of a photo centred on pure white, with
    white margins on every side (what no rule on pixels alone tells from padding)."""
    from skimage import data as skdata

    width, height = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    ow, oh = int(width * 0.6), int(height * 0.6)
    photo = Image.fromarray(np.asarray(getattr(skdata, name)())).convert("RGB")
    thing = np.asarray(photo.resize((ow, oh)))
    yy, xx = np.mgrid[0:oh, 0:ow]
    inside = ((xx - ow / 2) / (ow / 2)) ** 2 + ((yy - oh / 2) / (oh / 2)) ** 2 <= 1
    top, left = (height - oh) // 2, (width - ow) // 2
    canvas[top : top + oh, left : left + ow][inside] = thing[inside]
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _distance(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def test_img2dataset_border_mode_is_trimmed_by_the_recorded_original_size(
    tmp_path: Path,
) -> None:
    from clearset.hashing import hash_bytes
    from clearset.hashing.borders import recorded_padding, trim
    from clearset.hashing.pdq import pdq_from_rgb
    from clearset.settings import PDQ_MATCH_THRESHOLD

    pictures = [
        _centred_product("coffee", (640, 480)),
        _centred_product("astronaut", (480, 640)),
        _centred_product("chelsea", (700, 420)),
    ]
    options = {"output_format": "files", "thread_count": 2, "image_size": 256}
    urls = run_img2dataset(tmp_path, pictures, {"border": {**options, "resize_mode": "border"}})
    src = tmp_path / "border"
    originals = [
        pdq_from_rgb(np.asarray(Image.open(io.BytesIO(p)).convert("RGB")))[0] for p in pictures
    ]
    for meta in sorted(src.glob("*/*.json")):
        record = json.loads(meta.read_text())
        stored = meta.with_suffix(".jpg").read_bytes()
        listed = originals[urls.index(record["url"])]
        size = (record["original_width"], record["original_height"])
        padding = recorded_padding(record["width"], record["height"], *size)
        assert padding is not None and padding.any
        rgb = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
        interior = pdq_from_rgb(trim(rgb, padding))[0]
        for exact_pdq in (False, True):
            guessed = hash_bytes(stored, exact_pdq=exact_pdq)
            # From the pixels alone, the product's white margins go with the padding.
            assert min(_distance(h, listed) for h in (guessed.pdq, guessed.pdq_trimmed)) > (
                PDQ_MATCH_THRESHOLD
            )
            found = hash_bytes(stored, exact_pdq=exact_pdq, original_size=size)
            assert found.pdq == guessed.pdq  # the hash as stored does not change
            assert _distance(found.pdq_trimmed, listed) <= PDQ_MATCH_THRESHOLD
            if exact_pdq:
                assert found.pdq_trimmed == interior
    # And through a scan: every picture matches the list of the originals.
    listed = tmp_path / "pdq.txt"
    listed.write_text("".join(h.hex() + "\n" for h in originals))
    run = tmp_path / "run"
    proc = cli("scan", str(src), "--out", str(run), "--list", f"{listed},type=pdq")
    assert proc.returncode == 0, proc.stderr
    matched = pq.read_table(run / "matches.parquet").column("key").to_pylist()
    assert len(set(matched)) == len(pictures)


def test_recorded_size_is_not_trusted_where_the_pixels_are_no_padding() -> None:
    """A centre crop is square too: the bands the recorded size gives hold picture."""
    from clearset.hashing.borders import Borders, holds_padding, recorded_padding

    assert recorded_padding(256, 256, 640, 480) == Borders(top=32, bottom=32)
    assert recorded_padding(256, 256, 700, 420) == Borders(top=51, bottom=51)  # 153.6 -> 154
    assert recorded_padding(256, 256, 500, 500) is None
    assert recorded_padding(256, 192, 640, 480) is None  # keep_ratio: not padded
    luma = np.full((256, 256), 255, np.uint8)
    luma[32:224] = np.random.default_rng(0).integers(0, 200, (192, 256))
    assert holds_padding(luma, Borders(top=32, bottom=32))
    assert not holds_padding(luma, Borders(top=40, bottom=40))
