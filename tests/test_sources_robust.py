"""Bad metadata, odd names and malformed shards end in a row reason or a one-line error,
never a traceback (issue 10): each case that crashed a scan, then the whole class as a
property over mutated tar and parquet shards."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearset.demo import demo_items
from clearset.errors import InputError
from clearset.formats import open_source
from clearset.runfolder import RunFolder
from clearset.stages.scan import ScanSettings, manifest_row
from tests.conftest import run_cli

JPEG = next(i.data for i in demo_items(count=8) if i.broken is None and i.ext == "jpg")


def _tar(path: Path, members: list[tuple[str, bytes]], **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _items(url: str) -> list:
    source = open_source(url)
    return [item for shard in source.shards() for item in source.read_shard(shard)]


def _rows(url: str) -> list[dict]:
    return [manifest_row(item, ScanSettings()) for item in _items(url)]


@pytest.mark.parametrize(
    ("meta", "url", "note"),
    [
        ({"url": 1}, "1", None),
        ({"url": ["https://x.example/a.jpg"]}, None, "bad_metadata"),
        (
            {"url": "https://x.example/a.jpg", "status": {}},
            "https://x.example/a.jpg",
            "bad_metadata",
        ),
        ({"sha256": 5, "md5": ["x"]}, None, None),
    ],
)
def test_bad_json_metadata_becomes_a_row_reason(tmp_path: Path, meta, url, note) -> None:
    _tar(tmp_path / "s.tar", [("a.jpg", JPEG), ("a.json", json.dumps(meta).encode())])
    rows = {r["member"]: r for r in _rows(str(tmp_path / "s.tar"))}
    image = rows["a.jpg"]
    assert image["status"] == "ok" and image["url"] == url
    assert image["upstream_sha256"] is None and image["upstream_md5"] is None
    assert (image["reason"] or "").split(":")[0] == (note or "")


def test_deeply_nested_json_member_and_side_file(tmp_path: Path) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    _tar(tmp_path / "s.tar", [("a.jpg", JPEG), ("a.json", deep)])
    rows = {r["member"]: r for r in _rows(str(tmp_path / "s.tar"))}
    assert rows["a.jpg"]["reason"] == "bad_metadata: .json member is too deeply nested"
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(JPEG)
    (folder / "a.json").write_bytes(b'{"a":' * 5000 + b"1" + b"}" * 5000)
    rows = {r["member"]: r for r in _rows(str(folder))}
    assert rows["a.jpg"]["reason"] == "bad_metadata: .json side file is too deeply nested"


def test_bad_side_parquet_and_parquet_columns(tmp_path: Path) -> None:
    # img2dataset's side parquet with an int url and a non-UTF-8 binary one.
    _tar(tmp_path / "w" / "00000.tar", [("a.jpg", JPEG), ("b.jpg", JPEG)])
    side = pa.table(
        {"key": ["a", "b"], "url": pa.array([b"http://x.example/\xff", b"ok"], pa.binary())}
    )
    pq.write_table(side, tmp_path / "w" / "00000.parquet")
    rows = {r["member"]: r for r in _rows(str(tmp_path / "w"))}
    assert rows["a.jpg"]["url"] == "http://x.example/\\xff" and rows["b.jpg"]["url"] == "ok"

    # A side parquet holding bytes of its own would reach the cleaned copy unscanned.
    pq.write_table(
        side.append_column("jpg", pa.array([JPEG, JPEG])), tmp_path / "w" / "00000.parquet"
    )
    with pytest.raises(InputError, match=r"side parquet has a bytes column \(jpg\)"):
        _rows(str(tmp_path / "w"))

    # A parquet whose url column holds ints, and whose image struct holds text.
    struct = pa.struct([("bytes", pa.string()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": "not bytes", "path": None}], struct),
            "url": pa.array([7], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    [row] = _rows(str(tmp_path / "p.parquet"))
    assert row["url"] == "7" and row["status"] == "error" and row["sha256"] is not None


def test_non_utf8_names_are_kept_and_cleaned_round_trip(tmp_path: Path) -> None:
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")
    listed = next(i.data for i in demo_items(count=12) if i.broken is None and i.data != JPEG)
    # A tar written by a tool that does not re-encode names, and a folder on a Latin-1 disk.
    _tar(
        tmp_path / "t" / "00000.tar",
        [(f"{raw}.jpg", JPEG), (f"{raw}2.jpg", listed)],
        format=tarfile.GNU_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    )
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / f"{raw}.jpg").write_bytes(JPEG)
    (folder / f"{raw}2.jpg").write_bytes(listed)
    import hashlib

    (tmp_path / "l.txt").write_text(hashlib.sha256(listed).hexdigest() + "\n")
    for src in ("t", "f"):
        run, out = tmp_path / f"run-{src}", tmp_path / f"clean-{src}"
        proc = run_cli(
            "scan", str(tmp_path / src), "--out", str(run), "--list",
            f"{tmp_path / 'l.txt'},type=sha256", "--clean-to", str(out),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        members = sorted(r["member"] for r in RunFolder(run).read_manifest().to_pylist())
        assert members == ["caf\\xe9.jpg", "caf\\xe92.jpg"]
        if src == "f":
            assert os.listdir(os.fsencode(out)) and (out / f"{raw}.jpg").read_bytes() == JPEG
            assert not (out / f"{raw}2.jpg").exists()
        else:
            with tarfile.open(out / "00000.tar", errors="surrogateescape") as tar:
                assert [m.name for m in tar.getmembers()] == [f"{raw}.jpg"]


# ---------------------------------------------------------------- the class: a property


def _valid_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("a.jpg", JPEG[:3000]), ("a.json", b'{"url": "u"}'), ("b.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _valid_parquet() -> bytes:
    buffer = io.BytesIO()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": JPEG[:2000], "path": "a.jpg"}, None], struct),
            "url": ["u", None],
            "key": ["k1", "k2"],
        }
    )
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed with a few bytes overwritten, a slice cut out, or a tail cut off."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 6))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            start = draw(st.integers(0, len(data)))
            data = data[:start] + data[start + draw(st.integers(0, 600)) :]
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    return mutate()


@pytest.mark.parametrize("name", ["s.tar", "s.parquet"])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_shard_bytes_give_rows_or_one_line_error(tmp_path_factory, name: str, data) -> None:
    seed = _valid_tar() if name.endswith(".tar") else _valid_parquet()
    path = tmp_path_factory.mktemp("shard") / name
    path.write_bytes(data.draw(_mutations(seed)))
    try:
        rows = _rows(str(path))
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert all(r["status"] in ("ok", "error", "missing", "other") for r in rows)
