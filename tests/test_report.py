"""The removal report: counts by list, hash type and shard, thresholds and histograms in
report.json; a self-contained report.html whose charts render in headless Chromium with
no network request under a CSP that allows its one script by hash, and which holds no
image, caption, link, list entry or matched item's URL (unless --show-urls)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from clearset.demo import DemoData
from clearset.documents.report import bar_chart, write_report
from clearset.formats import open_source
from clearset.matching.matcher import ListSpec, MatchSettings
from clearset.runs import MatchJob, ScanSettings, run_scan
from clearset.stages.clean import CleanJob
from tests.conftest import run_cli

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def reported(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    job = MatchJob(
        (ListSpec(str(demo_data.pdq_list)), ListSpec(str(demo_data.md5_list))), MatchSettings()
    )
    run_scan(
        open_source(str(demo_data.webdataset)),
        root / "run",
        ScanSettings(),
        workers=2,
        show_progress=False,
        match=job,
        clean=CleanJob(str(root / "clean")),
    )
    write_report(root / "run")
    return root / "run"


def test_report_json_counts(demo_data: DemoData, reported: Path) -> None:
    report = json.loads((reported / "report.json").read_text())
    matched = {m["key"] for m in report["matched_items"]}
    assert matched and matched <= set(demo_data.planted())
    assert report["matches"]["items"] == len(matched)
    assert report["matches"]["by_list"]["watch-md5"] == 1
    assert report["matches"]["by_hash_type"] == {
        "md5": 1,
        "pdq": report["matches"]["by_list"]["watch-pdq"],
    }
    assert report["thresholds"]["pdq_threshold"] == 31
    assert [entry["name"] for entry in report["lists"]] == ["watch-pdq", "watch-md5"]
    assert sum(report["distance_histogram"]) == sum(
        1 for m in report["matched_items"] for x in m["matches"] if x["hash_type"] == "pdq"
    )
    assert sum(s["items"] for s in report["per_shard"].values()) == report["items"]["total"]
    assert sum(s["matched_items"] for s in report["per_shard"].values()) == len(matched)
    assert report["errors_by_reason"] == {
        "corrupt": 1, "decompression_bomb": 1, "empty": 1, "not_an_image": 1,
    }  # fmt: skip
    assert report["clean"]["counts"]["keys_removed"] == len(matched)
    assert report["clean"]["dropped_undecodable"] == []


def test_report_holds_identifiers_only(demo_data: DemoData, reported: Path) -> None:
    page = (reported / "report.html").read_text()
    data = (reported / "report.json").read_text()
    entries = [line.split()[1] for line in demo_data.pdq_list.read_text().splitlines()[1:]]
    for text in (page, data):
        assert "a procedural scene" not in text  # captions
        assert not any(entry in text for entry in entries)  # list contents
    lowered = page.lower()
    for forbidden in ("<img", "<a ", "href=", "src=", "url(", "<link", "@import", "<iframe"):
        assert forbidden not in lowered
    assert "default-src 'none'" in page
    assert len(re.findall(r"<svg\b", page)) == 5


def test_report_names_no_url_of_a_matched_item_unless_asked(
    demo_data: DemoData, reported: Path
) -> None:
    report = json.loads((reported / "report.json").read_text())
    urls = [f"https://images.example.com/demo/{m['key']}" for m in report["matched_items"]]
    assert urls
    for name in ("report.json", "report.html"):
        text = (reported / name).read_text()
        assert not any(url in text for url in urls), name
        assert "a procedural scene" not in text
    assert all("url" not in m for m in report["matched_items"])

    proc = run_cli("report", str(reported), "--show-urls")
    try:
        assert proc.returncode == 0, proc.stderr
        for name in ("report.json", "report.html"):
            text = (reported / name).read_text()
            assert all(url in text for url in urls), name
            assert "a procedural scene" not in text  # captions never, even then
    finally:
        write_report(reported)  # the other tests read the shareable one


def test_report_csp_allows_its_one_inline_script_by_hash(reported: Path) -> None:
    page = (reported / "report.html").read_text()
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy
    directives = {
        d.split()[0]: d.split()[1:] for d in (x.strip() for x in policy.group(1).split(";")) if d
    }

    def sha256(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert directives["script-src"] == [sha256(scripts[0])]
    assert directives["style-src"] == [sha256(styles[0])]
    assert directives["default-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'none'"]
    assert "unsafe-inline" not in policy.group(1) and "unsafe-eval" not in policy.group(1)


def test_an_empty_chart_has_no_axis_or_made_up_scale() -> None:
    for vertical in (True, False):
        chart = bar_chart("PDQ matches by distance", ["0", "1", "2"], [0, 0, 0], vertical=vertical)
        assert "<svg" not in chart and "nothing to show" in chart
        assert ">1<" not in chart and ">0<" not in chart
    drawn = bar_chart("x", ["0", "1"], [3, 1], vertical=True, x_title="bits")
    assert "<svg" in drawn and ">3<" in drawn and ">bits<" in drawn


class _RecordingProxy:
    """A TCP listener that records every connection a browser makes through it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.requests.append(conn.recv(4096))
                except OSError:
                    self.requests.append(b"?")

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_report_renders_its_charts_offline_in_chromium(reported: Path) -> None:
    proxy = _RecordingProxy()
    profile = tempfile.mkdtemp(prefix="clearset-chromium-")
    try:
        proc = subprocess.run(
            [
                str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{proxy.port}",
                "--proxy-bypass-list=<-loopback>",  # even localhost goes through the proxy
                "--dump-dom", (reported / "report.html").resolve().as_uri(),
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        proxy.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The inline script ran after the page was parsed and counted the drawn charts.
    assert 'data-charts-rendered="5"' in proc.stdout
    assert proc.stdout.count("<rect") > 10
    # Chromium itself phones its vendor (clock sync, component updates) whatever the
    # flags; anything else went out because of the page.
    hosts = [
        re.split(rb"[/:]", r.split(b" ")[1].removeprefix(b"http://"))[0] for r in proxy.requests
    ]
    page_requests = [
        h for h in hosts if not h.endswith((b".google.com", b".gvt1.com", b".googleapis.com"))
    ]
    assert page_requests == []
