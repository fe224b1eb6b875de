"""A new user's walk through the guides, on a small folder of generated pictures: what the
shared pages say (no local path) and what verify prints (the leaf vocabulary)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import cli


def _pictures(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        pixels = (rng.random((64, 64, 3)) * 255).astype("uint8")
        pixels[:, :32] = i * 20
        data = io.BytesIO()
        Image.fromarray(pixels).save(data, "JPEG")
        (folder / f"{i:03d}.jpg").write_bytes(data.getvalue())
        (folder / f"{i:03d}.txt").write_text(f"caption {i}")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cleaned and signed runs of one folder: `old` removed 004, `new` removed 003."""
    root = tmp_path_factory.mktemp("walk")
    _pictures(root / "pictures", 6)
    cli("keygen", str(root / "keys"), check=True)
    for name, picture in (("old", "004"), ("new", "003")):
        listed = root / f"{name}.txt"
        cli("hash", "--as-list", "threatexchange", "--out", str(listed),
            str(root / "pictures" / f"{picture}.jpg"), check=True)  # fmt: skip
        cli("scan", str(root / "pictures"), "--out", str(root / name), "--list", str(listed),
            "--clean-to", str(root / f"{name}-clean"), "--no-progress", check=True)  # fmt: skip
        cli("receipt", str(root / name), "--key", str(root / "keys" / "clearset.key"),
            check=True)  # fmt: skip
    return root


def _text(path: Path) -> str:
    """A page's text with its markup taken out (a path split into <span>s reads whole)."""
    return re.sub(r"<[^>]+>", "", path.read_text())


def test_the_shared_report_names_no_local_path(walk: Path) -> None:
    run = walk / "new"
    cli("report", str(run), check=True)  # the run folder given by its absolute path
    for page in (run / "report.json", run / "report.html"):
        assert str(walk) not in _text(page), page.name
    report = json.loads((run / "report.json").read_text())
    assert report["run"]["source"] == {"kind": "folder", "name": "pictures"}
    assert report["run"]["path"] == "new"
    assert report["clean"]["destination"] == "new-clean"
    assert report["clean"]["removal_list"] == "new/removals.parquet"
    assert "pictures" in _text(run / "report.html")  # the source is still named


def test_the_audit_page_names_no_local_path(walk: Path) -> None:
    audit = walk / "audit"
    cli("audit", str(walk / "pictures"), "--run", str(walk / "new"), "--out", str(audit),
        check=True)  # fmt: skip
    for page in (audit / "audit.json", audit / "audit.html"):
        assert str(walk) not in _text(page), page.name
    summary = json.loads((audit / "audit.json").read_text())
    assert summary["generated"]["source"] == "pictures"
    assert summary["training"]["run"] == "new"


def test_verify_of_a_removal_counts_leaves(walk: Path) -> None:
    picture = (walk / "pictures" / "003.jpg").as_posix()
    proof = walk / "removed.json"
    cli("diff-receipts", str(walk / "old"), str(walk / "new"), "--file", picture,
        "--out", str(proof), check=True)  # fmt: skip
    done = cli("verify", str(walk / "new" / "receipt.dsse.json"), "--pubkey",
               str(walk / "keys" / "clearset.pub"), "--proof", str(proof), "--old-receipt",
               str(walk / "old" / "receipt.dsse.json"), check=True)  # fmt: skip
    # Each receipt's tree counts distinct SHA-256 of kept members: leaves, not items.
    assert "in the old set of 10 leaves under root" in done.stdout
    assert "in the new set of 10 leaves under root" in done.stdout
    assert " items under root" not in done.stdout


def test_apply_removals_counts_in_the_plural_that_fits(walk: Path) -> None:
    done = cli("apply-removals", str(walk / "pictures"), str(walk / "old" / "removals.parquet"),
               "--to", str(walk / "applied"), check=True)  # fmt: skip
    # No "1 keys" / "1 shards" (a key is a sample: documents/counts.py).
    assert done.stdout.startswith(
        "removed 1 key (2 members) from 1 shard, keeping 5 keys there; "
        "0 shards with nothing to remove copied whole"
    ), done.stdout


