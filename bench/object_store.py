"""Scan + clean of a WebDataset from and to a loopback S3 bucket (moto's server, through
s3fs) against the same on local disk, in the same run: the time ratio, and the requests
per shard the bucket run made (counted at the proxy in front of the server).

    python bench/object_store.py --images 5000 --shard-size 100

Needs the test extra (moto[server], s3fs). Figures are of loopback: they measure
clearset's request pattern and its mirror, not a real store's latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from conftest import cli
    from s3_server import S3Server, s3_environment

    from clearset import storage
    from clearset.demo import build_demo_data

    with tempfile.TemporaryDirectory(prefix="clearset-bench-s3-") as tmp:
        top = Path(tmp)
        os.environ["CLEARSET_CACHE"] = str(top / "cache")
        demo = build_demo_data(top / "data", count=args.images, shard_size=args.shard_size)
        shards = len(list(demo.webdataset.glob("*.tar")))
        lists = ["--list", str(demo.pdq_list), "--list", str(demo.md5_list)]
        common = ["--workers", str(args.workers), "--no-progress"]
        server = S3Server()
        try:
            with s3_environment(server):
                bucket = server.make_bucket("bench")
                remote = storage.Store(f"{bucket}/source")
                for tar in sorted(demo.webdataset.iterdir()):
                    remote.put_file(tar, tar.name)

                def both(src: str, run: str, dest: str) -> float:
                    began = time.perf_counter()
                    cli("scan", src, "--out", run, "--allow-missing", *lists, *common,
                        check=True)  # fmt: skip
                    cli("clean", run, "--to", dest, *common, check=True)
                    return time.perf_counter() - began

                # local, bucket, local again: the first run pays the cold start (imports,
                # numba's cache, the page cache), so local is the better of its two runs
                local = both(str(demo.webdataset), str(top / "run"), str(top / "dest"))
                server.proxy.reset()
                in_bucket = both(f"{bucket}/source", f"{bucket}/run", f"{bucket}/dest")
                counts = dict(server.proxy.counts)
                local = min(local, both(str(demo.webdataset), str(top / "r2"), str(top / "d2")))
        finally:
            server.close()
    total = sum(counts.values())
    print(f"{args.images:,} images in {shards} shards, {args.workers} workers")
    print(f"local disk: scan + clean {local:.1f} s")
    print(f"loopback bucket (source, run folder and copy): {in_bucket:.1f} s "
          f"({in_bucket / local:.2f}x local)")  # fmt: skip
    print(
        f"requests: {total:,} ({total / shards:.1f} per shard): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    )
    print(f"a 10^5-shard run at this rate: {total / shards * 1e5:,.0f} requests")
    return 0


if __name__ == "__main__":
    from docs_block import write_docs_block  # bench/ is on sys.path when run as a script

    with write_docs_block("object_store"):
        status = main()
    raise SystemExit(status)
