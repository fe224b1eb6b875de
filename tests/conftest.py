"""Shared fixtures: the benign demo data set, built once per test session."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clearset.demo import DemoData, DemoItem, build_demo_data, demo_items


def pytest_configure(config: pytest.Config) -> None:
    # The suite starts hundreds of interpreters (commands, spawned workers, Ray's). Where
    # bytecode is not written (PYTHONDONTWRITEBYTECODE, as in some containers) each one
    # compiled this project's modules again, a fifth of a second apiece; compiled once
    # here, they all read it. Elsewhere the first import writes the same files anyway.
    if sys.dont_write_bytecode:
        import compileall

        root = Path(__file__).resolve().parents[1]
        for folder in ("clearset", "tests", "bench"):
            compileall.compile_dir(root / folder, quiet=1)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder that `build(folder)` fills once for the whole test run: the first process
    to ask builds it, the others (pytest-xdist's workers, each of which sets up module and
    session fixtures of its own) wait for it and share it. For data the tests only read.

    It lies beside the workers' own temporary folders, under the run's shared base; a
    build that failed half-way is removed and made again by the next to ask.
    """
    from filelock import FileLock

    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # basetemp/popen-gwN: the parent is the run's, shared
    folder = base / f"built-once-{name}"
    built = base / f"built-once-{name}.done"
    with FileLock(f"{folder}.lock"):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


@functools.cache
def the_demo_items() -> tuple[DemoItem, ...]:
    """`demo_items()`, the demo data set's items, made once per test process (about two
    seconds each time): for tests that only read them."""
    return tuple(demo_items())


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return DemoData(built_once(tmp_path_factory, "demo", build_demo_data))


_shared_ray: list[Any] = []


@pytest.fixture
def ray_engine() -> Any:
    """The Ray engine (2 workers) on one local Ray instance that the tests of this test
    process share: started by the first test that asks (several seconds), stopped when
    the session ends or by `stop_shared_ray`. Its workers can import the tests' modules
    (a test's own source classes travel to them by name)."""
    pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    import ray

    from clearset.engines import make_engine

    if not (_shared_ray and ray.is_initialized()):
        stop_shared_ray()
        root = Path(__file__).resolve().parents[1]
        path = os.environ.get("PYTHONPATH")
        # Ray's processes take the environment of the ray.init that starts them.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), str(root / "tests"), path) if p
        )
        try:
            _shared_ray.append(make_engine("ray", workers=2))
        finally:
            if path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = path
    return _shared_ray[0]


def stop_shared_ray() -> None:
    """Stop `ray_engine`'s Ray, for a test that needs none running in this process."""
    while _shared_ray:
        _shared_ray.pop().close()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # An idle Ray costs a few per cent of a core: stopped after the last test in the
    # collection's order that asks for it (one run out of order starts it again).
    if _shared_ray:
        order = item.session.items
        last = max(
            (
                n
                for n, each in enumerate(order)
                if "ray_engine" in getattr(each, "fixturenames", ())
            ),
            default=-1,
        )
        if nextitem is None or order.index(item) >= last:
            stop_shared_ray()


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_shared_ray()


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


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a clearset command in this interpreter, as `clearset ARGS` would in its own.

    It goes through the entry point's `main()` (its one-line errors and exit codes), with
    stdout and stderr captured as text and the progress interval of `run_cli`, and gives
    the same result object. No interpreter start-up (about a second each, more on a loaded
    machine): for tests of what a command does and says. A test about the process
    boundary itself (signals, encodings of the real streams, a fresh interpreter, what is
    logged before any handler is set up) uses `run_cli`.
    """
    import contextlib
    import io
    import signal

    from clearset.cli import main
    from clearset.cli.app import console, out
    from clearset.stages import clean

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, signal.getsignal(signal.SIGINT), sys.excepthook
    # The CLI's consoles chose their colours when imported; under `pytest -s` on a
    # terminal that was the terminal's. Captured here, they print as into a pipe.
    consoles = [(each, each._color_system) for each in (console, out)]
    for each, _ in consoles:
        each._color_system = None
    previous_interval = os.environ.get("CLEARSET_PROGRESS_INTERVAL")
    # A real command starts with empty per-process caches: a keep list rewritten at the
    # same path (match, then clean again) must be read again.
    clean._set_cache.clear()
    os.environ["CLEARSET_PROGRESS_INTERVAL"] = "3600"
    sys.argv = ["clearset", *args]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
            except SystemExit as exc:
                code = exc.code
                if isinstance(code, str):  # as the interpreter does with sys.exit("...")
                    print(code, file=sys.stderr)
                    code = 1
    finally:
        sys.argv = saved[0]
        signal.signal(signal.SIGINT, saved[1])  # main() installs its own Ctrl-C handler
        sys.excepthook = saved[2]  # and Typer its own traceback printer
        for each, colours in consoles:
            each._color_system = colours
        if previous_interval is None:
            os.environ.pop("CLEARSET_PROGRESS_INTERVAL", None)
        else:
            os.environ["CLEARSET_PROGRESS_INTERVAL"] = previous_interval
    proc = subprocess.CompletedProcess(
        ["clearset", *args], code or 0, stdout.getvalue(), stderr.getvalue()
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


#: img2dataset's own entry point, run in a fresh interpreter: one `download()` per output
#: folder, one after the other, with the options given as JSON.
#:
#: Each download starts a logger process and a worker pool of its own (spawned: each a
#: fresh interpreter that imports this script, then img2dataset), and starting those
#: interpreters is nearly all the time these runs take. So all runs share one parent, and
#: two imports that do nothing here are left out, in the spawned processes too: wandb,
#: which img2dataset's logger imports whole to use only with enable_wandb; and Ray, which
#: its distributor imports when it can and does without (as when Ray is not installed)
#: unless asked for the Ray distributor.
I2D_SCRIPT = """
import json, sys, types
sys.modules["wandb"] = types.ModuleType("wandb")
sys.modules["ray"] = None
from img2dataset import download
if __name__ == "__main__":
    for output_folder, options in json.loads(sys.argv[2]).items():
        download(url_list=sys.argv[1], output_folder=output_folder, input_format="txt",
                 processes_count=1, enable_wandb=False, timeout=5, retries=0,
                 disallowed_header_directives=[], **options)
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
    `runs`: output under root/NAME, `download()` options from the entry. Returns the URLs
    of `pictures` in order. Skips the test if img2dataset is absent.
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
    folders = {str(root / name): options for name, options in runs.items()}
    try:
        proc = subprocess.run(
            [sys.executable, str(root / "run_i2d.py"), str(root / "urls.txt"), json.dumps(folders)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            timeout=timeout * len(runs),
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-4000:]
    return urls
