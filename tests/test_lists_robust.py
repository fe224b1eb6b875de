"""Tests for what issue 11 asked of list loading: say what was skipped, never echo an
entry, survive any file, and name options as the CLI spells them.

Every hash here is random bytes or the hash of a made-up benign URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearset.demo import DemoData
from clearset.errors import InputError
from clearset.hashing import types as hash_types
from clearset.lists import HASH_BYTES, load_list
from clearset.lists.collect import EntryCollector
from clearset.lists.formats import HASH_COLUMNS, JSON_ARRAY_KEYS, TYPE_COLUMNS
from clearset.lists.model import url_md5_forms
from clearset.matching.matcher import Matcher, MatchSettings, list_record
from tests.conftest import cli, run_cli


def random_hex(count: int, hash_type: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (count, HASH_BYTES[hash_type]), dtype=np.uint8)
    return [bytes(row).hex() for row in rows]


PDQ = random_hex(5, "pdq", seed=11)
MD5 = random_hex(6, "md5", seed=12)
URLS = [f"https://images.example.org/benign/{n:04d}.jpg" for n in range(4)]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


#: The names a message may list as what clearset accepts (column, key and type names): a
#: token that happens to spell one (a URL path ".../hash_type") is not echoed by naming it.
VOCABULARY = " ".join(
    [*HASH_COLUMNS, *TYPE_COLUMNS, *JSON_ARRAY_KEYS, *(t.name for t in hash_types.list_types())]
)


def assert_no_echo(message: str, tokens: list[str], source: str = "") -> None:
    """No 8-character piece of any token appears in the message (path aside), other than
    a piece of the names clearset itself lists."""
    text = message.replace(source, "<path>") if source else message
    for token in tokens:
        for start in range(len(token) - 7):
            piece = token[start : start + 8]
            if piece in VOCABULARY:
                continue
            assert piece not in text, f"message echoes {piece!r} of an entry: {text}"


# -- 1. signal types: url_md5 supported, the rest counted and named --------------------


def threatexchange_file(tmp_path: Path) -> tuple[str, str]:
    """Nine lines, as in the issue: 3 pdq, 2 md5, 1 url_md5, 1 video_md5, 1 text, 1 vpdq."""
    url_md5 = hashlib.md5(URLS[0].encode()).hexdigest()
    lines = [f"pdq {v}" for v in PDQ[:3]] + [f"md5 {v}" for v in MD5[:2]]
    lines += [f"url_md5 {url_md5}", f"video_md5 {MD5[5]}", "text some benign words"]
    lines += ["vpdq 0123,4567"]
    return write(tmp_path, "signals.te", "\n".join(lines) + "\n"), url_md5


def test_threatexchange_url_md5_loads_and_other_types_are_named(tmp_path, caplog):
    path, url_md5 = threatexchange_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="clearset.lists"):
        lists = load_list(path)
    assert [x.hash_type for x in lists] == ["pdq", "md5", "url_md5"]
    assert [len(x) for x in lists] == [3, 3, 1]  # video_md5 is MD5 (of a video file)
    assert lists[2].hashes[0].tobytes().hex() == url_md5
    assert lists[0].skipped == {"unsupported: text": 1, "unsupported: vpdq": 1}
    [notice] = [r.getMessage() for r in caplog.records]
    assert notice.startswith(f"{path}: kept 7 of 9 entries, skipped 2 (")
    for kind in ("1 text", "1 vpdq"):
        assert kind in notice
    assert "digest covers the kept entries, not the file" in notice
    assert_no_echo(notice, [MD5[5]], path)


def test_only_unsupported_types_is_an_error_that_names_them(tmp_path):
    path = write(tmp_path, "v.te", "tmk abc\ntmk def\n")
    with pytest.raises(InputError, match=r"no valid hash entries \(skipped: 2 tmk \(type"):
        load_list(path)


def test_url_md5_matches_raw_and_threatexchange_forms():
    # python-threatexchange hashes the URL lower-cased and without its scheme.
    raw = URLS[1]
    te_form = URLS[2].lower().removeprefix("https://")
    listed = sorted({hashlib.md5(raw.encode()).digest(), hashlib.md5(te_form.encode()).digest()})
    assert hashlib.md5(raw.encode()).digest() in url_md5_forms(raw)
    assert hashlib.md5(te_form.encode()).digest() in url_md5_forms(URLS[2].upper())
    collector = EntryCollector("generated", hash_type="url_md5", skip_invalid=False)
    for number, digest in enumerate(listed):
        collector.add(digest.hex(), None, str(number + 1))
    [hash_list] = collector.finish(name="urls", version=None, threshold=None)
    manifest = pa.table(
        {
            "key": ["a", "b", "c", "d"],
            "shard": ["s"] * 4,
            "position": [0, 1, 2, 3],
            "member": [None] * 4,
            "url": [raw, URLS[2].upper(), URLS[3], None],
            "sha256": [None] * 4,
        }
    )
    matches = Matcher([hash_list], MatchSettings()).match_table(manifest).to_pylist()
    assert sorted(m["key"] for m in matches) == ["a", "b"]
    assert {m["hash_type"] for m in matches} == {"url_md5"}
    assert {m["field"] for m in matches} == {"url"}
    record = list_record(hash_list, MatchSettings())
    assert record["skipped"] == {} and record["skipped_total"] == 0
    assert "digest_covers" not in record


# -- 2. --skip-invalid says how many, of which kinds, and records them ------------------


def test_skip_invalid_counts_by_kind_in_the_record(tmp_path, caplog):
    lines = PDQ + ["0" * 64, "xyz", "ab" * 31, "F" * 64, "zz"]
    path = write(tmp_path, "l.txt", "\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="clearset.lists"):
        [hash_list] = load_list(path, hash_type="pdq", skip_invalid=True)
    assert hash_list.skipped == {
        "invalid: non-hex character": 2,
        "invalid: placeholder": 2,
        "invalid: wrong length": 1,
    }
    record = list_record(hash_list, MatchSettings())
    assert record["skipped_total"] == 5 and record["skipped"] == hash_list.skipped
    assert record["digest_covers"] == "the accepted entries, not the file"
    [notice] = [r.getMessage() for r in caplog.records]
    assert "kept 5 of 10 entries, skipped 5" in notice
    assert "2 non-hex character (invalid)" in notice


def test_cli_prints_skips_once_and_records_them_in_run_and_report(
    demo_data: DemoData, tmp_path: Path
) -> None:
    """Through `scan` (workers load the list too) and `report`: one stderr line."""
    keys = sorted(demo_data.planted())
    url = f"https://images.example.com/demo/{keys[0]}."
    manifest_urls = [u for u in _demo_urls(demo_data) if u.startswith(url)]
    url_md5 = hashlib.md5(manifest_urls[0].encode()).hexdigest()
    lines = [f"md5 {v}" for v in MD5] + [f"url_md5 {url_md5}", "tmk abc"]
    lines += ["md5 not-a-hash", "md5 " + "0" * 32]
    path = write(tmp_path, "mixed.te", "\n".join(lines) + "\n")
    run = tmp_path / "run"
    proc = run_cli(
        "scan", str(demo_data.webdataset), "--out", str(run), "--workers", "2",
        "--no-progress", "--list", f"{path},name=mixed", "--skip-invalid",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(notices) == 1, proc.stderr
    assert notices[0].startswith(f"{path}: kept 7 of 10 entries, skipped 3 (")
    assert "1 tmk (type clearset cannot match)" in notices[0]
    assert_no_echo(proc.stderr, [MD5[0], url_md5, "not-a-hash"], path)

    info = json.loads((run / "run.json").read_text())
    records = info["settings"]["matching"]["lists"]
    assert [r["hash_type"] for r in records] == ["md5", "url_md5"]
    assert records[0]["skipped"] == {
        "invalid: non-hex character": 1,
        "invalid: placeholder": 1,
        "unsupported: tmk": 1,
    }
    assert records[0]["skipped_total"] == 3 and records[1]["skipped_total"] == 0
    matches = [json.loads(line) for line in _match_rows(run)]
    assert any(m["hash_type"] == "url_md5" for m in matches)

    assert cli("report", str(run)).returncode == 0
    report = json.loads((run / "report.json").read_text())
    by_type = {r["hash_type"]: r for r in report["lists"]}
    assert by_type["md5"]["skipped_total"] == 3
    html = (run / "report.html").read_text()
    assert ">skipped lines</th>" in html
    assert "3 (invalid: non-hex character 1, invalid: placeholder 1, unsupported: tmk 1)" in (html)


def _demo_urls(demo_data: DemoData) -> list[str]:
    import pyarrow.parquet as pq

    urls: list[str] = []
    for side in sorted(demo_data.webdataset.glob("*.parquet")):
        urls += [u for u in pq.read_table(side, columns=["url"]).column("url").to_pylist() if u]
    return urls


def _match_rows(run: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(run / "matches.parquet", columns=["hash_type", "key"])
    return [json.dumps(row) for row in table.to_pylist()]


# -- 3. error messages never echo an entry ----------------------------------------------


def test_csv_with_type_and_hash_columns_swapped(tmp_path):
    rows = "\n".join(f"{v},md5" for v in MD5)
    path = write(tmp_path, "swapped.csv", "type,hash\n" + rows + "\n")
    with pytest.raises(InputError) as caught:
        load_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: the signal type is a hash or URL")
    assert "swapped" in message
    assert_no_echo(message, MD5, path)


def test_threatexchange_line_with_hash_first(tmp_path):
    path = write(tmp_path, "swapped.te", "pdq " + PDQ[0] + "\n" + PDQ[1] + " pdq\n")
    with pytest.raises(InputError) as caught:
        load_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: the signal type is a hash or URL")
    assert_no_echo(message, PDQ, path)


def test_json_object_keyed_by_hashes(tmp_path):
    document = {v: {"source": "benign"} for v in MD5} | {URLS[0]: [1, 2]} | {URLS[1]: [3]}
    path = write(tmp_path, "keyed.json", json.dumps(document))
    with pytest.raises(InputError) as caught:
        load_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: no array of hashes found in JSON object (keys: ")
    assert "8 more not shown" in message
    assert_no_echo(message, MD5 + URLS, path)


def test_headerless_csv_of_urls(tmp_path):
    path = write(tmp_path, "urls.csv", "\n".join(f"{u},benign" for u in URLS) + "\n")
    with pytest.raises(InputError) as caught:
        load_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:1: first line looks like a hash or URL, not a header")
    assert "format=text" in message
    assert_no_echo(message, URLS, path)


def test_unknown_signal_type_is_named_when_it_is_a_word(tmp_path):
    path = write(tmp_path, "t.te", f"pdq {PDQ[0]}\nphash_v9 {PDQ[1]}\n")
    with pytest.raises(InputError, match=r"t\.te:2: unknown signal type 'phash_v9' \(expected"):
        load_list(path)
    lists = load_list(path, skip_invalid=True)
    assert lists[0].skipped == {"invalid: unknown type phash_v9": 1}


# A hypothesis strategy for list files: text with hashes and URLs in many shapes, some
# well formed, most not. Tokens are recorded so that the test can look for them.
HEX = "0123456789abcdefABCDEF"
hex_token = st.sampled_from([32, 40, 64, 31, 63, 65, 8, 128]).flatmap(
    lambda n: st.text(HEX, min_size=n, max_size=n)
)
url_token = st.builds(
    lambda host, path: f"https://{host}.example/{path}",
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=12),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789/_-.", min_size=1, max_size=20),
)
entry = st.one_of(hex_token, url_token)
type_word = st.sampled_from(
    ["pdq", "md5", "sha1", "sha256", "url", "url_md5", "video_md5", "text", "vpdq", "bogus",
     "type", "hash", "signal_type", "signal_value", "", " "]
)  # fmt: skip
junk = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


def _lines(pairs: list[tuple[str, str]], shape: str) -> str:
    if shape == "te":
        return "\n".join(f"{t} {e}" for t, e in pairs)
    if shape == "te_swapped":
        return "\n".join(f"{e} {t}" for t, e in pairs)
    if shape == "csv":
        return "type,hash\n" + "\n".join(f"{t},{e}" for t, e in pairs)
    if shape == "csv_swapped":
        return "type,hash\n" + "\n".join(f"{e},{t}" for t, e in pairs)
    if shape == "csv_headerless":
        return "\n".join(f"{e},{t}" for t, e in pairs)
    if shape == "tsv":
        return "signal_type\tsignal_value\n" + "\n".join(f"{t}\t{e}" for t, e in pairs)
    if shape == "json_array":
        return json.dumps([{"type": t, "hash": e} for t, e in pairs])
    if shape == "json_keyed":
        return json.dumps({e: t for t, e in pairs})
    if shape == "json_typed":
        return json.dumps({(pairs[0][0] if pairs else "") or "x": [e for _, e in pairs]})
    if shape == "jsonl":
        return "\n".join(json.dumps({"signal_type": t, "signal_value": e}) for t, e in pairs)
    if shape == "checksums":
        return "\n".join(f"{e}  {t or 'file'}.jpg" for t, e in pairs)
    if shape == "nested":
        depth = 40 + 37 * len(pairs)
        return "[" * depth + json.dumps(pairs[0][1] if pairs else "") + "]" * depth
    return "\n".join(e for _, e in pairs)


SHAPES = ["te", "te_swapped", "csv", "csv_swapped", "csv_headerless", "tsv", "json_array",
          "json_keyed", "json_typed", "jsonl", "checksums", "nested", "text"]  # fmt: skip


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pairs=st.lists(st.tuples(type_word, entry), max_size=8),
    shape=st.sampled_from(SHAPES),
    noise=st.lists(st.tuples(st.integers(0, 20), junk), max_size=3),
    extension=st.sampled_from(["dat", "txt", "csv", "json", "te", "jsonl"]),
    hash_type=st.sampled_from([None, None, "pdq", "md5", "url", "url_md5"]),
    skip_invalid=st.booleans(),
)
def test_random_lists_load_or_fail_with_one_clean_line(
    tmp_path, pairs, shape, noise, extension, hash_type, skip_invalid
):
    text = _lines(pairs, shape)
    for at, piece in noise:  # junk spliced in anywhere, shapes broken at random
        cut = min(at * 7, len(text))
        text = text[:cut] + piece + text[cut:]
    path = tmp_path / f"random.{extension}"
    path.write_text(text, encoding="utf-8")
    try:
        load_list(str(path), hash_type=hash_type, skip_invalid=skip_invalid)
    except InputError as error:
        message = str(error)
        assert "\n" not in message
        assert_no_echo(message, [e for _, e in pairs], str(path))


def test_random_list_property_catches_an_echo(tmp_path):
    """The property's check is not vacuous: an 8-character echo is seen."""
    with pytest.raises(AssertionError, match="echoes"):
        assert_no_echo("bad value 0123abcd at line 2", ["ff0123abcdee"])


