"""Fuzz ``load_list``: any bytes, named any way, loaded with any options, must give
HashLists or one InputError line that shows no piece of a hash or URL from the file.
Anything else (another exception, a multi-line message, an echo) is a crash.

Usage (atheris, coverage-guided, the default when ``pip install atheris`` works)::

    python bench/fuzz/fuzz_lists.py -max_total_time=60 [CORPUS_DIR ...]

Without a corpus directory it starts from a few generated, well-formed lists of each
format (random bytes as hashes: benign by construction). Other libFuzzer flags pass
through (``-runs=N``, ``-jobs=N``...). libFuzzer prints the inputs run (``#N DONE``).

Fallback, where atheris has no wheel for the interpreter and cannot build (it needs
clang and libFuzzer)::

    python bench/fuzz/fuzz_lists.py --hypothesis --seconds 60

drives the same check with hypothesis: structured random lists (the shapes that broke
before: swapped columns, JSON keyed by hash, header-less CSV, deep nesting) with random
bytes spliced in. Not coverage-guided, so a poorer search per input; it prints the
inputs run and the crashes found. atheris is deliberately not a test dependency.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import fsspec

try:
    import atheris
except ImportError:  # the fallback below needs only hypothesis
    atheris = None

if atheris is not None and "--hypothesis" not in sys.argv:
    with atheris.instrument_imports(include=["clearset"]):
        from clearset.errors import InputError
        from clearset.lists import FORMAT_BY_NAME, HASH_TYPES, load_list
else:
    from clearset.errors import InputError
    from clearset.lists import FORMAT_BY_NAME, HASH_TYPES, load_list

NAMES = ["list.txt", "list.te", "list.csv", "list.tsv", "list.json", "list.jsonl", "list",
         "SHA256SUMS", "list.md5", "list.txt.gz"]  # fmt: skip
FORMAT_NAMES = [None, None, None, *FORMAT_BY_NAME]
TYPES = [None, None, None, *HASH_TYPES]

# What counts as a list entry in the input: a run of 16+ hex digits or a URL.
_ENTRY = re.compile(rb"[0-9A-Fa-f]{16,}|[A-Za-z][A-Za-z0-9+.-]*://[^\s,\"'\]\}]+")
_WINDOW = 8

# 8-character pieces of our own source text (message templates, type and column names)
# are not echoes when an input happens to contain them too.
_OWN_TEXT = "\n".join(
    path.read_text() for path in (Path(__file__).parents[2] / "clearset" / "lists").glob("*.py")
)

_memory = fsspec.filesystem("memory")


class _Notices(logging.Handler):
    """Keeps the loader's skip notices, which must not echo entries either."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_notices = _Notices()
logging.getLogger("clearset.lists").addHandler(_notices)
logging.getLogger("clearset.lists").propagate = False


class EchoError(AssertionError):
    """An error message showed a piece of a list entry."""


def check(data: bytes, name: str, fmt: str | None, hash_type: str | None, skip: bool) -> None:
    """Load ``data`` as a list file; raise if the loader misbehaves."""
    path = f"memory://fuzz/{name}"
    if name.endswith(".gz"):
        import gzip

        data = gzip.compress(data, mtime=0)
    _memory.pipe(path, data)
    _notices.messages.clear()
    try:
        lists = load_list(path, fmt=fmt, hash_type=hash_type, skip_invalid=skip)
    except InputError as error:
        messages = [str(error)]
    else:
        # What outputs show of a list: the notice, warnings and the skip kinds in run.json.
        messages = [*_notices.messages, *(w for hl in lists for w in hl.warnings)]
        messages += [kind for hl in lists for kind in hl.skipped]
    for message in messages:
        if "\n" in message or "\r" in message:
            raise EchoError(f"message of more than one line: {message!r}")
        shown = message.replace(path, "")
        for entry in _ENTRY.findall(data):
            text = entry.decode("ascii", errors="replace")
            for start in range(len(text) - _WINDOW + 1):
                piece = text[start : start + _WINDOW]
                if piece in shown and piece not in _OWN_TEXT:
                    raise EchoError(f"message echoes an entry: {message!r}")


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    name = provider.PickValueInList(NAMES)
    fmt = provider.PickValueInList(FORMAT_NAMES)
    hash_type = provider.PickValueInList(TYPES)
    skip = provider.ConsumeBool()
    check(provider.ConsumeBytes(provider.remaining_bytes()), name, fmt, hash_type, skip)


