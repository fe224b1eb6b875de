"""Issue 23 point 8: the scale edges (manifest footers the driver reads, text URL lists
parsed from the start by each shard, --per-host per worker, a bad input retried)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from tests.conftest import cli
from tests.fetch_server import LoopbackServer

FAST_ARGS = [
    "--connect-timeout", "3", "--read-timeout", "5", "--fetch-retries", "1",
    "--backoff", "0.01",
]  # fmt: skip


def test_two_workers_never_exceed_per_host_in_flight_at_the_server(tmp_path: Path) -> None:
    # Slow answers keep each request in flight long enough that both workers' requests
    # overlap: per worker process, 2 workers with --per-host 2 reached 4 at the server.
    with LoopbackServer(delay=0.1) as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(server.url(f"/img/{i}.jpg") + "\n" for i in range(80)))
        result = cli(
            "scan", str(urls), "--fetch", "--out", str(tmp_path / "run"), "--workers", "2",
            "--per-host", "2", "--concurrency", "8", "--shard-rows", "10", "--no-progress",
            *FAST_ARGS,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert sum(server.handler.hits.values()) == 80
        assert server.handler.max_in_flight <= 2
        assert server.handler.max_in_flight == 2  # the limit, not a stall


# ---------------------------------------------------------------- bad input, not retried


@pytest.fixture(scope="module")
def cleaned_run(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cleaned")
    cli(
        "scan", str(demo_data.webdataset), "--out", str(root / "run"), "--list",
        str(demo_data.md5_list), "--clean-to", str(root / "cleaned"), "-w", "1",
        "--no-progress", check=True,
    )  # fmt: skip
    cli("keygen", str(root / "keys"), check=True)
    return root


@pytest.mark.parametrize("damage", ["corrupt", "wrong_columns"])
def test_a_receipt_over_a_damaged_cleaned_manifest_names_the_file_once(
    cleaned_run: Path, tmp_path: Path, damage: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(cleaned_run / "run", run)
    shard = sorted((run / "cleaned" / "manifest").glob("*.parquet"))[1]
    if damage == "corrupt":
        shard.write_bytes(b"PAR1 this is not a parquet file")
    else:
        pq.write_table(pa.table({"key": ["a"], "caption": ["b"]}), shard)
    tries: list[str] = []
    real = pq.read_table

    def counted(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == str(shard):
            tries.append(str(path))
        return real(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pq, "read_table", counted)
        result = cli(
            "receipt", str(run), "--key", str(cleaned_run / "keys" / "clearset.key"),
            "--workers", "1", "--no-progress",
        )  # fmt: skip
    assert result.returncode != 0
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.stderr
    assert line.startswith(f"error: {shard}: ") or f" {shard}: " in line, line
    assert "cannot read the manifest shard" in line
    assert "re-run the same command to retry" not in line and "shards failed" not in line
    assert len(tries) == 1, "bad input is not tried again"
    assert not (run / "receipt.json").exists() and not (run / "tree.bin").exists()