# -- 4. deep JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000, 200_000])
@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_deeply_nested_json_is_one_line(tmp_path, depth, name):
    path = write(tmp_path, name, "[" * depth + "]" * depth + "\n")
    with pytest.raises(InputError) as caught:
        load_list(path)
    message = str(caught.value)
    assert "too deeply nested" in message and "\n" not in message
    assert message.startswith(path)


def test_deeply_nested_json_through_the_cli(demo_data: DemoData, tmp_path: Path) -> None:
    path = write(tmp_path, "deep.json", '{"hashes": ' + "[" * 3_000 + "]" * 3_000 + "}")
    proc = cli("scan", str(demo_data.webdataset), "--out", str(tmp_path / "run"), "-l", path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "too deeply nested" in proc.stderr and "Traceback" not in proc.stderr


# -- 5. messages name options that exist; --help shows the whole syntax ----------------


def test_messages_name_list_options_as_spelled(tmp_path):
    cases = [
        (write(tmp_path, "a.txt", PDQ[0]), {}, "--list PATH,type=pdq or --list PATH,type=sha256"),
        (write(tmp_path, "h.csv", "id,name\n1,x\n"), {}, "name it with --list PATH,column=C"),
        (write(tmp_path, "m.txt", MD5[0]), {"column": "hash"}, "column= applies to CSV"),
    ]
    for path, options, expected in cases:
        with pytest.raises(InputError) as caught:
            load_list(path, **options)
        assert expected in str(caught.value)
        # Neither --type nor --column exists on any command.
        assert "--type" not in str(caught.value) and "--column" not in str(caught.value)


LIST_SYNTAX_WORDS = ["PATH,K=V[,K=V]", "type=T", "name=N", "version=V", "threshold=T",
                     "column=C", "format=F", "url_md5", "checksums", "l.txt,type=pdq."]  # fmt: skip


@pytest.mark.parametrize("command", ["scan", "match"])
@pytest.mark.parametrize("columns", [80, 120])
def test_help_shows_the_whole_list_syntax(command, columns):
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "clearset.cli", command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"-l, --list\s", line))
    end = next(i for i in range(start + 1, len(lines)) if "--skip-invalid" in lines[i])
    block = lines[start:end]
    assert all(len(line) <= columns for line in lines)
    assert not any("…" in line for line in block), "\n".join(block)
    for word in LIST_SYNTAX_WORDS:
        assert any(word in line for line in block), f"{word!r} not whole in\n" + "\n".join(block)
    assert not any("…" in line for line in lines if "--skip-invalid" in line)


