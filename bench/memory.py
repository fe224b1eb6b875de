"""Benchmark: peak memory (RSS) and time of hashing one very large image, per worker.

    python bench/memory.py [--side 8000] [--over 9400]

A worker hashes one item at a time, so its peak memory is that of the largest image it
meets. This writes a SIDE x SIDE PNG and JPEG (SIDE=8000 is 64,000,000 pixels, the
largest `MAX_PIXELS` lets through) and an OVER x OVER PNG (refused by the cap), and
hashes each in a fresh process by the fast and the exact PDQ path, printing the peak
RSS above the process's RSS after imports, and the seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = """
import json, resource, sys, time
from clearset.hashing.item import hash_bytes
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = hash_bytes(data, exact_pdq=sys.argv[2] == "exact")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_kib": peak, "before_kib": before, "seconds": seconds,
                  "status": result.status, "reason": result.reason}))
"""


def write_image(path: Path, side: int, fmt: str) -> None:
    """A smooth benign picture (gradients), built in strips to keep this process small."""
    import numpy as np
    from PIL import Image

    image = Image.new("RGB", (side, side))
    strip = 500
    xx = np.linspace(0, 255, side, dtype=np.float32)
    for top in range(0, side, strip):
        rows = np.arange(top, min(top + strip, side), dtype=np.float32)[:, None]
        red = (xx[None, :] * 0.7 + rows * 255 / side * 0.3).astype(np.uint8)
        green = ((np.sin(rows / 97.0) + 1) * 100 + xx[None, :] * 0.2).astype(np.uint8)
        blue = np.broadcast_to((255 - xx[None, :]).astype(np.uint8), red.shape)
        block = np.stack([red, green, blue], axis=2)
        image.paste(Image.fromarray(block), (0, top))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    path.write_bytes(buffer.getvalue())


def measure(path: Path, path_kind: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), path_kind],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--over", type=int, default=9400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            (Path(tmp) / f"{args.side}.png", args.side, "PNG"),
            (Path(tmp) / f"{args.side}.jpg", args.side, "JPEG"),
            (Path(tmp) / f"{args.over}.png", args.over, "PNG"),
        ]
        for path, side, fmt in cases:
            write_image(path, side, fmt)
            for kind in ("fast", "exact"):
                got = measure(path, kind)
                extra = (got["peak_kib"] - got["before_kib"]) / 2**20
                print(
                    f"{side}x{side} {fmt:4} {kind:5}: peak RSS {got['peak_kib'] / 2**20:.2f} GiB "
                    f"({extra:+.2f} GiB over imports), {got['seconds']:.1f} s, "
                    f"{got['status']}{' (' + got['reason'] + ')' if got['reason'] else ''}"
                )


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("memory"):
        main()
