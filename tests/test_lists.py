"""Tests for clearset.lists: every format, every validation error, identity, lookup.

All hashes are random bytes from a seeded generator: benign by construction.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import fsspec
import numpy as np
import pytest

from clearset.errors import InputError
from clearset.lists import FORMATS, HASH_BYTES, HashList, list_digest, load_list, url_sha256
from clearset.lists.collect import MAX_WARNINGS, EntryCollector, decode_hex_block
from clearset.lists.model import sort_unique, to_hex_rows


def random_hex(count: int, hash_type: str, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (count, HASH_BYTES[hash_type]), dtype=np.uint8)
    return [bytes(row).hex() for row in rows]


def packed(hex_values: list[str]) -> np.ndarray:
    return np.array([list(bytes.fromhex(v)) for v in hex_values], dtype=np.uint8)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def only(lists: list[HashList]) -> HashList:
    assert len(lists) == 1
    return lists[0]


def assert_holds(hash_list: HashList, hex_values: list[str]) -> None:
    expected = sorted({v.lower() for v in hex_values})
    assert [bytes(row).hex() for row in hash_list.hashes] == expected
    assert hash_list.identity.entries == len(expected)


PDQ = random_hex(50, "pdq", seed=1)
MD5 = random_hex(30, "md5", seed=2)
SHA1 = random_hex(20, "sha1", seed=3)
SHA256 = random_hex(10, "sha256", seed=4)


# -- formats ---------------------------------------------------------------------------


def test_plain_text_comments_blanks_whitespace_case(tmp_path):
    lines = ["# a comment", "", "   "] + [f"  {v.upper()}\t" for v in MD5[:5]] + MD5[5:]
    path = write(tmp_path, "known.txt", "\r\n".join(lines) + "\r\n")
    hash_list = only(load_list(path))
    assert hash_list.hash_type == "md5"
    assert hash_list.identity.name == "known"
    assert_holds(hash_list, MD5)


def test_plain_text_without_final_newline_and_inferred_sha1(tmp_path):
    path = write(tmp_path, "l.txt", "\n".join(SHA1))
    assert_holds(only(load_list(path)), SHA1)


def test_plain_text_mixed_lengths_splits_by_type(tmp_path):
    path = write(tmp_path, "mixed.txt", "\n".join(MD5 + SHA1) + "\n")
    md5_list, sha1_list = load_list(path, name="mixed-list", version="7")
    assert (md5_list.hash_type, sha1_list.hash_type) == ("md5", "sha1")
    assert md5_list.identity.name == sha1_list.identity.name == "mixed-list"
    assert_holds(md5_list, MD5)
    assert_holds(sha1_list, SHA1)


def test_threatexchange_mixed_file_splits_per_type(tmp_path):
    lines = [f"pdq {v}" for v in PDQ] + [f"video_md5 {v}" for v in MD5[:10]]
    lines += [f"PHOTO_MD5 {v}" for v in MD5[10:]] + [f"sha256 {v} extra fields" for v in SHA256]
    lines += ["# comment", "vpdq 0123,4567"]
    path = write(tmp_path, "signals.txt", "\n".join(lines) + "\n")
    lists = load_list(path)
    assert [x.hash_type for x in lists] == ["pdq", "md5", "sha256"]
    assert_holds(lists[0], PDQ)
    # video_md5 is the MD5 of a video file; vpdq, to a caller that takes no video list
    # (`videos=`), is counted and named as a type it cannot match.
    assert_holds(lists[1], MD5)
    assert_holds(lists[2], SHA256)
    assert any("1 vpdq entries skipped" in w for w in lists[0].warnings)
    assert lists[0].skipped == {"unsupported: vpdq": 1}
    assert lists[1].skipped == lists[2].skipped == {}


def test_threatexchange_with_hash_type_keeps_only_that_type(tmp_path):
    lines = [f"pdq {v}" for v in PDQ] + [f"md5 {v}" for v in MD5]
    path = write(tmp_path, "signals.te", "\n".join(lines) + "\n")
    hash_list = only(load_list(path, hash_type="pdq"))
    assert_holds(hash_list, PDQ)
    assert any(f"{len(MD5)} md5 entries ignored" in w for w in hash_list.warnings)


@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("signal_type,signal_value,tags", "{t},{v},a;b"),
        ("id,hash_type,hash_value", "17,{t},{v}"),
        ("indicator_type,indicator", "HASH_{T},{v}"),
        ("Type,Hash", "{t},{v}"),
    ],
)
def test_csv_threatexchange_and_hma_shapes(tmp_path, header, row):
    rows = [row.format(t="pdq", T="PDQ", v=v) for v in PDQ]
    rows += [row.format(t="md5", T="MD5", v=v) for v in MD5]
    path = write(tmp_path, "export.csv", header + "\n" + "\n".join(rows) + "\n")
    pdq_list, md5_list = load_list(path)
    assert_holds(pdq_list, PDQ)
    assert_holds(md5_list, MD5)


def test_tsv_one_column_per_type(tmp_path):
    rows = [f"{i}\t{m}\t{s}" for i, (m, s) in enumerate(zip(MD5, SHA1, strict=False))]
    rows.append(f"99\t{MD5[-1]}\t")  # an empty cell is no entry
    path = write(tmp_path, "hashes.tsv", "id\tmd5\tsha1\n" + "\n".join(rows) + "\n")
    md5_list, sha1_list = load_list(path)
    assert_holds(md5_list, MD5[: len(SHA1)] + [MD5[-1]])
    assert_holds(sha1_list, SHA1)


def test_csv_named_column_and_type_from_column_name(tmp_path):
    rows = [f"x{i},{v}" for i, v in enumerate(PDQ)]
    path = write(tmp_path, "l.csv", "name,pdq_hash\n" + "\n".join(rows) + "\n")
    assert_holds(only(load_list(path, column="PDQ_HASH")), PDQ)
    path = write(tmp_path, "m.csv", "name,checksum\n" + "\n".join(rows) + "\n")
    assert_holds(only(load_list(path, column="checksum", hash_type="pdq")), PDQ)


def test_json_shapes(tmp_path):
    shapes = {
        "strings.json": MD5,
        "objects.json": [{"hash": v, "type": "md5", "id": i} for i, v in enumerate(MD5)],
        "wrapped.json": {"name": "x", "hashes": MD5},
        "one_array.json": {"version": 3, "whatever": [{"signal_value": v} for v in MD5]},
        "by_type.json": {"md5": MD5},
    }
    digests = set()
    for file_name, document in shapes.items():
        path = write(tmp_path, file_name, json.dumps(document))
        hash_list = only(load_list(path))
        assert_holds(hash_list, MD5)
        digests.add(hash_list.identity.digest)
    assert len(digests) == 1


def test_json_mixed_types_and_jsonl(tmp_path):
    document = {"pdq": PDQ, "sha1": SHA1}
    pdq_list, sha1_list = load_list(write(tmp_path, "l.json", json.dumps(document)))
    assert_holds(pdq_list, PDQ)
    assert_holds(sha1_list, SHA1)
    lines = [json.dumps({"signal_type": "pdq", "signal_value": v}) for v in PDQ]
    lines += [json.dumps(v) for v in SHA1] + [""]
    pdq_list, sha1_list = load_list(write(tmp_path, "l.jsonl", "\n".join(lines)))
    assert_holds(pdq_list, PDQ)
    assert_holds(sha1_list, SHA1)


def test_format_detected_by_content_when_extension_says_nothing(tmp_path):
    cases = {
        "a": "\n".join(MD5),
        "b": "# te\n" + "\n".join(f"md5 {v}" for v in MD5),
        "c": "hash\n" + "\n".join(MD5),
        "d": json.dumps(MD5),
    }
    for file_name, text in cases.items():
        assert_holds(only(load_list(write(tmp_path, file_name, text))), MD5)


@pytest.mark.parametrize("list_format", FORMATS, ids=lambda f: f.name)
def test_every_format_conforms(tmp_path, list_format):
    """Each registered format reads the same typed entries to the same identity."""
    typed = [("md5", v) for v in MD5] + [("sha1", v) for v in SHA1]
    text = {
        "text": "\n".join(v for _, v in typed),
        "threatexchange": "\n".join(f"{t} {v}" for t, v in typed),
        "csv": "signal_type,signal_value\n" + "\n".join(f"{t},{v}" for t, v in typed),
        "tsv": "signal_type\tsignal_value\n" + "\n".join(f"{t}\t{v}" for t, v in typed),
        "json": json.dumps([{"type": t, "hash": v} for t, v in typed]),
        "jsonl": "\n".join(json.dumps({"type": t, "hash": v}) for t, v in typed),
        "checksums": "\n".join(f"{v}  image-{i}.jpg" for i, (_, v) in enumerate(typed)),
    }[list_format.name]
    path = write(tmp_path, "list.dat", text)
    md5_list, sha1_list = load_list(path, fmt=list_format.name, version="v1")
    assert_holds(md5_list, MD5)
    assert_holds(sha1_list, SHA1)
    assert md5_list.identity.digest == list_digest("md5", packed(sorted(MD5)))
    assert md5_list.identity.version == "v1"


def test_fsspec_memory_url_and_gzip(tmp_path):
    url = f"memory://lists/{uuid.uuid4().hex}/known.txt"
    with fsspec.open(url, "w") as out:
        out.write("\n".join(PDQ))
    hash_list = only(load_list(url, hash_type="pdq"))
    assert_holds(hash_list, PDQ)
    assert hash_list.identity.source == url
    assert hash_list.identity.name == "known"
    path = tmp_path / "known.csv.gz"
    path.write_bytes(gzip.compress(("md5\n" + "\n".join(MD5)).encode()))
    hash_list = only(load_list(str(path)))
    assert_holds(hash_list, MD5)
    assert hash_list.identity.name == "known"


def test_url_lists(tmp_path):
    urls = ["https://example.com/a.jpg", "http://example.org/b?x=1#frag", "s3://bucket/c.png"]
    pre_hashed = hashlib.sha256(b"https://example.net/d.jpg").hexdigest()
    path = write(tmp_path, "urls.txt", "\n".join([f"  {u} " for u in urls] + [pre_hashed]))
    hash_list = only(load_list(path, hash_type="url"))
    expected = [url_sha256(u).hex() for u in urls] + [pre_hashed]
    assert_holds(hash_list, expected)
    assert url_sha256(" https://example.com/a.jpg\n") == hashlib.sha256(urls[0].encode()).digest()
    # Untyped lines that are URLs are inferred as a url list.
    assert_holds(only(load_list(write(tmp_path, "u2.txt", "\n".join(urls)))), expected[:3])
    path = write(tmp_path, "u3.csv", "type,value\n" + "\n".join(f"uri,{u}" for u in urls))
    assert_holds(only(load_list(path)), expected[:3])


# -- validation ------------------------------------------------------------------------

BAD_LINES = [
    ("md5", "0123456789abcdef0123456789abcde", "md5 hash must be 32 hex characters, got 31"),
    ("md5", "0123456789abcdefg123456789abcdef", "non-hex character 'g' at position 17"),
    ("md5", "0123456789ab def0123456789abcdef", "non-hex character whitespace at position 13"),
    ("pdq", "0" * 64, "all-zero pdq value"),
    ("pdq", "F" * 64, "all-ones pdq value"),
    ("pdq", "ab" * 31, "pdq hash must be 64 hex characters, got 62"),
    ("url", "not a url", "neither a URL"),
]


@pytest.mark.parametrize(("hash_type", "bad", "problem"), BAD_LINES)
def test_malformed_line_names_file_line_and_problem(tmp_path, hash_type, bad, problem):
    good = random_hex(3, hash_type if hash_type != "url" else "sha256", seed=9)
    path = write(tmp_path, "bad-list.txt", "# header\n" + "\n".join([*good, bad]) + "\n")
    with pytest.raises(InputError) as caught:
        load_list(path, hash_type=hash_type)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: ")
    assert problem in message
    assert bad.strip().lower() not in message.lower()  # the entry itself is never echoed


@pytest.mark.parametrize("list_format", ["threatexchange", "csv"])
def test_malformed_line_in_typed_formats(tmp_path, list_format):
    if list_format == "csv":
        text = "signal_type,signal_value\n" + f"md5,{MD5[0]}\nmd5,{MD5[1][:-2]}\n"
    else:
        text = f"md5 {MD5[0]}\nmd5 {MD5[1][:-2]}\n"
    path = write(tmp_path, "t.dat", text)
    line = 3 if list_format == "csv" else 2
    with pytest.raises(InputError, match=rf"t\.dat:{line}: md5 hash must be 32 hex"):
        load_list(path, fmt=list_format)


def test_unknown_signal_type_and_bad_threatexchange_line(tmp_path):
    path = write(tmp_path, "t.te", f"md5 {MD5[0]}\nfoo {MD5[1]}\n")
    with pytest.raises(InputError, match=r"t\.te:2: unknown signal type 'foo'"):
        load_list(path)
    path = write(tmp_path, "u.te", f"md5 {MD5[0]}\n{MD5[1]}\n")
    with pytest.raises(InputError, match=r"u\.te:2: expected '<signal_type> <hash>'"):
        load_list(path)


def test_untyped_lengths(tmp_path):
    path = write(tmp_path, "l.txt", "\n".join(MD5[:2] + ["abcdef"]))
    # The lengths come from the hash type registry: one registered later is listed too.
    lengths = r"expected 32 \(MD5\), 40 \(SHA-1\)(,| or) 64 \(PDQ/SHA-256\)"
    with pytest.raises(InputError, match=rf"l\.txt:3: {lengths}"):
        load_list(path)


def test_64_hex_is_never_guessed(tmp_path):
    path = write(tmp_path, "ambiguous.txt", "# x\n" + "\n".join(PDQ))
    for skip_invalid in (False, True):
        with pytest.raises(InputError) as caught:
            load_list(path, skip_invalid=skip_invalid)
        assert str(caught.value) == (
            f"{path}:2: 64-hex entries could be PDQ or SHA-256: declare which "
            "(--list PATH,type=pdq or --list PATH,type=sha256)"
        )
    pdq_list = only(load_list(path, hash_type="pdq"))
    sha_list = only(load_list(path, hash_type="sha256"))
    assert pdq_list.hashes.tolist() == sha_list.hashes.tolist()
    assert pdq_list.identity.digest != sha_list.identity.digest  # the type is part of it


def test_skip_invalid_counts_and_warns(tmp_path):
    bad = ["0" * 64, "xyz", "ab" * 31, "F" * 64]
    path = write(tmp_path, "l.txt", "\n".join(PDQ[:10] + bad + PDQ[10:]))
    hash_list = only(load_list(path, hash_type="pdq", skip_invalid=True))
    assert_holds(hash_list, PDQ)
    assert hash_list.invalid_skipped == len(bad)
    assert len(hash_list.warnings) == len(bad)
    assert all(w.startswith(f"{path}:1") for w in hash_list.warnings)


def test_warnings_are_capped(tmp_path):
    path = write(tmp_path, "l.txt", "\n".join(MD5[:1] + ["zz"] * (MAX_WARNINGS + 50)))
    hash_list = only(load_list(path, skip_invalid=True))
    assert hash_list.invalid_skipped == MAX_WARNINGS + 50
    assert len(hash_list.warnings) == MAX_WARNINGS


def test_empty_lists_are_errors(tmp_path):
    with pytest.raises(InputError, match=r"empty\.txt: no valid hash entries"):
        load_list(write(tmp_path, "empty.txt", "# only a comment\n\n"))
    with pytest.raises(InputError, match=r"skipped: 2 non-hex character \(invalid\)"):
        load_list(write(tmp_path, "bad.txt", "zz\nyy\n"), skip_invalid=True)


def test_unreadable_and_malformed_files(tmp_path):
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(InputError, match=r"missing\.txt: no such file"):
        load_list(missing)
    with pytest.raises(InputError, match=r"is a directory"):
        load_list(str(tmp_path), fmt="text")
    with pytest.raises(InputError, match=r"bad\.json:2: not valid JSON"):
        load_list(write(tmp_path, "bad.json", '[\n"abc",,]'))
    with pytest.raises(
        InputError, match=r"h\.csv:1: no hash column in header \(2 more not shown\); .*column=C"
    ):
        load_list(write(tmp_path, "h.csv", "id,name\n1,x\n"))
    headerless = write(tmp_path, "n.csv", f"{MD5[0]},x\n{MD5[1]},y\n")
    with pytest.raises(InputError, match=r"n\.csv:1: first line looks like a hash") as caught:
        load_list(headerless)
    assert MD5[0] not in str(caught.value)
    with pytest.raises(InputError, match=r"no column 'nope'"):
        load_list(write(tmp_path, "c.csv", "hash\n" + MD5[0]), column="nope")
    with pytest.raises(InputError, match=r"unknown list format 'xml'"):
        load_list(headerless, fmt="xml")
    with pytest.raises(InputError, match=r"unknown hash type 'crc32'"):
        load_list(headerless, hash_type="crc32")
    with pytest.raises(InputError, match=r"\$\.hashes\[1\]: expected a hash string"):
        load_list(write(tmp_path, "o.json", json.dumps({"hashes": [MD5[0], 5]})))


# -- duplicates, identity, thresholds --------------------------------------------------


def test_duplicates_folded_and_counted(tmp_path):
    lines = MD5 + [v.upper() for v in MD5[:7]] + MD5[:3]
    hash_list = only(load_list(write(tmp_path, "d.txt", "\n".join(lines))))
    assert_holds(hash_list, MD5)
    assert hash_list.duplicates_folded == 10


def test_identity_is_stable_across_order_case_format_and_version(tmp_path):
    shuffled = list(reversed(PDQ))
    a = only(load_list(write(tmp_path, "a.txt", "\n".join(PDQ)), hash_type="pdq", version="1"))
    b = only(
        load_list(
            write(tmp_path, "b.txt", "\n".join(v.upper() for v in shuffled + PDQ[:4])),
            hash_type="pdq",
            version="2",
        )
    )
    c = only(load_list(write(tmp_path, "c.te", "\n".join(f"pdq {v}" for v in shuffled))))
    assert a.identity.digest == b.identity.digest == c.identity.digest
    assert (a.identity.version, b.identity.version) == ("1", "2")
    assert a.identity != b.identity
    d = only(load_list(write(tmp_path, "d.txt", "\n".join(PDQ[1:])), hash_type="pdq"))
    assert d.identity.digest != a.identity.digest
    # The documented canonical form, computed independently of the loader.
    canonical = "clearset-hashlist-v1 pdq\n" + "".join(f"{v}\n" for v in sorted(PDQ))
    assert a.identity.digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert a.identity.to_dict() == {
        "name": "a",
        "version": "1",
        "digest": a.identity.digest,
        "hash_type": "pdq",
        "entries": len(PDQ),
        "source": a.identity.source,
    }


def test_threshold_only_for_pdq(tmp_path):
    lines = [f"pdq {v}" for v in PDQ] + [f"md5 {v}" for v in MD5]
    pdq_list, md5_list = load_list(write(tmp_path, "l.te", "\n".join(lines)), threshold=20)
    assert (pdq_list.threshold, md5_list.threshold) == (20, None)
    md5_only = write(tmp_path, "m.txt", "\n".join(MD5))
    with pytest.raises(InputError, match="threshold applies only to PDQ"):
        load_list(md5_only, threshold=20)
    with pytest.raises(InputError, match="threshold must be 0..256"):
        load_list(md5_only, threshold=300)


# -- the fast paths against their references ------------------------------------------


@pytest.mark.parametrize("hash_type", ["md5", "sha1", "pdq"])
def test_contains_matches_a_python_set(hash_type):
    rng = np.random.default_rng(42)
    width = HASH_BYTES[hash_type]
    rows = rng.integers(0, 256, (5000, width), dtype=np.uint8)
    # Entries sharing their first 8 bytes exercise the tie path of the lookup.
    rows[:300, :8] = rows[0, :8]
    collector = EntryCollector("generated", hash_type=hash_type, skip_invalid=False)
    collector._packed[hash_type].append(rows)
    hash_list = only(collector.finish(name="g", version=None, threshold=None))
    reference = {bytes(row) for row in rows}
    queries = np.concatenate(
        [rows[rng.integers(0, 5000, 2000)], rng.integers(0, 256, (2000, width), dtype=np.uint8)]
    )
    queries[-200:, :8] = rows[0, :8]  # misses that tie on the first 8 bytes
    queries[-100:] = rows[:100]
    expected = np.array([bytes(q) in reference for q in queries])
    assert (hash_list.contains(queries) == expected).all()
    assert expected.sum() > 2000
    assert hash_list.contains(rows[5]).tolist() == [True]
    assert hash_list.contains(queries[:0]).shape == (0,)
    with pytest.raises(ValueError):
        hash_list.contains(np.zeros((2, width + 1), dtype=np.uint8))


def test_sort_unique_matches_python_sorted_set():
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 4, (3000, 20), dtype=np.uint8)  # small alphabet: many ties
    rows[::3, :8] = 1
    unique, repeats = sort_unique(rows)
    reference = sorted({bytes(row) for row in rows})
    assert [bytes(row) for row in unique] == reference
    assert repeats == len(rows) - len(reference)


def test_vectorised_decode_matches_bytes_fromhex():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    text = to_hex_rows(rows)
    text[::2] = np.char.upper(text[::2].view("S64")).view(np.uint8).reshape(-1, 64)
    alphabet = np.frombuffer(b"gG/:@`xz \x00\xff-", np.uint8)
    broken = rng.choice(500, 60, replace=False)
    text[broken, rng.integers(0, 64, 60)] = rng.choice(alphabet, 60)
    decoded, bad = decode_hex_block(text)
    for row, line, is_bad in zip(decoded, text, bad, strict=True):
        try:
            assert bytes(row) == bytes.fromhex(bytes(line).decode("latin-1")) and not is_bad
        except ValueError:
            assert is_bad
    assert bad.sum() == 60


def test_chunked_reading_agrees_with_per_line_path(tmp_path, monkeypatch):
    """Lines cut across chunk borders, odd lines amid good ones: same list as line by line."""
    import clearset.lists.formats as formats

    monkeypatch.setattr(formats, "TEXT_CHUNK_BYTES", 1000)
    good = random_hex(400, "pdq", seed=11)
    lines = []
    for i, value in enumerate(good):
        lines.append(value if i % 7 else f"  {value.upper()}  ")
        if i % 50 == 0:
            lines.append("# note")
    path = write(tmp_path, "l.txt", "\n".join(lines))
    fast = only(load_list(path, hash_type="pdq"))
    collector = EntryCollector(path, hash_type="pdq", skip_invalid=False)
    for number, line in enumerate(lines, start=1):
        collector.add_text_line(line.encode(), number, typed=False)
    slow = only(collector.finish(name="l", version=None, threshold=None))
    assert fast.identity == slow.identity
    assert np.array_equal(fast.hashes, slow.hashes)
    bad = lines.copy()
    bad[333] = bad[333][:-1]
    with pytest.raises(InputError, match=r"l2\.txt:334: pdq hash must be 64"):
        load_list(write(tmp_path, "l2.txt", "\n".join(bad)), hash_type="pdq")
