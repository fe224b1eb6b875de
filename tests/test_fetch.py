"""scan --fetch: URL lists fetched from a loopback server into memory, hashed, dropped.

Every served image carries MARKER, so the no-bytes-on-disk test can search every file a
fetch scan wrote. Timeouts, retries and backoff are tiny so each test takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearset.demo import DemoData
from clearset.formats import FetchSettings, open_source
from clearset.formats.fetching.fetcher import disallows_ai, fetch_stream, retry_after_seconds
from clearset.manifest import COLUMNS, read_manifest_files
from clearset.runfolder import RunFolder
from clearset.runs import ScanSettings, run_scan
from tests.conftest import cli
from tests.fetch_server import BIG_BYTES, MARKER, SLOW_SECONDS, LoopbackServer, jpeg, png

# The read timeout leaves room for a loaded machine (a spurious timeout fails a test),
# and stays well under the slow route's SLOW_SECONDS.
FAST = FetchSettings(
    connect_timeout=3.0, read_timeout=1.5, retries=1, backoff=0.01, max_bytes=1 << 20
)
FAST_ARGS = [
    "--connect-timeout", "3", "--read-timeout", "1.5", "--fetch-retries", "1",
    "--backoff", "0.01", "--max-bytes", str(1 << 20),
]  # fmt: skip
TIMING = {"fetch_ms", "first_byte_ms"}


@pytest.fixture(scope="module")
def server() -> LoopbackServer:
    with LoopbackServer() as running:
        yield running


def _by_key(run: Path) -> dict[str, dict]:
    return {row["key"]: row for row in RunFolder(run).read_manifest().to_pylist()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_list(path: Path, *images: bytes) -> str:
    path.write_text("".join(_sha(i) + "\n" for i in images))
    return f"{path},type=sha256"


# ---------------------------------------------------------------- every server behaviour

CASES = {
    # key: (path, status, reason prefix)
    "jpeg": ("/img/1.jpg", "ok", None),
    "png": ("/png/2.png", "ok", None),
    "redirected": ("/redirect/3/4", "ok", None),
    "loop": ("/loop", "missing", "redirect_loop"),
    "not_found": ("/status/404", "missing", "http_404"),
    "server_error": ("/status/503", "missing", "http_503"),
    "flaky": ("/flaky/f/5", "ok", None),
    "rate_limited": ("/ratelimit/r/6", "ok", None),
    "slow": ("/slow/7", "missing", "timeout"),
    "big": ("/big", "missing", "too_large: Content-Length"),
    "big_chunked": ("/big-chunked", "missing", "too_large: body over"),
    "html": ("/html", "error", "not_an_image"),
    "mislabelled": ("/mislabelled/8", "ok", None),
    "truncated": ("/truncated/9", "missing", "connection_closed"),
    "noai": ("/noai/10", "missing", "noai"),
    "noimageai": ("/noimageai/11", "missing", "noai"),
    "other_agent": ("/otherbot-noai/12", "ok", None),
}


def test_every_server_behaviour_gets_a_row_that_says_what_happened(
    server: LoopbackServer, tmp_path: Path
) -> None:
    keys = list(CASES)
    urls = [server.url(CASES[k][0]) for k in keys]
    urls += ["ftp://example.invalid/a.jpg", "http://a..b/x.jpg", None]
    table = pa.table({"key": [*keys, "ftp", "bad_host", "no_url"], "url": urls})
    pq.write_table(table, tmp_path / "urls.parquet")
    run = tmp_path / "run"
    source = open_source(str(tmp_path / "urls.parquet"), kind="fetch", fetch=FAST, shard_rows=6)
    started = time.monotonic()
    run_scan(source, run, ScanSettings(), workers=1, show_progress=False, allow_missing=True)
    assert time.monotonic() - started < 20
    rows = _by_key(run)
    assert len(rows) == len(keys) + 3
    for key, (_, status, reason) in CASES.items():
        row = rows[key]
        assert row["status"] == status, (key, row["reason"])
        if reason is None:
            assert row["reason"] is None, (key, row["reason"])
        else:
            assert (row["reason"] or "").startswith(reason), (key, row["reason"])
        if status == "missing":
            assert row["sha256"] is None and row["size"] is None
    served = {"jpeg": jpeg(1), "png": png(2), "redirected": jpeg(4), "flaky": jpeg(5)}
    served |= {"rate_limited": jpeg(6), "mislabelled": jpeg(8), "other_agent": jpeg(12)}
    for key, data in served.items():
        assert rows[key]["sha256"].hex() == _sha(data) and rows[key]["pdq"] is not None
        assert rows[key]["size"] == len(data) and rows[key]["http_status"] == 200
    assert rows["redirected"]["final_url"] == server.url("/img/4.jpg")
    assert rows["redirected"]["url"] == server.url("/redirect/3/4")
    assert rows["not_found"]["http_status"] == 404 and rows["not_found"]["fetch_attempts"] == 1
    assert rows["server_error"]["fetch_attempts"] == 2  # retried once, then given up
    assert rows["flaky"]["fetch_attempts"] == 2
    # 429 with Retry-After: 1 is waited for, not the 0.01 s backoff
    assert rows["rate_limited"]["fetch_attempts"] == 2
    assert rows["rate_limited"]["fetch_ms"] >= 950
    assert rows["slow"]["fetch_attempts"] == 2  # each cut by the read timeout
    assert rows["slow"]["fetch_ms"] < 2 * SLOW_SECONDS * 1000
    assert rows["mislabelled"]["content_type"] == "text/plain"
    assert rows["html"]["content_type"] == "text/html" and rows["html"]["sha256"] is not None
    assert rows["noai"]["noai"] is True and rows["noimageai"]["noai"] is True
    assert rows["other_agent"]["noai"] is False  # `otherbot: noai` does not address us
    assert rows["noai"]["http_status"] == 200
    assert rows["ftp"]["reason"].startswith("bad_url")
    assert rows["bad_host"]["reason"].startswith("bad_url")  # a row, no crash
    assert rows["no_url"]["reason"].startswith("no_url") and rows["no_url"]["url"] is None


def test_a_body_over_the_cap_is_never_held_whole() -> None:
    import tracemalloc

    # The server in its own process, so that only the client's memory is traced here.
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fetch_server.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        urls = [(0, f"{base}/big-chunked"), (1, f"{base}/big")]
        list(fetch_stream([(0, f"{base}/img/1.jpg")], FAST))  # imports and first use
        tracemalloc.start()
        try:
            found = list(fetch_stream(urls, FAST))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        proc.terminate()
        proc.wait()
    assert all(f.data is None and "too_large" in (f.reason or "") for f in found)
    assert peak < FAST.max_bytes + BIG_BYTES // 3 < BIG_BYTES


def test_ignore_noai_fetches_and_still_records_the_header(
    server: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "urls.txt").write_text(server.url("/noai/21") + "\n")
    run = tmp_path / "run"
    proc = cli(
        "scan", str(tmp_path / "urls.txt"), "--fetch", "--out", str(run), "--ignore-noai",
        "--no-progress", *FAST_ARGS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = _by_key(run).values()
    assert row["status"] == "ok" and row["noai"] is True
    assert row["sha256"].hex() == _sha(jpeg(21))


def test_politeness_per_host_cap_user_agent_and_bounded_queue(tmp_path: Path) -> None:
    settings = FetchSettings(concurrency=8, per_host=2, user_agent="clearset-test/1 (x)")
    with LoopbackServer(delay=0.05) as slow:
        urls = [(i, slow.url(f"/img/{i}.jpg")) for i in range(12)]
        taken = []
        for fetched in fetch_stream(urls, settings):
            taken.append(fetched.index)
            assert slow.handler.in_flight <= 2
        assert slow.handler.max_in_flight == 2
        assert slow.handler.user_agents == {"clearset-test/1 (x)"}
    assert sorted(taken) == list(range(12))


def test_x_robots_tag_and_retry_after_parsing() -> None:
    assert disallows_ai(["noai"]) and disallows_ai(["noindex, NoImageAI"])
    assert disallows_ai(["clearset: noai"]) and not disallows_ai(["otherbot: noai"])
    assert not disallows_ai(["noindex", "nofollow"]) and not disallows_ai([])
    assert retry_after_seconds("2", 60) == 2 and retry_after_seconds("600", 60) == 60
    assert retry_after_seconds("soon", 60) is None and retry_after_seconds(None, 60) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 60) == 0


# ---------------------------------------------------------------- nothing on disk


def _snapshot(roots: list[Path]) -> dict[Path, tuple[int, int]]:
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                found[path] = (stat.st_size, stat.st_mtime_ns)
    return found


def test_a_fetch_scan_writes_no_image_bytes_anywhere(
    server: LoopbackServer, tmp_path: Path
) -> None:
    images = list(range(100, 130))
    assert all(MARKER in jpeg(n) for n in images) and MARKER in png(131)
    urls = [server.url(f"/img/{n}.jpg") for n in images] + [server.url("/png/131.png")]
    urls += [server.url("/truncated/132"), server.url("/big")]
    lists = tmp_path / "lists"
    lists.mkdir()
    lst = _sha_list(lists / "known.txt", jpeg(103), png(131))
    (lists / "urls.parquet").parent.mkdir(exist_ok=True)
    pq.write_table(
        pa.table({"url": urls, "caption": [f"c{i}" for i in range(len(urls))]}),
        lists / "urls.parquet",
    )
    work, tmp, run, clean = (tmp_path / n for n in ("work", "tmp", "run", "clean"))
    for folder in (work, tmp):
        folder.mkdir()
    watched = [work, tmp, tmp_path]
    before = _snapshot(watched)
    proc = subprocess.run(
        [
            sys.executable, "-m", "clearset.cli", "scan", str(lists / "urls.parquet"),
            "--fetch", "--out", str(run), "--list", lst, "--clean-to", str(clean),
            "--shard-rows", "8", "-w", "2", "--no-progress", "--allow-missing", *FAST_ARGS,
        ],
        cwd=work,
        capture_output=True,
        env={**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)},
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert MARKER not in proc.stdout + proc.stderr
    after = _snapshot(watched)
    written = [p for p, stamp in after.items() if before.get(p) != stamp]
    assert len(written) > 10 and any(p.is_relative_to(run) for p in written)
    assert any(p.is_relative_to(clean) for p in written)
    for path in written:
        assert MARKER not in path.read_bytes(), f"image bytes in {path}"
    assert server.handler.hits["/img/103.jpg"] >= 1  # the bytes were served, and matched
    assert json.loads((run / "run.json").read_text())["counts"]["matches"]["items"] == 2


# ---------------------------------------------------------------- clean


def test_clean_of_a_url_parquet_keeps_its_schema_and_drops_matched_rows(
    server: LoopbackServer, tmp_path: Path
) -> None:
    n = 11
    urls = [server.url(f"/img/{200 + i}.jpg") for i in range(n - 1)] + [server.url("/status/404")]
    table = pa.table(
        {
            "uid": [f"u{i}" for i in range(n)],
            "url": urls,
            "caption": [f"a benign caption {i}" for i in range(n)],
            "width": pa.array(range(n), pa.int32()),
        }
    ).replace_schema_metadata({"origin": "test"})
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table, src / "part-0.parquet", row_group_size=4, compression="snappy")
    lst = _sha_list(tmp_path / "known.txt", jpeg(202), jpeg(207))
    run, clean = tmp_path / "run", tmp_path / "clean"
    proc = cli(
        "scan", str(src / "part-0.parquet"), "--fetch", "--out", str(run), "--list", lst,
        "--clean-to", str(clean), "--shard-rows", "3", "-w", "1", "--no-progress",
        "--allow-missing", *FAST_ARGS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not_fetched: 1 sample" in proc.stdout
    assert "1 unread (http_404 1)" in " ".join(proc.stdout.split())  # counted by kind
    out = pq.read_table(clean / "part-0.parquet")
    assert out.schema.equals(table.schema, check_metadata=True)
    assert out.column("uid").to_pylist() == [f"u{i}" for i in range(n) if i not in (2, 7, n - 1)]
    assert out.equals(table.filter(pa.array([i not in (2, 7, n - 1) for i in range(n)])))
    assert (
        pq.ParquetFile(clean / "part-0.parquet").metadata.row_group(0).column(0).compression.upper()
        == "SNAPPY"
    )
    removals = pq.read_table(run / "removals.parquet").to_pylist()
    assert sorted((r["key"], r["reason"]) for r in removals) == [
        ("u10", "not_fetched"), ("u2", "known"), ("u7", "known"),
    ]  # fmt: skip
    kept = pq.read_table(run / "cleaned" / "manifest")
    assert sorted(kept.column("key").to_pylist()) == sorted(out.column("uid").to_pylist())
    # a receipt's leaves: the SHA-256 of the bytes the kept URLs served to this scan
    from clearset.runs.issue import kept_hashes

    leaves = {bytes(row).hex() for row in kept_hashes(run)}
    assert leaves == {_sha(jpeg(200 + i)) for i in range(n - 1) if i not in (2, 7)}

    # the failed fetch is kept only when asked for
    again = tmp_path / "again"
    proc = cli("clean", str(run), "--to", str(again), "--keep-unfetched")
    assert proc.returncode == 0, proc.stderr
    kept_rows = pq.read_table(again / "part-0.parquet").column("uid").to_pylist()
    assert kept_rows == [f"u{i}" for i in range(n) if i not in (2, 7)]


def test_only_finished_parts_of_a_url_list_are_assembled(tmp_path: Path) -> None:
    # Another worker's part still being written (an atomic write's temporary name) must
    # neither crash the shard that looks nor count as written.
    from clearset.atomic import TMP_PREFIX
    from clearset.formats.urls import finished_parts

    for lo, hi in ((0, 3), (3, 6)):
        (tmp_path / f"{lo:012d}-{hi:012d}.part").write_bytes(b"done")
    (tmp_path / f"{TMP_PREFIX}4242-000000000006-000000000009.part").write_bytes(b"half")
    (tmp_path / "notes.part").write_bytes(b"?")
    assert [(lo, hi) for lo, hi, _ in finished_parts(tmp_path)] == [(0, 3), (3, 6)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt"])
def test_text_url_lists_are_cleaned_record_for_record(
    server: LoopbackServer, tmp_path: Path, fmt: str
) -> None:
    urls = [server.url(f"/img/{300 + i}.jpg") for i in range(7)]
    sep = "\t" if fmt == "tsv" else ","
    if fmt in ("csv", "tsv"):
        header = f"id{sep}caption{sep}url\r\n"
        records = [f'k{i}{sep}"two\nlines, {i}"{sep}{u}\r\n' for i, u in enumerate(urls)]
    elif fmt == "jsonl":
        header = ""
        records = [json.dumps({"id": f"k{i}", "URL": u, "n": i}) + "\n" for i, u in enumerate(urls)]
    else:
        header = ""
        records = [u + "\n" for u in urls]
    path = tmp_path / f"urls.{fmt}"
    path.write_bytes((header + "".join(records)).encode())
    lst = _sha_list(tmp_path / "known.txt", jpeg(301), jpeg(305))
    run, clean = tmp_path / "run", tmp_path / "clean"
    proc = cli(
        "scan", str(path), "--fetch", "--out", str(run), "--list", lst, "--clean-to",
        str(clean), "--shard-rows", "3", "-w", "1", "--no-progress", *FAST_ARGS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = _by_key(run)
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows.values())
    if fmt != "txt":
        assert set(rows) == {f"k{i}" for i in range(7)}
    kept = header + "".join(r for i, r in enumerate(records) if i not in (1, 5))
    assert (clean / path.name).read_bytes() == kept.encode()


# ---------------------------------------------------------------- resume, bad input, dry run


def test_a_killed_fetch_scan_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    with LoopbackServer(delay=0.03) as slow:
        urls = [slow.url(f"/img/{400 + i}.jpg") for i in range(48)] + [slow.url("/status/404")]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        args = ["--fetch", "--shard-rows", "4", "--concurrency", "2", "--per-host", "2"]
        args += ["-w", "1", "--no-progress", "--allow-missing", *FAST_ARGS]
        full, killed = tmp_path / "full", tmp_path / "killed"
        scanned = cli("scan", str(tmp_path / "urls.txt"), "--out", str(full), *args)
        assert scanned.returncode == 0, scanned.stderr
        proc = subprocess.Popen(
            [sys.executable, "-m", "clearset.cli", "scan", str(tmp_path / "urls.txt"),
             "--out", str(killed), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        markers = killed / "markers"
        while time.monotonic() < deadline and not list(markers.glob("[!.]*.done.json")):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = len(list((killed / "markers").glob("[!.]*.done.json")))
        assert 0 < done < 13, "the scan must be stopped part-way for this test to mean anything"
        served = sum(slow.handler.hits.values())
        resumed = cli("scan", str(tmp_path / "urls.txt"), "--out", str(killed), *args)
        assert resumed.returncode == 0, resumed.stderr
        # the finished shards' URLs are not fetched again
        assert sum(slow.handler.hits.values()) - served <= len(urls) - 4 * done + 4
    keep = [c for c in COLUMNS if c not in TIMING]

    def rows(run: Path) -> list[dict]:
        table = RunFolder(run).read_manifest().select(keep)
        return sorted(table.to_pylist(), key=lambda r: r["position"])

    assert rows(killed) == rows(full)


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("nourl.csv", [], "no URL column"),
        ("urls.parquet", ["--url-column", "link"], "no column 'link' for --url-column"),
        ("broken.parquet", [], "not a readable parquet file"),
        ("absent.txt", [], "no such URL list"),
        ("empty.csv", [], "empty URL list"),
        ("shards.tar", [], "not a URL list"),
    ],
)
def test_bad_url_lists_are_one_line_errors_that_leave_nothing(
    tmp_path: Path, name: str, extra: list[str], message: str
) -> None:
    (tmp_path / "nourl.csv").write_text("id,caption\n1,a\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "shards.tar").write_bytes(b"\0" * 1024)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"]}), tmp_path / "urls.parquet")
    out = tmp_path / "out"
    proc = cli("scan", str(tmp_path / name), "--fetch", "--out", str(out), *extra)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0] and name in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--concurrency", "8", "--ignore-noai", "--url-column", "u"],
         "--url-column, --concurrency, --ignore-noai go with --fetch"),
        (["--dry-run"], "--dry-run goes with --fetch"),
    ],
)  # fmt: skip
def test_fetch_options_without_fetch_are_refused_not_ignored(
    demo_data: DemoData, tmp_path: Path, extra: list[str], named: str
) -> None:
    out = tmp_path / "out"
    proc = cli("scan", str(demo_data.webdataset), "--out", str(out), *extra)
    assert proc.returncode == 2, proc.stderr
    said = f"clearset: error: scan: {named} (SOURCE as a URL list)"
    assert proc.stderr.strip().splitlines() == [said]
    assert not out.exists()


def test_a_clean_over_the_url_list_itself_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"]}), tmp_path / "urls.parquet")
    before = (tmp_path / "urls.parquet").read_bytes()
    proc = cli(
        "scan", str(tmp_path / "urls.parquet"), "--fetch", "--out", str(tmp_path / "run"),
        "--clean-to", str(tmp_path), "--drop-undecodable",
    )  # fmt: skip
    assert proc.returncode != 0 and "overlaps the source" in proc.stderr, proc.stderr
    assert (tmp_path / "urls.parquet").read_bytes() == before


def test_dry_run_prints_hosts_and_an_estimate_and_writes_nothing(
    server: LoopbackServer, tmp_path: Path
) -> None:
    urls = [server.url(f"/img/{500 + i}.jpg") for i in range(30)]
    urls += ["http://other.invalid/a.jpg", "not a url"]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    proc = cli(
        "scan", str(tmp_path / "urls.txt"), "--fetch", "--dry-run", "--sample", "10",
        "--out", str(out), "-w", "2", *FAST_ARGS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "32 URLs on 3 hosts" in text
    assert f"30 93.8% 127.0.0.1:{server.port}" in text
    assert "sample: 10 URLs fetched and hashed" in text and "estimate:" in text
    assert not out.exists()


def test_manifests_written_before_the_fetch_columns_still_read(tmp_path: Path) -> None:
    old = pa.table({"key": ["a"], "shard": ["s"], "position": [0], "status": ["ok"]})
    pq.write_table(old, tmp_path / "old.parquet")
    table = read_manifest_files([tmp_path / "old.parquet"])
    assert table.column_names == list(COLUMNS)
    assert table.column("http_status").to_pylist() == [None]
    part = read_manifest_files([tmp_path / "old.parquet"], ["key", "final_url"])
    assert part.to_pylist() == [{"key": "a", "final_url": None}]


# ---------------------------------------------------------------- scale-out


def _fetch_rows(run: Path) -> list[dict]:
    keep = [c for c in COLUMNS if c not in TIMING]
    table = RunFolder(run).read_manifest().select(keep)
    return sorted(table.to_pylist(), key=lambda r: r["key"])


@pytest.fixture
def url_list(server: LoopbackServer, tmp_path: Path) -> Path:
    urls = [server.url(f"/img/{600 + i}.jpg") for i in range(20)] + [server.url("/status/404")]
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(urls) + "\n")
    return path


def test_two_ranks_of_a_fetch_scan_equal_one_scan(url_list: Path, tmp_path: Path) -> None:
    from clearset.runs import Split

    def source():
        return open_source(str(url_list), kind="fetch", fetch=FAST, shard_rows=4)

    one, ranks = tmp_path / "one", tmp_path / "ranks"
    run_scan(source(), one, ScanSettings(), workers=1, show_progress=False, allow_missing=True)
    for rank in (1, 0):
        result = run_scan(
            source(), ranks, ScanSettings(), workers=1, show_progress=False,
            allow_missing=True, split=Split(rank, 2),
        )  # fmt: skip
    assert result.finished and result.shards_total == 6
    assert _fetch_rows(ranks) == _fetch_rows(one)


@pytest.mark.ray
def test_a_fetch_scan_on_ray_equals_the_local_one(
    url_list: Path, tmp_path: Path, ray_engine: Any
) -> None:
    def source():
        return open_source(str(url_list), kind="fetch", fetch=FAST, shard_rows=4)

    local, ray = tmp_path / "local", tmp_path / "ray"
    run_scan(source(), local, ScanSettings(), workers=1, show_progress=False, allow_missing=True)
    run_scan(
        source(), ray, ScanSettings(), engine=ray_engine, show_progress=False, allow_missing=True
    )
    assert _fetch_rows(ray) == _fetch_rows(local)


def test_a_shard_of_a_parquet_list_reads_its_own_row_groups_and_the_same_rows(
    tmp_path: Path,
) -> None:
    from clearset.formats.urls import read_rows

    path = tmp_path / "u.parquet"
    urls = [f"http://127.0.0.1:9/{i}.jpg" for i in range(1000)]
    pq.write_table(pa.table({"url": urls}), path, row_group_size=97)
    spans = [(0, 10), (90, 200), (96, 97), (97, 98), (950, 1000), (990, 1200), (1000, 1100)]
    for start, end in spans:
        rows = read_rows(str(path), "u.parquet", None, start, end)
        assert [r.url for r in rows] == urls[start:end], (start, end)
        assert [r.key for r in rows] == [
            r.key for r in read_rows(str(path), "u.parquet", None, 0, 1000)[start:end]
        ]


def test_the_digest_of_a_list_file_is_read_again_when_the_file_changes(tmp_path: Path) -> None:
    from clearset.formats.parquet import file_digest

    path = tmp_path / "urls.txt"
    path.write_text("http://127.0.0.1:9/a.jpg\n")
    first = file_digest(str(path))
    assert file_digest(str(path)) == first
    old = time.time_ns() - 60 * 10**9
    os.utime(path, ns=(old, old))  # settled: now trusted by its stat
    assert file_digest(str(path)) == first
    path.write_text("http://127.0.0.1:9/b.jpg\n")  # same size, new bytes
    os.utime(path, ns=(old, old))  # even with the old times put back, ctime moved
    assert file_digest(str(path))["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(str(path)) != first
