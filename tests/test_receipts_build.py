"""The out-of-core, parallel tree build against its twins: the in-memory builder, the
RFC's recursive definition and pymerkle; resuming; damaged build folders; proofs from the
file it writes, for values at bucket bounds and both ends."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clearset.engines.local import LocalEngine
from clearset.errors import InputError, OutputError
from clearset.lists.model import sort_unique
from clearset.receipts.merkle import MerkleTree, reference_root
from clearset.receipts.proofs import load_proof, proof_to_json, prove, verify_proof
from clearset.receipts.statement import build_statement, statement_digest
from clearset.runs import receipts as orchestrator
from clearset.runs.receipts import BUILD_DIR, build_run_tree, build_tree
from clearset.stages import receipts as stage
from clearset.stages.receipts import RandomLeaves, bucket_of


@dataclass(frozen=True)
class Rows:
    """Given leaf values (uint8[m, 32] as bytes), as a shard would hold them."""

    data: bytes

    def rows(self) -> int:
        return len(self.data) // 32

    def read(self) -> np.ndarray:
        return np.frombuffer(self.data, np.uint8).reshape(-1, 32)

    def identity(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def shards_of(values: np.ndarray, cuts: int, seed: int = 0) -> list[Rows]:
    """``values`` shuffled and cut into ``cuts`` shards (some may be empty)."""
    rng = np.random.default_rng(seed)
    shuffled = values[rng.permutation(len(values))]
    bounds = np.sort(rng.integers(0, len(values) + 1, cuts - 1))
    return [Rows(part.tobytes()) for part in np.split(shuffled, bounds)]


def random_values(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


def reference_tree(values: np.ndarray) -> MerkleTree:
    return MerkleTree.build(sort_unique(np.ascontiguousarray(values))[0])


def build(tmp_path: Path, sources, **options) -> MerkleTree:
    options.setdefault("workers", 1)
    return build_tree(sources, tmp_path / "tree.bin", tmp_path / "build", **options)


SIZES = sorted({max(0, 2**k + d) for k in range(0, 12) for d in (-1, 0, 1)})


@pytest.mark.parametrize("size", SIZES)
def test_same_file_as_the_in_memory_builder_around_powers_of_two(tmp_path, size):
    values = random_values(size, seed=size)
    # Chunks of 2**5 leaves and 8 buckets: most sizes cross several of both.
    tree = build(tmp_path, shards_of(values, 5, seed=size), bucket_bits=3, chunk_level=5,
                 extract_rows=300)  # fmt: skip
    twin = reference_tree(values)
    twin.write(tmp_path / "twin.bin")
    assert tree.size == size
    assert tree.root == twin.root
    assert (tmp_path / "tree.bin").read_bytes() == (tmp_path / "twin.bin").read_bytes()
    assert not (tmp_path / "build").exists()  # removed once the tree is in place


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 32, 33, 255, 256, 257])
def test_root_matches_the_rfc_definition_and_pymerkle(tmp_path, size):
    pymerkle = pytest.importorskip("pymerkle")
    values = random_values(size, seed=size + 50)
    tree = build(tmp_path, shards_of(values, 3, seed=size), bucket_bits=2, chunk_level=4)
    entries = [bytes(row) for row in sort_unique(values)[0]]
    theirs = pymerkle.InmemoryTree(algorithm="sha256")
    for entry in entries:
        theirs.append_entry(entry)
    assert tree.root == reference_root(entries) == theirs.get_root()


@pytest.mark.parametrize(("chunk_level", "cache_level"), [(2, 0), (4, 4), (6, 2), (20, 4)])
def test_chunk_and_cache_levels_do_not_change_the_tree(tmp_path, chunk_level, cache_level):
    values = random_values(1000, seed=7)
    tree = build(tmp_path, shards_of(values, 4), bucket_bits=4, chunk_level=chunk_level,
                 cache_level=cache_level)  # fmt: skip
    twin = MerkleTree.build(sort_unique(values)[0], cache_level=cache_level)
    twin.write(tmp_path / "twin.bin")
    assert tree.root == twin.root
    assert (tmp_path / "tree.bin").read_bytes() == (tmp_path / "twin.bin").read_bytes()


def test_repeats_within_and_across_shards_count_once(tmp_path):
    # Every third value of each shard repeats one of another shard; shard 2 also holds
    # its own values twice; one whole shard is another's copy.
    sources = [RandomLeaves(10 + i, 700, 3, 10 + (i + 1) % 4) for i in range(4)]
    doubled = Rows(np.concatenate([sources[2].read()] * 2).tobytes())
    sources += [doubled, Rows(sources[0].read().tobytes())]
    values = np.concatenate([s.read() for s in sources])
    tree = build(tmp_path, sources, bucket_bits=5, chunk_level=6, extract_rows=900)
    twin = reference_tree(values)
    assert tree.size == len({bytes(row) for row in values}) < len(values)
    assert tree.root == twin.root


def test_all_in_one_bucket_and_empty_buckets(tmp_path):
    # Values sharing their first byte land in one bucket of 256; the rest stay empty.
    values = random_values(500, seed=3)
    values[:, 0] = 0x7F
    tree = build(tmp_path, shards_of(values, 3), bucket_bits=8, chunk_level=4)
    assert tree.root == reference_tree(values).root


def test_no_sources_and_empty_sources_give_the_empty_tree(tmp_path):
    assert build(tmp_path, []).root == hashlib.sha256(b"").digest()
    empty = build(tmp_path, [Rows(b""), Rows(b"")], bucket_bits=2)
    assert empty.size == 0 and empty.root == hashlib.sha256(b"").digest()


def test_two_worker_processes_give_the_same_file(tmp_path):
    values = random_values(3000, seed=11)
    build_tree(shards_of(values, 6), tmp_path / "tree.bin", tmp_path / "build",
               engine=LocalEngine(2), bucket_bits=3, chunk_level=8, extract_rows=600)  # fmt: skip
    reference_tree(values).write(tmp_path / "twin.bin")
    assert (tmp_path / "tree.bin").read_bytes() == (tmp_path / "twin.bin").read_bytes()


def test_buckets_follow_the_leading_bits():
    rows = np.zeros((4, 32), np.uint8)
    rows[:, 0] = [0x00, 0x7F, 0x80, 0xFF]
    rows[:, 1] = [0xFF, 0xFF, 0x00, 0xFF]
    assert bucket_of(rows, 0).tolist() == [0, 0, 0, 0]
    assert bucket_of(rows, 1).tolist() == [0, 0, 1, 1]
    assert bucket_of(rows, 9).tolist() == [1, 255, 256, 511]


# --- resuming -------------------------------------------------------------------------


class Interrupt(Exception):
    """Not a clearset error: run_tasks raises it at once, as a Ctrl-C would stop it."""


def counting(monkeypatch, name: str, fail_on: set | None = None) -> list:
    """Wrap stage.<name>: record each call's second argument, fail on some."""
    calls: list = []
    real = getattr(stage, name)

    def wrapper(*args):
        calls.append(args[1])
        if fail_on is not None and args[1] in fail_on:
            raise Interrupt(f"stopped at {args[1]}")
        return real(*args)

    monkeypatch.setattr(stage, name, wrapper)
    return calls


