"""Issue 23 point 3: a finished cleaned copy can be published as it is.

Whatever wrote it (`scan --clean-to`, `clean`, `apply-removals`) and whatever the source
(webdataset with img2dataset's side files, a Hugging Face parquet repository, a folder, a
URL list in parquet or text), a finished copy holds no hidden file and no file naming a
local path (source, run folder, list), and it carries the data set's own card and licence
files byte for byte; the `.gitattributes` stays behind. An unfinished copy still says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import demo_items, write_hf_parquet
from clearset.errors import OutputError
from clearset.runs import clean_run
from clearset.runs.clean import drop_state as real_drop_state
from tests.conftest import cli
from tests.fetch_server import LoopbackServer, jpeg

CARD = """---
license: cc-by-4.0
dataset_info:
  features:
  - name: image
    dtype: image
  splits:
  - name: train
    num_bytes: 123456
    num_examples: 8
---
# A benign test set

Generated pictures, for clearset's tests.
"""
LICENSE = "Creative Commons Attribution 4.0 International\n"
GITATTRIBUTES = "*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def assert_publishable(dest: Path, *local: Path) -> None:
    """No hidden name anywhere under `dest`, and no file holding one of the `local` paths."""
    assert dest.is_dir()
    needles = [str(p.resolve()).encode() for p in local]
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            assert not name.startswith("."), f"hidden {Path(folder, name)}"
        for name in files:
            data = Path(folder, name).read_bytes()
            for needle in needles:
                assert needle not in data, f"{Path(folder, name)} names {needle.decode()}"


def add_card(root: Path) -> None:
    (root / "README.md").write_text(CARD)
    (root / "LICENSE").write_text(LICENSE)
    (root / ".gitattributes").write_text(GITATTRIBUTES)


def assert_card(dest: Path, output: str) -> None:
    assert (dest / "README.md").read_bytes() == CARD.encode()  # as it was, counts and all
    assert (dest / "LICENSE").read_bytes() == LICENSE.encode()
    assert not (dest / ".gitattributes").exists()
    said = " ".join(output.split())
    assert "copied the data set's card and licence files as they are: LICENSE, README.md" in said
    assert "describe the source, not this copy" in said
    assert "README.md states the source's sizes" in said


@pytest.fixture(scope="module")
def hf_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Hugging Face repository layout (data/train-0000N-of-00002.parquet, README.md
    with dataset_info, LICENSE, .gitattributes) and an MD5 list matching one picture."""
    root = tmp_path_factory.mktemp("hf")
    items = [i for i in demo_items(count=8) if not i.broken]
    repo = root / "repo"
    write_hf_parquet(repo / "data" / "train-00000-of-00002.parquet", items[:4])
    write_hf_parquet(repo / "data" / "train-00001-of-00002.parquet", items[4:])
    add_card(repo)
    lst = root / "lists" / "watch.txt"
    lst.parent.mkdir()
    lst.write_text(hashlib.md5(items[5].data).hexdigest() + "\n")
    return {"root": root, "repo": repo, "list": lst, "removed": Path(items[5].key)}


def test_every_command_leaves_a_publishable_hf_copy_with_its_card(hf_repo: dict[str, Path]) -> None:
    root, repo, lst = hf_repo["root"], hf_repo["repo"], hf_repo["list"]
    run = root / "run"
    same_pass, later, applied = root / "same-pass", root / "later", root / "applied"
    proc = cli("scan", str(repo), "--out", str(run), "--list", str(lst), "--clean-to",
               str(same_pass), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_card(same_pass, proc.stdout)
    proc = cli("clean", str(run), "--to", str(later), "--no-progress", check=True)
    assert_card(later, proc.stdout)
    proc = cli("apply-removals", str(repo), str(run / "removals.parquet"), "--to", str(applied),
               "--no-progress", check=True)  # fmt: skip
    assert_card(applied, proc.stdout)
    for dest in (same_pass, later, applied):
        assert_publishable(dest, repo, run, lst, root)
        keys = pq.read_table(dest / "data" / "train-00001-of-00002.parquet").column("key")
        assert str(hf_repo["removed"]) not in keys.to_pylist() and len(keys) == 3
        assert (dest / "data" / "train-00000-of-00002.parquet").read_bytes() == (
            repo / "data" / "train-00000-of-00002.parquet"
        ).read_bytes()
    # The run remembers its finished copy: the same clean again finds it finished.
    before = {p: p.stat().st_mtime_ns for p in later.rglob("*")}
    proc = cli("clean", str(run), "--to", str(later), "--no-progress", check=True)
    assert "kept 7 samples" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in later.rglob("*")} == before
    # ... and another clean of it is refused, though the copy holds no state.
    proc = cli("clean", str(run), "--to", str(later), "--drop-undecodable")
    assert proc.returncode != 0 and "holds a finished clean of this run" in proc.stderr
    # The scan run again with its --clean-to does no shard again.
    proc = cli("scan", str(repo), "--out", str(run), "--list", str(lst), "--clean-to",
               str(later), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in later.rglob("*")} == before


