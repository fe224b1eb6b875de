"""Fuzz the shard readers: any bytes, as a tar shard, a .tar.gz, a parquet file or a
folder's file, must give manifest rows or one InputError line. Anything else (another
exception, a hang, a multi-line message) is a crash.

Usage (atheris, coverage-guided, when ``pip install atheris`` works)::

    python bench/fuzz/fuzz_sources.py -max_total_time=60

Fallback without atheris (seeded random mutations of valid shards)::

    python bench/fuzz/fuzz_sources.py --fallback --seconds 60

Seeds are small, valid, benign shards (generated pictures); each input is written to a
temporary file, read with the same reader a scan uses, and every row is hashed.
"""

from __future__ import annotations

import io
import random
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

try:
    import atheris
except ImportError:
    atheris = None

if atheris is not None and "--fallback" not in sys.argv:
    with atheris.instrument_imports(include=["clearset"]):
        from clearset.errors import InputError
        from clearset.formats import open_source
        from clearset.stages.scan import ScanSettings, manifest_row
else:
    from clearset.errors import InputError
    from clearset.formats import open_source
    from clearset.stages.scan import ScanSettings, manifest_row

from clearset.demo import demo_items  # noqa: E402

KINDS = ["s.tar", "s.tar.gz", "s.parquet"]
_WORK = Path(tempfile.mkdtemp(prefix="clearset-fuzz-sources-"))


def seeds() -> list[bytes]:
    picture = next(i.data for i in demo_items(count=4) if i.broken is None)[:4000]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("a.jpg", picture), ("a.json", b'{"url": "u"}'), ("b", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = buffer.getvalue()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {"image": pa.array([{"bytes": picture, "path": "a.jpg"}], struct), "url": ["u"]}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return [tar_bytes, buffer.getvalue()]


def check(data: bytes, kind: str) -> None:
    path = _WORK / kind
    if kind.endswith(".gz"):
        import gzip

        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    try:
        source = open_source(str(path))
        for shard in source.shards():
            for item in source.read_shard(shard):
                manifest_row(item, ScanSettings())
    except InputError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"multi-line error: {exc!r}") from None


def one_input(data: bytes) -> None:
    if not data:
        return
    check(data[1:], KINDS[data[0] % len(KINDS)])


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(0, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.5:
        start = rng.randrange(len(data) + 1)
        del data[start : start + rng.randint(0, 800)]
    if rng.random() < 0.3:
        data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def fallback(seconds: float) -> None:
    rng = random.Random(0)
    pool = seeds()
    runs = crashes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(pool))
        kind = rng.choice(KINDS)
        runs += 1
        try:
            check(data, kind)
        except Exception as exc:  # noqa: BLE001 - a crash is what we count
            crashes += 1
            (_WORK / f"crash-{crashes}-{kind}").write_bytes(data)
            print(f"crash {crashes}: {kind}: {type(exc).__name__}: {exc}"[:300])
    print(f"{runs} inputs in {seconds:.0f} s, {crashes} crashes (inputs kept in {_WORK})")


def main() -> None:
    if atheris is None or "--fallback" in sys.argv:
        seconds = (
            float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 60
        )
        fallback(seconds)
        return
    corpus = _WORK / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(seeds()):
        for k in range(len(KINDS)):
            (corpus / f"seed-{n}-{k}").write_bytes(bytes([k]) + seed)
    argv = [sys.argv[0], *[a for a in sys.argv[1:]], str(corpus)]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