@pytest.mark.parametrize("stop_in", ["extract_task", "sort_task", "chunk_task"])
def test_an_interrupted_build_resumes_to_the_same_root(tmp_path, monkeypatch, stop_in):
    values = random_values(2000, seed=5)
    sources = shards_of(values, 6, seed=5)
    options = {"bucket_bits": 3, "chunk_level": 7, "extract_rows": 400}
    stop_at = {"extract_task": "e000002", "sort_task": 5, "chunk_task": 9}[stop_in]
    with monkeypatch.context() as patch:
        counting(patch, stop_in, fail_on={stop_at})
        with pytest.raises(Interrupt):
            build(tmp_path, sources, **options)
    assert not (tmp_path / "tree.bin").exists()  # nothing under the real name
    assert (tmp_path / "build" / "build.json").exists()
    extracted = counting(monkeypatch, "extract_task")
    sorted_ = counting(monkeypatch, "sort_task")
    chunked = counting(monkeypatch, "chunk_task")
    tree = build(tmp_path, sources, **options)
    assert tree.root == reference_tree(values).root
    assert not (tmp_path / "build").exists()
    # Finished tasks were not redone: the one stopped and those after it ran again.
    if stop_in == "extract_task":
        assert extracted[0] == "e000002" and len(extracted) == len(set(extracted)) >= 2
    else:
        assert extracted == []
    if stop_in == "sort_task":
        assert sorted_ == [5, 6, 7]
    elif stop_in == "chunk_task":
        assert sorted_ == [] and chunked[0] == 9 and 0 not in chunked


