"""Auditing generated images against a training run: planted near copies are found (and
flips only with --dihedral), unrelated images are not, the results equal a brute-force
search over the same hashes whichever side is indexed, the training side is streamed
shard by shard, and bad input is one line that writes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import _edit, demo_items, encode_jpeg, watched_originals, write_webdataset
from clearset.engines.local import LocalEngine
from clearset.errors import InputError
from clearset.formats import open_source
from clearset.hashing.pdq import DIHEDRAL_NAMES
from clearset.matching.embeddings import similar_pairs
from clearset.matching.reference import brute_force_search, hamming_distance
from clearset.runfolder import RunFolder
from clearset.runs import ScanSettings, run_scan
from clearset.runs.audit import LIMITS, AuditSettings, run_audit
from clearset.stages.audit import IndexSide, best_pairs, nearest, range_search, read_side
from tests.conftest import cli, run_cli

#: Edits of training pictures planted among the "generated" images.
EDITS = ("reencode", "resize", "crop", "flip")
#: Training items per shard: the training run has many shards.
SHARD_SIZE = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A training run of many shards holding four detailed pictures, and a folder of
    "generated" images: an edited copy of each of the four, plus unrelated pictures."""
    root = tmp_path_factory.mktemp("audit")
    items = [i for i in demo_items(seed=3, count=14) if not i.broken]
    originals = watched_originals(seed=5, count=len(EDITS) + 3)
    for number, image in enumerate(originals[: len(EDITS)]):
        slot = items[number * 3 + 1]
        slot.data, slot.ext = encode_jpeg(image, 90), "jpg"
    write_webdataset(root / "shards", items, SHARD_SIZE, seed=3)
    run_scan(open_source(str(root / "shards")), root / "run", ScanSettings(), workers=1,
             show_progress=False)  # fmt: skip
    generated = root / "generated"
    generated.mkdir()
    rng = np.random.default_rng(9)
    copies = {}
    for number, (image, edit) in enumerate(zip(originals, EDITS, strict=False)):
        (generated / f"copy-{edit}.jpg").write_bytes(_edit(image, edit, rng))
        copies[f"copy-{edit}"] = items[number * 3 + 1].key
    for number, image in enumerate(originals[len(EDITS) :]):
        (generated / f"unrelated-{number}.jpg").write_bytes(encode_jpeg(image, 85))
    return root / "run", generated, copies


