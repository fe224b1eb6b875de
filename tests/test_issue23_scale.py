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


# ---------------------------------------------------------------- text URL lists


class _Counting:
    """A binary file that counts the bytes read through it."""

    def __init__(self, raw, tally: list[int]) -> None:  # type: ignore[no-untyped-def]
        self._raw, self._tally = raw, tally

    def _count(self, data):  # type: ignore[no-untyped-def]
        self._tally[0] += len(data)
        return data

    def read(self, *args):  # type: ignore[no-untyped-def]
        return self._count(self._raw.read(*args))

    def read1(self, *args):  # type: ignore[no-untyped-def]
        return self._count(self._raw.read1(*args))

    def readinto(self, buffer):  # type: ignore[no-untyped-def]
        n = self._raw.readinto(buffer)
        self._tally[0] += n or 0
        return n

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._raw, name)


TEXT_LISTS = {
    # blank lines, CRLF and a lone CR, unicode, a byte that is no UTF-8
    "urls.txt": "".join(
        f"http://127.0.0.1:9/img/{i}-\u00e9\u6f22.jpg"
        + ("\r\n" if i % 3 else "\n")
        + ("\n\r\n" if i % 7 == 0 else "")
        + ("\r" if i % 11 == 0 else "")
        for i in range(3000)
    ).encode("utf-8")
    + b"http://127.0.0.1:9/\xff.jpg\n",
    # a header, a quoted newline in a field, blank lines, CRLF
    "urls.csv": (
        "key,url,caption\r\n"
        + "".join(
            f'k{i},http://127.0.0.1:9/img/{i}.jpg,"line one\nline \u00fc {i}"\r\n'
            + ("\r\n" if i % 5 == 0 else "")
            for i in range(2000)
        )
    ).encode(),
    # a line that is no JSON object, blank lines
    "urls.jsonl": "".join(
        (f'{{"url": "http://127.0.0.1:9/img/{i}.jpg", "id": "\u00e5{i}"}}\n' if i % 13 else "[1]\n")
        + ("\n" if i % 9 == 0 else "")
        for i in range(2000)
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(TEXT_LISTS))
def test_a_shard_of_a_text_url_list_reads_its_own_rows_and_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import fsspec

    from clearset.formats import urls as fetch
    from clearset.formats.urls import FetchSource, read_rows, shard_file_name

    path = tmp_path / name
    path.write_bytes(TEXT_LISTS[name])
    shards = FetchSource(str(path), shard_rows=250).shards()
    assert len(shards) > 5
    tally = [0]
    real_open = fsspec.open

    class Opened:
        def __init__(self, url: str, mode: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
            self._inner = real_open(url, mode, **kwargs)

        def open(self):  # type: ignore[no-untyped-def]
            return _Counting(self._inner.open(), tally)

    every = []
    for shard in shards:
        start, end = shard.rows
        # the reference: the whole file parsed from the top, as every shard did before
        before = read_rows(str(path), shard_file_name(shard), None, start, end)
        tally[0] = 0
        monkeypatch.setattr(fetch.fsspec, "open", Opened)
        rows = read_rows(str(path), shard_file_name(shard), None, start, end, shard.offset)
        monkeypatch.setattr(fetch.fsspec, "open", real_open)
        assert rows == before and len(rows) == end - start
        header = 16 << 10  # the header (and the JSON columns) read from the top
        assert tally[0] <= path.stat().st_size - shard.offset + header
        if shard is shards[-1]:
            assert tally[0] < path.stat().st_size / 2
        every += rows
    assert [r.position for r in every] == list(range(len(every)))


# ---------------------------------------------------------------- manifest footers


def _count_manifest_opens(monkeypatch: pytest.MonkeyPatch, run: Path) -> list[str]:
    """Every opening of a parquet file under RUN/manifest/ by this process."""
    opened: list[str] = []
    folder = str(run / "manifest")
    for name in ("read_table", "ParquetFile", "read_metadata", "read_schema", "ParquetDataset"):
        real = getattr(pq, name)

        def counted(source, *args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            where = source if isinstance(source, str | Path) else getattr(source, "name", "")
            if str(where).startswith(folder):
                opened.append(str(source))
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(pq, name, counted)
    return opened


def test_the_scan_summary_and_status_open_no_manifest_footer(
    demo_data: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    from clearset.runfolder import RunFolder

    run = tmp_path / "run"
    opened = _count_manifest_opens(monkeypatch, run)
    scanned = cli("scan", str(demo_data.webdataset), "--out", str(run), "-w", "1", "--no-progress")
    assert scanned.returncode == 0, scanned.stderr
    shown = cli("status", str(run))
    assert shown.returncode == 0, shown.stderr
    shards = len(list((run / "markers").glob("*.done.json")))
    assert shards > 1 and opened == []
    monkeypatch.undo()
    # The summary's figures are the manifest's.
    table = RunFolder(run).read_manifest(columns=["status", "reason"]).to_pylist()
    expected = Counter((r["status"], (r["reason"] or "").split(":", 1)[0]) for r in table)
    for (status, why), count in expected.items():
        assert any(
            line.split() == [status, *why.split(), f"{count:,}"]
            for line in scanned.stdout.replace("│", " ").splitlines()
        ), (status, why, count, scanned.stdout)
    assert f"{sum(expected.values()):,} members in " in scanned.stdout