def test_verify_with_a_request_says_what_the_root_is_over(walk: Path) -> None:
    """The guide's exchange, both sides: the root is over the request's rows less the
    matched samples, and the count given is the tree's leaves (not leaves before removal)."""
    run, keys = walk / "ex-run", walk / "keys"
    cli("scan", str(walk / "pictures"), "--out", str(run), "--no-progress", check=True)
    cli("exchange", "request", str(run), "--out", str(walk / "REQ"), "--key",
        str(keys / "clearset.key"), check=True)  # fmt: skip
    cli("exchange", "answer", str(walk / "REQ"), "--list", str(walk / "new.txt"), "--key",
        str(keys / "clearset.key"), "--out", str(walk / "ANS"), "--requester-pubkey",
        str(keys / "clearset.pub"), "--label", "Example hotline", check=True)  # fmt: skip
    cli("exchange", "apply", str(run), str(walk / "ANS"), "--holder-pubkey",
        str(keys / "clearset.pub"), check=True)  # fmt: skip
    cli("clean", str(run), "--to", str(walk / "ex-clean"), check=True)
    cli("receipt", str(run), "--key", str(keys / "clearset.key"), check=True)
    done = cli("verify", str(run / "receipt.dsse.json"), "--pubkey", str(keys / "clearset.pub"),
               "--answer", str(walk / "ANS"), "--holder-pubkey", str(keys / "clearset.pub"),
               "--request", str(walk / "REQ"), check=True)  # fmt: skip
    assert "is the request's rows less the samples the holders matched (10 leaves)" in (
        done.stdout
    ), done.stdout


def test_status_says_a_copy_cleaned_before_the_last_match_is_stale(walk: Path) -> None:
    run = walk / "rematched"
    cli("scan", str(walk / "pictures"), "--out", str(run), "--list", str(walk / "new.txt"),
        "--clean-to", str(walk / "rematched-clean"), "--no-progress", check=True)  # fmt: skip
    assert "stale" not in cli("status", str(run), check=True).stdout
    cli("match", str(run), "--list", str(walk / "old.txt"), check=True)
    said = cli("status", str(run), check=True).stdout
    # The receipt and the documents refuse this copy; status must not read as current.
    assert "cleaned copy is stale: made before the last `clearset match`" in said, said
    assert cli("status", str(run), "--json", check=True).stdout.count('"clean_stale": true') == 1


def test_a_partial_report_names_no_local_path_and_the_operator_gets_the_command(
    tmp_path: Path,
) -> None:
    """A scan with a shard that cannot be read stops short: its report is partial, and its
    banner (the problem, how to finish) names the source, the run and the failed shard by
    their last part, while the `report` command tells the operator the full command."""
    import tarfile

    source = tmp_path / "private" / "shards"
    source.mkdir(parents=True)
    _pictures(tmp_path / "pictures", 3)
    with tarfile.open(source / "00000.tar", "w") as tar:
        for path in sorted((tmp_path / "pictures").iterdir()):
            tar.add(path, arcname=path.name)
    (source / "00001.tar").write_bytes(b"not a tar at all" * 64)
    run = tmp_path / "private" / "run"
    scanned = cli("scan", str(source), "--out", str(run), "--no-progress")
    assert scanned.returncode != 0
    told = cli("report", str(run))
    assert told.returncode == 0, told.stderr
    assert f"re-run `clearset scan {source} --out {run}`" in told.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["partial"] is True
    assert "1 failed (first: 00001.tar: " in report["state"]["problem"]
    assert "the same `clearset scan` of shards into run" in report["state"]["to_finish"]
    for page in (run / "report.json", run / "report.html"):
        assert str(tmp_path) not in _text(page), page.name


def test_one_list_file_of_two_hash_types_is_counted_per_list_in_the_report(walk: Path) -> None:
    """`hash --as-list threatexchange` writes a picture's PDQ and MD5 lines in one file,
    which loads as one list a type under the file's name: the report counts each under
    NAME/TYPE, where keyed by the name alone the second overwrote the first."""
    run = walk / "old"
    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())
    types = sorted(r["hash_type"] for r in report["lists"])
    assert [r["name"] for r in report["lists"]] == ["old", "old"] and types == ["md5", "pdq"]
    assert report["matches"]["by_list"] == {"old/md5": 1, "old/pdq": 1}
    assert set(report["thresholds"]["per_list"]) == {"old/md5", "old/pdq"}
    shards = [s["matched_by_list"] for s in report["per_shard"].values() if s["matched_by_list"]]
    assert shards == [{"old/md5": 1, "old/pdq": 1}]
