"""What a receipt says, from facts it is given: the library half of issuing one.

A receipt is published, so it names places by their last path part only (``shards`` for
``/home/alice/data/shards`` or ``s3://bucket/laion/shards``), or as ``--source-name``
gives it: never a path on the operator's machine (`source_label`). The lists it names are
the identities run.json recorded (`list_identities`); its leaves are the kept SHA-256
values sorted and made unique (`sorted_leaf_chunks`). Reading a run folder and writing the
receipt into it is `clearset.runs.issue`'s part: this module knows no run folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from clearset.errors import InputError
from clearset.lists.model import sort_unique
from clearset.receipts.dsse import parse_envelope
from clearset.records import RunInfo

_GLOB_CHARACTERS = frozenset("*?[{")


def source_label(url: str) -> str:
    """The last part of a path or URL: what a receipt may say about where data lay.

    ``/home/alice/data/shards/`` and ``s3://bucket/laion/shards`` give ``shards``; a
    bucket alone gives its name; glob or brace parts (``{000..009}.tar``) are skipped for
    the folder above them. Query strings and credentials never come through.
    """
    text = url.strip()
    if "::" in text:  # fsspec chains: the part that names a location
        text = next((part for part in text.split("::") if "://" in part), text.split("::")[-1])
    if "://" in text:
        parts = urlsplit(text)
        # s3://bucket/a/b: path /a/b; s3://bucket alone: the bucket (never user:secret@)
        text = parts.netloc.rpartition("@")[2] + "/" + parts.path
    names = [p for p in text.replace("\\", "/").split("/") if p and p not in (".", "..")]
    while names and _GLOB_CHARACTERS & set(names[-1]):
        names.pop()
    return names[-1] if names else "dataset"


def sorted_leaf_chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    """`rows` sorted and made unique, as chunks in order: one chunk per leading byte.

    Sorting the whole set at once would need a second full copy; a chunk per first byte
    needs 1/256 of one, and chunks of distinct leading bytes cannot share a value, so
    the chunks together are sorted and unique.
    """
    leading = rows[:, 0].copy()
    for value in range(256):
        where = np.flatnonzero(leading == value)
        if where.size:
            chunk, _ = sort_unique(rows[where])
            yield chunk


def list_identities(info: RunInfo) -> list[dict[str, Any]]:
    lists = info.lists
    return [
        {
            "name": entry["name"],
            "version": entry.get("version"),
            "digest": entry["digest"],
            "hash_type": entry["hash_type"],
            "threshold": entry["threshold"] if entry["hash_type"] == "pdq" else None,
        }
        for entry in lists
    ]


def read_receipt(path: Path) -> dict[str, Any]:
    """A receipt file as an envelope, NOT verified.

    InputError if the file cannot be read (a usage problem: wrong path); VerificationError
    if it can but is not a receipt (an invalid claim), each naming the file.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such receipt") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the receipt ({exc.strerror or exc})") from None
    return parse_envelope(data, str(path))


def one_line_name(name: str, option: str) -> str:
    if not name.strip() or any(c in name for c in "\r\n"):
        raise InputError(f"{option} {name!r}: give a non-empty name on one line")
    return name
