"""Issue 23 point 8: the scale edges (manifest footers the driver reads, text URL lists
parsed from the start by each shard, --per-host per worker, a bad input retried)."""

from __future__ import annotations

from pathlib import Path

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
