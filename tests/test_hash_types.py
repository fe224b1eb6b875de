"""A hash type is one registry entry (`clearset.hashing.types`).

The worked example registers SHA-512 here, in this file alone (one entry and its
function, `hashlib.sha512`), and shows that a scan writes its manifest column, a list
of SHA-512 hashes loads (plain text, CSV with a `sha512` column, `sha512sum` output),
the matcher matches it exactly and the report names it. The conformance test holds
every registered type, built-in or not, to the same contract: its width, a list round
trip through `clearset hash --as-list`, its manifest columns, and a match of a planted
benign item (exact, or by distance).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.documents.report import write_report
from clearset.formats import open_source
from clearset.hashing import hash_bytes, types
from clearset.hashing.types import HashType
from clearset.lists import load_list
from clearset.manifest import manifest_schema
from clearset.matching.matcher import ListSpec, Matcher, MatchSettings
from clearset.runfolder import RunFolder
from clearset.runs import MatchJob, ScanSettings, run_scan
from tests.conftest import cli

# The whole of adding SHA-512 for real: this entry, in clearset/hashing/types.py.
SHA512 = HashType("sha512", 64, "SHA-512", digest=hashlib.sha512, aliases=("sha-512",))

BUILT_IN = [t.name for t in types.all_types() if t.name != SHA512.name]


@pytest.fixture(scope="module", autouse=True)
def sha512() -> Iterator[HashType]:
    """SHA-512 registered for this module's tests only (unless clearset has it already)."""
    if types.lookup(SHA512.name) is not None:
        yield types.get(SHA512.name)
        return
    types.register(SHA512)
    try:
        yield SHA512
    finally:
        types.unregister(SHA512.name)


