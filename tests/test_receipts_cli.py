"""Receipts end to end from the command line: keygen, receipt over a cleaned run, prove
and verify inclusion and non-inclusion, tampering caught, and a version chain."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runfolder import read_cleaned_manifest
from clearset.runs import MatchJob, ScanSettings, run_scan
from clearset.stages.clean import CleanJob
from tests.conftest import cli


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
    cli("keygen", str(keys), check=True)
    cli("receipt", str(old), "--key", str(keys / "clearset.key"), check=True)
    cli(
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
    again = cli("keygen", str(signed["keys"]))
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
    cli("prove", str(run), *args, "--out", str(proof_path), check=True)
    proc = cli(
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
    assert f"an item with these exact bytes, SHA-256 {proof['sha256']}, is in the set of" in output
    assert "re-encoded or resized copies" in output


def test_non_inclusion_proof_for_a_removed_item_verifies(signed: dict[str, Path]) -> None:
    removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()[0]
    proof, output, code = _prove_and_verify(signed, "--sha256", removed)
    assert code == 0 and proof["type"] == "non-inclusion"
    # It says exactly what was proved, and what is not covered.
    size = _statement(signed["new"])["predicate"]["tree"]["size"]
    root = _statement(signed["new"])["predicate"]["tree"]["root"]
    assert (
        f"no item with these exact bytes, SHA-256 {removed}, is in the set of {size:,} leaves "
        f"under root {root}" in output
    )
    assert "Re-encoded, resized" in output and "not covered" in output


@pytest.mark.parametrize("edit", ["flip_path", "other_receipt", "wrong_index"])
def test_tampered_proofs_fail_with_a_reason(
    signed: dict[str, Path], demo_data: DemoData, edit: str
) -> None:
    proof, _, _ = _prove_and_verify(signed, "--file", str(demo_data.folder / "000000001.jpg"))
    if edit == "flip_path":  # one base64 character of the path (version 2)
        first = proof["path"]
        proof["path"] = ("B" if first[0] != "B" else "C") + first[1:]
    elif edit == "other_receipt":
        proof["receipt_digest"] = hashlib.sha256(b"another receipt").hexdigest()
    else:
        proof["index"] = (proof["index"] + 1) % proof["tree_size"]
    bad = signed["root"] / f"bad-{edit}.json"
    bad.write_text(json.dumps(proof))
    proc = cli(
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
    proc = cli("verify", str(forged), "--pubkey", pub)
    assert proc.returncode == 1 and "invalid" in proc.stderr
    cli("keygen", str(tmp_path / "other"), check=True)
    proc = cli(
        "verify",
        str(signed["new"] / "receipt.dsse.json"),
        "--pubkey",
        str(tmp_path / "other" / "clearset.pub"),
    )
    assert proc.returncode == 1
    assert cli("verify", str(signed["new"] / "receipt.dsse.json"), "--pubkey", pub).returncode == 0


def test_diff_receipts_proves_in_old_not_in_new(signed: dict[str, Path]) -> None:
    old_removed = set(
        pq.read_table(signed["old"] / "removals.parquet").column("sha256").to_pylist()
    )
    new_removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()
    target = next(h for h in new_removed if h not in old_removed)
    proof_path = signed["root"] / "removed.json"
    cli(
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
    proc = cli(*args, "--old-receipt", str(signed["old"] / "receipt.dsse.json"))
    assert proc.returncode == 0 and "was in the old set and is not in the new" in proc.stdout
    assert cli(*args).returncode != 0  # the old receipt is needed
    # an item in both versions cannot be shown removed
    kept = read_cleaned_manifest(signed["new"], ["sha256"]).column("sha256").to_pylist()
    proc = cli("diff-receipts", str(signed["old"]), str(signed["new"]), "--sha256", kept[0].hex())
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1


def test_receipt_needs_a_cleaned_run(
    demo_data: DemoData, tmp_path: Path, signed: dict[str, Path]
) -> None:
    run = tmp_path / "run"
    run_scan(
        open_source(str(demo_data.hf_parquet)), run, ScanSettings(), workers=1, show_progress=False
    )
    proc = cli("receipt", str(run), "--key", str(signed["keys"] / "clearset.key"))
    assert proc.returncode != 0 and "clearset clean" in proc.stderr
    assert not (run / "receipt.dsse.json").exists() and not (run / "tree.bin").exists()


def test_prove_needs_exactly_one_target(signed: dict[str, Path]) -> None:
    proc = cli("prove", str(signed["new"]))
    assert proc.returncode != 0 and "exactly one of --sha256" in proc.stderr
    proc = cli("prove", str(signed["new"]), "--sha256", "xyz")
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
    cli("match", str(run), "--list", str(demo_data.pdq_list), check=True)
    key = str(signed["keys"] / "clearset.key")
    proc = cli("receipt", str(run), "--key", key)
    assert proc.returncode != 0 and "before the last `clearset match`" in proc.stderr
    assert not (run / "receipt.dsse.json").exists()
    cli("report", str(run), check=True)
    assert json.loads((run / "report.json").read_text())["clean"]["stale"] is True
    assert "Stale:" in (run / "report.html").read_text()
    cli("clean", str(run), "--to", str(tmp_path / "recleaned"), check=True)
    cli("receipt", str(run), "--key", key, check=True)
    cli("report", str(run), check=True)
    assert json.loads((run / "report.json").read_text())["clean"]["stale"] is False
    lists = _statement(run)["predicate"]["lists"]
    assert [entry["name"] for entry in lists] == ["watch-pdq"]


def test_a_proof_that_is_not_a_proof_is_invalid_not_an_error(signed: dict[str, Path]) -> None:
    pub = str(signed["keys"] / "clearset.pub")
    for text in ("[1, 2]", "{}", "not json"):
        bad = signed["root"] / "junk-proof.json"
        bad.write_text(text)
        proc = cli(
            "verify", str(signed["new"] / "receipt.dsse.json"), "--pubkey", pub, "--proof", str(bad)
        )
        assert proc.returncode == 1 and proc.stderr.startswith("invalid: "), (text, proc.stderr)


# --- issue 10: a chained receipt must verify; bad input is one line, never a traceback ---


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real entry point, in this process (many cases; a fresh interpreter costs 2 s)."""
    import sys
    from unittest import mock

    from clearset.cli import main

    with mock.patch.object(sys, "argv", ["clearset", *args]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def unsigned(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cleaned run with no receipt yet: tests copy it, so each starts without one."""
    root = tmp_path_factory.mktemp("unsigned")
    return _scan_and_clean(demo_data, root, (ListSpec(str(demo_data.md5_list)),))


def _copy_run(unsigned: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(unsigned, tmp_path / "run"))


def _nothing_issued(run: Path) -> bool:
    written = ("receipt.dsse.json", "tree.bin", "tree.bin.part", "receipt.salt")
    return not any((run / name).exists() for name in written) and not list(run.glob(".tmp-*"))


def _one_line_error(code: int, err: str) -> bool:
    return code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_previous_receipt_without_a_valid_signature_is_refused(
    signed: dict[str, Path], unsigned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(unsigned, tmp_path)
    key = str(signed["keys"] / "clearset.key")
    envelope = json.loads((signed["old"] / "receipt.dsse.json").read_text())
    forged = tmp_path / "forged.json"
    for signatures in ([], [{"keyid": "", "sig": envelope["signatures"][0]["sig"][::-1]}]):
        forged.write_text(json.dumps({**envelope, "signatures": signatures}))
        code, _, err = _cli(capsys, "receipt", str(run), "--key", key, "--previous", str(forged))
        assert _one_line_error(code, err) and "does not verify" in err, err
        assert _nothing_issued(run)
    # Signed by another key than the signing key: refused unless that key is named.
    cli("keygen", str(tmp_path / "other"), check=True)
    other = str(tmp_path / "other" / "clearset.key")
    previous = str(signed["old"] / "receipt.dsse.json")
    code, _, err = _cli(capsys, "receipt", str(run), "--key", other, "--previous", previous)
    assert _one_line_error(code, err) and "--previous-pubkey" in err
    assert _nothing_issued(run)
    pub = str(signed["keys"] / "clearset.pub")
    code, out, err = _cli(
        capsys, "receipt", str(run), "--key", other, "--previous", previous,
        "--previous-pubkey", pub,
    )  # fmt: skip
    assert code == 0, err
    old_digest = hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest()
    assert _statement(run)["predicate"]["previous"]["receipt_digest"] == old_digest
    assert f"replaces receipt {old_digest}" in out


@pytest.mark.parametrize(
    "content",
    [b"not json", b"\xff\xfe{}", b"[]", b'{"payload": 5}', b'{"payload": "!!"}',
     b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"1" + b"0" * 5000,
     b'{"payload": NaN}'],
    ids=["text", "utf8", "list", "payload-int", "payload-b64", "deep-list", "deep-object",
         "long-int", "nan"],
)  # fmt: skip
def test_a_malformed_previous_receipt_is_one_line_and_nothing_is_written(
    signed: dict[str, Path],
    unsigned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
) -> None:
    run = _copy_run(unsigned, tmp_path)
    bad = tmp_path / "previous.json"
    bad.write_bytes(content)
    key = str(signed["keys"] / "clearset.key")
    code, _, err = _cli(capsys, "receipt", str(run), "--key", key, "--previous", str(bad))
    assert _one_line_error(code, err), err
    assert str(bad) in err
    assert _nothing_issued(run)


def test_malformed_previous_from_a_fresh_interpreter(
    signed: dict[str, Path], unsigned: Path, tmp_path: Path
) -> None:
    # The same through the installed entry point: deep nesting is no RecursionError there.
    run = _copy_run(unsigned, tmp_path)
    bad = tmp_path / "previous.json"
    bad.write_bytes(b"[" * 100_000)
    proc = cli(
        "receipt", str(run), "--key", str(signed["keys"] / "clearset.key"), "--previous", str(bad)
    )
    assert _one_line_error(proc.returncode, proc.stderr), proc.stderr
    assert _nothing_issued(run)


# --- issue 10: verify says "invalid: reason" (exit 1) for anything not a valid claim ---


def _receipt_variants(signed: dict[str, Path]) -> dict[str, bytes]:
    text = (signed["new"] / "receipt.dsse.json").read_bytes()
    envelope = json.loads(text)
    return {
        "not-utf8": text.replace(b'"payload"', b'"pay\xffload"'),
        "not-json": text[: len(text) // 2],
        "deep": b"[" * 2000 + b"]" * 2000,
        "deep-field": json.dumps({**envelope, "signatures": [{"sig": "DEEP"}]})
        .replace('"DEEP"', "[" * 1500 + "]" * 1500)
        .encode(),
        "list": b"[]",
        "nan": text.replace(b'"payloadType"', b'"x": NaN, "payloadType"'),
        "repeated-key": text.replace(b'"payloadType"', b'"payload": "", "payloadType"'),
    }


@pytest.mark.parametrize(
    "variant", ["not-utf8", "not-json", "deep", "deep-field", "list", "nan", "repeated-key"]
)
def test_verify_calls_a_broken_receipt_invalid(
    signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str
) -> None:
    bad = tmp_path / "receipt.json"
    bad.write_bytes(_receipt_variants(signed)[variant])
    pub = str(signed["keys"] / "clearset.pub")
    code, _, err = _cli(capsys, "verify", str(bad), "--pubkey", pub)
    assert code == 1 and err.startswith("invalid: ") and len(err.splitlines()) == 1, err


def _proof_variants(proof: dict) -> dict[str, object]:
    deep = json.dumps({**proof, "path": "DEEP"}).replace('"DEEP"', "[" * 1500 + "]" * 1500)
    return {
        "type-removed": {**proof, "type": "removed"},
        "type-other": {**proof, "type": "non-inclusion"},
        "type-list": {**proof, "type": ["inclusion"]},
        "type-number": {**proof, "type": 1},
        "version-float": {**proof, "version": 1.0},
        "version-true": {**proof, "version": True},
        "deep-path": deep,
        "deep": "[" * 3000 + "]" * 3000,
        "huge-index": {**proof, "index": 10**4000},
        "path-not-base64": {**proof, "path": "*" + proof["path"][1:]},
        "path-bad-padding": {**proof, "path": proof["path"] + "="},
        "path-31-bytes": {**proof, "path": base64.b64encode(bytes(31)).decode()},
        "path-hex-list": {**proof, "path": ["00" * 32]},
    }


@pytest.mark.parametrize(
    "variant",
    ["type-removed", "type-other", "type-list", "type-number", "version-float", "version-true",
     "deep-path", "deep", "huge-index", "path-not-base64", "path-bad-padding", "path-31-bytes",
     "path-hex-list"],
)  # fmt: skip
def test_verify_calls_a_broken_proof_invalid(
    signed: dict[str, Path],
    demo_data: DemoData,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    variant: str,
) -> None:
    from clearset.runs.issue import prove_item

    sha256 = hashlib.sha256((demo_data.folder / "000000002.jpg").read_bytes()).digest()
    proof = prove_item(signed["new"], sha256)
    assert proof["type"] == "inclusion"
    value = _proof_variants(proof)[variant]
    bad = tmp_path / "proof.json"
    bad.write_text(value if isinstance(value, str) else json.dumps(value))
    receipt = str(signed["new"] / "receipt.dsse.json")
    pub = str(signed["keys"] / "clearset.pub")
    code, _, err = _cli(capsys, "verify", receipt, "--pubkey", pub, "--proof", str(bad))
    assert code == 1 and err.startswith("invalid: ") and len(err.splitlines()) == 1, err


def test_prove_writes_version_2_and_version_1_on_request(
    signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = str(signed["new"] / "receipt.dsse.json")
    pub = str(signed["keys"] / "clearset.pub")
    kept = read_cleaned_manifest(signed["new"], ["sha256"]).column("sha256").to_pylist()
    absent = hashlib.sha256(b"not in the set").hexdigest()
    for value in (kept[0].hex(), absent):
        for version in ("2", "1", None):
            out = tmp_path / f"{value[:8]}-{version}.json"
            extra = ["--proof-version", version] if version else []
            code, _, err = _cli(
                capsys, "prove", str(signed["new"]), "--sha256", value, "--out", str(out), *extra
            )
            assert code == 0, err
            text = out.read_text()
            proof = json.loads(text)
            assert proof["version"] == int(version or 2)
            # version 2 is one compact line; version 1 is indented as before
            assert (text.count("\n") == 1) == (proof["version"] == 2)
            code, stdout, err = _cli(
                capsys, "verify", receipt, "--pubkey", pub, "--proof", str(out)
            )
            assert code == 0 and stdout.startswith("valid: "), err
    code, _, err = _cli(capsys, "prove", str(signed["new"]), "--sha256", absent,
                        "--proof-version", "3")  # fmt: skip
    assert code == 2 and "proof-version" in err
    # diff-receipts too, for a removal proof an older verifier can read
    old_removed = set(
        pq.read_table(signed["old"] / "removals.parquet").column("sha256").to_pylist()
    )
    new_removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()
    target = next(h for h in new_removed if h not in old_removed)
    out = tmp_path / "removed-v1.json"
    code, _, err = _cli(capsys, "diff-receipts", str(signed["old"]), str(signed["new"]),
                        "--sha256", target, "--out", str(out), "--proof-version", "1")  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["new"]["version"] == 1, err
    code, stdout, err = _cli(capsys, "verify", receipt, "--pubkey", pub, "--proof", str(out),
                             "--old-receipt", str(signed["old"] / "receipt.dsse.json"))  # fmt: skip
    assert code == 0 and "was in the old set" in stdout, err


def test_verify_keeps_exit_2_for_usage_errors(
    signed: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = str(signed["new"] / "receipt.dsse.json")
    pub = str(signed["keys"] / "clearset.pub")
    missing = str(tmp_path / "missing.json")
    for args in (
        (missing, "--pubkey", pub),
        (receipt, "--pubkey", missing),
        (receipt, "--pubkey", pub, "--proof", missing),
        (receipt,),  # no --pubkey
    ):
        code, _, err = _cli(capsys, "verify", *args)
        assert code == 2 and "Traceback" not in err, (args, err)
    # a well-formed removal proof without the old receipt is a usage error too
    proof = tmp_path / "removed.json"
    kept_old = set(pq.read_table(signed["old"] / "removals.parquet").column("sha256").to_pylist())
    removed = pq.read_table(signed["new"] / "removals.parquet").column("sha256").to_pylist()
    target = next(h for h in removed if h not in kept_old)
    cli(
        "diff-receipts", str(signed["old"]), str(signed["new"]), "--sha256", target,
        "--out", str(proof), check=True,
    )  # fmt: skip
    code, _, err = _cli(capsys, "verify", receipt, "--pubkey", pub, "--proof", str(proof))
    assert code == 2 and "--old-receipt" in err
    missing_old = ("--old-receipt", missing)
    code, _, err = _cli(
        capsys, "verify", receipt, "--pubkey", pub, "--proof", str(proof), *missing_old
    )
    assert code == 2, err


# --- issue 10: a private key others can read is named in a warning -------------------
# --- issue 11: the receipt names the source and the cleaned copy, never a local path ---


def test_receipt_names_places_without_local_paths_and_warns_on_an_open_key(
    signed: dict[str, Path],
    unsigned: Path,
    demo_data: DemoData,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from clearset.receipts import canonical_json
    from clearset.runfolder import clean_info

    # The default: the source's last path part, and no path of this machine anywhere.
    payload = json.dumps(_statement(signed["new"]))
    for local in (str(tmp_path_factory.getbasetemp()), str(demo_data.webdataset), str(Path.home())):
        assert local not in payload
    predicate = _statement(signed["new"])["predicate"]
    assert predicate["source"]["name"] == demo_data.webdataset.name
    assert _statement(signed["new"])["subject"][0]["name"] == demo_data.webdataset.name
    # Which cleaned copy: its name, its clean's finish time, its manifest's digest.
    record = clean_info(signed["new"])
    markers = sorted((signed["new"] / "cleaned" / "markers").glob("[!.]*.done.json"))
    pairs = [
        [m["shard_id"], m["manifest_sha256"]] for m in map(json.loads, map(Path.read_text, markers))
    ]
    assert predicate["clean"] == {
        "destination": "cleaned",
        "finished": record["finished"][:19] + "Z",
        "manifest_digest": {"sha256": hashlib.sha256(canonical_json(pairs)).hexdigest()},
    }
    # --source-name as given; a key readable by others is used, with a one-line warning.
    run = _copy_run(unsigned, tmp_path)
    key = tmp_path / "open.key"
    shutil.copy(signed["keys"] / "clearset.key", key)
    key.chmod(0o644)
    code, out, err = _cli(
        capsys, "receipt", str(run), "--key", str(key), "--source-name", "laion-shards"
    )
    assert code == 0
    assert len(err.strip().splitlines()) == 1 and "warning" in err
    assert str(key) in err and "0644" in err and f"chmod 600 {key}" in err
    statement = _statement(run)
    assert statement["predicate"]["source"]["name"] == "laion-shards"
    assert statement["subject"][0]["name"] == "laion-shards"
    assert str(tmp_path) not in json.dumps(statement)
    clean = statement["predicate"]["clean"]
    assert f"covers the cleaned copy 'cleaned', cleaned {clean['finished']}" in out
    assert clean["manifest_digest"]["sha256"] in out
    # A key only its owner reads: no warning.
    key.chmod(0o600)
    code, _, err = _cli(capsys, "receipt", str(run), "--key", str(key))
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    ("url", "name"),
    [("/home/alice/data/shards", "shards"), ("/home/alice/data/shards/", "shards"),
     ("s3://bucket/laion/shards", "shards"), ("s3://user:secret@bucket", "bucket"),
     ("/data/{00000..00009}.tar", "data"), ("gs://b/laion/*.parquet?token=x", "laion"),
     ("file:///srv/sets/part.parquet", "part.parquet"), ("", "dataset")],
)  # fmt: skip
def test_source_label_is_the_last_path_part(url: str, name: str) -> None:
    from clearset.receipts.issue import source_label

    assert source_label(url) == name
