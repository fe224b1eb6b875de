"""Output that says what it is (issue 23, point 6 and two cases of point 9).

User text prints literally (`FILE:100:` is no emoji, `[b]` no style); a wrong key kind,
a YAML `no`, a Ray address nobody answers and a removal list that cannot match are each
one line saying what to give instead; a resume counts done shards as `status` does, and
resumes whatever spelling of a list's path it is given.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.documents import load_answers
from clearset.documents.facts import MARKER
from clearset.errors import InputError
from tests.conftest import cli

EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


# ---------------------------------------------------------------- literal output


def test_a_gap_at_line_100_and_a_bracketed_file_name_print_as_typed(tmp_path: Path) -> None:
    doc = tmp_path / "[b]x[" / "b]gaps.md"  # its path holds `[b]x[/b]`
    doc.parent.mkdir()
    lines = [f"<!-- {MARKER} datacard; made by hand -->"] + ["filler"] * 98
    lines.append("GAP: how the data set furthers the purpose [answers: dataset.purpose]")
    doc.write_text("\n".join(lines) + "\n")
    proc = cli("document", "--check", str(doc))
    assert proc.returncode == 1, proc.stderr
    # FILE:LINE: for scripts: `:100:` was rich's emoji code, and `[b]` a style tag.
    assert f"{doc}:100: GAP (answers key dataset.purpose):" in proc.stdout
    assert f"{doc}: datacard document, 1 gaps left" in proc.stdout
    assert not EMOJI.search(proc.stdout + proc.stderr)


def test_scan_report_and_errors_print_names_with_emoji_codes_and_tags_as_typed(
    demo_data: DemoData, tmp_path: Path
) -> None:
    run = tmp_path / "run:100:[b]x[/b]"
    proc = cli(
        "scan", str(demo_data.webdataset), "--out", str(run), "--workers", "1",
        "--list", f"{demo_data.pdq_list},name=:thumbsup:[red]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"scan of {run}" in proc.stdout and str(run / "manifest") in proc.stdout
    assert ":thumbsup:[red]" in proc.stdout
    report = cli("report", str(run))
    assert report.returncode == 0 and str(run / "report.html") in report.stdout
    missing = tmp_path / "list:100:[b]y[/b].txt"
    error = cli(
        "scan", str(demo_data.webdataset), "--out", str(tmp_path / "r2"), "--list", str(missing)
    )
    assert error.returncode != 0 and str(missing) in error.stderr
    assert not EMOJI.search(proc.stdout + proc.stderr + report.stdout + error.stderr)


# ---------------------------------------------------------------- wrong key kinds


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    keydir = tmp_path / "keys"
    cli("keygen", str(keydir), check=True)
    (tmp_path / "junk.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n")
    (tmp_path / "notes.txt").write_text("not a key\n")
    return keydir


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("keys", "keys: a folder, not a private key; give {keys}/clearset.key"),
        ("keys/clearset.pub", "a public key, not the private key"),
        ("junk.pem", "not a readable PEM private key; give KEYDIR/clearset.key, the private "
                     "key made by `clearset keygen`"),
        ("notes.txt", "not a readable PEM private key; give KEYDIR/clearset.key"),
    ],
)  # fmt: skip
def test_receipt_given_the_wrong_key_file_says_which_to_give(
    keys: Path, tmp_path: Path, given: str, says: str
) -> None:
    proc = cli("receipt", str(tmp_path / "run"), "--key", str(tmp_path / given))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no chmod advice first, no library error after
    assert says.format(keys=keys) in lines[0]
    assert "chmod" not in proc.stderr and "deserialize" not in proc.stderr.lower()
    if given == "keys/clearset.pub":
        assert f"give {keys / 'clearset.key'}" in lines[0]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("keys", "a folder, not a public key; give {keys}/clearset.pub"),
        ("keys/clearset.key", "a private key, not the public key"),
        ("notes.txt", "not a readable PEM public key; give KEYDIR/clearset.pub"),
    ],
)
def test_verify_given_the_wrong_key_file_says_which_to_give(
    keys: Path, tmp_path: Path, given: str, says: str
) -> None:
    proc = cli("verify", str(tmp_path / "receipt.dsse.json"), "--pubkey", str(tmp_path / given))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says.format(keys=keys) in lines[0], proc.stderr
    assert "BEGIN" not in proc.stderr  # never echoes a key, least of all the private one


# ---------------------------------------------------------------- YAML answers


@pytest.mark.parametrize("word", ["no", "yes", "on", "Off", "true"])
def test_an_unquoted_yes_or_no_answer_says_how_to_write_it(tmp_path: Path, word: str) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(f"provider: {{name: Example}}\ndataset:\n  collection_ongoing: {word}\n")
    with pytest.raises(InputError) as caught:
        load_answers(answers)
    message = str(caught.value)
    assert message.startswith(f"{answers}:3: dataset.collection_ongoing:")
    assert (
        "true/false" in message and f"write it in quotes: collection_ongoing: '{word}'" in message
    )
    answers.write_text(f"dataset:\n  collection_ongoing: '{word}'\n")
    assert load_answers(answers).get("dataset.collection_ongoing") == word


def test_numbers_and_dates_in_answers_are_kept_as_typed(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(
        "model: {first_used: 2026-01-15}\n"
        "dataset: {citation: 010, description: 1.10, labels: [0x1F, captions]}\n"
    )
    got = load_answers(answers)
    # YAML 1.1 read these as 8, 1.1 and 31.
    assert got.get("dataset.citation") == "010"
    assert got.get("dataset.description") == "1.10"
    assert got.get("dataset.labels") == "0x1F; captions"
    assert got.get("model.first_used") == "2026-01-15"


# ---------------------------------------------------------------- Ray address


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.ray
@pytest.mark.parametrize(
    ("form", "given"),
    [
        ("{host}:{port}", "--address"),
        ("ray://{host}:{port}", "--address"),
        ("no-such-host.invalid:6379", "--address"),
        ("{host}:{port}", "RAY_ADDRESS"),  # what a `ray job submit` driver has
    ],
)
def test_a_ray_address_nobody_answers_fails_at_once_in_one_line(
    demo_data: DemoData, tmp_path: Path, form: str, given: str
) -> None:
    pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    address = form.format(host="127.0.0.1", port=_closed_port())
    run = tmp_path / "run"
    # Before, Ray retried for minutes with a warning every few seconds: the timeout is a
    # generous bound on a loaded machine, not a measure.
    by_option = given == "--address"
    proc = subprocess.run(
        [sys.executable, "-m", "clearset.cli", "scan", str(demo_data.webdataset), "--out",
         str(run), "--engine", "ray", *(["--address", address] if by_option else [])],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **({} if by_option else {"RAY_ADDRESS": address})},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("reading ")]
    assert len(errors) == 1, proc.stderr
    shown = f"--address {address}" if by_option else f"RAY_ADDRESS={address}"
    assert errors[0].startswith(f"clearset: error: --engine ray {shown}: no Ray")
    assert not run.exists()


# ---------------------------------------------------------------- the resume's count


def test_a_clean_to_resume_counts_done_shards_as_status_does(
    demo_data: DemoData, tmp_path: Path
) -> None:
    run, dest = tmp_path / "run", tmp_path / "clean"
    args = ("scan", str(demo_data.webdataset), "--out", str(run), "--workers", "1",
            "--list", str(demo_data.pdq_list), "--clean-to", str(dest))  # fmt: skip
    # Every shard scanned and none cleaned yet: the resume that cleans them must count
    # them done, as status does (a finished clean keeps no per-shard state to remove).
    cli(*args[:-2], check=True)
    status = cli("status", str(run), check=True).stdout
    said = re.search(r"shards: (\d+) done", status)
    again = cli(*args, check=True).stdout
    resumed = re.search(r"\((\d+) shards already done\)", again)
    assert said and resumed, (status, again)
    assert resumed[1] == said[1] == "4"
    assert (dest / "00002.tar").exists()


# ---------------------------------------------------------------- removal lists


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"url": ["http://a/1", "http://a/2"], "sha256": [1, 2]},
         "column sha256 holds int64 values, not hex text (first at row 1)"),
        ({"url": ["http://a/1", "http://a/2"], "sha256": ["ab" * 32, "not hex"]},
         "column sha256, row 2: not a hex hash of 64 digits"),
        ({"url": ["http://a/1", None], "sha256": ["ab" * 32, "ab" * 16]},
         "column sha256, row 2: not a hex hash of 64 digits"),
        ({"url": [None, 7], "sha256": ["ab" * 32, "cd" * 32]},
         "column url holds int64 values, not text (first at row 2)"),
        ({"url": ["http://a/1"], "sha256": ["ab" * 32], "upstream_md5": ["ab" * 32]},
         "column upstream_md5, row 1: not a hex hash of 32 digits"),
    ],
)  # fmt: skip
def test_a_removal_list_that_cannot_match_is_refused_naming_column_and_row(
    demo_data: DemoData, tmp_path: Path, table: dict, says: str
) -> None:
    removals = tmp_path / "removals.parquet"
    pq.write_table(pa.table(table), removals)
    out = tmp_path / "out"
    proc = cli("apply-removals", str(demo_data.webdataset / "00000.tar"), str(removals),
               "--to", str(out))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"clearset: error: {removals}: {says}" + (
        "; a removal list matches by URL and hex hash" if "holds" in says else ""
    )
    assert not out.exists()


def test_a_removal_list_that_matches_nothing_says_so(demo_data: DemoData, tmp_path: Path) -> None:
    removals = tmp_path / "removals.parquet"
    pq.write_table(
        pa.table({"url": ["http://elsewhere/1", "http://elsewhere/2", None],
                  "sha256": ["ab" * 32, "cd" * 32, "ef" * 32]}),
        removals,
    )  # fmt: skip
    source = demo_data.webdataset / "00000.tar"
    proc = cli("apply-removals", str(source), str(removals), "--to", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "removed 0 keys" in proc.stdout
    assert (
        f"clearset: warning: 0 of 3 rows of the removal list {removals} matched anything in "
        f"{source}" in proc.stderr
    )
    assert (tmp_path / "out" / "00000.tar").exists()


# ---------------------------------------------------------------- a list by another path


def test_a_resume_takes_the_same_list_by_any_spelling_of_its_path(
    demo_data: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(demo_data.pdq_list, tmp_path / "watch-pdq.txt")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "watch-pdq.txt").symlink_to(tmp_path / "watch-pdq.txt")
    (tmp_path / "l.txt").symlink_to(tmp_path / "watch-pdq.txt")

    def scan(list_arg: str) -> subprocess.CompletedProcess[str]:
        return cli("scan", str(demo_data.webdataset), "--out", "run", "--workers", "1",
                   "--list", list_arg)  # fmt: skip

    first = scan("watch-pdq.txt")
    assert first.returncode == 0, first.stderr
    spellings = ["./watch-pdq.txt", str(tmp_path / "watch-pdq.txt"), "elsewhere/watch-pdq.txt",
                 "elsewhere/../watch-pdq.txt", "l.txt,name=watch-pdq"]  # fmt: skip
    for spelling in spellings:
        again = scan(spelling)
        assert again.returncode == 0, (spelling, again.stderr)
        assert "5 samples matched" in again.stdout
    # Another list is still another list; the same one under another name says so.
    other = scan(str(demo_data.md5_list))
    assert other.returncode != 0 and "watch-md5 added, watch-pdq dropped" in other.stderr
    renamed = scan("l.txt")
    assert renamed.returncode != 0
    assert "l is watch-pdq under another name: give it as --list PATH,name=watch-pdq" in (
        renamed.stderr
    )