def test_a_build_for_other_sources_is_started_over(tmp_path, monkeypatch):
    first = shards_of(random_values(500, seed=1), 3)
    with monkeypatch.context() as patch:
        counting(patch, "chunk_task", fail_on={1})
        with pytest.raises(Interrupt):
            build(tmp_path, first, bucket_bits=2, chunk_level=5)
    other = random_values(600, seed=2)
    tree = build(tmp_path, shards_of(other, 3), bucket_bits=2, chunk_level=5)
    assert tree.root == reference_tree(other).root


def stopped_build(tmp_path, monkeypatch, values) -> Path:
    """A build stopped in its chunk round: buckets sorted, one chunk done."""
    with monkeypatch.context() as patch:
        counting(patch, "chunk_task", fail_on={1})
        with pytest.raises(Interrupt):
            build(tmp_path, shards_of(values, 3), bucket_bits=2, chunk_level=6)
    return tmp_path / "build"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda b: (b / "build.json").write_text("{not json"), "build.json"),
        (lambda b: (b / "sorted" / "0002.json").write_text("[]"), "0002.json"),
        (
            lambda b: (b / "extracted" / "e000000.json").write_text('{"counts": [1]}'),
            "e000000.json",
        ),  # fmt: skip
        (lambda b: (b / "sorted" / "0003.bin").write_bytes(b"\0" * 40), "0003.bin"),
        (lambda b: (b / "sorted" / "0003.bin").unlink(), "0003.bin"),
        (lambda b: (b / "tree.bin.part").write_bytes(b"short"), "tree.bin.part"),
    ],
)
def test_a_damaged_build_folder_is_named_in_one_line(tmp_path, monkeypatch, damage, named):
    values = random_values(300, seed=4)
    folder = stopped_build(tmp_path, monkeypatch, values)
    damage(folder)
    with pytest.raises(InputError) as error:
        build(tmp_path, shards_of(values, 3), bucket_bits=2, chunk_level=6)
    message = str(error.value)
    assert named in message and str(folder) in message and "\n" not in message
    assert not (tmp_path / "tree.bin").exists()


def test_a_shard_failing_every_try_stops_the_build_with_one_error(tmp_path, monkeypatch):
    def unreadable(self):
        raise OSError("shard.parquet: cannot read the manifest shard (I/O error)")

    monkeypatch.setattr(Rows, "read", unreadable)
    with pytest.raises(OutputError, match="I/O error.*re-run"):
        build(tmp_path, [Rows(b"\0" * 64)], retries=1)
    assert not (tmp_path / "tree.bin").exists()


def test_a_shard_with_bad_input_is_named_and_not_tried_again(tmp_path, monkeypatch):
    tries = []

    def unreadable(self):
        tries.append(1)
        raise InputError("shard.parquet: cannot read the manifest shard (bad footer)")

    monkeypatch.setattr(Rows, "read", unreadable)
    with pytest.raises(InputError, match="^shard.parquet: .*bad footer") as caught:
        build(tmp_path, [Rows(b"\0" * 64)], retries=2, workers=1)
    assert "re-run the same command" not in str(caught.value)
    assert len(tries) == 1
    assert not (tmp_path / "tree.bin").exists()


# --- proofs from the file -----------------------------------------------------------


def statement_for(tree: MerkleTree) -> dict:
    return build_statement(
        dataset_name="t", tree_size=tree.size, root=tree.root, source_name="t",
        manifest_digest="ab" * 32, lists=[], scan_started="2024-01-01T00:00:00Z",
        scan_finished="2024-01-01T00:00:00Z", removed_count=0, removed_commitment="cd" * 32,
    )  # fmt: skip


def test_proofs_from_the_built_file_verify_at_bucket_bounds_and_both_ends(tmp_path):
    values = random_values(3000, seed=9)
    # Values right at and beside the bounds of 8 buckets (0x20.., 0x40.., ...).
    for i, lead in enumerate(range(0x20, 0x100, 0x20)):
        values[i, 0], values[i, 1:] = lead, 0
        values[100 + i, 0], values[100 + i, 1:] = lead - 1, 0xFF
    build(tmp_path, shards_of(values, 4), bucket_bits=3, chunk_level=6)
    tree = MerkleTree.open(tmp_path / "tree.bin")  # from disk, as `prove` opens it
    statement = statement_for(tree)
    digest = statement_digest(statement)
    held = sort_unique(values)[0]
    inside = [bytes(held[0]), bytes(held[-1])] + [bytes(values[i]) for i in (0, 3, 100, 106)]
    between = [bytes([lead]) + b"\0" * 30 + b"\x01" for lead in range(0x20, 0x100, 0x20)]
    between += [bytes([lead - 1]) + b"\xff" * 30 + b"\xfe" for lead in range(0x20, 0x100, 0x20)]
    ends = [b"\0" * 32, b"\xff" * 32]
    for value in inside:
        proof = load_proof(proof_to_json(prove(tree, value, digest)))
        assert proof["type"] == "inclusion"
        verify_proof(proof, statement)
    for value in between + ends:
        assert value not in {bytes(row) for row in held}
        proof = load_proof(proof_to_json(prove(tree, value, digest)))
        assert proof["type"] == "non-inclusion"
        verify_proof(proof, statement)


