"""The file shapes hash lists come in, one small class each, and how one is picked.

A format reads a byte stream and hands every entry, with its declared type if the file
gives one and where it was, to an :class:`~clearset.lists.collect.EntryCollector`, which
validates and packs it. Adding a format is one class here plus one line in ``FORMATS``;
``tests/test_lists.py`` runs the same conformance test over every registered format.

Formats understood:

* ``text``: one hash (or URL) per line; blank lines and lines starting with ``#`` ignored.
* ``threatexchange``: python-threatexchange's ``<signal_type> <hash>`` lines, e.g.
  ``pdq 8f3a…``; fields after the hash are ignored.
* ``csv`` / ``tsv``: a header row, a hash column and optionally a type column, found by
  name (``hash``, ``signal_value``, ``indicator``… and ``type``, ``signal_type``,
  ``indicator_type``…), as in threatexchange and Hasher-Matcher-Actioner exports; or one
  column per type (``md5``, ``pdq``…); or the column named by ``column=``.
* ``json``: an array of strings or of objects with a hash field (and optional type
  field), or an object holding such an array under one key, or mapping type names to
  arrays (``{"pdq": [...], "md5": [...]}``).
* ``jsonl``: one JSON string or object per line.
* ``checksums``: ``md5sum`` / ``sha1sum`` / ``sha256sum`` output, ``HASH  FILENAME`` or
  ``HASH *FILENAME`` per line; the type follows from the hash's length (64 hex is
  SHA-256 here, as the tool that writes the format says). Detected by content only: a
  file named ``.md5`` is as often a plain list.

Messages never show a value from the file: header cells and JSON keys can be hashes
(a header-less CSV, an object keyed by hash), so they are counted, not shown.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any, ClassVar

from clearset.errors import InputError
from clearset.hashing import types
from clearset.lists.collect import EntryCollector, shorten, shown_name
from clearset.lists.model import UNSUPPORTED_SIGNALS, normalise_signal
from clearset.lists.vpdq import VPDQ_SIGNALS

# Bytes read per step from a text list. Large enough that numpy's per-call overhead
# vanishes, small enough that the per-chunk scratch arrays stay in tens of megabytes.
TEXT_CHUNK_BYTES = 16 << 20

# A "line" longer than this is not a hash list line; stop rather than buffer the file.
MAX_LINE_BYTES = 1 << 20

# Column (and JSON field) names read as the hash value, in order of preference.
HASH_COLUMNS = (
    "hash",
    "hash_value",
    "signal_value",
    "indicator",
    "indicator_value",
    "value",
    "signal",
    "digest",
)
# Column (and JSON field) names read as the entry's type.
TYPE_COLUMNS = ("type", "signal_type", "hash_type", "indicator_type", "signal_kind")
# Top-level JSON keys that hold the array of entries.
JSON_ARRAY_KEYS = ("hashes", "signals", "indicators", "entries", "items", "data", "values")

_BOM = b"\xef\xbb\xbf"


class ListFormat:
    """One file shape. Subclasses set ``name`` and ``extensions`` and define ``read``."""

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    accepts_column: ClassVar[bool] = False

    def sniff(self, head: str) -> bool:
        """Whether a file of unknown extension whose start is ``head`` has this shape."""
        return False

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        raise NotImplementedError


def _first_content_line(head: str) -> str | None:
    for line in head.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def _read_text_lines(stream: IO[bytes], collector: EntryCollector, *, typed: bool) -> None:
    """Feed whole-line chunks of a text file to the collector's vectorised path."""
    line_number = 1
    carry = b""
    first = True
    while True:
        block = stream.read(TEXT_CHUNK_BYTES)
        if not block:
            break
        if first:
            block = block.removeprefix(_BOM)
            first = False
        data = carry + block if carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > MAX_LINE_BYTES:
                raise InputError(
                    f"{collector.source}:{line_number}: line longer than "
                    f"{MAX_LINE_BYTES} bytes: not a hash list"
                )
            continue
        line_number += collector.add_text_chunk(data, line_number, typed, size=cut + 1)
        carry = data[cut + 1 :]
    if carry:
        collector.add_text_chunk(carry + b"\n", line_number, typed)


