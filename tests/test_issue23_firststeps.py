"""Issue 23 point 5 and a case of point 9: the first steps a new user takes, each of which
used to fail or say something false (a `clearset hash` output that was no list, a scan
without --list that said nothing about matching nothing, a re-scan refusal that did not
name `clearset match`, `prompts` on a --fetch run, `scan --fetch --dry-run` wanting
--out, a header-less CSV list, and `clearset hash` on a FIFO or a device)."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from clearset.demo import encode_jpeg, generate_image
from tests.conftest import cli
from tests.fetch_server import LoopbackServer


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of five benign procedural pictures."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(23)
    for number in range(5):
        (root / f"{number:03d}.jpg").write_bytes(encode_jpeg(generate_image(rng), 90))
    return root


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- scan without --list


def test_a_scan_without_a_list_says_it_matched_nothing_and_how_to_match(
    pictures: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = cli("scan", str(pictures), "--out", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr  # hashing only is a use of its own
    said = _one_line(proc.stdout)
    assert "no --list given: nothing was matched" in said
    assert f"clearset match {shlex.quote(str(run))} --list LIST" in said


# ---------------------------------------------------------------- scan --fetch --dry-run


def test_a_fetch_dry_run_needs_no_out_and_a_real_scan_still_does(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(server.url(f"/img/{n}.jpg") + "\n" for n in range(3)))
        proc = cli("scan", str(urls), "--fetch", "--dry-run", "--sample", "2",
                   "--read-timeout", "5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 URLs on 1 hosts" in _one_line(proc.stdout)
    assert list(tmp_path.iterdir()) == [urls]  # it wrote nothing
    proc = cli("scan", str(urls), "--fetch", "--no-progress")
    assert proc.returncode != 0
    assert proc.stderr.strip() == "clearset: error: scan: give --out RUN, the run folder to write"
