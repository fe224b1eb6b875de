"""Time ``load_list`` on generated PDQ lists (plain text and threatexchange) and report memory.

Usage: python bench/lists.py [N ...]   (default: 1000000 10000000)
The hashes are random bytes: benign by construction. Files go to a temporary folder.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

import numpy as np

from clearset.lists import load_list
from clearset.lists.model import to_hex_rows


def write_list(path: str, count: int, prefix: bytes) -> None:
    rng = np.random.default_rng(count)
    with open(path, "wb") as out:
        for start in range(0, count, 1 << 20):
            rows = rng.integers(0, 256, (min(1 << 20, count - start), 32), dtype=np.uint8)
            text = to_hex_rows(rows)
            lines = np.empty((rows.shape[0], len(prefix) + 65), dtype=np.uint8)
            lines[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
            lines[:, len(prefix) : -1] = text
            lines[:, -1] = ord("\n")
            out.write(lines.tobytes())


def main() -> None:
    counts = [int(arg) for arg in sys.argv[1:]] or [1_000_000, 10_000_000]
    with tempfile.TemporaryDirectory() as folder:
        for count in counts:
            for fmt, prefix in (("text", b""), ("threatexchange", b"pdq ")):
                path = os.path.join(folder, f"{fmt}-{count}.txt")
                write_list(path, count, prefix)
                size = os.path.getsize(path) / 2**20
                started = time.perf_counter()
                (hash_list,) = load_list(path, hash_type="pdq")
                seconds = time.perf_counter() - started
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
                print(
                    f"{fmt:15s} {count:>11,d} lines {size:8.0f} MiB  load {seconds:6.2f} s  "
                    f"entries {len(hash_list):,d}  process peak RSS so far {peak:,.0f} MiB"
                )
                os.remove(path)


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("lists"):
        main()
