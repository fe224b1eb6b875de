"""Hash lists once per machine: a Matcher saved as flat arrays and reopened memory-mapped
matches exactly as a freshly built one, on every list type; its arrays are read-only maps;
racing writers end with one complete folder; a changed list never reuses a folder; a
damaged folder is refused with one line."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clearset.errors import OutputError, RunFolderError
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.lists.model import HashList, ListIdentity, list_digest, sort_unique, url_sha256
from clearset.matching import shared
from clearset.matching.matcher import Matcher, MatchSettings
from clearset.matching.shared import (
    SHARED_JSON,
    matcher_key,
    open_matcher,
    save_matcher,
    shared_matcher,
)

ROWS = 400


def flip_bits(rng: np.random.Generator, hashes: np.ndarray, bits: int) -> np.ndarray:
    """Each hash with `bits` distinct random bits flipped."""
    ranks = np.argsort(np.argsort(rng.random((len(hashes), 256)), axis=1), axis=1)
    return hashes ^ np.packbits(ranks < bits, axis=1)


def make_list(
    hash_type: str, rows: np.ndarray, name: str, threshold: int | None = None
) -> HashList:
    hashes, folded = sort_unique(np.ascontiguousarray(rows, dtype=np.uint8))
    identity = ListIdentity(
        name=name,
        version="2024-01",
        digest=list_digest(hash_type, hashes),
        hash_type=hash_type,
        entries=len(hashes),
        source=f"/lists/{name}.txt",
    )
    return HashList(
        identity,
        hashes,
        duplicates_folded=folded,
        invalid_skipped=1,
        threshold=threshold,
        warnings=["line 3: not hex"],
        skipped={"invalid: non-hex character": 1},
    )


def build(seed: int = 7, pdq_entries: int = 20_000) -> tuple[list[HashList], pa.Table]:
    """Lists of every type and a manifest with planted near and exact copies of entries."""
    rng = np.random.default_rng(seed)
    pdq = rng.integers(0, 256, (pdq_entries, 32), dtype=np.uint8)
    # Near-duplicates in the list, so that an item is within reach of several entries.
    pdq[1:50] = flip_bits(rng, pdq[:49], 3)
    item_pdq = rng.integers(0, 256, (ROWS, 32), dtype=np.uint8)
    planted = rng.choice(pdq_entries, 240, replace=False)
    item_pdq[:240] = pdq[planted]  # 0..39 stay exact copies
    for start, bits in ((40, 5), (80, 20), (120, 30), (160, 31), (200, 32)):
        item_pdq[start : start + 40] = flip_bits(rng, pdq[planted[start : start + 40]], bits)
    trimmed = rng.integers(0, 256, (ROWS, 32), dtype=np.uint8)
    trimmed[200:260] = flip_bits(rng, pdq[rng.choice(pdq_entries, 60)], 12)
    dihedral = rng.integers(0, 256, (ROWS, len(DIHEDRAL_NAMES) - 1, 32), dtype=np.uint8)
    dihedral[260:330, 2] = flip_bits(rng, pdq[rng.choice(pdq_entries, 70)], 9)
    quality = np.where(np.arange(ROWS) % 17 == 0, 20, 90)  # some too low to match

    md5 = rng.integers(0, 256, (ROWS, 16), dtype=np.uint8)
    sha1 = rng.integers(0, 256, (ROWS, 20), dtype=np.uint8)
    sha256 = rng.integers(0, 256, (ROWS, 32), dtype=np.uint8)
    upstream_sha256 = rng.integers(0, 256, (ROWS, 32), dtype=np.uint8)
    urls = [f"https://example.org/images/{i}.jpg" for i in range(ROWS)]

    def extra(width: int, count: int) -> np.ndarray:
        return rng.integers(0, 256, (count, width), dtype=np.uint8)

    url_md5 = np.frombuffer(
        b"".join(hashlib.md5(u.removeprefix("https://").encode()).digest() for u in urls[::9]),
        dtype=np.uint8,
    ).reshape(-1, 16)
    lists = [
        make_list("pdq", pdq, "pdq-default"),
        make_list("pdq", pdq[::3], "pdq-wide", threshold=48),  # the brute-force kernel
        make_list("pdq", pdq[::7], "pdq-tight", threshold=6),
        make_list("md5", np.vstack([md5[::5], extra(16, 3000)]), "md5"),
        make_list("sha1", np.vstack([sha1[::6], extra(20, 100)]), "sha1"),
        make_list(
            "sha256", np.vstack([sha256[::4], upstream_sha256[1::8], extra(32, 500)]), "sha256"
        ),
        make_list(
            "url",
            np.frombuffer(b"".join(url_sha256(u) for u in urls[::7]), np.uint8).reshape(-1, 32),
            "urls",
        ),
        make_list("url_md5", url_md5, "url-md5"),
        make_list("md5", np.empty((0, 16), np.uint8), "md5-empty"),
        make_list("pdq", np.empty((0, 32), np.uint8), "pdq-empty"),
    ]
    manifest = pa.Table.from_pydict(
        {
            "key": [f"{i:06d}" for i in range(ROWS)],
            "shard": [f"{i // 100:05d}" for i in range(ROWS)],
            "position": list(range(ROWS)),
            "member": [f"{i:06d}.jpg" for i in range(ROWS)],
            "url": urls,
            "sha256": [r.tobytes() for r in sha256],
            "md5": [r.tobytes() for r in md5],
            "sha1": [r.tobytes() for r in sha1],
            "pdq": [r.tobytes() for r in item_pdq],
            "pdq_quality": quality.tolist(),
            "pdq_trimmed": [r.tobytes() if i % 3 else None for i, r in enumerate(trimmed)],
            "pdq_trimmed_quality": quality.tolist(),
            "pdq_dihedral": [r.tobytes() for r in dihedral],
            "upstream_md5": [None] * ROWS,
            "upstream_sha256": [r.tobytes().hex() for r in upstream_sha256],
        }
    )
    return lists, manifest


@pytest.fixture(scope="module")
def lists_and_manifest() -> tuple[list[HashList], pa.Table]:
    return build()


def fresh(lists: list[HashList], settings: MatchSettings | None = None) -> Matcher:
    return Matcher(list(lists), settings)


def test_opened_matcher_matches_exactly_as_a_fresh_one(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, manifest = lists_and_manifest
    settings = MatchSettings(pdq_threshold=31, min_quality=50)
    folder = tmp_path / "index"
    save_matcher(fresh(lists, settings), folder)
    opened = open_matcher(folder)
    expected = fresh(lists, settings).match_table(manifest)
    got = opened.match_table(manifest)
    assert got.equals(expected)
    # The comparison means something only if every kind of match is in it.
    by_list = {}
    for row in expected.to_pylist():
        by_list.setdefault(row["list_name"], set()).add((row["field"], row["rotation"]))
    assert set(by_list) == {
        "pdq-default", "pdq-wide", "pdq-tight", "md5", "sha1", "sha256", "urls", "url-md5"
    }  # fmt: skip
    assert any(rotation not in (None, "original") for _, rotation in by_list["pdq-default"])
    assert ("pdq_trimmed", None) in by_list["pdq-default"]
    assert ("upstream_sha256", None) in by_list["sha256"]
    # Everything a run records about the lists comes back too.
    for before, after in zip(lists, opened.lists, strict=True):
        assert after.identity == before.identity
        assert (after.threshold, after.skipped, after.warnings) == (
            before.threshold,
            before.skipped,
            before.warnings,
        )
        assert (after.duplicates_folded, after.invalid_skipped) == (
            before.duplicates_folded,
            before.invalid_skipped,
        )
    assert opened.settings == settings


@pytest.mark.parametrize("threshold", [0, 16, 31, 40, 70])
def test_opened_matcher_at_other_thresholds(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path, threshold: int
) -> None:
    lists, manifest = lists_and_manifest
    settings = MatchSettings(pdq_threshold=threshold, min_quality=0)
    folder = tmp_path / "index"
    save_matcher(fresh(lists[:1], settings), folder)
    expected = fresh(lists[:1], settings).match_table(manifest)
    assert open_matcher(folder).match_table(manifest).equals(expected)
    assert expected.num_rows > 0


def test_a_matcher_that_built_its_indexes_saves_the_same_arrays(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, manifest = lists_and_manifest
    used = fresh(lists)
    used.match_table(manifest)  # builds its PDQ indexes in memory
    save_matcher(used, tmp_path / "from-memory")
    save_matcher(fresh(lists), tmp_path / "into-files")
    names = sorted(p.name for p in (tmp_path / "into-files").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "from-memory").iterdir())
    assert any(name.endswith("-pdq-rows.npy") for name in names)
    for name in names:
        if name.endswith(".npy"):
            assert np.array_equal(
                np.load(tmp_path / "from-memory" / name), np.load(tmp_path / "into-files" / name)
            ), name


def test_opened_arrays_are_read_only_maps_shared_with_the_index(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, _ = lists_and_manifest
    save_matcher(fresh(lists), tmp_path / "index")
    opened = open_matcher(tmp_path / "index")
    pdq_list, md5_list = opened.lists[0], opened.lists[3]
    index = opened._indexes[0]
    for array in (
        pdq_list.hashes,
        md5_list.hashes,
        md5_list._first_keys,
        index.arrays["offsets"],
        index.arrays["rows"],
    ):
        assert isinstance(array, np.memmap)
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    # The index searches the list's own mapped entries: one mapping, not two.
    assert index.arrays["entries"] is pdq_list.hashes
    # Nothing was built: every PDQ list with entries came with its index.
    assert set(opened._indexes) == {0, 1, 2}


def test_folder_is_private_and_named_unlike_outputs(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, _ = lists_and_manifest
    matcher = shared_matcher(fresh(lists), tmp_path)
    folders = list(tmp_path.iterdir())
    assert [f.name for f in folders] == [f"list-index-{matcher_key(matcher)}"]
    assert folders[0].stat().st_mode & 0o077 == 0, "the list's entries: owner only"
    suffixes = {p.suffix for p in folders[0].iterdir()}
    assert suffixes == {".npy", ".json"}
    assert not any(p.name in ("run.json", "matches.parquet") for p in folders[0].iterdir())


def _race_writer(folder: str, barrier: multiprocessing.synchronize.Barrier, out: str) -> None:
    lists, manifest = build(pdq_entries=200_000)
    matcher = Matcher(lists)
    barrier.wait()
    save_matcher(matcher, Path(folder))
    table = open_matcher(Path(folder)).match_table(manifest)
    Path(out).write_text(json.dumps(table.to_pylist(), default=lambda b: b.hex()))


def test_two_processes_saving_one_folder_end_with_one_complete_folder(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    folder = root / "index"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outs = [tmp_path / f"out-{n}.json" for n in range(2)]
    writers = [
        context.Process(target=_race_writer, args=(str(folder), barrier, str(out))) for out in outs
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert [w.exitcode for w in writers] == [0, 0]
    assert [p.name for p in root.iterdir()] == ["index"], "a writer left its copy behind"
    lists, manifest = build(pdq_entries=200_000)
    expected = fresh(lists).match_table(manifest).to_pylist()
    expected_json = json.loads(json.dumps(expected, default=lambda b: b.hex()))
    assert expected_json
    for out in outs:
        assert json.loads(out.read_text()) == expected_json
    open_matcher(folder, verify=True)


def test_the_loser_of_a_race_keeps_the_winners_folder(
    lists_and_manifest: tuple[list[HashList], pa.Table],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lists, manifest = lists_and_manifest
    folder = tmp_path / "index"
    save_matcher(fresh(lists), folder)
    winner = open_matcher(folder)  # a worker already using the winner's maps
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}
    # The loser looked before the winner's rename: it writes a whole copy, then loses.
    monkeypatch.setattr(shared, "_present", lambda folder: False)
    renamed: list[OSError] = []
    real_rename = os.rename

    def rename(source: Path, dest: Path) -> None:
        try:
            real_rename(source, dest)
        except OSError as exc:
            renamed.append(exc)
            raise

    monkeypatch.setattr(shared.os, "rename", rename)
    save_matcher(fresh(lists), folder)
    assert renamed, "the loser's rename should have failed on the winner's folder"
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == inodes
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
    assert winner.match_table(manifest).equals(fresh(lists).match_table(manifest))


def test_a_changed_list_or_setting_gets_another_key(
    lists_and_manifest: tuple[list[HashList], pa.Table],
) -> None:
    lists, _ = lists_and_manifest
    base = matcher_key(fresh(lists))
    assert base == matcher_key(fresh(lists)), "the key must be stable"
    changed_entry = lists[0].hashes.copy()
    changed_entry[5, 0] ^= 1
    variants = {
        "entry": [make_list("pdq", changed_entry, "pdq-default"), *lists[1:]],
        "list threshold": [make_list("pdq", lists[0].hashes, "pdq-default", 20), *lists[1:]],
        "name": [make_list("pdq", lists[0].hashes, "other-name"), *lists[1:]],
        "order": [lists[1], lists[0], *lists[2:]],
        "fewer lists": lists[:-1],
    }
    keys = {what: matcher_key(fresh(changed)) for what, changed in variants.items()}
    keys["settings"] = matcher_key(fresh(lists, MatchSettings(pdq_threshold=30)))
    keys["quality"] = matcher_key(fresh(lists, MatchSettings(min_quality=70)))
    assert base not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_a_folder_of_other_lists_is_refused(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, _ = lists_and_manifest
    folder = tmp_path / "index"
    save_matcher(fresh(lists), folder)
    with pytest.raises(RunFolderError, match="other lists or settings"):
        save_matcher(fresh(lists, MatchSettings(pdq_threshold=20)), folder)


def _damage_missing(folder: Path) -> None:
    (folder / "list-3-first-keys.npy").unlink()


def _damage_truncated(folder: Path) -> None:
    path = folder / "list-0-pdq-rows.npy"
    os.truncate(path, path.stat().st_size // 2)


def _damage_shape(folder: Path) -> None:
    np.save(folder / "list-0-hashes.npy", np.zeros((10, 32), np.uint8))


def _damage_dtype(folder: Path) -> None:
    rows = np.load(folder / "list-0-pdq-rows.npy")
    np.save(folder / "list-0-pdq-rows.npy", rows.astype(np.int64))


def _damage_offsets(folder: Path) -> None:
    offsets = np.load(folder / "list-0-pdq-offsets.npy")
    np.save(folder / "list-0-pdq-offsets.npy", np.zeros_like(offsets))


def _damage_json(folder: Path) -> None:
    (folder / SHARED_JSON).write_text('{"kind": "clearset-list-index", "form')


def _damage_no_json(folder: Path) -> None:
    (folder / SHARED_JSON).unlink()


def _damage_edited_json(folder: Path) -> None:
    body = json.loads((folder / SHARED_JSON).read_text())
    body["lists"][0]["threshold"] = 99
    (folder / SHARED_JSON).write_text(json.dumps(body))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_damage_missing, "list-3-first-keys.npy is missing"),
        (_damage_truncated, "list-0-pdq-rows.npy unreadable"),
        (_damage_shape, r"list-0-hashes.npy is uint8\[10, 32\], expected uint8\[\d+, 32\]"),
        (_damage_dtype, "list-0-pdq-rows.npy is int64"),
        (_damage_offsets, r"not an index of \d+ entries"),
        (_damage_json, f"{SHARED_JSON} unreadable"),
        (_damage_no_json, f"no {SHARED_JSON}"),
        (_damage_edited_json, "does not match its key"),
    ],
)
def test_a_damaged_folder_is_refused_in_one_line(
    lists_and_manifest: tuple[list[HashList], pa.Table],
    tmp_path: Path,
    damage: object,
    problem: str,
) -> None:
    lists, _ = lists_and_manifest
    folder = tmp_path / "index"
    save_matcher(fresh(lists), folder)
    damage(folder)  # type: ignore[operator]
    for attempt in (lambda: open_matcher(folder), lambda: save_matcher(fresh(lists), folder)):
        with pytest.raises(RunFolderError, match=problem) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"{folder}: ")
        assert "\n" not in message
        assert "delete it" in message


def test_verify_finds_damage_of_the_right_shape(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, _ = lists_and_manifest
    folder = tmp_path / "index"
    save_matcher(fresh(lists), folder)
    open_matcher(folder, verify=True)
    for name, problem in (
        ("list-0-pdq-rows.npy", "PDQ index rows differ"),
        ("list-3-hashes.npy", "entries differ from its digest"),
    ):
        array = np.load(folder / name)
        array.reshape(-1)[7] ^= 1
        np.save(folder / name, array)
        open_matcher(folder)  # the cheap checks cannot see a flipped bit
        with pytest.raises(RunFolderError, match=problem):
            open_matcher(folder, verify=True)
        array.reshape(-1)[7] ^= 1
        np.save(folder / name, array)


def test_an_empty_folder_is_filled_and_an_absent_parent_made(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, manifest = lists_and_manifest
    (tmp_path / "empty").mkdir()
    save_matcher(fresh(lists), tmp_path / "empty")
    save_matcher(fresh(lists), tmp_path / "a" / "b" / "index")
    for folder in (tmp_path / "empty", tmp_path / "a" / "b" / "index"):
        assert open_matcher(folder).match_table(manifest).num_rows > 0


def test_a_place_that_cannot_take_the_folder_is_one_line(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, _ = lists_and_manifest
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "index"
    with pytest.raises(OutputError, match="cannot write the list index") as caught:
        save_matcher(fresh(lists), folder)
    assert str(caught.value).startswith(f"{folder}: ")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def _match_from_memory(files: dict[str, str], out: str) -> None:
    lists, manifest = build()
    table = open_matcher(files).match_table(manifest)
    Path(out).write_text(json.dumps(table.to_pylist(), default=lambda b: b.hex()))


@pytest.mark.skipif(not shared.memory_index_possible(), reason="no memfd on this system")
def test_a_matcher_saved_in_memory_matches_as_a_fresh_one_in_another_process(
    lists_and_manifest: tuple[list[HashList], pa.Table], tmp_path: Path
) -> None:
    lists, manifest = lists_and_manifest
    index = shared.save_matcher_in_memory(fresh(lists))
    try:
        files = dict(index.files)
        assert set(files) == {p.name for p in _saved_names(lists, tmp_path)}
        assert all(path.startswith(f"/proc/{os.getpid()}/fd/") for path in files.values())
        # A spawned worker maps the driver's memory files by their /proc names.
        out = tmp_path / "out.json"
        worker = multiprocessing.get_context("spawn").Process(
            target=_match_from_memory, args=(files, str(out))
        )
        worker.start()
        worker.join(timeout=300)
        assert worker.exitcode == 0
        expected = fresh(lists).match_table(manifest)
        assert expected.num_rows > 0
        assert json.loads(out.read_text()) == json.loads(
            json.dumps(expected.to_pylist(), default=lambda b: b.hex())
        )
        assert open_matcher(files, verify=True).match_table(manifest).equals(expected)
    finally:
        index.close()
    with pytest.raises(RunFolderError, match="the list index in memory: damaged"):
        open_matcher(files)  # closed: the names lead nowhere any more


def _saved_names(lists: list[HashList], tmp_path: Path) -> list[Path]:
    save_matcher(fresh(lists), tmp_path / "index")
    return list((tmp_path / "index").iterdir())
