"""`clearset prompts`: the most duplicated captions, by exact caption and by image hash,
read from a WebDataset's .txt members or a parquet caption column; matched items' captions
never appear."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from clearset.demo import (
    demo_items,
    encode_jpeg,
    watched_originals,
    write_hf_parquet,
    write_webdataset,
)
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runs import MatchJob, ScanSettings, run_scan
from clearset.runs.prompts import most_duplicated
from tests.conftest import cli, run_cli

SECRET = "the caption of a matched item"


@pytest.fixture(scope="module")
def items() -> list:
    """Captions: 3 x "a red barn", 2 x "a cat"; one picture 3 times (captions "blue sky"
    twice, "sky" once); one item a list will match, with a unique caption."""
    items = [i for i in demo_items(seed=4, count=14) if not i.broken]
    for i in (0, 1, 2):
        items[i].caption = "a red barn"
    for i in (3, 4):
        items[i].caption = "a cat"
    picture, matched = (encode_jpeg(image, 90) for image in watched_originals(seed=8, count=2))
    for i, caption in ((5, "blue sky"), (6, "blue sky"), (7, "sky")):
        items[i].data, items[i].ext, items[i].caption = picture, "jpg", caption
    items[9].data, items[9].ext, items[9].caption = matched, "jpg", SECRET
    return items


def _scan(source: Path, run: Path, items: list, tmp: Path) -> None:
    md5 = hashlib.md5(items[9].data).hexdigest()
    listed = tmp / "list.csv"
    listed.write_text(f"signal_type,signal_value,tags\nmd5,{md5},test\n")
    job = MatchJob((ListSpec(str(listed)),), MatchSettings())
    run_scan(open_source(str(source)), run, ScanSettings(), workers=1, show_progress=False,
             match=job)  # fmt: skip


@pytest.mark.parametrize("form", ["webdataset", "parquet"])
def test_most_duplicated_captions_both_ways_without_matched_items(
    items: list, tmp_path: Path, form: str
) -> None:
    if form == "webdataset":
        write_webdataset(tmp_path / "shards", items, 4)
        source = tmp_path / "shards"
    else:
        write_hf_parquet(tmp_path / "data.parquet", items)
        source = tmp_path / "data.parquet"
    _scan(source, tmp_path / "run", items, tmp_path)
    found = most_duplicated(tmp_path / "run", 2)
    assert found.by_caption == [
        {"caption": "a red barn", "items": 3},
        {"caption": "a cat", "items": 2},
    ]
    assert found.by_image[0]["items"] == 3
    assert found.by_image[0]["caption"] == "blue sky"
    assert found.by_image[0]["distinct_captions"] == 2
    assert found.matched_left_out == 1
    assert found.captions == len(items) - 1
    everything = most_duplicated(tmp_path / "run", 1000)
    assert SECRET not in json.dumps(everything.to_dict())


def test_the_cli_lists_prompts_and_writes_them(items: list, tmp_path: Path) -> None:
    write_webdataset(tmp_path / "shards", items, 4)
    _scan(tmp_path / "shards", tmp_path / "run", items, tmp_path)
    out = tmp_path / "prompts.json"
    proc = cli("prompts", str(tmp_path / "run"), "--top", "50", "--out", str(out), check=True)
    assert "a red barn" in proc.stdout and SECRET not in proc.stdout
    assert "left out, as matched against a list: 1 items" in proc.stdout
    assert json.loads(out.read_text())["by_caption"][0] == {"caption": "a red barn", "items": 3}
    proc = run_cli("prompts", str(tmp_path / "shards"))
    assert proc.returncode == 1 and "not a clearset run folder" in proc.stderr
