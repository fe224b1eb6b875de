"""Write files so that a reader sees either nothing or the whole file.

Every output clearset writes goes to a temporary name in the destination folder and is
renamed into place when complete, so an interrupted run never leaves a half-written
file under a real name. Left-over temporary files are recognisable by their prefix and
are swept when a run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to `path`, on failure remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def sweep_tmp(folder: Path) -> int:
    """Remove temporary files an interrupted writer left in `folder` (not recursive)."""
    removed = 0
    if folder.is_dir():
        for leftover in folder.glob(f"{TMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