def test_a_card_that_is_not_text_stays_behind(hf_repo: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(hf_repo["repo"], repo)
    (repo / "LICENSE").write_bytes(jpeg(1))  # a picture by a card's name: never carried
    proc = cli("apply-removals", str(repo), "--keep-list", str(repo / "data"), "--to",
               str(tmp_path / "out"), "--no-progress", check=True)  # fmt: skip
    assert "not copied: LICENSE (not UTF-8 text" in proc.stdout
    assert not (tmp_path / "out" / "LICENSE").exists()
    assert (tmp_path / "out" / "README.md").read_bytes() == CARD.encode()
    assert_publishable(tmp_path / "out", repo)


def test_webdataset_and_folder_copies_are_publishable(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wds, folder = tmp_path / "wds", tmp_path / "folder"
    shutil.copytree(demo_data.webdataset, wds)  # img2dataset's layout: tar, parquet, stats
    shutil.copytree(demo_data.folder, folder)
    add_card(wds)
    lists = [str(demo_data.pdq_list), str(demo_data.md5_list)]
    run = tmp_path / "run"
    proc = cli("scan", str(wds), "--out", str(run), "--list", lists[0], "--list", lists[1],
               "--clean-to", str(tmp_path / "same-pass"), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_card(tmp_path / "same-pass", proc.stdout)
    proc = cli("clean", str(run), "--to", str(tmp_path / "later"), "--no-progress", check=True)
    assert_card(tmp_path / "later", proc.stdout)
    removals = str(run / "removals.parquet")
    proc = cli("apply-removals", str(wds), removals, "--to", str(tmp_path / "applied"),
               "--no-progress", check=True)  # fmt: skip
    assert_card(tmp_path / "applied", proc.stdout)
    cli("apply-removals", str(folder), removals, "--to", str(tmp_path / "files"),
        "--no-progress", check=True)  # fmt: skip
    folder_run = tmp_path / "folder-run"
    cli("scan", str(folder), "--out", str(folder_run), "--list", lists[1], "--clean-to",
        str(tmp_path / "files-same-pass"), "--no-progress", check=True)  # fmt: skip
    for name in ("same-pass", "later", "applied"):
        dest = tmp_path / name
        assert_publishable(dest, wds, run, demo_data.lists, tmp_path)
        assert sorted(p.name for p in dest.glob("*_stats.json")) == sorted(
            p.name for p in wds.glob("*_stats.json")
        )
        assert len(list(dest.glob("*.parquet"))) == len(list(wds.glob("*.parquet")))
    for name in ("files", "files-same-pass"):
        assert_publishable(tmp_path / name, folder, folder_run, run, demo_data.lists)
        assert list((tmp_path / name).glob("*.jpg"))


def test_a_stopped_clean_looks_unfinished_and_resumes_to_a_publishable_copy(
    hf_repo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    cli("scan", str(hf_repo["repo"]), "--out", str(run), "--list", str(hf_repo["list"]),
        "--no-progress", check=True)  # fmt: skip
    dest = tmp_path / "out"

    def stopped(path: Path) -> None:
        raise KeyboardInterrupt  # every shard and the card are in: only the state is left

    monkeypatch.setattr("clearset.runs.clean.drop_state", stopped)
    with pytest.raises(KeyboardInterrupt):
        clean_run(run, dest, workers=1)
    assert (dest / ".clearset-clean" / "clean.state").exists()  # it says it is unfinished
    with pytest.raises(OutputError, match="other options"):  # and it is still ours
        clean_run(run, dest, workers=1, drop_undecodable=True)
    monkeypatch.setattr("clearset.runs.clean.drop_state", real_drop_state)
    clean_run(run, dest, workers=1)
    assert_publishable(dest, hf_repo["repo"], run, hf_repo["list"])
    assert (dest / "README.md").read_bytes() == CARD.encode()


@pytest.fixture(scope="module")
def server() -> LoopbackServer:
    with LoopbackServer() as running:
        yield running


@pytest.mark.parametrize("fmt", ["parquet", "txt"])
def test_a_url_list_copy_keeps_no_parts_or_paths(
    server: LoopbackServer, tmp_path: Path, fmt: str
) -> None:
    urls = [server.url(f"/img/{300 + i}.jpg") for i in range(7)]
    src = tmp_path / "src"
    src.mkdir()
    if fmt == "parquet":
        path = src / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(7)]}), path)
    else:
        path = src / "urls.txt"
        path.write_text("".join(u + "\n" for u in urls))
    lst = tmp_path / "known.txt"
    lst.write_text(hashlib.sha256(jpeg(302)).hexdigest() + "\n")
    run, same_pass, later = tmp_path / "run", tmp_path / "same-pass", tmp_path / "later"
    fast = ["--connect-timeout", "3", "--read-timeout", "3", "--fetch-retries", "1"]
    proc = cli("scan", str(path), "--fetch", "--out", str(run), "--list", f"{lst},type=sha256",
               "--clean-to", str(same_pass), "--shard-rows", "3", "-w", "1", "--no-progress",
               *fast)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cli("clean", str(run), "--to", str(later), "-w", "1", "--no-progress", check=True)
    for dest in (same_pass, later):
        assert_publishable(dest, src, run, lst, tmp_path)
        assert sorted(p.name for p in dest.iterdir()) == [path.name]
        if fmt == "parquet":
            assert pq.read_table(dest / path.name).column("url").to_pylist() == (
                urls[:2] + urls[3:]
            )
        else:
            assert (dest / path.name).read_text() == "".join(
                u + "\n" for u in urls if "302" not in u
            )
