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


#: img2dataset's own entry point, run in a fresh interpreter with the options as JSON.
I2D_SCRIPT = """
import json, sys
from img2dataset import download
if __name__ == "__main__":
    download(url_list=sys.argv[1], output_folder=sys.argv[2], input_format="txt",
             processes_count=1, enable_wandb=False, timeout=5, retries=0,
             disallowed_header_directives=[], **json.loads(sys.argv[3]))
"""


def run_img2dataset(
    root: Path,
    pictures: list[bytes],
    runs: dict[str, dict[str, object]],
    missing: tuple[str, ...] = (),
    timeout: float = 240,
) -> list[str]:
    """Serve `pictures` from a loopback HTTP server and run the real img2dataset on their
    URLs (then `missing` names the server does not have, which fail), once per entry of
    `runs`, side by side: output under root/NAME, `download()` options from the entry.
    Returns the URLs of `pictures` in order. Skips the test if img2dataset is absent.
    """
    import functools
    import http.server
    import importlib.util
    import json
    import threading

    if importlib.util.find_spec("img2dataset") is None:  # importing it would phone home
        pytest.skip("img2dataset is not installed")
    www = root / "www"
    www.mkdir(parents=True)
    for n, data in enumerate(pictures):
        (www / f"{n}.jpg").write_bytes(data)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/{n}.jpg" for n in range(len(pictures))]
    (root / "urls.txt").write_text("\n".join([*urls, *(f"{base}/{m}" for m in missing)]) + "\n")
    (root / "run_i2d.py").write_text(I2D_SCRIPT)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(root / "run_i2d.py"),
                str(root / "urls.txt"),
                str(root / name),
                json.dumps(options),
            ],  # fmt: skip
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=root,
        )
        for name, options in runs.items()
    ]
    try:
        for proc in procs:
            assert proc.wait(timeout=timeout) == 0
    finally:
        server.shutdown()
    return urls