def seed_lists() -> list[bytes]:
    """Well-formed lists of every shape, as starting points, with 4 option bytes first."""
    import json
    import random

    rng = random.Random(0)

    def hexes(nbytes: int, count: int = 4) -> list[str]:
        return [rng.randbytes(nbytes).hex() for _ in range(count)]

    pdq, md5, sha256 = hexes(32), hexes(16), hexes(32)
    urls = [f"https://images.example.org/benign/{n}.jpg" for n in range(3)]
    bodies = [
        "\n".join(md5),
        "\n".join(f"pdq {v}" for v in pdq) + "\nurl_md5 " + md5[0] + "\nvideo_md5 " + md5[1],
        "signal_type,signal_value\n" + "\n".join(f"md5,{v}" for v in md5),
        "type,hash\n" + "\n".join(f"{v},pdq" for v in pdq),
        "\n".join(f"{u},benign" for u in urls),
        json.dumps([{"type": "pdq", "hash": v} for v in pdq]),
        json.dumps({v: 1 for v in md5}),
        json.dumps({"pdq": pdq, "md5": md5}),
        "\n".join(json.dumps({"signal_type": "md5", "signal_value": v}) for v in md5),
        "\n".join(f"{v}  images/{n}.jpg" for n, v in enumerate(sha256)),
        "[" * 2000 + "]" * 2000,
        "\n".join(urls),
    ]
    return [bytes([n % 10, 0, 0, 0]) + body.encode() for n, body in enumerate(bodies)]


def run_atheris(argv: list[str]) -> None:
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = tempfile.mkdtemp(prefix="fuzz-lists-")
        for number, seed in enumerate(seed_lists()):
            Path(corpus, f"seed-{number:02d}").write_bytes(seed)
        argv = [*argv, corpus]
    if not any(arg.startswith("-artifact_prefix=") for arg in argv):
        # Crash files go to a temporary folder, not wherever the command was run.
        argv.insert(1, f"-artifact_prefix={tempfile.mkdtemp(prefix='fuzz-lists-crash-')}/")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def run_hypothesis(seconds: float) -> int:
    """Random structured lists for ``seconds``; returns the number of crashes."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    hex_token = st.sampled_from([8, 32, 40, 64, 65]).flatmap(
        lambda n: st.text("0123456789abcdefABCDEF", min_size=n, max_size=n)
    )
    url = st.builds(
        lambda host, tail: f"https://{host}.example/{tail}",
        st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-", max_size=16),
    )
    word = st.sampled_from(["pdq", "md5", "sha256", "url", "url_md5", "video_md5", "text",
                            "hash", "type", "signal_type", "signal_value", "zz", ""])  # fmt: skip
    pairs = st.lists(st.tuples(word, st.one_of(hex_token, url)), max_size=6)
    shape = st.sampled_from(["{t} {e}", "{e} {t}", "{t},{e}", "{e},{t}", "{t}\t{e}",
                             "{e}  {t}", '{{"{e}": "{t}"}}', '{{"type": "{t}", "hash": "{e}"}}',
                             "[[[{e}", "{e}"])  # fmt: skip
    counts = {"inputs": 0, "crashes": 0}
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        pairs=pairs,
        shape=shape,
        header=st.sampled_from(["", "type,hash\n", "signal_type\tsignal_value\n", "[", "{"]),
        depth=st.sampled_from([0, 0, 0, 999, 5000]),
        noise=st.binary(max_size=16),
        at=st.integers(0, 400),
        name=st.sampled_from(NAMES),
        fmt=st.sampled_from(FORMAT_NAMES),
        hash_type=st.sampled_from(TYPES),
        skip=st.booleans(),
    )
    def one(pairs, shape, header, depth, noise, at, name, fmt, hash_type, skip) -> None:
        if time.monotonic() > deadline:
            return
        body = header + "\n".join(shape.format(t=t, e=e) for t, e in pairs)
        body = "[" * depth + body + "]" * depth
        data = body.encode()
        data = data[:at] + noise + data[at:]
        counts["inputs"] += 1
        try:
            check(data, name, fmt, hash_type, skip)
        except Exception as error:  # noqa: BLE001 - every other exception is a finding
            counts["crashes"] += 1
            print(f"CRASH {type(error).__name__}: {str(error)[:200]!r}", file=sys.stderr)

    while time.monotonic() < deadline:
        one()
    print(f"hypothesis fallback: {counts['inputs']} inputs in {seconds:g} s, "
          f"{counts['crashes']} crashes")  # fmt: skip
    return counts["crashes"]


def main() -> None:
    argv = list(sys.argv)
    if "--hypothesis" in argv or atheris is None:
        seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 60.0
        if atheris is None and "--hypothesis" not in argv:
            print("atheris is not installed: running the hypothesis fallback", file=sys.stderr)
        sys.exit(1 if run_hypothesis(seconds) else 0)
    run_atheris(argv)


if __name__ == "__main__":
    main()