# --- a run folder ---------------------------------------------------------------------


def test_a_cleaned_run_gives_the_tree_of_its_kept_items(tmp_path, cleaned_run):
    from clearset.receipts.issue import sorted_leaf_chunks
    from clearset.runs.issue import kept_hashes

    tree = build_run_tree(cleaned_run, tmp_path / "tree.bin", workers=1)
    twin = MerkleTree.build(sorted_leaf_chunks(kept_hashes(cleaned_run)))
    assert tree.size == twin.size > 0 and tree.root == twin.root
    assert not (cleaned_run / BUILD_DIR).exists()
    # The plan's row counts and identities come from the markers, and are the files'.
    sources = orchestrator.run_sources(cleaned_run)
    for source in sources:
        assert source.count == pq.ParquetFile(source.path).metadata.num_rows
        assert source.digest == hashlib.sha256(Path(source.path).read_bytes()).hexdigest()


def test_a_manifest_changed_after_the_clean_is_named(tmp_path, cleaned_run):
    run = tmp_path / "run"
    shutil.copytree(cleaned_run, run)
    source = max(orchestrator.run_sources(run), key=lambda s: s.count)
    table = pq.read_table(source.path)
    pq.write_table(table.slice(1), source.path)
    with pytest.raises(InputError) as caught:  # bad input: named, not retried
        build_run_tree(run, tmp_path / "tree.bin", workers=1, retries=2)
    message = str(caught.value)
    expected = f"{source.path}: holds {source.count - 1} rows but its completion marker says"
    assert expected in message and "\n" not in message
    assert not (tmp_path / "tree.bin").exists()


@pytest.fixture(scope="module")
def cleaned_run(demo_data, tmp_path_factory) -> Path:
    from clearset.formats import open_source
    from clearset.matching.matcher import ListSpec, MatchSettings
    from clearset.runs import MatchJob, ScanSettings, run_scan
    from clearset.stages.clean import CleanJob

    root = tmp_path_factory.mktemp("cleaned-run")
    run_scan(
        open_source(str(demo_data.webdataset)),
        root / "run",
        ScanSettings(),
        workers=1,
        show_progress=False,
        match=MatchJob((ListSpec(str(demo_data.md5_list)),), MatchSettings()),
        clean=CleanJob(str(root / "cleaned")),
    )
    return root / "run"


def test_the_plan_is_in_the_build_folder(tmp_path, monkeypatch):
    folder = stopped_build(tmp_path, monkeypatch, random_values(100, seed=1))
    plan = json.loads((folder / "build.json").read_text())
    assert plan["bits"] == 2 and plan["chunk_level"] == 6 and plan["format"] == stage.BUILD_FORMAT
    assert orchestrator.bucket_bits_for(orchestrator.BUCKET_ROWS * 300) == 9


def test_receipt_command_takes_the_engine_options(tmp_path, cleaned_run):
    from clearset.receipts.issue import sorted_leaf_chunks
    from clearset.runs.issue import kept_hashes
    from tests.conftest import cli

    cli("keygen", str(tmp_path / "keys"), check=True)
    done = cli("receipt", str(cleaned_run), "--key", str(tmp_path / "keys" / "clearset.key"),
               "--workers", "2", "--retries", "0", "--no-progress", check=True)  # fmt: skip
    twin = MerkleTree.build(sorted_leaf_chunks(kept_hashes(cleaned_run)))
    assert twin.root.hex() in done.stdout
    assert MerkleTree.open(cleaned_run / "tree.bin").root == twin.root
    assert not (cleaned_run / BUILD_DIR).exists()
    wrong = cli("receipt", str(cleaned_run), "--key", str(tmp_path / "keys" / "clearset.key"),
                "--address", "auto")  # fmt: skip
    assert wrong.returncode != 0 and "--address" in wrong.stderr