class PlainText(ListFormat):
    name = "text"
    extensions = ("txt", "lst", "list", "hashes")

    def sniff(self, head: str) -> bool:
        return True  # the fallback: anything else is read as one entry per line

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        _read_text_lines(stream, collector, typed=False)


class ThreatExchange(ListFormat):
    """python-threatexchange's local signal file: ``<signal_type> <hash>`` per line."""

    name = "threatexchange"
    extensions = ("te",)

    def sniff(self, head: str) -> bool:
        line = _first_content_line(head)
        if line is None:
            return False
        parts = line.split(None, 2)
        if len(parts) < 2:
            return False
        token = parts[0].lower()
        return normalise_signal(token) is not None or token in UNSUPPORTED_SIGNALS | VPDQ_SIGNALS

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        _read_text_lines(stream, collector, typed=True)


def _text_stream(stream: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def _show_names(names: Iterable[Any], limit: int = 12) -> str:
    """Header cells or JSON keys for a message: plain words only, the rest counted.

    An object keyed by hashes or a header-less CSV of URLs is a common wrong shape, and any
    cell clearset does not know may hold a piece of an entry (a URL's path, a hash cut by
    a stray character), so only known column, key and hash-type names are shown."""
    shown: list[str] = []
    hidden = 0
    for name in names:
        word = shown_name(str(name))
        if word is not None and not _known_name(word):
            word = None
        if word is not None and len(shown) < limit:
            shown.append(word)
        else:
            hidden += 1
    if hidden:
        shown.append(f"{hidden} more not shown")
    return ", ".join(shown) or "none"


def _known_name(word: str) -> bool:
    lower = word.lower()
    return (
        lower in HASH_COLUMNS
        or lower in TYPE_COLUMNS
        or lower in JSON_ARRAY_KEYS
        or normalise_signal(lower) is not None
    )


def _looks_like_hash(cell: str) -> bool:
    cell = cell.strip()
    return len(cell) >= 32 and all(c in "0123456789abcdefABCDEF" for c in cell)


class Csv(ListFormat):
    name = "csv"
    extensions: ClassVar[tuple[str, ...]] = ("csv",)
    accepts_column = True
    delimiter: ClassVar[str] = ","

    def sniff(self, head: str) -> bool:
        line = _first_content_line(head)
        if line is None:
            return False
        if self.delimiter in line:
            return True
        # A one-column file whose first line is a column name we know ("hash", "md5").
        name = line.strip().lower()
        return self.delimiter == "," and (
            name in HASH_COLUMNS or normalise_signal(name) is not None
        )

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        source = collector.source
        text = _text_stream(stream)
        reader = csv.reader(text, delimiter=self.delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{source}: empty file: a {self.name} list needs a header row")
            hash_index, type_index, typed_columns = self._columns(header, source, column)
            for row in reader:
                where = str(reader.line_num)
                if hash_index is not None:
                    value = row[hash_index] if hash_index < len(row) else ""
                    declared = None
                    if type_index is not None and type_index < len(row):
                        declared = row[type_index]
                    if value.strip():
                        collector.add(value, declared, where)
                for index, declared_type in typed_columns:
                    if index < len(row) and row[index].strip():
                        collector.add(row[index], declared_type, where)
        except csv.Error as error:
            raise InputError(f"{source}:{reader.line_num}: bad {self.name}: {error}") from None
        except UnicodeDecodeError:
            raise InputError(f"{source}:{reader.line_num + 1}: not UTF-8 text") from None
        finally:
            text.detach()

    def _columns(
        self, header: list[str], source: str, column: str | None
    ) -> tuple[int | None, int | None, list[tuple[int, str]]]:
        """(hash column, type column, [(column, type) for one-column-per-type files])."""
        names = [cell.strip().lower() for cell in header]
        type_index = next((names.index(n) for n in TYPE_COLUMNS if n in names), None)
        if column is not None:
            wanted = column.strip().lower()
            if wanted not in names:
                raise InputError(
                    f"{source}:1: no column {shorten(column)!r} in header ({_show_names(header)})"
                )
            index = names.index(wanted)
            if type_index is None and normalise_signal(wanted) is not None:
                return None, None, [(index, wanted)]
            return index, type_index, []
        # Before any name is looked for: a header-less file of `md5,<hash>` rows has a
        # type name in its first line, and read as a header it said "non-hex" on line 2.
        if any(_looks_like_hash(cell) or "://" in cell for cell in header):
            raise InputError(
                f"{source}:1: first line looks like a hash or URL, not a header: {self.name} "
                f"lists need a header row naming the hash column ({', '.join(HASH_COLUMNS)}) "
                f"and optionally the type column ({', '.join(TYPE_COLUMNS)}), or one column "
                f"per type ({', '.join(types.list_type_names())}); or read the file as plain "
                "text: --list PATH,format=text"
            )
        hash_index = next((names.index(n) for n in HASH_COLUMNS if n in names), None)
        if hash_index is not None:
            return hash_index, type_index, []
        typed = [(i, n) for i, n in enumerate(names) if normalise_signal(n) is not None]
        if typed:
            return None, None, typed
        raise InputError(
            f"{source}:1: no hash column in header ({_show_names(header)}); name it with "
            "--list PATH,column=C"
        )


class Tsv(Csv):
    name = "tsv"
    extensions = ("tsv", "tab")
    delimiter = "\t"


def _hash_field(entry: dict[str, Any], column: str | None) -> tuple[Any, Any]:
    """(hash value, declared type) of a JSON object entry; value None if it has none."""
    fields = {str(key).strip().lower(): value for key, value in entry.items()}
    declared = next((fields[n] for n in TYPE_COLUMNS if n in fields), None)
    if column is not None:
        return fields.get(column.strip().lower()), declared
    for name in HASH_COLUMNS:
        if name in fields:
            return fields[name], declared
    for name, value in fields.items():
        if normalise_signal(name) is not None and declared is None:
            return value, name
    return None, declared


def _add_json_entry(
    collector: EntryCollector,
    entry: Any,
    where: str,
    declared: str | None,
    column: str | None,
) -> None:
    if isinstance(entry, dict):
        value, entry_type = _hash_field(entry, column)
        if entry_type is not None:
            declared = entry_type
    else:
        value = entry
    if not isinstance(value, str) or (declared is not None and not isinstance(declared, str)):
        collector.invalid_entry(
            where,
            "expected a hash string or an object with a hash field",
            kind="not a hash string",
        )
        return
    collector.add(value, declared, where)


def _json_arrays(
    document: Any, source: str, column: str | None
) -> Iterator[tuple[str, list, str | None]]:
    """(JSON path, array, declared type) for each array of entries in a document."""
    if isinstance(document, list):
        yield "$", document, None
        return
    if not isinstance(document, dict):
        raise InputError(f"{source}: JSON list must be an array or an object holding one")
    keys = {str(key).strip().lower(): key for key in document}
    wanted = [column.strip().lower()] if column is not None else list(JSON_ARRAY_KEYS)
    for name in wanted:
        if name in keys and isinstance(document[keys[name]], list):
            yield f"$.{keys[name]}", document[keys[name]], None
            return
    typed = [
        k for k in keys if normalise_signal(k) is not None and isinstance(document[keys[k]], list)
    ]
    if typed:
        for name in typed:
            yield f"$.{keys[name]}", document[keys[name]], name
        return
    arrays = [key for key in document if isinstance(document[key], list)]
    if len(arrays) == 1:
        yield f"$.{arrays[0]}", document[arrays[0]], None
        return
    raise InputError(
        f"{source}: no array of hashes found in JSON object (keys: {_show_names(document)})"
    )


class Json(ListFormat):
    name = "json"
    extensions = ("json",)
    accepts_column = True

    def sniff(self, head: str) -> bool:
        return head.lstrip("\ufeff \t\r\n")[:1] in ("[", "{")

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        source = collector.source
        document, problem, line = _parse_json(stream.read().removeprefix(_BOM))
        if problem is not None:
            raise InputError(f"{source}{'' if line is None else f':{line}'}: {problem}")
        for path, array, declared in _json_arrays(document, source, column):
            for index, entry in enumerate(array):
                _add_json_entry(collector, entry, f"{path}[{index}]", declared, column)


class JsonLines(ListFormat):
    name = "jsonl"
    extensions = ("jsonl", "ndjson")
    accepts_column = True

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        for line_number, raw in enumerate(stream, start=1):
            line = raw.removeprefix(_BOM) if line_number == 1 else raw
            if not line.strip():
                continue
            entry, problem, _ = _parse_json(line)
            if problem is not None:
                collector.invalid_entry(str(line_number), problem, kind="not JSON")
                continue
            _add_json_entry(collector, entry, str(line_number), None, column)


# "HASH  NAME" or "HASH *NAME"; a leading backslash marks an escaped file name.
_CHECKSUM_LINE = re.compile(rb"\\?([0-9A-Fa-f]{32,128}) [ *]\S")


def _checksum_type(length: int) -> str | None:
    """The byte digest a checksum tool writes `length` hex characters of (md5sum...)."""
    found = types.by_hex_length(types.digest_types()).get(length, [])
    return found[0].name if len(found) == 1 else None


class Checksums(ListFormat):
    """``md5sum`` / ``sha1sum`` / ``sha256sum`` output: the hash, two characters, a name."""

    name = "checksums"
    _SNIFF_LINES = 5

    def sniff(self, head: str) -> bool:
        lines = [
            line
            for line in head.splitlines()[:-1]  # the last may be cut off
            if line.strip() and not line.startswith("#")
        ][: self._SNIFF_LINES]
        if not lines:
            lines = [line for line in head.splitlines() if line.strip()][:1]
        return bool(lines) and all(
            _CHECKSUM_LINE.match(line.encode("utf-8", errors="replace")) for line in lines
        )

    def read(self, stream: IO[bytes], collector: EntryCollector, column: str | None) -> None:
        for line_number, raw in enumerate(stream, start=1):
            line = raw.removeprefix(_BOM) if line_number == 1 else raw
            if not line.strip() or line.startswith(b"#"):
                continue
            where = str(line_number)
            found = _CHECKSUM_LINE.match(line)
            if found is None:
                collector.invalid_entry(
                    where,
                    "expected 'HASH  FILENAME' (md5sum/sha256sum output)",
                    kind="malformed line",
                )
                continue
            value = found.group(1).decode("ascii")
            # A type the operator declared wins; otherwise the length says which tool.
            declared = None if collector.hash_type else _checksum_type(len(value))
            if declared is None and collector.hash_type is None:
                collector.invalid_entry(
                    where,
                    f"a {len(value)}-hex checksum is not "
                    f"{types.spoken(t.label for t in types.digest_types())}",
                    kind="wrong length",
                )
                continue
            collector.add(value, declared, where)


def _parse_json(text: bytes) -> tuple[Any, str | None, int | None]:
    """(document, None, None), or (None, the problem, its line if known): never raises."""
    try:
        return json.loads(text), None, None
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg})", error.lineno
    except UnicodeDecodeError:
        return None, "not UTF-8 text", None
    except RecursionError:
        # The parser recurses once per level and stops at the interpreter's limit (about
        # 1,000): no hash list nests that deep. Nothing after parsing recurses.
        return None, "too deeply nested: not a hash list", None


FORMATS: tuple[type[ListFormat], ...] = (
    Json,
    JsonLines,
    ThreatExchange,
    Checksums,
    Tsv,
    Csv,
    PlainText,
)
"""Every format, in the order content sniffing tries them (PlainText last: the fallback)."""

FORMAT_BY_NAME: dict[str, type[ListFormat]] = {f.name: f for f in FORMATS}


def detect_format(filename: str, head: str) -> ListFormat:
    """The format for a file: by its extension if that names one, else by its content."""
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    for list_format in FORMATS:
        if extension in list_format.extensions and list_format is not PlainText:
            return list_format()
    for list_format in FORMATS:
        candidate = list_format()
        if candidate.sniff(head):
            return candidate
    return PlainText()
