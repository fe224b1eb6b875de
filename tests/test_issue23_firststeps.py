"""Issue 23 point 5 and a case of point 9: the first steps a new user takes, each of which
used to fail or say something false (a `clearset hash` output that was no list, a scan
without --list that said nothing about matching nothing, a re-scan refusal that did not
name `clearset match`, `prompts` on a --fetch run, `scan --fetch --dry-run` wanting
--out, a header-less CSV list, and `clearset hash` on a FIFO or a device)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from clearset.demo import encode_jpeg, generate_image
from tests.conftest import cli
from tests.fetch_server import LoopbackServer


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of five benign procedural pictures."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(23)
    for number in range(5):
        (root / f"{number:03d}.jpg").write_bytes(encode_jpeg(generate_image(rng), 90))
    return root


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- scan without --list


def test_a_scan_without_a_list_says_it_matched_nothing_and_how_to_match(
    pictures: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = cli("scan", str(pictures), "--out", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr  # hashing only is a use of its own
    said = _one_line(proc.stdout)
    assert "no --list given: nothing was matched" in said
    assert f"clearset match {shlex.quote(str(run))} --list LIST" in said


# ---------------------------------------------------------------- scan --fetch --dry-run


def test_a_fetch_dry_run_needs_no_out_and_a_real_scan_still_does(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(server.url(f"/img/{n}.jpg") + "\n" for n in range(3)))
        proc = cli("scan", str(urls), "--fetch", "--dry-run", "--sample", "2",
                   "--read-timeout", "5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 URLs on 1 hosts" in _one_line(proc.stdout)
    assert list(tmp_path.iterdir()) == [urls]  # it wrote nothing
    proc = cli("scan", str(urls), "--fetch", "--no-progress")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "clearset: error: scan: give --out RUN, the run folder to write"


# ---------------------------------------------------------------- a re-scan with other lists


def _md5_list(path: Path, picture: Path) -> str:
    import hashlib

    path.write_text(hashlib.md5(picture.read_bytes()).hexdigest() + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("first", "then", "rematch", "unfinished", "said"),
    [
        ((), ("a",), False, False, "was scanned without a list, and a scan resumes only"),
        (("a",), ("a", "b"), False, False, "was scanned with other lists (b added)"),
        (("a", "b"), ("a",), False, False, "was scanned with other lists (b dropped)"),
        (("a",), (), False, False, "was scanned with lists (a) and this command gives none"),
        (("a",), ("a",), True, False, "`clearset match` re-matched this run at"),
        ((), ("a",), False, True, "once the scan is finished (re-run it without --list first)"),
        (("a",), ("b",), False, True, "(re-run it with the lists it began with first)"),
    ],
)
def test_a_rescan_with_other_lists_names_clearset_match(
    pictures: Path,
    tmp_path: Path,
    first: tuple[str, ...],
    then: tuple[str, ...],
    rematch: bool,
    unfinished: bool,
    said: str,
) -> None:
    from clearset.runfolder import RunFolder

    lists = {
        name: _md5_list(tmp_path / f"{name}.txt", pictures / f"00{n}.jpg")
        for n, name in enumerate("ab")
    }
    run = tmp_path / "run"

    def scan(names: tuple[str, ...]) -> object:
        given = [arg for name in names for arg in ("--list", lists[name])]
        return cli("scan", str(pictures), "--out", str(run), "--no-progress", *given)

    assert scan(first).returncode == 0
    if rematch:
        assert cli("match", str(run), "--list", lists["b"], "--no-progress").returncode == 0
    if unfinished:  # as a scan stopped half-way leaves it
        folder = RunFolder(run)
        folder.write_info({**folder.read_info(), "finished": None})
    proc = scan(then)
    assert proc.returncode != 0
    error = proc.stderr.strip()
    assert "\n" not in error and "Traceback" not in error
    assert said in error
    assert f"clearset match {run} --list LIST" in error


# ---------------------------------------------------------------- a CSV list with no header


@pytest.mark.parametrize(
    "rows",
    [
        ["md5,{md5}", "md5,{md5}"],  # type, hash: read as a header it said "non-hex" on line 2
        ["pdq,{pdq}", "pdq,{pdq}"],
        ["{md5},benign", "{md5},benign"],
        ["{md5}", "{md5}"],
    ],
)
def test_a_csv_list_without_a_header_is_refused_on_line_1_naming_the_header(
    pictures: Path, tmp_path: Path, rows: list[str]
) -> None:
    from clearset.hashing import hash_bytes

    hashes = hash_bytes((pictures / "000.jpg").read_bytes())
    assert hashes.pdq is not None
    listed = tmp_path / "list.csv"
    values = {"md5": hashes.md5.hex(), "pdq": hashes.pdq.hex()}
    listed.write_text("".join(row.format(**values) + "\n" for row in rows))
    proc = cli("scan", str(pictures), "--out", str(tmp_path / "run"), "--list", str(listed))
    assert proc.returncode != 0
    error = proc.stderr.strip()
    assert "\n" not in error
    assert error.startswith(f"clearset: error: {listed}:1: first line looks like a hash or URL")
    assert "header row naming the hash column (hash, " in error and "signal_type" in error
    assert not any(value in error for value in values.values())  # no list entry is shown
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- clearset hash --as-list


@pytest.mark.parametrize(
    ("as_list", "types", "suffix", "declare"),
    [
        ("threatexchange", (), "txt", ""),
        ("csv", ("pdq", "sha256"), "csv", ""),
        ("text", ("md5",), "txt", ""),
        ("text", ("sha1",), "lst", ""),
        ("text", ("sha256",), "txt", ",type=sha256"),
    ],
)
def test_a_list_made_by_clearset_hash_is_one_scan_reads_and_matches(
    pictures: Path,
    tmp_path: Path,
    as_list: str,
    types: tuple[str, ...],
    suffix: str,
    declare: str,
) -> None:
    import pyarrow.parquet as pq

    files = sorted(str(p) for p in pictures.glob("*.jpg"))
    options = [arg for t in types for arg in ("--type", t)]
    made = cli("hash", "--as-list", as_list, *options, *files)  # `> list.txt`
    assert made.returncode == 0, made.stderr
    listed = tmp_path / f"list.{suffix}"
    listed.write_text(made.stdout)
    written = tmp_path / f"written.{suffix}"
    assert (
        cli("hash", "--as-list", as_list, *options, "--out", str(written), *files).returncode == 0
    )
    assert written.read_text() == made.stdout
    run = tmp_path / "run"
    proc = cli("scan", str(pictures), "--out", str(run), "--list", f"{listed}{declare}",
               "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    matches = pq.read_table(run / "matches.parquet", columns=["key", "hash_type"])
    assert set(matches.column("key").to_pylist()) == {Path(f).stem for f in files}
    assert set(matches.column("hash_type").to_pylist()) == set(types or ("pdq", "md5"))


def test_hash_as_list_refuses_what_it_cannot_write_in_one_line(
    pictures: Path, tmp_path: Path
) -> None:
    picture = str(pictures / "000.jpg")
    for args, said in (
        (("--as-list", "xml"), "--as-list xml: unknown list format"),
        (("--as-list", "text", "--type", "pdq", "--type", "md5"), "holds one hash type"),
        (("--as-list", "csv", "--type", "url"), "--type url: not a hash of a file"),
        (("--type", "md5"), "--type and --out go with --as-list"),
    ):
        proc = cli("hash", *args, picture)
        assert proc.returncode != 0 and proc.stdout == ""
        assert said in proc.stderr and "\n" not in proc.stderr.strip()


# ---------------------------------------------------------------- clearset hash on odd paths


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "socket"])
def test_hash_refuses_what_is_not_a_regular_file_before_hashing_any(
    pictures: Path, tmp_path: Path, kind: str
) -> None:
    import os
    import socket
    import subprocess
    import sys

    if kind == "fifo":
        odd = tmp_path / "pipe"
        os.mkfifo(odd)
        said = "a FIFO (named pipe), not a regular file"
    elif kind == "device":
        odd, said = Path("/dev/zero"), "a character device, not a regular file"
    elif kind == "folder":
        odd, said = pictures, "a folder, not a regular file"
    else:
        odd, said = tmp_path / "sock", "a socket, not a regular file"
        bound = socket.socket(socket.AF_UNIX)
        bound.bind(str(odd))
    listed = tmp_path / "list.txt"
    # In a process of its own with a deadline: before, a FIFO waited for a writer forever
    # and /dev/zero was read until memory ran out.
    for args in ((), ("--as-list", "threatexchange", "--out", str(listed))):
        proc = subprocess.run(
            [sys.executable, "-m", "clearset.cli", "hash", *args, str(pictures / "000.jpg"),
             str(odd)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode != 0
        assert proc.stderr == f"clearset: error: {odd}: {said}: only image files are hashed\n"
        assert proc.stdout == "" and not listed.exists()  # nothing hashed, nothing written
    if kind == "socket":
        bound.close()


def test_hash_file_streams_a_file_over_the_cap_and_never_decodes_it(tmp_path: Path) -> None:
    import hashlib

    from clearset.hashing.files import hash_file

    big = tmp_path / "big.jpg"
    data = (b"\xff\xd8\xff" + bytes(range(256)) * 9000)[:2_000_003]
    big.write_bytes(data)
    hashes = hash_file(big, max_bytes=1 << 20)
    assert hashes.pdq is None and hashes.status == "error"
    assert hashes.reason == f"too_large: {len(data)} bytes, over the {1 << 20}-byte cap"
    assert hashes.size == len(data)
    assert hashes.sha256 == hashlib.sha256(data).digest()
    assert hashes.md5 == hashlib.md5(data).digest()
    assert hashes.sha1 == hashlib.sha1(data).digest()
    small = hash_file(big, max_bytes=len(data))  # at the cap: read whole, as before
    assert small.sha256 == hashes.sha256 and small.reason != hashes.reason


# ---------------------------------------------------------------- prompts of a --fetch run


@pytest.mark.parametrize("form", ["csv", "parquet"])
def test_prompts_of_a_fetch_run_read_the_url_lists_captions_without_fetching(
    tmp_path: Path, form: str
) -> None:
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.fetch_server import jpeg

    secret = "the caption of a matched row"
    # Rows 0-2 one caption, 3-4 another; row 5 will match the list; a shard is 4 rows,
    # so the captions of one prompt span two shards.
    captions = ["a red barn"] * 3 + ["a cat"] * 2 + [secret, "a dog"]
    column = "caption" if form == "csv" else "TEXT"  # LAION's parquet says TEXT
    listed = tmp_path / "list.txt"
    listed.write_text(f"md5 {hashlib.md5(jpeg(705)).hexdigest()}\n")
    run = tmp_path / "run"
    with LoopbackServer() as server:
        urls = [server.url(f"/img/{700 + n}.jpg") for n in range(len(captions))]
        if form == "csv":
            source = tmp_path / "urls.csv"
            rows = "".join(f'{url},"{text}"\n' for url, text in zip(urls, captions, strict=True))
            source.write_text(f"url,{column}\n{rows}")
        else:
            source = tmp_path / "urls.parquet"
            pq.write_table(pa.table({"url": urls, column: captions}), source)
        proc = cli("scan", str(source), "--fetch", "--out", str(run), "--shard-rows", "4",
                   "--list", str(listed), "--read-timeout", "5", "--no-progress")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        fetched = sum(server.handler.hits.values())
        written = tmp_path / "prompts.json"
        proc = cli("prompts", str(run), "--top", "10", "--out", str(written))
        assert sum(server.handler.hits.values()) == fetched  # prompts fetched nothing
    assert proc.returncode == 0, proc.stderr
    assert json.loads(written.read_text())["by_caption"] == [
        {"caption": "a red barn", "items": 3},
        {"caption": "a cat", "items": 2},
        {"caption": "a dog", "items": 1},
    ]
    said = _one_line(proc.stdout)
    assert secret not in proc.stdout and secret not in written.read_text()
    assert "6 captions read from the URL list's caption column" in said
    assert "left out, as matched against a list: 1 items" in said
