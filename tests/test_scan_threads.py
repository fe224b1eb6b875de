"""A worker's hashing threads (`CLEARSET_HASH_THREADS`): the same manifest, byte for byte.

The threads only overlap reading, decoding and hashing; the rows must come out in the
order the shard holds them, whatever the threads finish first, and an error must reach
the scan as it does without them (no partial output).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from clearset.demo import demo_items, write_webdataset
from clearset.errors import InputError
from clearset.formats import open_source
from clearset.runfolder import RunFolder
from clearset.stages import scan as scan_stage
from clearset.stages.scan import HASH_THREADS_ENV, ScanSettings, hash_threads, scan_shard


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard of 10 samples (6 pictures and the demo's 4 broken members; each with
    a .txt and a .json): 30 members, not a multiple of the hand-off batch."""
    root = tmp_path_factory.mktemp("threads")
    write_webdataset(root / "src", demo_items(seed=27, count=6), 100)
    return root / "src"


def _scan(src: Path, run_dir: Path, threads: str | None, monkeypatch: pytest.MonkeyPatch):
    if threads is None:
        monkeypatch.delenv(HASH_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(HASH_THREADS_ENV, threads)
    source = open_source(str(src))
    (ref,) = source.shards()
    summary = scan_shard(source, ref, run_dir, ScanSettings(dihedral=True))
    return RunFolder(run_dir).manifest_file(ref.id).read_bytes(), summary


def test_threads_write_the_same_manifest(
    shard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, plain_summary = _scan(shard, tmp_path / "plain", None, monkeypatch)
    # A batch of one item and few in flight: threads finish out of order most often.
    monkeypatch.setattr(scan_stage, "HASH_BATCH", 1)
    threaded, threaded_summary = _scan(shard, tmp_path / "one", "3", monkeypatch)
    monkeypatch.setattr(scan_stage, "HASH_BATCH", 8)
    batched, batched_summary = _scan(shard, tmp_path / "eight", "2", monkeypatch)
    # Batches cut by bytes (each picture over the cap) rather than by count.
    monkeypatch.setattr(scan_stage, "HASH_BATCH", 32)
    monkeypatch.setattr(scan_stage, "HASH_BATCH_BYTES", 1000)
    by_bytes, _ = _scan(shard, tmp_path / "bytes", "2", monkeypatch)
    assert plain == threaded == batched == by_bytes
    assert plain_summary.rows == threaded_summary.rows == batched_summary.rows == 30
    assert plain_summary.status == threaded_summary.status == batched_summary.status
    assert plain_summary.status.get("error")  # the broken members went through too


def test_an_error_in_a_thread_reaches_the_scan(
    shard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = scan_stage.manifest_row

    def failing(item, settings):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 20:  # after some rows, before the end
            raise RuntimeError("hashing failed")
        return real(item, settings)

    monkeypatch.setattr(scan_stage, "manifest_row", failing)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="hashing failed"):
        _scan(shard, run_dir, "2", monkeypatch)
    # Nothing written, not even a temporary file, and no thread left running.
    manifests = RunFolder(run_dir).manifest_dir
    assert not manifests.exists() or not list(manifests.iterdir())
    assert not [t for t in threading.enumerate() if t.name.startswith("clearset-hash")]


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_THREADS_ENV, value)
    with pytest.raises(InputError, match=HASH_THREADS_ENV):
        hash_threads()
    monkeypatch.setenv(HASH_THREADS_ENV, " 4 ")
    assert hash_threads() == 4


def test_a_scan_with_a_bad_thread_count_stops_before_any_work(
    shard: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import cli

    monkeypatch.setenv(HASH_THREADS_ENV, "lots")
    run = tmp_path / "run"
    proc = cli("scan", str(shard), "--out", str(run), "--no-progress")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"clearset: error: {HASH_THREADS_ENV}='lots': expected a positive whole number\n"
    )
    assert not run.exists(), "no run folder begun"


@pytest.mark.parametrize(
    ("read_ahead", "read_ahead_bytes", "sizes", "first_batch"),
    [
        (4, 1 << 20, [10] * 10, 4),  # by count
        (64, 250, [100] * 10, 3),  # by bytes: the item that reaches the cap is in it
        (64, 1 << 20, [10] * 10, 10),  # all: fewer items than a batch
    ],
)
def test_without_threads_items_are_read_ahead_a_bounded_batch(
    read_ahead: int,
    read_ahead_bytes: int,
    sizes: list[int],
    first_batch: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read a batch, hash it, hand it on: every row in the items' order, and never more
    items held than READ_AHEAD or than reach READ_AHEAD_BYTES."""
    monkeypatch.setattr(scan_stage, "READ_AHEAD", read_ahead)
    monkeypatch.setattr(scan_stage, "READ_AHEAD_BYTES", read_ahead_bytes)
    pulled: list[int] = []

    class Item:
        def __init__(self, n: int, size: int) -> None:
            self.n, self.data, self.image_data = n, bytes(size), None

    def items():
        for n, size in enumerate(sizes):
            pulled.append(n)
            yield Item(n, size)

    def row(item: Item, settings: ScanSettings) -> dict[str, int]:
        return {"n": item.n, "read": len(pulled)}

    monkeypatch.setattr(scan_stage, "manifest_row", row)
    rows = list(scan_stage.manifest_rows(items(), ScanSettings(), threads=1))
    assert [r["n"] for r in rows] == list(range(len(sizes)))
    # Every row of the first batch was made once its items were read, before the next.
    assert [r["read"] for r in rows[:first_batch]] == [first_batch] * first_batch
    assert rows[first_batch - 1]["read"] < len(sizes) or first_batch == len(sizes)


def test_members_that_hold_no_picture_get_the_rows_hashing_would_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `manifest_row` skips `hash_bytes` for a member no image plugin takes; every such
    # row must be the one the full path gives (status, reason, digests, empty columns),
    # and anything that might be a picture must still take the full path.
    import gzip
    import io

    from PIL import Image

    from clearset.formats.base import Item

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png, "PNG")
    members = {
        "caption.txt": b"a photo of a red square",
        "meta.json": b'{"url": "http://example.com/a.jpg", "caption": "x"}',
        "label.cls": b"7",
        "noise.bin": bytes(range(256)) * 3,
        "empty.txt": b"",
        "png_named_txt.txt": png.getvalue(),
        "truncated_jpeg.txt": b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        "caption.txt.gz": gzip.compress(b"a caption, compressed"),
    }
    settings = ScanSettings()

    def rows() -> dict[str, dict[str, object]]:
        found = {}
        for name, data in members.items():
            unpacked = gzip.decompress(data) if name.endswith(".gz") else None
            item = Item(
                key="k", shard="s.tar", position=0, members=tuple(members), member=name,
                data=data, expect_image=False, image_data=unpacked, note=None,
            )  # fmt: skip
            found[name] = scan_stage.manifest_row(item, settings)
        return found

    fast = rows()
    monkeypatch.setattr(scan_stage, "maybe_image", lambda data: True)  # the full path
    assert fast == rows()
    assert fast["caption.txt"]["status"] == "other"
    assert fast["caption.txt"]["reason"] == "not_an_image"
    assert fast["empty.txt"]["reason"] == "empty"
    assert fast["png_named_txt.txt"]["status"] == "ok"  # a picture under any name
    assert fast["caption.txt.gz"]["size"] == len(members["caption.txt.gz"])
