"""Review aids (issue 24, point 6): an allow list of reviewed false positives is matched,
recorded and counted but never removed, and a receipt names it by digest; one list entry
matching an unusual number of images gives one warning naming the list and the entry's
ordinal, and normal data gives none."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.errors import InputError, VerificationError
from clearset.lists.model import HashList, ListIdentity, list_digest
from clearset.matching.matcher import Matcher, MatchSettings
from clearset.matching.review import (
    FLOOD_THRESHOLD,
    Review,
    ReviewedMatcher,
    allow_digest,
    floods,
    load_allow_list,
    summarise,
)
from clearset.receipts.statement import check_statement
from clearset.runfolder import read_cleaned_manifest
from tests.conftest import cli


def _payload(receipt: Path) -> dict:
    envelope = json.loads(receipt.read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


# ------------------------------------------------------------------ the allow list file


def test_allow_list_text_and_parquet_read_the_same_values(tmp_path: Path) -> None:
    values = [bytes([n]) * 32 for n in (3, 1, 2)]
    text = tmp_path / "allow.txt"
    text.write_text(
        "# reviewed 2026-12-01\n\n"
        + f"{values[0].hex().upper()}  # a logo\n"
        + "".join(f"{v.hex()}\n" for v in values[1:])
        + f"{values[1].hex()}\n"  # a repeat counts once
    )
    hexed = tmp_path / "allow.parquet"
    pq.write_table(pa.table({"sha256": [v.hex() for v in values]}), hexed)
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"sha256": pa.array(values, pa.binary(32))}), raw)
    read = [load_allow_list(p) for p in (text, hexed, raw)]
    assert {a.values for a in read} == {frozenset(values)}
    assert {a.digest for a in read} == {allow_digest(reversed(values))}
    assert read[0].identity() == {"digest": read[0].digest, "entries": 3}
    assert read[0].holds([values[0], b"\0" * 32, None]) == [True, False, False]


@pytest.mark.parametrize(
    ("name", "body", "said"),
    [
        (
            "short.txt",
            "# ok\n" + "ab" * 32 + "\n" + "ab" * 31 + "\n",
            "short.txt, line 3: not a hex",
        ),
        ("word.txt", "hello\n", "word.txt, line 1: not a hex SHA-256"),
        ("latin.txt", b"\xff\xfe\n", "latin.txt, line 1: not UTF-8"),
        ("nocol.parquet", pa.table({"md5": ["ab" * 16]}), "nocol.parquet: an allow list needs"),
        ("bad.parquet", pa.table({"sha256": ["ab" * 32, "zz"]}), "bad.parquet, row 2: sha256"),
        ("broken.parquet", b"PAR1 not really", "broken.parquet: not a readable parquet"),
    ],
)
def test_a_bad_allow_list_is_one_line_naming_file_and_line(
    tmp_path: Path, name: str, body: object, said: str
) -> None:
    path = tmp_path / name
    if isinstance(body, pa.Table):
        pq.write_table(body, path)
    elif isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(str(body))
    with pytest.raises(InputError) as caught:
        load_allow_list(path)
    assert said in str(caught.value)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ floods


def _manifest(pdqs: np.ndarray) -> pa.Table:
    n = len(pdqs)
    return pa.table(
        {
            "key": [f"k{i:04d}" for i in range(n)],
            "shard": ["s0"] * n,
            "position": list(range(n)),
            "member": [f"k{i:04d}.jpg" for i in range(n)],
            "url": [None] * n,
            "sha256": pa.array([bytes([i % 256, i // 256]) * 16 for i in range(n)], pa.binary(32)),
            "pdq": pa.array([row.tobytes() for row in pdqs], pa.binary(32)),
            "pdq_quality": [100] * n,
        }
    )


def test_flood_fires_on_a_planted_collision_and_not_on_normal_data() -> None:
    rng = np.random.default_rng(24)
    entries = np.unique(rng.integers(0, 256, (40, 32), dtype=np.uint8), axis=0)
    hash_list = _hash_list(entries)
    normal = rng.integers(0, 256, (300, 32), dtype=np.uint8)  # random: far from every entry
    normal[:3] = entries[[5, 9, 9]]  # a few true copies, as real matches are
    collide = np.repeat(entries[17:18], FLOOD_THRESHOLD + 5, axis=0)
    collide[:, 0] ^= 0b1011  # near, not equal: 3 bits
    matcher = ReviewedMatcher(Matcher([hash_list], MatchSettings()), Review())
    quiet = matcher.match_table(_manifest(normal))
    assert quiet.num_rows == 3
    assert floods(quiet, [hash_list]) == []
    flooded = matcher.match_table(_manifest(np.concatenate([normal, collide])))
    found = floods(flooded, [hash_list])
    assert len(found) == 1  # once per flooding entry, not once per row
    assert found[0]["list_name"] == "planted"
    assert found[0]["images"] == FLOOD_THRESHOLD + 5
    assert hash_list.hashes[found[0]["entry_ordinal"] - 1].tobytes() == entries[17].tobytes()
    assert "entry" not in found[0]  # its position, never its value
    # A holder's rows of a request have no shard or key: each row is one item.
    anonymous = floods(flooded.drop_columns(["shard", "key"]), [hash_list])
    assert [(f["images"], f["samples"]) for f in anonymous] == [(FLOOD_THRESHOLD + 5,) * 2]
    summary = summarise(flooded, [hash_list], Review(flood_threshold=3))
    assert [f["images"] for f in summary["floods"]] == [FLOOD_THRESHOLD + 5]
    assert summarise(flooded, [hash_list], Review(flood_threshold=2))["floods"][1]["images"] == 2


def _hash_list(entries: np.ndarray) -> HashList:
    hashes = np.unique(entries, axis=0)
    identity = ListIdentity(
        name="planted",
        version=None,
        digest=list_digest("pdq", hashes),
        hash_type="pdq",
        entries=len(hashes),
        source="planted",
    )
    return HashList(identity=identity, hashes=hashes)


# ------------------------------------------------------------------ through the commands


@pytest.fixture(scope="module")
def reviewed(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("review")
    lists = ["--list", str(demo_data.pdq_list), "--list", str(demo_data.md5_list)]
    run = root / "run"
    cli("scan", str(demo_data.webdataset), "--out", str(run), *lists, "--workers", "1",
        "--no-progress", check=True)  # fmt: skip
    matches = pq.read_table(run / "matches.parquet").to_pylist()
    reencode = next(k for k, how in demo_data.planted().items() if how == "reencode")
    allowed = next(m["sha256"] for m in matches if m["key"] == reencode)
    allow = root / "allow.txt"
    allow.write_text(f"# reviewed: a benign look-alike\n{allowed.hex()}\n")
    said = cli("match", str(run), *lists, "--allow-list", str(allow), "--workers", "1",
               "--no-progress", check=True)  # fmt: skip
    cli("clean", str(run), "--to", str(root / "clean"), check=True)
    same_pass = cli("scan", str(demo_data.webdataset), "--out", str(root / "run2"), *lists,
                    "--allow-list", str(allow), "--clean-to", str(root / "clean2"),
                    "--workers", "1", "--no-progress", check=True)  # fmt: skip
    keys = root / "keys"
    cli("keygen", str(keys), check=True)
    receipt = cli("receipt", str(run), "--key", str(keys / "clearset.key"), check=True)
    return {"run": run, "allow": allow, "key": reencode, "said": said, "receipt": receipt,
            "keys": keys, "lists": lists, "root": root, "default": matches,
            "same_pass": same_pass}  # fmt: skip


def test_allowed_items_are_recorded_counted_and_kept(reviewed: dict) -> None:
    run = reviewed["run"]
    rows = pq.read_table(run / "matches.parquet").to_pylist()
    assert [r["allowed"] for r in rows if r["key"] == reviewed["key"]] == [True]
    assert sum(bool(r["allowed"]) for r in rows) == 1
    assert len(rows) == len(reviewed["default"])  # recorded, not dropped from the matches
    assert "1 matched sample allowed by review (kept, not removed)" in reviewed["said"].stdout
    removed = pq.read_table(run / "removals.parquet").column("key").to_pylist()
    assert reviewed["key"] not in removed and len(set(removed)) >= 3
    kept = read_cleaned_manifest(run).column("key").to_pylist()
    assert reviewed["key"] in kept
    info = json.loads((run / "run.json").read_text())
    allow = load_allow_list(reviewed["allow"])
    assert info["settings"]["matching"]["allow_list"] == allow.identity()
    assert info["counts"]["matches"]["allowed"] == {"rows": 1, "samples": 1}
    report = cli("report", str(run), check=True)
    assert report.returncode == 0
    section = json.loads((run / "report.json").read_text())["review"]
    assert section["allow_list"] == allow.identity() and section["floods"] == []
    assert "allowed by review: kept" in (run / "report.html").read_text()
    status = cli("status", str(run), check=True)
    assert "1 matched sample allowed by review" in status.stdout


def test_scan_clean_to_in_the_same_pass_keeps_allowed_items_too(reviewed: dict) -> None:
    run2 = reviewed["root"] / "run2"
    assert "1 matched sample allowed by review" in reviewed["same_pass"].stdout
    removed = set(pq.read_table(run2 / "removals.parquet").column("key").to_pylist())
    assert reviewed["key"] in read_cleaned_manifest(run2).column("key").to_pylist()
    assert removed == set(
        pq.read_table(reviewed["run"] / "removals.parquet").column("key").to_pylist()
    )
    assert reviewed["key"] not in removed


def test_receipt_names_the_allow_list_and_verifies(reviewed: dict) -> None:
    run = reviewed["run"]
    statement = _payload(run / "receipt.dsse.json")
    review = statement["predicate"]["review"]
    assert review == {
        "allow_list": load_allow_list(reviewed["allow"]).identity(),
        "allowed_kept": 1,
    }
    assert "kept 1 matched sample the operator's review allowed" in reviewed["receipt"].stdout
    verified = cli("verify", str(run / "receipt.dsse.json"), "--pubkey",
                   str(reviewed["keys"] / "clearset.pub"))  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "kept 1 matched sample the operator's review allowed" in verified.stdout
    statement["predicate"]["review"]["allow_list"]["values"] = ["ab" * 32]
    with pytest.raises(VerificationError, match="predicate.review"):
        check_statement(statement)


def test_flood_warning_through_match_and_a_bad_allow_list_refused(
    reviewed: dict, tmp_path: Path
) -> None:
    run, lists = reviewed["run"], reviewed["lists"]
    quiet = reviewed["said"]
    assert "warning:" not in quiet.stderr  # the demo data floods nothing at the default
    loud = cli("match", str(run), *lists, "--flood-threshold", "1", "--workers", "1",
               "--no-progress", check=True)  # fmt: skip
    warnings = [line for line in loud.stderr.splitlines() if line.startswith("warning: entry #")]
    distinct = {(r["list_digest"], r["entry"]) for r in reviewed["default"]}
    assert len(warnings) == len(distinct)  # once per flooding entry
    assert all("of list 'watch-" in line for line in warnings)
    entries = {r["entry"] for r in reviewed["default"]}
    assert not any(entry in loud.stderr + loud.stdout for entry in entries)
    bad = tmp_path / "allow.txt"
    bad.write_text("ab" * 32 + "\nnot a hash\n")
    before = (run / "matches.parquet").read_bytes()
    refused = cli("match", str(run), *lists, "--allow-list", str(bad), "--no-progress")
    assert refused.returncode != 0
    assert f"{bad}, line 2: not a hex SHA-256" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (run / "matches.parquet").read_bytes() == before  # nothing replaced
    fresh = tmp_path / "fresh"
    scan = cli("scan", str(reviewed["root"] / "clean"), "--out", str(fresh), *lists,
               "--allow-list", str(bad), "--no-progress")  # fmt: skip
    assert scan.returncode != 0 and not fresh.exists()