# -- 6. md5sum / sha256sum output --------------------------------------------------------


def test_checksum_output_detected_by_content(tmp_path):
    sha256 = random_hex(4, "sha256", seed=13)
    sha1 = random_hex(2, "sha1", seed=14)
    lines = [f"{v}  images/benign {i}.jpg" for i, v in enumerate(sha256)]
    lines += [f"{v} *binary-{i}.png" for i, v in enumerate(MD5[:3])]
    lines += [f"{sha1[0]}  a,b.jpg", f"\\{sha1[1]}  back\\\\slash.jpg"]
    path = write(tmp_path, "SHA256SUMS", "\n".join(lines) + "\n")
    lists = load_list(path)
    assert [x.hash_type for x in lists] == ["md5", "sha1", "sha256"]
    assert [len(x) for x in lists] == [3, 2, 4]
    assert sorted(r.tobytes().hex() for r in lists[2].hashes) == sorted(sha256)
    # Detected by content whatever the extension; type= still wins.
    txt = write(tmp_path, "sums.txt", "\n".join(lines[:4]) + "\n")
    [sha_list] = load_list(txt)
    assert sha_list.hash_type == "sha256" and len(sha_list) == 4
    [pdq_list] = load_list(txt, hash_type="pdq")
    assert pdq_list.hash_type == "pdq"


def test_checksum_output_errors(tmp_path):
    sha384 = "ab" * 48  # sha384sum output: a length of no registered hash type
    path = write(tmp_path, "sums", f"{MD5[0]}  a.jpg\n{sha384}  b.jpg\n")
    with pytest.raises(InputError, match=r"sums:2: a 96-hex checksum is not MD5, SHA-1"):
        load_list(path)
    [md5_list] = load_list(path, skip_invalid=True)
    assert md5_list.skipped == {"invalid: wrong length": 1}
    # A plain list named .md5 is still a plain list.
    plain = write(tmp_path, "list.md5", "\n".join(MD5) + "\n")
    assert len(load_list(plain)[0]) == len(MD5)


def test_a_header_cell_holding_a_run_of_digits_is_not_shown(tmp_path: Path) -> None:
    # Found by the fuzz test above: junk spliced into a header put a piece of a URL's
    # path ("000000_0") into a header cell, which the error then showed.
    path = write(tmp_path, "r.dat", "type,ha000000_0sh\npdq,abc\n")
    with pytest.raises(InputError, match=r"no hash column in header \(type, 1 more not shown\)"):
        load_list(path)
