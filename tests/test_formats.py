"""A format is one module: the recipe, proved with a toy format defined in this file alone.

`ToyLines` is a JSON-lines file of base64 image bytes (`*.b64l`), registered with one
line (`register(ToyLines())`) and run through the real `scan`, `match` and `clean`
commands; nothing else in clearset names it. A format without a rewriter says so in one
line on `clean`. Every registered format passes the same conformance test: it detects
its own layout, reads every member, rewrites a shard without a removed key, and the
rewritten shard reads back as the original minus that key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.parquet as pq
import pytest

from clearset.atomic import atomic_path
from clearset.demo import demo_items, write_folder, write_hf_parquet, write_webdataset
from clearset.formats import FORMATS, detect, open_source, register
from clearset.formats.base import Format, Item, ShardRef, file_shards
from clearset.formats.rewriting import ShardContents, WrittenShard, changed_since_scan
from tests.conftest import cli

ITEMS = [i for i in demo_items(count=6) if i.broken is None]


# ------------------------------------------------------------------ the toy format


@dataclass
class ToyLinesSource:
    kind: ClassVar[str] = "toy-lines"
    suffix: ClassVar[str] = ".b64l"
    url: str

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    def shards(self) -> list[ShardRef]:
        return file_shards(self.url, (self.suffix,), "toy file")

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        raw = Path(shard.path.removeprefix("file://")).read_bytes()
        if record is not None:
            record.update(file_sha256=hashlib.sha256(raw).hexdigest(), file_bytes=len(raw))
        for position, line in enumerate(raw.splitlines()):
            row = json.loads(line)
            member = f"{row['key']}.jpg"
            yield Item(
                key=row["key"],
                shard=shard.name,
                position=position,
                members=(member,),
                member=member,
                data=base64.b64decode(row["image"]),
            )


def write_toy_lines(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    raw = Path(shard.path.removeprefix("file://")).read_bytes()
    if contents.file_sha256 and hashlib.sha256(raw).hexdigest() != contents.file_sha256:
        raise changed_since_scan(shard.path)
    written = WrittenShard()
    kept = []
    for line in raw.splitlines(keepends=True):
        if json.loads(line)["key"] in removed:
            written.members_removed += 1
        else:
            kept.append(line)
    written.keys_kept, written.keys_removed = len(kept), written.members_removed
    with atomic_path(dest_root / shard.name) as tmp:
        tmp.write_bytes(b"".join(kept))
    written.files.append(shard.name)
    written.copied_whole = not any_removed
    return written


class ToyLines(Format):
    name = "toy-lines"
    reader = ToyLinesSource
    suffixes = (".b64l",)
    noun = "toy file"
    rewriter = staticmethod(write_toy_lines)


@dataclass
class ReadOnlySource(ToyLinesSource):
    kind: ClassVar[str] = "toy-readonly"
    suffix: ClassVar[str] = ".ro64l"


class ToyNoRewrite(Format):
    """The same lines under another suffix, with no rewriter."""

    name = "toy-readonly"
    reader = ReadOnlySource
    suffixes = (".ro64l",)


def _register_toys() -> None:
    register(ToyLines())  # the one registry line a new format takes
    register(ToyNoRewrite())


# A spawned worker imports this module to unpickle a toy source, and needs the toys named.
# In the test process they are named only while this module's tests run, so that no other
# test (the CLI reference's --kind choices) sees them.
if multiprocessing.parent_process() is not None:
    _register_toys()


@pytest.fixture(autouse=True, scope="module")
def _toys() -> Iterator[None]:
    before = dict(FORMATS)
    _register_toys()
    yield
    FORMATS.clear()
    FORMATS.update(before)


def make_toy(root: Path, suffix: str = ".b64l") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(ITEMS), 3)):
        lines = [
            json.dumps({"key": i.key, "image": base64.b64encode(i.data).decode()}) + "\n"
            for i in ITEMS[start : start + 3]
        ]
        (root / f"{number:05d}{suffix}").write_text("".join(lines))
    return root


# ------------------------------------------------------------------ the recipe, end to end


def test_a_toy_format_is_scanned_matched_and_cleaned_by_the_real_commands(
    tmp_path: Path,
) -> None:
    src = make_toy(tmp_path / "src")
    assert detect(str(src)).kind == "toy-lines"
    gone = ITEMS[1]
    md5 = tmp_path / "md5.txt"
    md5.write_text(hashlib.md5(gone.data).hexdigest() + "\n")
    cli("scan", str(src), "--out", str(tmp_path / "run"), "--list", str(md5), check=True)
    cli("match", str(tmp_path / "run"), "--list", str(md5), check=True)
    cli("clean", str(tmp_path / "run"), "--to", str(tmp_path / "out"), check=True)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["source"]["kind"] == "toy-lines"
    matched = pq.read_table(tmp_path / "run" / "matches.parquet").column("key").to_pylist()
    assert matched == [gone.key]
    cleaned = ToyLinesSource(str(tmp_path / "out"))
    kept = {item.key for shard in cleaned.shards() for item in cleaned.read_shard(shard)}
    assert kept == {i.key for i in ITEMS} - {gone.key}


def test_a_format_without_a_rewriter_says_so_in_one_line_on_clean(tmp_path: Path) -> None:
    src = make_toy(tmp_path / "src", ".ro64l")
    md5 = tmp_path / "md5.txt"
    md5.write_text(hashlib.md5(ITEMS[0].data).hexdigest() + "\n")
    cli("scan", str(src), "--out", str(tmp_path / "run"), "--list", str(md5), check=True)
    proc = cli("clean", str(tmp_path / "run"), "--to", str(tmp_path / "out"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot clean a toy-readonly source" in lines[0] and str(src) in lines[0]
    assert "KeyError" not in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ conformance


def _webdataset(root: Path) -> Path:
    write_webdataset(root, ITEMS, shard_size=3)
    return root


def _parquet(root: Path) -> Path:
    write_hf_parquet(root / "data" / "train-00000.parquet", ITEMS)
    return root


def _folder(root: Path) -> Path:
    write_folder(root, ITEMS)
    return root


#: A demo layout for each registered format. A URL list is read by fetching over HTTP:
#: tests/test_fetch.py runs it against a local server, so it is left out here.
LAYOUTS: dict[str, Callable[[Path], Path]] = {
    "webdataset": _webdataset,
    "parquet": _parquet,
    "folder": _folder,
    "toy-lines": make_toy,
}
NOT_HERE = {"fetch", "toy-readonly"}


def test_every_registered_format_has_a_conformance_layout() -> None:
    assert set(FORMATS) - NOT_HERE == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_format_conformance(tmp_path: Path, name: str) -> None:
    fmt = FORMATS[name]
    src = LAYOUTS[name](tmp_path / "src")
    assert detect(str(src)).kind == name
    source = open_source(str(src))
    assert source.kind == name and source.spec()["kind"] == name
    shards = source.shards()
    read: dict[str, list[Item]] = {}
    records: dict[str, dict[str, Any]] = {}
    for shard in shards:
        records[shard.id] = {}
        read[shard.id] = list(source.read_shard(shard, records[shard.id]))
    images = {i.key for items in read.values() for i in items if i.data is not None}
    assert {i.key for i in ITEMS} <= {k.rsplit("/", 1)[-1] for k in images}
    # Rewrite every shard, one key removed from the first.
    assert fmt.rewriter is not None
    dest = tmp_path / "out"
    removed_key = next(i.key for i in read[shards[0].id] if i.data is not None)
    for shard in shards:
        contents = ShardContents(file_sha256=records[shard.id].get("file_sha256"))
        for item in read[shard.id]:
            if item.member is not None:
                digest = hashlib.sha256(item.data).digest() if item.data is not None else None
                contents.members.setdefault(item.member, []).append(digest)
        removed = {removed_key} if shard is shards[0] else set()
        fmt.rewriter(shard, dest, removed, any_removed=bool(removed), contents=contents)
    again = open_source(str(dest), kind=name)
    keys_after = {i.key for s in again.shards() for i in again.read_shard(s) if i.data is not None}
    assert keys_after == images - {removed_key}
