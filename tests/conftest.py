"""Shared fixtures: the benign demo data set, built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clearset.demo import DemoData, build_demo_data


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return build_demo_data(tmp_path_factory.mktemp("demo"))


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real `clearset` entry point in a fresh interpreter.

    Its stderr is a pipe, where progress is a line every 10 s: on a loaded machine that
    would land among the lines a test counts, so these runs print it once an hour.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "clearset.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CLEARSET_PROGRESS_INTERVAL": "3600"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"clearset {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under root: to show a source was not touched."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
