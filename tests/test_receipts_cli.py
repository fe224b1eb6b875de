"""Receipts end to end from the command line: keygen, receipt over a cleaned run, prove
and verify inclusion and non-inclusion, tampering caught, and a version chain."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.engines import MatchJob, ScanSettings, run_scan
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.sinks.clean import CleanJob, read_cleaned_manifest
from clearset.sources import open_source
from tests.conftest import run_cli


def _scan_and_clean(demo: DemoData, root: Path, lists: tuple[ListSpec, ...]) -> Path:
    run = root / "run"
    run_scan(
        open_source(str(demo.webdataset)),
        run,
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=MatchJob(lists, MatchSettings()),
        clean=CleanJob(str(root / "cleaned")),
    )
    return run


@pytest.fixture(scope="module")
def signed(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("receipts")
    # Version 1 was checked against the MD5 list only; version 2 against both lists.
    old = _scan_and_clean(demo_data, root / "v1", (ListSpec(str(demo_data.md5_list)),))
    new = _scan_and_clean(
        demo_data,
        root / "v2",
        (ListSpec(str(demo_data.pdq_list)), ListSpec(str(demo_data.md5_list))),
    )
    keys = root / "keys"
    run_cli("keygen", str(keys), check=True)
    run_cli("receipt", str(old), "--key", str(keys / "clearset.key"), check=True)
    run_cli(
        "receipt", str(new), "--key", str(keys / "clearset.key"), "--previous", str(old), check=True
    )
    return {"old": old, "new": new, "keys": keys, "root": root}


def _statement(run: Path) -> dict:
    import base64

    envelope = json.loads((run / "receipt.dsse.json").read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


def test_keygen_writes_a_private_key_only_its_owner_reads(signed: dict[str, Path]) -> None:
    mode = stat.S_IMODE((signed["keys"] / "clearset.key").stat().st_mode)
    assert mode == 0o600
    assert (signed["keys"] / "clearset.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run_cli("keygen", str(signed["keys"]))
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1


def test_receipt_covers_exactly_the_kept_items(
    signed: dict[str, Path], demo_data: DemoData
) -> None:
    run = signed["new"]
    predicate = _statement(run)["predicate"]
    kept = read_cleaned_manifest(run, ["sha256"]).column("sha256").to_pylist()
    removed = pq.read_table(run / "removals.parquet").column("sha256").to_pylist()
    assert predicate["tree"]["size"] == len({h for h in kept if h is not None})
    assert predicate["removed"]["count"] == len(set(removed)) > 0
    assert [entry["name"] for entry in predicate["lists"]] == ["watch-pdq", "watch-md5"]
    assert predicate["lists"][0]["threshold"] == 31 and predicate["lists"][1]["threshold"] is None
    assert predicate["previous"]["root"] == _statement(signed["old"])["predicate"]["tree"]["root"]
    # no list entry appears anywhere in the receipt
    text = (run / "receipt.dsse.json").read_text() + json.dumps(_statement(run))
    for line in demo_data.pdq_list.read_text().splitlines()[1:]:
        assert line.split()[1] not in text
    salt = run / "receipt.salt"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600


def _prove_and_verify(signed: dict[str, Path], *args: str) -> tuple[dict, str, int]:
    run, pub = signed["new"], signed["keys"] / "clearset.pub"
    proof_path = signed["root"] / "proof.json"
    run_cli("prove", str(run), *args, "--out", str(proof_path), check=True)
    proc = run_cli(
        "verify", str(run / "receipt.dsse.json"), "--pubkey", str(pub), "--proof", str(proof_path)
    )
    return json.loads(proof_path.read_text()), proc.stdout + proc.stderr, proc.returncode


def test_inclusion_proof_for_a_kept_file_verifies(
    signed: dict[str, Path], demo_data: DemoData
) -> None:
    kept_file = demo_data.folder / "000000000.jpg"
    proof, output, code = _prove_and_verify(signed, "--file", str(kept_file))
    assert code == 0 and proof["type"] == "inclusion"
    assert proof["sha256"] == hashlib.sha256(kept_file.read_bytes()).hexdigest()
    assert "is in the set" in output


def test_non_inclusion_proof_for_a_removed_item_verifies(signed: dict[str, Path]) -> None:
    removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()[0]
    proof, output, code = _prove_and_verify(signed, "--sha256", removed)
    assert code == 0 and proof["type"] == "non-inclusion" and "is not in the set" in output


@pytest.mark.parametrize("edit", ["flip_path", "other_receipt", "wrong_index"])
def test_tampered_proofs_fail_with_a_reason(
    signed: dict[str, Path], demo_data: DemoData, edit: str
) -> None:
    proof, _, _ = _prove_and_verify(signed, "--file", str(demo_data.folder / "000000001.jpg"))
    if edit == "flip_path":
        first = proof["path"][0]
        proof["path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
    elif edit == "other_receipt":
        proof["receipt_digest"] = hashlib.sha256(b"another receipt").hexdigest()
    else:
        proof["index"] = (proof["index"] + 1) % proof["tree_size"]
    bad = signed["root"] / f"bad-{edit}.json"
    bad.write_text(json.dumps(proof))
    proc = run_cli(
        "verify", str(signed["new"] / "receipt.dsse.json"),
        "--pubkey", str(signed["keys"] / "clearset.pub"), "--proof", str(bad),
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.startswith("invalid: ")


def test_tampered_receipt_or_wrong_key_fails(signed: dict[str, Path], tmp_path: Path) -> None:
    envelope = json.loads((signed["new"] / "receipt.dsse.json").read_text())
    statement = _statement(signed["new"])
    statement["predicate"]["removed"]["count"] += 1
    import base64

    envelope["payload"] = base64.b64encode(
        json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(envelope))
    pub = str(signed["keys"] / "clearset.pub")
    proc = run_cli("verify", str(forged), "--pubkey", pub)
    assert proc.returncode == 1 and "invalid" in proc.stderr
    run_cli("keygen", str(tmp_path / "other"), check=True)
    proc = run_cli(
        "verify",
        str(signed["new"] / "receipt.dsse.json"),
        "--pubkey",
        str(tmp_path / "other" / "clearset.pub"),
    )
    assert proc.returncode == 1
    assert (
        run_cli("verify", str(signed["new"] / "receipt.dsse.json"), "--pubkey", pub).returncode == 0
    )


def test_diff_receipts_proves_in_old_not_in_new(signed: dict[str, Path]) -> None:
    old_removed = set(
        pq.read_table(signed["old"] / "removals.parquet").column("sha256").to_pylist()
    )
    new_removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()
    target = next(h for h in new_removed if h not in old_removed)
    proof_path = signed["root"] / "removed.json"
    run_cli(
        "diff-receipts",
        str(signed["old"]),
        str(signed["new"]),
        "--sha256",
        target,
        "--out",
        str(proof_path),
        check=True,
    )
    pub = str(signed["keys"] / "clearset.pub")
    args = (
        "verify",
        str(signed["new"] / "receipt.dsse.json"),
        "--pubkey",
        pub,
        "--proof",
        str(proof_path),
    )
    proc = run_cli(*args, "--old-receipt", str(signed["old"] / "receipt.dsse.json"))
    assert proc.returncode == 0 and "was in the old set and is not in the new" in proc.stdout
    assert run_cli(*args).returncode != 0  # the old receipt is needed
    # an item in both versions cannot be shown removed
    kept = read_cleaned_manifest(signed["new"], ["sha256"]).column("sha256").to_pylist()
    proc = run_cli(
        "diff-receipts", str(signed["old"]), str(signed["new"]), "--sha256", kept[0].hex()
    )
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1


def test_receipt_needs_a_cleaned_run(
    demo_data: DemoData, tmp_path: Path, signed: dict[str, Path]
) -> None:
    run = tmp_path / "run"
    run_scan(
        open_source(str(demo_data.hf_parquet)), run, ScanSettings(), workers=1, show_progress=False
    )
    proc = run_cli("receipt", str(run), "--key", str(signed["keys"] / "clearset.key"))
    assert proc.returncode != 0 and "clearset clean" in proc.stderr
    assert not (run / "receipt.dsse.json").exists() and not (run / "tree.bin").exists()


def test_prove_needs_exactly_one_target(signed: dict[str, Path]) -> None:
    proc = run_cli("prove", str(signed["new"]))
    assert proc.returncode != 0 and "exactly one of --sha256" in proc.stderr
    proc = run_cli("prove", str(signed["new"]), "--sha256", "xyz")
    assert proc.returncode != 0 and "not 64 hex digits" in proc.stderr


def test_leaf_chunks_are_the_sorted_unique_set() -> None:
    import numpy as np

    from clearset.receipts.issue import sorted_leaf_chunks

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    rows[:40, 0] = 7  # a crowded leading byte
    rows = np.concatenate([rows, rows[::5]])  # repeats across the set
    chunks = list(sorted_leaf_chunks(rows))
    assert [bytes(r) for c in chunks for r in c] == sorted({bytes(r) for r in rows})


def test_receipt_refuses_a_clean_older_than_the_last_match(
    demo_data: DemoData, tmp_path: Path, signed: dict[str, Path]
) -> None:
    run = _scan_and_clean(demo_data, tmp_path, (ListSpec(str(demo_data.md5_list)),))
    run_cli("match", str(run), "--list", str(demo_data.pdq_list), check=True)
    key = str(signed["keys"] / "clearset.key")
    proc = run_cli("receipt", str(run), "--key", key)
    assert proc.returncode != 0 and "before the last `clearset match`" in proc.stderr
    assert not (run / "receipt.dsse.json").exists()
    run_cli("report", str(run), check=True)
    assert json.loads((run / "report.json").read_text())["clean"]["stale"] is True
    assert "Stale:" in (run / "report.html").read_text()
    run_cli("clean", str(run), "--to", str(tmp_path / "recleaned"), check=True)
    run_cli("receipt", str(run), "--key", key, check=True)
    run_cli("report", str(run), check=True)
    assert json.loads((run / "report.json").read_text())["clean"]["stale"] is False
    lists = _statement(run)["predicate"]["lists"]
    assert [entry["name"] for entry in lists] == ["watch-pdq"]


def test_a_proof_that_is_not_a_proof_is_invalid_not_an_error(signed: dict[str, Path]) -> None:
    pub = str(signed["keys"] / "clearset.pub")
    for text in ("[1, 2]", "{}", "not json"):
        bad = signed["root"] / "junk-proof.json"
        bad.write_text(text)
        proc = run_cli(
            "verify", str(signed["new"] / "receipt.dsse.json"), "--pubkey", pub, "--proof", str(bad)
        )
        assert proc.returncode == 1 and proc.stderr.startswith("invalid: "), (text, proc.stderr)