@pytest.fixture(scope="module")
def pictures(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small folder of benign demo pictures."""
    folder = tmp_path_factory.mktemp("pictures")
    for number in range(4):
        name = f"{number:09d}.jpg"
        shutil.copyfile(demo_data.folder / name, folder / name)
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


# -- the worked example: SHA-512 ---------------------------------------------------------


def test_sha512_is_one_entry_in_every_derived_place() -> None:
    assert types.lookup("SHA-512") == SHA512
    assert "sha512" in manifest_schema().names
    assert manifest_schema().field("sha512").type == pa.binary(64)
    # after the built-in columns: their order (and so old manifests' bytes) is unchanged
    assert manifest_schema().names.index("sha512") > manifest_schema().names.index("pdq")
    assert "sha512" in types.list_type_names() and types.digest_types()[-1] == SHA512
    assert types.label("sha512") == "SHA-512" and types.is_exact("sha512")


def test_sha512_scan_list_match_and_report(pictures: Path, tmp_path: Path) -> None:
    planted = _files(pictures)[1]
    digest = hashlib.sha512(planted.read_bytes()).hexdigest()
    watch = tmp_path / "watch-sha512.txt"
    watch.write_text(f"{digest}\n")
    run = tmp_path / "run"
    # One worker: the tasks run in this process, where SHA-512 is registered. (A type
    # added to clearset/hashing/types.py is registered in every worker by its import.)
    job = MatchJob((ListSpec(str(watch)),), MatchSettings())
    run_scan(open_source(str(pictures)), run, ScanSettings(), workers=1, show_progress=False,
             match=job)  # fmt: skip

    manifest = RunFolder(run).read_manifest()
    rows = {r["member"]: r for r in manifest.to_pylist() if r["member"].endswith(".jpg")}
    for picture in _files(pictures):
        assert rows[picture.name]["sha512"] == hashlib.sha512(picture.read_bytes()).digest()
    # the built-in columns are as they were
    assert rows[planted.name]["sha256"] == hashlib.sha256(planted.read_bytes()).digest()

    matches = pq.read_table(run / "matches").to_pylist()
    assert [(m["member"], m["hash_type"], m["field"], m["distance"]) for m in matches] == [
        (planted.name, "sha512", "sha512", 0)
    ]
    assert matches[0]["entry"] == digest

    report_json, report_html = write_report(run)
    report = json.loads(report_json.read_text())
    assert [entry["hash_type"] for entry in report["lists"]] == ["sha512"]
    html = report_html.read_text()
    assert "SHA-512" in html and "SHA-512, exact" in html


def test_sha512_lists_load_as_text_csv_and_checksums(pictures: Path, tmp_path: Path) -> None:
    digests = [hashlib.sha512(p.read_bytes()).hexdigest() for p in _files(pictures)]
    text = tmp_path / "plain.txt"  # 128 hex: only SHA-512 is that long, no type= needed
    text.write_text("".join(d + "\n" for d in digests))
    table = tmp_path / "hma.csv"
    table.write_text("sha512,tags\n" + "".join(f"{d},demo\n" for d in digests))
    typed = tmp_path / "typed.csv"
    typed.write_text("signal_type,signal_value\n" + "".join(f"sha-512,{d}\n" for d in digests))
    sums = tmp_path / "SHA512SUMS"
    names = [p.name for p in _files(pictures)]
    sums.write_text("".join(f"{d}  {n}\n" for d, n in zip(digests, names, strict=True)))
    expected = sorted(digests)
    for path in (text, table, typed, sums):
        (loaded,) = load_list(str(path))
        assert loaded.hash_type == "sha512", path.name
        assert [row.tobytes().hex() for row in loaded.hashes] == expected, path.name


# -- conformance: every registered type ----------------------------------------------------


def _value_of(hash_type: HashType, picture: Path, url: str) -> bytes:
    """The planted item's hash of this type, computed the way a scan does."""
    if hash_type.computed_from == "url":
        assert hash_type.url_forms is not None
        return hash_type.url_forms(url)[0]
    value = hash_bytes(picture.read_bytes()).value(hash_type.name)
    assert value is not None
    return value


def _manifest_row(picture: Path, url: str) -> pa.Table:
    hashes = hash_bytes(picture.read_bytes())
    row = {
        "key": picture.stem, "shard": "s", "position": 0, "member": picture.name, "url": url,
        "size": hashes.size, **hashes.digests, "pdq": hashes.pdq,
        "pdq_quality": hashes.pdq_quality, "status": hashes.status,
    }  # fmt: skip
    schema = manifest_schema()
    return pa.Table.from_pylist([{n: row.get(n) for n in schema.names}], schema=schema)


@pytest.mark.parametrize("name", [*BUILT_IN, "sha512"])
def test_every_registered_type_conforms(name: str, pictures: Path, tmp_path: Path) -> None:
    hash_type = types.get(name)
    picture = _files(pictures)[2]
    url = f"https://example.com/{picture.name}"
    value = _value_of(hash_type, picture, url)
    assert len(value) == hash_type.width

    # its manifest columns are there, and the matcher reads the ones it is matched on
    names = manifest_schema().names
    assert all(column.name in names for column in hash_type.manifest_columns)
    assert all(field in names for field in hash_type.match_fields)

    # a list round trip: `clearset hash --as-list` for a file's hashes, else a typed list
    listed = tmp_path / "list.csv"
    if hash_type.of_file:
        for fmt, out in (("threatexchange", tmp_path / "list.te"), ("csv", listed)):
            done = cli("hash", "--as-list", fmt, "--type", name, str(picture), "-o", str(out))
            assert done.returncode == 0, done.stderr
            (loaded,) = load_list(str(out))
            assert (loaded.hash_type, loaded.hashes.tobytes()) == (name, value), fmt
    else:
        listed.write_text(f"signal_type,signal_value\n{name},{value.hex()}\n")
        (loaded,) = load_list(str(listed))
        assert (loaded.hash_type, loaded.hashes.tobytes()) == (name, value)

    # a planted benign item matches: exactly, or within the type's default distance
    entry = bytearray(value)
    if not hash_type.exact:
        assert hash_type.default_threshold is not None
        entry[0] ^= 0b111  # 3 bits off: still a match by distance
    listed.write_text(f"signal_type,signal_value\n{name},{bytes(entry).hex()}\n")
    (hash_list,) = load_list(str(listed))
    found = Matcher([hash_list]).match_table(_manifest_row(picture, url)).to_pylist()
    assert len(found) == 1 and found[0]["hash_type"] == name
    assert found[0]["distance"] == (0 if hash_type.exact else 3)
    assert found[0]["entry"] == bytes(entry).hex()
    assert types.label(name) == hash_type.label


def test_registry_refuses_a_name_taken_twice() -> None:
    with pytest.raises(ValueError, match="already"):
        types.register(HashType("sha-512x", 64, "X", digest=hashlib.sha512, aliases=("sha512",)))
    with pytest.raises(ValueError, match="needs `digest`"):
        HashType("nodigest", 8, "N")


def test_byte_digests_are_one_pass_and_equal_hashlib(pictures: Path) -> None:
    data = _files(pictures)[0].read_bytes()
    stream = types.ByteDigests()
    for start in range(0, len(data), 1000):
        stream.update(data[start : start + 1000])
    assert stream.size == len(data)
    assert stream.result() == types.digests_of(data)
    assert list(stream.result()) == [t.name for t in types.byte_types()]
    for name, digest in stream.result().items():
        assert digest == hashlib.new(name, data).digest()
    assert np.frombuffer(stream.result()["sha256"], np.uint8).shape == (32,)
