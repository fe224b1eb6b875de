"""The hash exchange end to end: request -> answer -> apply -> clean -> receipt -> verify,
against a local scan with the same list; two holders; every refusal in one line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.exchange import format as fmt
from clearset.runfolder import file_sha256, read_cleaned_manifest
from tests.conftest import cli


def _receipt(run: Path) -> dict:
    import base64

    envelope = json.loads((run / "receipt.dsse.json").read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


@pytest.fixture(scope="module")
def chain(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exchange")
    # A source path with a marker in it: no request byte may name it.
    source = root / "SECRETPATHMARKER" / "shards"
    shutil.copytree(demo_data.webdataset, source)
    p: dict[str, Path] = {"root": root, "source": source}
    for side in ("builder", "holder", "holder2", "other"):
        cli("keygen", str(root / side), check=True)
        p[side] = root / side
    # The local way: the builder holds the list.
    local = root / "local"
    cli("scan", str(source), "--out", str(local), "-w", "1", "--list", str(demo_data.pdq_list),
        check=True)  # fmt: skip
    cli("clean", str(local), "--to", str(root / "local-clean"), "-w", "1", check=True)
    cli("receipt", str(local), "--key", str(p["builder"] / "clearset.key"), check=True)
    # The exchange: the builder has no list.
    run = root / "run"
    cli("scan", str(source), "--out", str(run), "-w", "1", check=True)
    req = root / "req"
    cli("exchange", "request", str(run), "--out", str(req), "--key",
        str(p["builder"] / "clearset.key"), "-w", "1", check=True)  # fmt: skip
    ans = root / "ans"
    cli("exchange", "answer", str(req), "--list", str(demo_data.pdq_list), "--key",
        str(p["holder"] / "clearset.key"), "--out", str(ans), "--requester-pubkey",
        str(p["builder"] / "clearset.pub"), "--label", "Example hotline", "-w", "1",
        check=True)  # fmt: skip
    cli("exchange", "apply", str(run), str(ans), "--holder-pubkey",
        str(p["holder"] / "clearset.pub"), check=True)  # fmt: skip
    cli("clean", str(run), "--to", str(root / "run-clean"), "-w", "1", check=True)
    cli("receipt", str(run), "--key", str(p["builder"] / "clearset.key"), check=True)
    proofs = root / "proofs.json"
    cli("prove", str(run), "--answer", str(ans), "--out", str(proofs), check=True)
    p.update(local=local, run=run, req=req, ans=ans, proofs=proofs)
    return p


def _verify(p: dict[str, Path], *extra: str, answer: Path | None = None,
            holder: str = "holder") -> subprocess.CompletedProcess[str]:  # fmt: skip
    return cli("verify", str(p["run"] / "receipt.dsse.json"), "--pubkey",
               str(p["builder"] / "clearset.pub"), "--answer", str(answer or p["ans"]),
               "--holder-pubkey", str(p[holder] / "clearset.pub"), *extra)  # fmt: skip


def test_same_cleaned_copy_and_root_as_a_local_scan(chain: dict[str, Path]) -> None:
    local = read_cleaned_manifest(chain["local"], ["key", "sha256"]).sort_by("key")
    exchanged = read_cleaned_manifest(chain["run"], ["key", "sha256"]).sort_by("key")
    assert local.num_rows < 300 and local.equals(exchanged)
    old, new = _receipt(chain["local"]), _receipt(chain["run"])
    assert old["predicate"]["tree"] == new["predicate"]["tree"]
    cited = new["predicate"]["exchange"]
    answer_digest = fmt.sha256_hex((chain["ans"] / fmt.ANSWER_INDEX).read_bytes())
    request_digest = fmt.sha256_hex((chain["req"] / fmt.REQUEST_INDEX).read_bytes())
    assert cited["requests"] == [request_digest]
    (one,) = cited["answers"]
    assert one["digest"] == answer_digest and one["label"] == "Example hotline"
    assert one["lists"][0]["name"] == "watch-pdq"
    assert one["matched"]["samples"] > 0 and one["matched"]["members"] >= one["matched"]["samples"]
    # report and removals treat them as local matches
    removals = pq.read_table(chain["run"] / "removals.parquet")
    assert removals.num_rows == pq.read_table(chain["local"] / "removals.parquet").num_rows


def test_verify_passes_with_request_and_with_proofs(chain: dict[str, Path]) -> None:
    done = _verify(chain, "--request", str(chain["req"]))
    assert done.returncode == 0, done.stderr
    assert "is the request's" in done.stdout
    # one count vocabulary: samples and members, never "items"
    assert re.search(r"\(\d+ samples? matched \(\d+ members?\) by the holder\)", done.stdout)
    done = _verify(chain, "--proof", str(chain["proofs"]))
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+ matched members? \(by SHA-256\) proven not in the tree", done.stdout)
    assert "item" not in done.stdout


def test_request_names_no_key_url_caption_or_path(chain: dict[str, Path]) -> None:
    manifest = pq.read_table(chain["run"] / "manifest")
    markers = {b"SECRETPATHMARKER", str(chain["root"]).encode()}
    for column in ("key", "url", "member", "shard"):
        markers |= {str(v).encode() for v in manifest.column(column).to_pylist()
                    if v is not None and len(str(v)) >= 6}  # fmt: skip
    files = list(chain["req"].iterdir())
    assert len(files) >= 3
    for path in files:
        data = path.read_bytes()
        assert not [m for m in markers if m in data], path
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            assert not [f for f in table.schema if pa.types.is_string(f.type)]
            assert set(table.column_names) <= {"row_id", "group", "sha256", "md5", "sha1", "pdq",
                                               "pdq_quality", "pdq_trimmed",
                                               "pdq_trimmed_quality", "pdq_dihedral"}  # fmt: skip


def test_two_holders_combine(chain: dict[str, Path], demo_data: DemoData) -> None:
    root = chain["root"]
    run = root / "run2"
    shutil.copytree(chain["run"], run)
    ans2 = root / "ans2"
    cli("exchange", "answer", str(chain["req"]), "--list", str(demo_data.md5_list), "--key",
        str(chain["holder2"] / "clearset.key"), "--out", str(ans2), "--commit-lists",
        str(root / "salts.json"), "-w", "1", check=True)  # fmt: skip
    import base64

    envelope = json.loads((ans2 / fmt.ANSWER_ENVELOPE).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert "commitment" in statement["predicate"]["lists"][0]
    assert "digest" not in statement["predicate"]["lists"][0]
    before = json.loads((run / "run.json").read_text())["counts"]["matches"]["rows"]
    done = cli("exchange", "apply", str(run), str(ans2), "--holder-pubkey",
               str(chain["holder2"] / "clearset.pub"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads((run / "run.json").read_text())
    assert len(info["exchange"]["answers"]) == 2
    assert info["counts"]["matches"]["rows"] > before  # both holders' rows, side by side
    names = {lst["name"] for lst in info["settings"]["matching"]["lists"]}
    assert names == {"watch-pdq", "watch-md5"}
    # a receipt citing both: verify compares the whole root given both answers
    cli("clean", str(run), "--to", str(root / "run2-clean"), "-w", "1", check=True)
    cli("receipt", str(run), "--key", str(chain["builder"] / "clearset.key"), check=True)
    first = ("--answer", str(chain["ans"]), "--holder-pubkey",
             str(chain["holder"] / "clearset.pub"))  # fmt: skip
    second = ("--answer", str(ans2), "--holder-pubkey", str(chain["holder2"] / "clearset.pub"))
    verify = ("verify", str(run / "receipt.dsse.json"), "--pubkey",
              str(chain["builder"] / "clearset.pub"), "--request", str(chain["req"]))  # fmt: skip
    done = cli(*verify, *first, *second)
    assert done.returncode == 0, done.stderr
    assert "is the request's" in done.stdout and done.stdout.count("cited by the receipt") == 2
    done = cli(*verify, *first)  # the other answer missing: the root cannot be compared
    assert done.returncode == 1 and "every answer the receipt cites" in done.stderr
    done = cli(*verify, *first, "--answer", str(ans2))  # unpaired
    assert done.returncode == 2 and "for each --answer" in done.stderr
    done = cli(*verify, *second, "--holder-pubkey", str(chain["holder"] / "clearset.pub"))
    assert done.returncode == 2 and "for each --answer" in done.stderr


def _bad_answer(chain: dict[str, Path], name: str) -> Path:
    bad = chain["root"] / name
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(chain["ans"], bad)
    return bad


def _apply(chain: dict[str, Path], ans: Path, holder: str = "holder") -> tuple[int, str]:
    run = chain["root"] / "apply-target"
    if not run.exists():
        shutil.copytree(chain["run"], run)
    before = (run / "run.json").read_bytes()
    done = cli("exchange", "apply", str(run), str(ans), "--holder-pubkey",
               str(chain[holder] / "clearset.pub"))  # fmt: skip
    if done.returncode:
        assert (run / "run.json").read_bytes() == before  # nothing written
    return done.returncode, done.stderr.strip()


def _rewrite_rows(ans: Path, table: pa.Table) -> None:
    """Alter the matches file and re-point answer.json at it (the signature then fails)."""
    pq.write_table(table, ans / fmt.ANSWER_ROWS)
    index = json.loads((ans / fmt.ANSWER_INDEX).read_text())
    index["files"][0]["sha256"] = file_sha256(ans / fmt.ANSWER_ROWS)
    index["rows"] = table.num_rows
    (ans / fmt.ANSWER_INDEX).write_bytes(fmt.index_bytes(index))


def test_refusals_each_one_line(chain: dict[str, Path]) -> None:
    # a tampered row: the file no longer has the digest answer.json names
    bad = _bad_answer(chain, "tampered")
    table = pq.read_table(bad / fmt.ANSWER_ROWS)
    ids = table.column("row_id").to_pylist()
    ids[0] += 1
    pq.write_table(table.set_column(0, "row_id", pa.array(ids, pa.int64())), bad / fmt.ANSWER_ROWS)
    code, err = _apply(chain, bad)
    assert code and "altered" in err and len(err.splitlines()) == 1
    assert _verify(chain, "--proof", str(chain["proofs"]), answer=bad).returncode == 1
    # ... and re-pointed: the holder's signature no longer covers answer.json
    _rewrite_rows(bad, table.set_column(0, "row_id", pa.array(ids, pa.int64())))
    code, err = _apply(chain, bad)
    assert code and "digest differs" in err and len(err.splitlines()) == 1
    # a wrong key
    code, err = _apply(chain, chain["ans"], holder="other")
    assert code and "no valid signature by key" in err and len(err.splitlines()) == 1
    done = _verify(chain, "--proof", str(chain["proofs"]), holder="other")
    assert done.returncode == 1 and "no valid signature" in done.stderr


def _holder_answer(chain: dict[str, Path], demo_data: DemoData, name: str, req: Path) -> Path:
    ans = chain["root"] / name
    if not ans.exists():
        cli("exchange", "answer", str(req), "--list", str(demo_data.pdq_list), "--key",
            str(chain["holder"] / "clearset.key"), "--out", str(ans), "-w", "1",
            check=True)  # fmt: skip
    return ans


def test_answer_for_another_request_and_unknown_rows(
    chain: dict[str, Path], demo_data: DemoData
) -> None:
    # a request the holder answers, which this run did not make: fewer hash types
    other = chain["root"] / "req-other"
    if not other.exists():
        cli("exchange", "request", str(chain["local"]), "--out", str(other), "--hash", "pdq",
            "-w", "1", check=True)  # fmt: skip
    ans = _holder_answer(chain, demo_data, "ans-other", other)
    code, err = _apply(chain, ans)
    assert code and "which this run did not make" in err and len(err.splitlines()) == 1
    done = _verify(chain, "--request", str(chain["req"]), answer=ans)
    assert done.returncode == 1 and "does not cite" in done.stderr
    # a row id the request does not hold, signed by the holder
    forged = _bad_answer(chain, "unknown-row")
    table = pq.read_table(forged / fmt.ANSWER_ROWS)
    ids = table.column("row_id").to_pylist()
    ids[0] = 10**9
    _rewrite_rows(forged, table.set_column(0, "row_id", pa.array(ids, pa.int64())))
    _resign(forged, chain["holder"])
    code, err = _apply(chain, forged)
    assert code and "row id 1000000000" in err and len(err.splitlines()) == 1
    done = _verify(chain, "--request", str(chain["req"]), answer=forged)
    assert done.returncode == 1 and "does not cite" in done.stderr


def _resign(ans: Path, keydir: Path) -> None:
    """Sign the altered answer.json as the holder would (a dishonest or buggy holder)."""
    import base64

    from clearset.receipts.dsse import load_private_key

    envelope = json.loads((ans / fmt.ANSWER_ENVELOPE).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = fmt.sha256_hex(
        (ans / fmt.ANSWER_INDEX).read_bytes()
    )
    signed = fmt.sign(statement, load_private_key(keydir / "clearset.key"))
    (ans / fmt.ANSWER_ENVELOPE).write_text(json.dumps(signed))


def test_an_answer_that_lists_entries_is_refused(chain: dict[str, Path]) -> None:
    bad = _bad_answer(chain, "entries")
    table = pq.read_table(bad / fmt.ANSWER_ROWS)
    table = table.append_column("entry", pa.array(["00" * 32] * table.num_rows))
    _rewrite_rows(bad, table)
    _resign(bad, chain["holder"])
    code, err = _apply(chain, bad)
    assert code and "never lists entries" in err and len(err.splitlines()) == 1


def test_receipt_not_citing_the_answer(chain: dict[str, Path]) -> None:
    # the local run's receipt covers the same tree but cites no answer
    done = cli("verify", str(chain["local"] / "receipt.dsse.json"), "--pubkey",
               str(chain["builder"] / "clearset.pub"), "--answer", str(chain["ans"]),
               "--holder-pubkey", str(chain["holder"] / "clearset.pub"))  # fmt: skip
    assert done.returncode == 1 and "does not cite answer" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_input_leaves_nothing(chain: dict[str, Path]) -> None:
    out = chain["root"] / "never"
    done = cli("exchange", "request", str(chain["run"]), "--out", str(out), "--hash", "url")
    assert done.returncode == 2 and "--hash" in done.stderr and not out.exists()
    done = cli("exchange", "request", str(chain["run"]), "--out", str(chain["req"]))
    assert done.returncode == 1 and "exists" in done.stderr
    # a request whose rows were altered is refused by the holder
    req = chain["root"] / "req-altered"
    shutil.copytree(chain["req"], req)
    first = sorted(req.glob("rows-*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:-1] + b"\0")
    done = cli("exchange", "answer", str(req), "--list", str(chain["source"].parent / "x"),
               "--key", str(chain["holder"] / "clearset.key"), "--out", str(out))  # fmt: skip
    assert done.returncode and not out.exists()
    done = cli("exchange", "answer", str(req), "--list", str(first), "--key",
               str(chain["holder"] / "clearset.key"), "--out", str(out),
               "--requester-pubkey", str(chain["builder"] / "clearset.pub"))  # fmt: skip
    assert done.returncode and "altered" in done.stderr and not out.exists()
    # signed by another key than the requester's
    done = cli("exchange", "answer", str(chain["req"]), "--list",
               str(chain["source"].parent.parent / "x"), "--key",
               str(chain["holder"] / "clearset.key"), "--out", str(out))  # fmt: skip
    assert done.returncode and not out.exists()


def test_checker_script_uses_stdlib_and_cryptography(chain: dict[str, Path]) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_exchange.py"
    text = script.read_text()
    imports = {line.split()[1].split(".")[0] for line in text.splitlines()
               if line.startswith(("import ", "from "))}  # fmt: skip
    assert imports <= {"__future__", "argparse", "base64", "hashlib", "json", "sys", "pathlib",
                       "cryptography"}  # fmt: skip
    run = [sys.executable, str(script)]
    good = subprocess.run(
        [*run, str(chain["ans"]), "--pubkey", str(chain["holder"] / "clearset.pub")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    good = subprocess.run(
        [*run, str(chain["req"]), "--pubkey", str(chain["builder"] / "clearset.pub")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [*run, str(chain["ans"]), "--pubkey", str(chain["other"] / "clearset.pub")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def late(chain: dict[str, Path]) -> dict[str, Path]:
    """A second holder's answer that matches an item the clean kept, applied after the
    clean; and the receipt a dishonest builder signs over the old clean, citing it."""
    import base64

    from clearset.receipts.dsse import load_private_key, sign_statement

    root = chain["root"]
    run = root / "run-late"
    shutil.copytree(chain["run"], run)
    kept = read_cleaned_manifest(run, ["md5", "sha256"]).filter(
        pa.compute.is_valid(pa.compute.field("md5"))  # type: ignore[attr-defined]
    )
    md5 = kept.column("md5")[0].as_py().hex()
    lst = root / "late-md5.csv"
    lst.write_text(f"signal_type,signal_value,tags\nmd5,{md5},demo\n")
    ans = root / "ans-late"
    cli("exchange", "answer", str(chain["req"]), "--list", str(lst), "--key",
        str(chain["holder2"] / "clearset.key"), "--out", str(ans), "-w", "1",
        check=True)  # fmt: skip
    cli("exchange", "apply", str(run), str(ans), "--holder-pubkey",
        str(chain["holder2"] / "clearset.pub"), check=True)  # fmt: skip
    refused = cli("receipt", str(run), "--key", str(chain["builder"] / "clearset.key"))
    # The builder signs anyway: its old receipt, now citing the late answer too.
    envelope = json.loads((run / "receipt.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    from clearset.exchange.run import exchange_record

    statement["predicate"]["exchange"] = exchange_record(run)
    forged = sign_statement(statement, load_private_key(chain["builder"] / "clearset.key"))
    (run / "receipt.dsse.json").write_text(json.dumps(forged))
    proofs = root / "proofs-late.json"
    cli("prove", str(run), "--answer", str(ans), "--out", str(proofs), check=True)
    (root / "late-refused.txt").write_text(f"{refused.returncode}\n{refused.stderr}")
    return {"run": run, "ans": ans, "proofs": proofs, "kept": root / "late-refused.txt",
            "sha256": Path(kept.column("sha256")[0].as_py().hex())}  # fmt: skip


def test_receipt_refuses_a_clean_older_than_the_last_apply(late: dict[str, Path]) -> None:
    code, err = late["kept"].read_text().split("\n", 1)
    assert code == "1" and "exchange apply" in err and len(err.strip().splitlines()) == 1


def test_a_kept_item_the_holder_matched_fails_verify(
    chain: dict[str, Path], late: dict[str, Path]
) -> None:
    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return cli("verify", str(late["run"] / "receipt.dsse.json"), "--pubkey",
                   str(chain["builder"] / "clearset.pub"), "--answer", str(late["ans"]),
                   "--holder-pubkey", str(chain["holder2"] / "clearset.pub"),
                   *extra)  # fmt: skip

    kept = str(late["sha256"])
    # with the request: both answers the receipt cites, so the whole root is compared
    both = ("--answer", str(chain["ans"]), "--holder-pubkey", str(chain["holder"] / "clearset.pub"),
            "--request", str(chain["req"]))  # fmt: skip
    for extra in (both, ("--proof", str(late["proofs"]))):
        done = verify(*extra)
        err = done.stderr.strip()
        assert done.returncode == 1, (extra, done.stdout)
        assert len(err.splitlines()) == 1 and "is kept in the set" in err, err
        assert kept in err, err


def test_report_and_status_name_the_holder(chain: dict[str, Path]) -> None:
    run = chain["root"] / "run-report"
    if not run.exists():
        shutil.copytree(chain["run"], run)
    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())
    answer_digest = fmt.sha256_hex((chain["ans"] / fmt.ANSWER_INDEX).read_bytes())
    matches = [m for item in report["matched_items"] for m in item["matches"]]
    assert matches and all(m["holder"]["label"] == "Example hotline" for m in matches)
    assert {m["holder"]["answer"] for m in matches} == {answer_digest}
    key_id = matches[0]["holder"]["key_id"]
    assert (
        key_id and f"by holder Example hotline, key {key_id}" in (run / "report.html").read_text()
    )
    # a local scan's matches name no holder
    local = json.loads(cli("report", str(chain["local"]), check=True).stdout and
                       (chain["local"] / "report.json").read_text())  # fmt: skip
    assert not [m for i in local["matched_items"] for m in i["matches"] if "holder" in m]
    done = cli("status", str(run), "--json", check=True)
    (one,) = json.loads(done.stdout)["answers"]
    assert one["answer_digest"] == answer_digest and one["holder_key_id"] == key_id
    assert one["label"] == "Example hotline" and one["matched"]["samples"] > 0
    done = cli("status", str(run), check=True)
    assert (f"applied answer {answer_digest} from holder Example hotline (key {key_id}): "
            f"{one['matched']['samples']:,} samples matched ({one['matched']['members']:,} "
            "members") in done.stdout  # fmt: skip


def test_bad_folders_and_files_each_one_line(chain: dict[str, Path], demo_data: DemoData) -> None:
    root, holder = chain["root"], chain["holder"]
    afile = root / "a-file"
    afile.write_text("x")
    out = root / "never-bad"
    answer = ("--list", str(demo_data.md5_list), "--key",
              str(holder / "clearset.key"), "--out", str(out), "-w", "1")  # fmt: skip
    # a truncated parquet that answer.json still names (its SHA-256 re-pointed)
    trunc = _bad_answer(chain, "truncated")
    (trunc / fmt.ANSWER_ROWS).write_bytes((trunc / fmt.ANSWER_ROWS).read_bytes()[:40])
    index = json.loads((trunc / fmt.ANSWER_INDEX).read_text())
    index["files"][0]["sha256"] = file_sha256(trunc / fmt.ANSWER_ROWS)
    (trunc / fmt.ANSWER_INDEX).write_bytes(fmt.index_bytes(index))
    _resign(trunc, holder)
    notjson = _bad_answer(chain, "not-json")
    (notjson / fmt.ANSWER_ENVELOPE).write_text("{not json")
    cases = [
        (("exchange", "answer", str(root / "missing"), *answer), "does not exist"),
        (("exchange", "answer", str(afile), *answer), "is a file, not a folder"),
        (("exchange", "answer", str(chain["req"]), *answer[:-4], "--out", str(afile)), "exists"),
        (("exchange", "request", str(chain["run"]), "--out", str(afile)), "exists"),
        (("exchange", "apply", str(chain["run"]), str(root / "missing")), "does not exist"),
        (("exchange", "apply", str(chain["run"]), str(afile)), "is a file, not a folder"),
        (("exchange", "apply", str(chain["run"]), str(trunc)), "not a parquet file"),
        (("exchange", "apply", str(chain["run"]), str(notjson)), "is not JSON"),
    ]
    before = (chain["run"] / "run.json").read_bytes()
    for args, why in cases:
        if args[1] == "apply":
            args = (*args, "--holder-pubkey", str(holder / "clearset.pub"))
        done = cli(*args)
        err = done.stderr.strip()
        assert done.returncode in (1, 2) and why in err and len(err.splitlines()) == 1, (args, err)
        assert not out.exists() and not list(root.glob(".tmp-*"))
    assert (chain["run"] / "run.json").read_bytes() == before


# ------------------------------------------------------------------ review aids, both sides


def _answer_statement(ans: Path) -> dict:
    import base64

    envelope = json.loads((ans / fmt.ANSWER_ENVELOPE).read_text())
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]


@pytest.fixture(scope="module")
def reviewed(chain: dict[str, Path], demo_data: DemoData) -> dict:
    """The holder answers the chain's request with an allow list (one matched member) and
    a flood threshold that the list's busiest entry reaches; the builder applies that
    answer to a copy of the run with its own allow list (another matched member), cleans
    and signs."""
    from clearset.settings import PDQ_MIN_QUALITY

    root = chain["root"]
    rows = pa.concat_tables([pq.read_table(p) for p in sorted(chain["req"].glob("rows-*.parquet"))])
    matched = sorted(
        set(pq.read_table(chain["ans"] / fmt.ANSWER_ROWS).column("row_id").to_pylist())
    )
    table = rows.to_pylist()
    sha = {r["row_id"]: r["sha256"] for r in table}
    group = {r["row_id"]: r["group"] for r in table}
    held = matched[0]
    kept = next(r for r in matched if group[r] != group[held])
    # A planted flood: a one-entry list (the PDQ of the kept member) whose threshold
    # reaches its 6 nearest members, as a benign image colliding with an entry would.
    centre = next(r["pdq"] for r in table if r["row_id"] == kept)
    near = sorted(
        bin(int.from_bytes(r["pdq"], "big") ^ int.from_bytes(centre, "big")).count("1")
        for r in table if r["pdq"] is not None and (r["pdq_quality"] or 0) >= PDQ_MIN_QUALITY
    )  # fmt: skip
    busiest = sum(1 for d in near if d <= near[5])
    flood_list = root / "flood-pdq.txt"
    flood_list.write_text(centre.hex() + "\n")
    flood = f"{flood_list},type=pdq,name=flood,threshold={near[5]}"
    holder_allow, builder_allow = root / "holder-allow.txt", root / "builder-allow.txt"
    holder_allow.write_text(f"# reviewed by the holder\n{sha[held].hex()}\n")
    builder_allow.write_text(f"{sha[kept].hex()}\n")
    ans = root / "ans-reviewed"
    said = cli("exchange", "answer", str(chain["req"]), "--list", str(demo_data.pdq_list),
               "--list", flood, "--key", str(chain["holder"] / "clearset.key"), "--out", str(ans),
               "--label", "Example hotline", "--allow-list", str(holder_allow),
               "--flood-threshold", str(busiest), "-w", "1", check=True)  # fmt: skip
    run = root / "run-reviewed"
    shutil.copytree(chain["run"], run)
    for old in (run / "exchange" / "answers").iterdir():
        shutil.rmtree(old)
    applied = cli("exchange", "apply", str(run), str(ans), "--holder-pubkey",
                  str(chain["holder"] / "clearset.pub"), "--allow-list", str(builder_allow),
                  check=True)  # fmt: skip
    again = cli("exchange", "apply", str(run), str(ans), "--holder-pubkey",
                str(chain["holder"] / "clearset.pub"))  # fmt: skip
    cli("clean", str(run), "--to", str(root / "clean-reviewed"), "-w", "1", check=True)
    cli("receipt", str(run), "--key", str(chain["builder"] / "clearset.key"), check=True)
    return {"ans": ans, "said": said, "run": run, "held": held, "kept": kept, "sha": sha,
            "busiest": busiest, "holder_allow": holder_allow, "builder_allow": builder_allow,
            "applied": applied, "again": again,
}  # fmt: skip


def test_the_holders_allow_list_holds_rows_back_and_the_statement_says_so(reviewed: dict) -> None:
    from clearset.matching.review import load_allow_list

    ids = pq.read_table(reviewed["ans"] / fmt.ANSWER_ROWS).column("row_id").to_pylist()
    assert reviewed["held"] not in ids and reviewed["kept"] in ids
    review = _answer_statement(reviewed["ans"])["review"]
    allow = load_allow_list(reviewed["holder_allow"])
    assert review["allow_list"] == {"digest": allow.digest, "entries": 1}
    assert review["held_back"]["rows"] >= 1 and review["held_back"]["samples"] == 1
    assert f"held back {review['held_back']['rows']:,} match row" in reviewed["said"].stdout
    assert "request rows (members) matched)" in reviewed["said"].stdout
    assert re.search(r": \d+ samples? matched \(\d+ members?\); run", reviewed["applied"].stdout)
    # the allow list's values never leave the holder
    for path in reviewed["ans"].iterdir():
        assert reviewed["sha"][reviewed["held"]].hex().encode() not in path.read_bytes()


def test_the_holders_floods_are_named_by_ordinal_never_by_entry(
    reviewed: dict, demo_data: DemoData
) -> None:
    floods = _answer_statement(reviewed["ans"])["review"]["floods"]
    assert floods and floods[0]["images"] >= reviewed["busiest"]
    assert [(f["list_name"], f["entry_ordinal"], f["entries"]) for f in floods] == [("flood", 1, 1)]
    assert "entry" not in floods[0] and "list_digest" not in floods[0]
    assert "warning: entry #" in reviewed["said"].stderr
    entries = [line.split()[-1] for line in demo_data.pdq_list.read_text().splitlines()
               if line.strip() and not line.startswith("#")]  # fmt: skip
    for path in reviewed["ans"].iterdir():
        data = path.read_bytes().lower()
        assert not [e for e in entries if len(e) == 64 and e.lower().encode() in data], path


def test_the_builders_allow_list_keeps_and_counts_and_status_shows_the_flood(
    chain: dict[str, Path], reviewed: dict
) -> None:
    from clearset.matching.review import load_allow_list

    run = reviewed["run"]
    matches = pq.read_table(run / "matches.parquet")
    allowed = {
        bytes(row["sha256"]) for row in matches.select(["sha256", "allowed"]).to_pylist()
        if row["allowed"]
    }  # fmt: skip
    assert allowed == {reviewed["sha"][reviewed["kept"]]}
    kept = set(read_cleaned_manifest(run, ["sha256"]).column("sha256").to_pylist())
    assert reviewed["sha"][reviewed["kept"]] in kept
    allow = load_allow_list(reviewed["builder_allow"])
    review = _receipt(run)["predicate"]["review"]
    assert review == {"allow_list": {"digest": allow.digest, "entries": 1}, "allowed_kept": 1}
    assert "1 matched sample allowed by review" in reviewed["applied"].stdout
    status = cli("status", str(run), check=True).stdout
    assert "warning: entry #" in status and "reported by holder Example hotline" in status
    # a run reviewed with an allow list refuses an answer applied without it, in one line
    err = reviewed["again"].stderr.strip()
    assert reviewed["again"].returncode == 2 and len(err.splitlines()) == 1, err
    assert f"reviewed with allow list {allow.digest}" in err and "--allow-list" in err


def test_verify_compares_the_request_and_receipt_manifests(chain: dict[str, Path]) -> None:
    import base64

    from clearset.receipts.dsse import load_private_key

    other = chain["root"] / "req-other-scan"
    if not other.exists():
        shutil.copytree(chain["req"], other)
        envelope = json.loads((other / fmt.REQUEST_ENVELOPE).read_text())
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"]["run"]["manifest_digest"]["sha256"] = "ab" * 32
        key = load_private_key(chain["builder"] / "clearset.key")
        (other / fmt.REQUEST_ENVELOPE).write_text(json.dumps(fmt.sign(statement, key)))
    done = _verify(chain, "--request", str(other))
    err = done.stderr.strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1, err
    assert f"made from scan manifest {'ab' * 32}" in err and "another scan" in err
    done = _verify(chain, "--request", str(chain["req"]))
    assert done.returncode == 0 and "request and receipt name the same scan manifest" in done.stdout
    # --request alone is a usage error, not ignored
    alone = cli("verify", str(chain["run"] / "receipt.dsse.json"), "--pubkey",
                str(chain["builder"] / "clearset.pub"), "--request", str(chain["req"]))  # fmt: skip
    err = alone.stderr.strip()
    assert alone.returncode == 2 and "--request goes with --answer" in err, err
    assert len(err.splitlines()) == 1