def _found(table: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in table:
        if row["within_threshold"]:
            found.setdefault(row["generated_key"], set()).add(row["training_key"])
    return found


def test_planted_copies_are_found_and_unrelated_images_are_not(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, copies = corpus
    result = run_audit(str(generated), run, tmp_path / "plain", workers=1)
    found = _found(pq.read_table(tmp_path / "plain" / "audit.parquet").to_pylist())
    for name, training_key in copies.items():
        if name == "copy-flip":
            assert name not in found, "a mirror image matched without --dihedral"
        else:
            assert found.get(name) == {training_key}, name
    assert not any(name.startswith("unrelated") for name in found)
    summary = json.loads((tmp_path / "plain" / "audit.json").read_text())
    assert summary["results"]["generated_with_copy"] == len(EDITS) - 1
    assert summary["generated"]["searched"] == len(EDITS) + 3
    assert summary["settings"]["threshold"] == 31
    assert summary["training"]["manifest_digest"]
    assert summary["training"]["receipt_digest"] is None
    assert summary["limits"] == LIMITS
    assert result.summary == summary

    run_audit(str(generated), run, tmp_path / "dihedral", AuditSettings(dihedral=True), workers=1)
    rows = pq.read_table(tmp_path / "dihedral" / "audit.parquet").to_pylist()
    found = _found(rows)
    assert found == {name: {key} for name, key in copies.items()}
    flip = next(r for r in rows if r["generated_key"] == "copy-flip")
    assert (flip["rotation"], flip["generated_file"]) == ("flip_horizontal", "copy-flip.jpg")
    assert {r["rotation"] for r in rows if r["generated_key"] == "copy-reencode"} == {"original"}


def _brute_force(
    run: Path, generated_run: Path, threshold: int, dihedral: bool, k: int
) -> tuple[set[tuple], dict[str, list[int]]]:
    """Every (generated key, training shard, training key, distance) within the threshold,
    and each generated image's k smallest distances, comparing every pair of hashes."""
    train = [read_side(f, 50, False) for f in RunFolder(run).manifest_files()]
    gen = [read_side(f, 50, dihedral) for f in RunFolder(generated_run).manifest_files()]
    pairs, nearest = set(), {}
    for g_ids, g_hashes in gen:
        for g, g_key in enumerate(g_ids.column("key").to_pylist()):
            distances = []
            for t_ids, t_hashes in train:
                keys, shards = t_ids.column("key").to_pylist(), t_ids.column("shard").to_pylist()
                for t in range(len(keys)):
                    d = int(hamming_distance(g_hashes[g], t_hashes[t][None, :]).min())
                    distances.append(d)
                    if d <= threshold:
                        pairs.add((g_key, shards[t], keys[t], d))
            nearest[g_key] = sorted(distances)[:k]
    return pairs, nearest


@pytest.mark.parametrize("index", ["generated", "training"])
def test_results_equal_a_brute_force_search_whichever_side_is_indexed(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path, index: str
) -> None:
    run, generated, _ = corpus
    threshold, k = 124, 3  # wide: many pairs, most of them unrelated
    settings = AuditSettings(threshold=threshold, k=k, dihedral=True)
    result = run_audit(str(generated), run, tmp_path / "a", settings, workers=1, index=index)
    assert result.summary["settings"]["indexed"] == index
    rows = pq.read_table(tmp_path / "a" / "audit.parquet").to_pylist()
    pairs, nearest = _brute_force(run, tmp_path / "a" / "generated-run", threshold, True, k)
    found = {
        (r["generated_key"], r["training_shard"], r["training_key"], r["distance"])
        for r in rows
        if r["within_threshold"]
    }
    assert found == pairs
    assert len(pairs) > 20
    ranked: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        if r["nearest_rank"] is not None:
            ranked.setdefault(r["generated_key"], []).append((r["nearest_rank"], r["distance"]))
    assert {g: [d for _, d in sorted(v)] for g, v in ranked.items()} == nearest
    assert all(r["rotation"] in DIHEDRAL_NAMES for r in rows)


def test_the_training_side_is_streamed_shard_by_shard_on_worker_processes(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, _ = corpus
    shards = len(RunFolder(run).done_markers())
    assert shards >= 4
    one = run_audit(str(generated), run, tmp_path / "one", AuditSettings(k=2), workers=1)
    engine = LocalEngine(2)
    try:
        two = run_audit(str(generated), run, tmp_path / "two", AuditSettings(k=2), engine=engine)
    finally:
        engine.close()
    assert one.summary["settings"]["indexed"] == "generated"
    assert one.summary["training"]["shards"] == shards
    assert one.table.equals(two.table)
    assert one.summary["results"] == two.summary["results"]


def test_outputs_name_training_items_by_identifiers_only(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, copies = corpus
    result = run_audit(str(generated), run, tmp_path / "a", AuditSettings(k=1), workers=1)
    columns = pq.read_schema(tmp_path / "a" / "audit.parquet").names
    assert not {"caption", "txt", "image", "thumbnail", "pdq"} & set(columns)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "audit.html", "audit.json", "audit.parquet", "generated-run",
    ]  # fmt: skip
    page = (tmp_path / "a" / "audit.html").read_text()
    for text in ((tmp_path / "a" / "audit.json").read_text(), page):
        assert "procedural scene" not in text  # the training captions
    # The page names training items by key and shard, never by URL or picture; the only
    # pictures on it are the generated images with a copy, as data: URIs.
    assert "images.example.com" not in page
    assert "img-src data:;" in page and "default-src 'none'" in page
    pictures = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(pictures) == result.summary["results"]["generated_with_copy"] == len(copies) - 1
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in pictures)
    assert "not that the model cannot reproduce" in " ".join(page.split())


def test_bad_input_is_one_line_and_writes_nothing(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, _ = corpus
    out = tmp_path / "out"
    cases = {
        "not a run": (str(generated), str(generated)),
        "empty": (str(tmp_path / "empty"), str(run)),
        "no images": (str(tmp_path / "text"), str(run)),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image\n")
    for why, (source, training) in cases.items():
        # The real entry point in a fresh interpreter for the first; the others in this one.
        command = run_cli if why == "not a run" else cli
        proc = command("audit", source, "--run", training, "--out", str(out), "--no-progress")
        assert proc.returncode != 0, why
        assert len(proc.stderr.strip().splitlines()) == 1, (why, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not out.exists(), why
        assert not list(tmp_path.glob(".tmp-audit-*")), why
    assert "no images or videos to audit" in proc.stderr
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    proc = cli("audit", str(generated), "--run", str(run), "--out", str(out))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    proc = cli("audit", str(generated), "--run", str(run), "--embeddings", "one.parquet")
    assert proc.returncode == 2 and "TRAIN.parquet,GEN.parquet" in proc.stderr


def test_the_cli_prints_how_many_generated_images_have_a_copy(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, _ = corpus
    out = tmp_path / "cli"
    proc = cli("audit", str(generated), "--run", str(run), "--out", str(out), "--dihedral",
                   "-w", "1", "--no-progress", check=True)  # fmt: skip
    assert f"{len(EDITS)} of {len(EDITS) + 3} generated images have a near copy" in proc.stdout
    assert "not that the model cannot reproduce" in " ".join(proc.stdout.split())
    assert (out / "audit.parquet").exists()


def _write_vectors(path: Path, keys: list[str], vectors: np.ndarray, shard: str | None) -> None:
    columns = {"key": keys, "embedding": [list(map(float, v)) for v in vectors]}
    if shard is not None:
        columns["shard"] = [shard] * len(keys)
    pq.write_table(pa.table(columns), path)


def test_embedding_candidates_equal_a_brute_force_cosine_search() -> None:
    rng = np.random.default_rng(1)
    training = rng.normal(size=(300, 16)).astype(np.float32)
    generated = rng.normal(size=(40, 16)).astype(np.float32)
    generated[:10] = training[:10] + rng.normal(scale=0.2, size=(10, 16))  # near copies
    norm = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    training, generated = norm(training), norm(generated)
    threshold, k = 0.8, 3
    g_rows, t_rows, sims, ranks = similar_pairs(training, generated, threshold, k)
    cosine = generated @ training.T
    expected = {(g, t) for g, t in zip(*np.nonzero(cosine >= threshold), strict=True)}
    assert {(g, t) for g, t, s in zip(g_rows, t_rows, sims, strict=True) if s >= threshold} == {
        (int(g), int(t)) for g, t in expected
    }
    assert len(expected) >= 10
    top = {(g, int(t)): r + 1 for g in range(40) for r, t in enumerate(np.argsort(-cosine[g])[:k])}
    assert {
        (int(g), int(t)): int(r) for g, t, r in zip(g_rows, t_rows, ranks, strict=True) if r
    } == top
    assert np.allclose(sims, cosine[g_rows, t_rows], atol=1e-5)


def test_embeddings_are_reported_apart_from_pdq(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, _ = corpus
    rng = np.random.default_rng(2)
    training = rng.normal(size=(20, 8))
    made = np.vstack([training[3] + 0.05, rng.normal(size=(2, 8))])
    _write_vectors(tmp_path / "train.parquet", [f"t{i}" for i in range(20)], training, "00000.tar")
    _write_vectors(tmp_path / "gen.parquet", ["g0", "g1", "g2"], made, None)
    pair = (str(tmp_path / "train.parquet"), str(tmp_path / "gen.parquet"))
    plain = run_audit(str(generated), run, tmp_path / "plain", workers=1)
    settings = AuditSettings(embeddings=pair, embedding_threshold=0.9)
    both = run_audit(str(generated), run, tmp_path / "both", settings, workers=1)
    assert both.table.equals(plain.table)
    assert both.summary["results"] == plain.summary["results"]
    record = both.summary["embeddings"]
    assert (record["threshold"], record["dimensions"], record["generated_with_candidate"]) == (
        0.9, 8, 1,
    )  # fmt: skip
    rows = pq.read_table(tmp_path / "both" / "embeddings.parquet").to_pylist()
    assert [(r["generated_key"], r["training_key"], r["training_shard"]) for r in rows] == [
        ("g0", "t3", "00000.tar")
    ]
    page = (tmp_path / "both" / "audit.html").read_text()
    assert "Embedding candidates (your descriptor, not PDQ)" in page and "cosine ≥ 0.9" in page

    _write_vectors(tmp_path / "wide.parquet", ["g0"], rng.normal(size=(1, 9)), None)
    for bad, why in (
        ((pair[0], str(tmp_path / "wide.parquet")), "dimensions"),
        ((pair[0], str(tmp_path / "nothing.parquet")), "no such file"),
        ((str(run / "run.json"), pair[1]), "not a parquet file"),
    ):
        with pytest.raises(InputError, match=why):
            run_audit(str(generated), run, tmp_path / "bad", AuditSettings(embeddings=bad))
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("shard_rows", [5, 2_000])
def test_range_search_equals_brute_force_whichever_side_it_indexes(shard_rows: int) -> None:
    # A shard smaller than the indexed side is searched against its index; a larger one
    # is indexed itself and searched with the other side's hashes. Same pairs either way.
    rng = np.random.default_rng(shard_rows)
    generated = rng.integers(0, 256, size=(40, 8, 32), dtype=np.uint8)
    shard = rng.integers(0, 256, size=(shard_rows, 1, 32), dtype=np.uint8)
    for row in range(0, shard_rows, 3):  # near copies of some generated variants
        flips = np.packbits(rng.random(256) < 0.06)
        shard[row, 0] = generated[row % 40, row % 8] ^ flips
    side = IndexSide(generated.reshape(-1, 32), 8)
    found = range_search(side, shard, 40)
    expected = best_pairs(*brute_force_search(generated.reshape(-1, 32), shard[:, 0], 40), 1, 8)
    # (shard row, generated row, distance, shard turn, generated turn), by shard row.
    assert all(np.array_equal(a, b) for a, b in zip(found, expected, strict=True))
    assert len(found[0]) >= shard_rows // 3


def test_k_nearest_equals_brute_force_over_every_variant() -> None:
    rng = np.random.default_rng(4)
    generated = rng.integers(0, 256, size=(30, 8, 32), dtype=np.uint8)
    training = rng.integers(0, 256, size=(500, 32), dtype=np.uint8)
    training[:300:10] = generated[:, 3] ^ np.uint8(1)  # near one variant of each
    k = 5
    g_rows, t_rows, distances, turns = nearest(generated, training, k)
    every = hamming_distance(generated[:, :, None, :], training[None, None, :, :])  # G, R, T
    smallest = every.min(axis=1)
    for g in range(len(generated)):
        mine = g_rows == g
        assert distances[mine].tolist() == sorted(smallest[g].tolist())[:k]
        # each row's distance and turn are its own: the turn reaches that distance
        for t, d, turn in zip(t_rows[mine], distances[mine], turns[mine], strict=True):
            assert smallest[g, t] == d == every[g, turn, t]


def test_generated_images_are_hashed_as_the_training_run_was(
    corpus: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    run, generated, copies = corpus
    exact = tmp_path / "exact-run"
    run_scan(open_source(str(run.parent / "shards")), exact, ScanSettings(exact_pdq=True),
             workers=1, show_progress=False)  # fmt: skip
    result = run_audit(str(generated), exact, tmp_path / "a", workers=1)
    scanned = json.loads((tmp_path / "a" / "generated-run" / "run.json").read_text())
    assert scanned["settings"]["exact_pdq"] is True
    assert result.summary["results"]["generated_with_copy"] == len(copies) - 1
