"""Write hashes of files as a hash list that `--list` reads back (`clearset hash --as-list`).

The shapes are those :mod:`clearset.lists.formats` reads, so a list made here loads with
no option but, for ``text`` of a 64-hex type, the ``type=`` that every such list needs:

* ``threatexchange``: python-threatexchange's ``<signal_type> <hash>`` lines (``pdq …``,
  ``md5 …``), typed line by line, so one file holds several types;
* ``csv``: a header naming one column per type (``pdq,md5``), a row per file, an empty
  cell where a file has no such hash (no PDQ for a file that did not decode);
* ``text``: one hash a line, of one type.

Identical entries (the same picture given twice) are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clearset.errors import InputError
from clearset.hashing import types

if TYPE_CHECKING:  # annotations only: lists/ sits below hashing/ in the layer order
    from clearset.hashing.item import ItemHashes

#: The list shapes `clearset hash --as-list` writes.
LIST_OUTPUT_FORMATS = ("threatexchange", "csv", "text")
#: Types a file's hashes give (not the url types, which hash URLs, not bytes): the
#: built-in ones; `check_list_output` asks the registry (`types.file_types`).
FILE_HASH_TYPES = tuple(t.name for t in types.file_types())
#: Types written unless asked otherwise: python-threatexchange's two photo signal types.
DEFAULT_LIST_TYPES = (types.PDQ.name, types.MD5.name)


def check_list_output(fmt: str, wanted: Sequence[str]) -> None:
    """Refuse a format or type `hash --as-list` cannot write, in one line."""
    if fmt not in LIST_OUTPUT_FORMATS:
        raise InputError(
            f"--as-list {fmt}: unknown list format (expected one of "
            f"{', '.join(LIST_OUTPUT_FORMATS)})"
        )
    known = [t.name for t in types.file_types()]
    for hash_type in wanted:
        if hash_type not in known:
            raise InputError(
                f"--type {hash_type}: not a hash of a file (expected one of {', '.join(known)})"
            )
    if fmt == "text" and len(wanted) != 1:
        raise InputError(
            "--as-list text holds one hash type: give one --type (or use threatexchange or "
            "csv, which name the type of each hash)"
        )


def _value(hashes: ItemHashes, hash_type: str) -> str | None:
    raw = hashes.value(hash_type)
    return raw.hex() if raw is not None else None


def list_text(hashed: Sequence[ItemHashes], fmt: str, wanted: Sequence[str]) -> tuple[str, int]:
    """The list file's text, for the hashes of each file in order, and its entry lines."""
    check_list_output(fmt, wanted)
    lines: list[str] = [",".join(wanted)] if fmt == "csv" else []
    seen: set[tuple[str | None, ...]] = set()
    for hashes in hashed:
        if fmt == "csv":
            row = tuple(_value(hashes, t) for t in wanted)
            if any(row) and row not in seen:
                seen.add(row)
                lines.append(",".join(value or "" for value in row))
            continue
        for hash_type in wanted:
            value = _value(hashes, hash_type)
            if value is None or (hash_type, value) in seen:
                continue
            seen.add((hash_type, value))
            lines.append(f"{hash_type} {value}" if fmt == "threatexchange" else value)
    entries = len(lines) - (fmt == "csv")
    return "".join(line + "\n" for line in lines), entries


def needs_type(fmt: str, wanted: Sequence[str]) -> str | None:
    """The type= a `--list` of this output must declare, if any (text whose length more
    than one type shares: 64 hex, PDQ or SHA-256)."""
    if fmt != "text":
        return None
    length = 2 * types.width(wanted[0])
    if len(types.by_hex_length(types.inferable_types()).get(length, [])) > 1:
        return wanted[0]
    return None
