"""Validate list entries as formats read them, and pack them into per-type arrays.

Every format hands its entries to one :class:`EntryCollector`, so validation rules and
error messages are the same whatever the file's shape. Two paths lead in:

* :meth:`EntryCollector.add` takes one entry (a value, its declared type if the file
  gives one, and where it was). CSV and JSON use it; it is also the reference path.
* :meth:`EntryCollector.add_text_chunk` takes a block of whole lines of a plain-text or
  threatexchange file and decodes the well-formed lines with numpy, without a Python
  object per line; lines it cannot settle (comments with leading spaces, URLs, anything
  malformed) go one by one through the same per-line code, which writes the precise
  error. Ten million PDQ lines load in seconds this way.

Error messages name the file, the line (or JSON path) and the problem, and never the
entry's value: an entry is described by its length or the position of a bad character.
A type token or name is shown only when :func:`shown_name` finds it cannot be (part of) a
hash or URL. Every entry skipped, whatever the reason, is counted by kind
(:attr:`HashList.skipped`) and summed up in one line per file (:attr:`EntryCollector.notice`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from clearset.errors import InputError
from clearset.hashing import types
from clearset.lists.model import (
    UNSUPPORTED_SIGNALS,
    HashList,
    ListIdentity,
    list_digest,
    normalise_signal,
    sort_unique,
    url_sha256,
)
from clearset.lists.vpdq import VPDQ_SIGNALS

MAX_WARNINGS = 100
"""Warning messages kept per load; further skips are only counted."""


def ambiguous_hex(length: int, candidates: list[types.HashType]) -> str:
    """'64-hex entries could be PDQ or SHA-256: declare which (--list PATH,type=pdq or
    --list PATH,type=sha256)'."""
    labels = types.spoken(t.label for t in candidates)
    options = types.spoken(f"--list PATH,type={t.name}" for t in candidates)
    return f"{length}-hex entries could be {labels}: declare which ({options})"


AMBIGUOUS_64_HEX = ambiguous_hex(64, [types.PDQ, types.SHA256])

# A URL is scheme://something with no whitespace. Kept strict so that a mistyped hash is
# never silently taken for a URL and hashed.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+\Z")

# Longest signal-type token the vectorised threatexchange path looks at; longer tokens
# take the per-line path (and are unknown types anyway).
_MAX_TYPE_TOKEN = 16

# Distinct type tokens the vectorised path groups per chunk before giving up on it.
_MAX_TOKENS_PER_CHUNK = 16

# Lines decoded per step: a block this size stays in L2 cache, which makes the handful of
# numpy passes over it several times faster than the same passes over a whole chunk.
_HEX_BLOCK_ROWS = 4096

_ALL_TRUE = np.uint64(0x0101010101010101)  # eight numpy True bytes read as one uint64


def _hex_lengths_text() -> str:
    """'32 (MD5), 40 (SHA-1) or 64 (PDQ/SHA-256)': the lengths an untyped entry may have."""
    by_length = types.by_hex_length(types.inferable_types())
    return types.spoken(
        f"{length} ({'/'.join(t.label for t in found)})" for length, found in by_length.items()
    )


# What a type token or column name looks like when it is safe to show: a short word.
# Anything with a run of 8 hex digits (a hash, or a type column holding hashes) or URL
# punctuation is described, not shown.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,31}\Z")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8}")
# Column names hold few digits (sha256, md5); a run of them is more likely a piece of an
# entry (a URL's path, a hash broken by a stray character) than a name.
_DIGIT_RUN = re.compile(r"[0-9]{4}")

# Distinct unknown type names counted by name; further ones share one count.
_MAX_NAMED_KINDS = 10


def shorten(text: str, limit: int = 24) -> str:
    """An option value the operator typed (never list content), cut short."""
    return text if len(text) <= limit else text[:limit] + "…"


def shown_name(text: str) -> str | None:
    """``text`` if it is a plain word that cannot be a list entry, else None."""
    text = text.strip()
    if _NAME.match(text) and not _HEX_RUN.search(text) and not _DIGIT_RUN.search(text):
        return text
    return None


def _looks_like_entry(text: str) -> bool:
    """A hash or URL where a type name belongs (type and value swapped, say)."""
    text = text.strip()
    lengths = {2 * t.width for t in types.list_types()}
    return bool(_URL.match(text)) or (len(text) in lengths and _first_non_hex(text) is None)


def _first_non_hex(value: str) -> int | None:
    for position, char in enumerate(value):
        if char not in "0123456789abcdefABCDEF":
            return position
    return None


def _describe_char(char: str) -> str:
    return "whitespace" if char.isspace() else repr(char)


class EntryCollector:
    """Gathers the valid entries of one list file, by hash type, and builds HashLists."""

    def __init__(self, source: str, *, hash_type: str | None, skip_invalid: bool) -> None:
        known = types.list_type_names()
        if hash_type is not None and hash_type not in known:
            raise InputError(
                f"{source}: unknown hash type {shorten(hash_type)!r} "
                f"(expected one of {', '.join(known)})"
            )
        self.source = source
        self.hash_type = hash_type
        self.skip_invalid = skip_invalid
        self.warnings: list[str] = []
        self.invalid = Counter[str | None]()  # by hash type when known
        self.invalid_kinds = Counter[tuple[str | None, str]]()  # (hash type, kind)
        self.other_type = Counter[str]()  # declared type differs from hash_type=
        self.unsupported = Counter[str]()  # signal types clearset cannot match
        # vPDQ entries: a list of their own, read by `clearset.lists.vpdq` when the caller
        # takes video lists (`video`), else counted as unsupported like TMK.
        self.video = Counter[str]()
        self.keep_video = False
        self.notice: str | None = None  # set by finish(): what was skipped, in one line
        self._packed: dict[str, list[np.ndarray]] = {t: [] for t in known}
        self._single: dict[str, bytearray] = {t: bytearray() for t in known}

    # -- problems -------------------------------------------------------------------

    def invalid_entry(
        self, where: str, problem: str, hash_type: str | None = None, *, kind: str
    ) -> None:
        """A malformed entry: an error, or with skip_invalid a warning counted by ``kind``
        (a short fixed phrase, never the entry)."""
        message = f"{self.source}:{where}: {problem}"
        if not self.skip_invalid:
            raise InputError(message)
        self.invalid[hash_type] += 1
        self.invalid_kinds[hash_type, kind] += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def _unknown_type(self, declared: str, where: str) -> None:
        if _looks_like_entry(declared):
            self.invalid_entry(
                where,
                "the signal type is a hash or URL, not a type name "
                "(are the type and hash fields swapped?)",
                kind="hash or URL where the type belongs",
            )
            return
        name = shown_name(declared)
        named = {kind for _, kind in self.invalid_kinds if kind.startswith("unknown type ")}
        if name is not None:
            shown = f"unknown signal type {name!r}"
            kind = f"unknown type {name.lower()}"
            if kind not in named and len(named) >= _MAX_NAMED_KINDS:
                kind = "unknown type (others)"
        else:
            shown = f"unknown signal type ({len(declared.strip())} characters, not shown)"
            kind = "unknown type (not shown)"
        known = ", ".join(types.list_type_names())
        self.invalid_entry(where, f"{shown} (expected one of {known})", kind=kind)

    # -- the per-entry path -----------------------------------------------------------

    def _resolve_type(self, declared: str | None, where: str) -> tuple[bool, str | None]:
        """(keep?, our type or None to infer) for an entry with this declared type."""
        if declared is not None and declared.strip():
            name = declared.strip().lower()
            ours = normalise_signal(name)
            if ours is None:
                if name in VPDQ_SIGNALS:
                    self.video[name] += 1
                elif name in UNSUPPORTED_SIGNALS:
                    self.unsupported[name] += 1
                else:
                    self._unknown_type(declared, where)
                return False, None
            if self.hash_type is not None and ours != self.hash_type:
                self.other_type[ours] += 1
                return False, None
            return True, ours
        return True, self.hash_type

    def add(self, value: str, declared: str | None, where: str) -> None:
        """Validate one entry and keep it. ``where`` is a line number or JSON path."""
        keep, hash_type = self._resolve_type(declared, where)
        if not keep:
            return
        value = value.strip()
        if hash_type == "url" or (hash_type is None and _URL.match(value)):
            if len(value) == 64 and _first_non_hex(value) is None:
                self._keep_hex(value, "url", where)
            elif _URL.match(value):
                self._single["url"] += url_sha256(value)
            else:
                self.invalid_entry(
                    where,
                    "url entry is neither a URL (scheme://…) nor a 64-hex SHA-256",
                    "url",
                    kind="not a URL",
                )
            return
        if not value:
            self.invalid_entry(where, "empty hash value", hash_type, kind="empty")
            return
        bad = _first_non_hex(value)
        if bad is not None:
            self.invalid_entry(
                where,
                f"non-hex character {_describe_char(value[bad])} at position {bad + 1}",
                hash_type,
                kind="non-hex character",
            )
            return
        if hash_type is None:
            candidates = types.by_hex_length(types.inferable_types()).get(len(value), [])
            if len(candidates) > 1:
                # Not skippable: the whole list is undeclared, not this one line.
                message = ambiguous_hex(len(value), candidates)
                raise InputError(f"{self.source}:{where}: {message}")
            if not candidates:
                self.invalid_entry(
                    where,
                    f"expected {_hex_lengths_text()} hex characters, got {len(value)}",
                    kind="wrong length",
                )
                return
            hash_type = candidates[0].name
        width = 2 * types.width(hash_type)
        if len(value) != width:
            self.invalid_entry(
                where,
                f"{hash_type} hash must be {width} hex characters, got {len(value)}",
                hash_type,
                kind="wrong length",
            )
            return
        self._keep_hex(value, hash_type, where)

    def _keep_hex(self, value: str, hash_type: str, where: str) -> None:
        packed = bytes.fromhex(value)
        problem = _placeholder_problem(packed, hash_type)
        if problem:
            self.invalid_entry(where, problem, hash_type, kind="placeholder")
            return
        self._single[hash_type] += packed

    def add_text_line(self, line: bytes, line_number: int, typed: bool) -> None:
        """One line of a plain-text (typed=False) or threatexchange (typed=True) file."""
        text = line.decode("utf-8", errors="replace").strip()
        if not text or text.startswith("#"):
            return
        where = str(line_number)
        if not typed:
            self.add(text, None, where)
            return
        parts = text.split(None, 2)  # fields after the hash (notes, ids) are ignored
        if len(parts) < 2:
            self.invalid_entry(where, "expected '<signal_type> <hash>'", kind="malformed line")
            return
        self.add(parts[1], parts[0], where)

    # -- the vectorised path ----------------------------------------------------------

    def add_text_chunk(self, chunk: bytes, first_line: int, typed: bool, size: int = -1) -> int:
        """The whole lines in ``chunk[:size]`` (which ends with a newline), starting at
        line ``first_line``; returns how many lines that was."""
        buf = np.frombuffer(chunk, dtype=np.uint8, count=size)
        newlines = np.flatnonzero(buf == ord("\n"))
        count = newlines.shape[0]
        if count == 0:
            return 0
        starts = np.empty(count, dtype=np.int64)
        starts[0] = 0
        starts[1:] = newlines[:-1] + 1
        ends = newlines.astype(np.int64)
        has_cr = np.zeros(count, dtype=bool)
        nonempty = ends > starts
        has_cr[nonempty] = buf[ends[nonempty] - 1] == ord("\r")
        ends = ends - has_cr
        # starts[i] <= newlines[i] < len(buf), so buf[starts] is always in range.
        skip = (ends == starts) | (buf[starts] == ord("#"))
        slow = np.zeros(count, dtype=bool)

        if typed:
            self._typed_lines(buf, starts, ends, skip, slow)
        else:
            candidates = np.flatnonzero(~skip)
            if self.hash_type is not None:
                slow[candidates] = self._fast_hex(
                    buf, starts[candidates], ends[candidates], self.hash_type
                )
            else:
                lengths = ends[candidates] - starts[candidates]
                slow[candidates] = True
                for length, found in types.by_hex_length(types.inferable_types()).items():
                    if len(found) != 1:
                        continue  # 64 hex: PDQ or SHA-256, the per-line path refuses it
                    group = candidates[lengths == length]
                    slow[group] = self._fast_hex(buf, starts[group], ends[group], found[0].name)

        for index in np.flatnonzero(slow):
            line = chunk[starts[index] : newlines[index]]
            self.add_text_line(line, first_line + int(index), typed)
        return count

    def _typed_lines(
        self,
        buf: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        skip: np.ndarray,
        slow: np.ndarray,
    ) -> None:
        """The threatexchange ``<signal_type> <hash>`` lines of a chunk, by type token."""
        spaces = np.flatnonzero(buf == ord(" "))
        if spaces.shape[0] == 0:
            slow |= ~skip
            return
        at = np.searchsorted(spaces, starts)
        first_space = spaces[np.minimum(at, spaces.shape[0] - 1)]
        token_length = first_space - starts
        shaped = (
            (at < spaces.shape[0])
            & (first_space < ends)
            & (token_length > 0)
            & (token_length <= _MAX_TYPE_TOKEN)
        )
        slow |= ~skip & ~shaped
        pending = np.flatnonzero(~skip & shaped)
        # Group lines by type token without a Python object per line: take the first
        # ungrouped line's token and compare every pending line with it, byte by byte. A
        # file has a handful of types; past _MAX_TOKENS_PER_CHUNK distinct tokens (a file
        # that is not what it seems) the rest go to the per-line path.
        for _ in range(_MAX_TOKENS_PER_CHUNK):
            if pending.shape[0] == 0:
                return
            head = int(pending[0])
            length = int(token_length[head])
            token = bytes(buf[starts[head] : starts[head] + length])
            same = token_length[pending] == length
            for offset, byte in enumerate(token):
                same &= buf[starts[pending] + offset] == byte
            lines, pending = pending[same], pending[~same]
            name = token.decode("utf-8", errors="replace").lower()
            ours = normalise_signal(name)
            if ours is not None and self.hash_type not in (None, ours):
                self.other_type[ours] += lines.shape[0]
            elif ours is None and name in VPDQ_SIGNALS:
                self.video[name] += lines.shape[0]
            elif ours is None and name in UNSUPPORTED_SIGNALS:
                self.unsupported[name] += lines.shape[0]
            elif ours is None:
                slow[lines] = True  # the per-line path writes the error
            else:
                slow[lines] = self._fast_hex(buf, first_space[lines] + 1, ends[lines], ours)
        slow[pending] = True

    def _fast_hex(
        self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, hash_type: str
    ) -> np.ndarray:
        """Decode the lines that are exactly the hex of one ``hash_type`` entry.

        Returns a bool mask over the given lines of those left for the per-line path:
        wrong length, a non-hex character, or a placeholder value.
        """
        width = 2 * types.width(hash_type)
        left = (ends - starts) != width
        fits = np.flatnonzero(~left)
        if fits.shape[0] == 0:
            return left
        packed = np.empty((fits.shape[0], width // 2), dtype=np.uint8)
        bad = np.empty(fits.shape[0], dtype=bool)
        for first, text in _hex_blocks(buf, starts[fits], width):
            rows = slice(first, first + text.shape[0])
            packed[rows], bad[rows] = decode_hex_block(text)
        bad |= ~packed.any(axis=1)
        bad |= (packed == 255).all(axis=1)
        left[fits[bad]] = True
        if bad.any():
            packed = packed[~bad]
        if packed.shape[0]:
            self._packed[hash_type].append(packed)
        return left

    # -- the result -------------------------------------------------------------------

    def finish(self, *, name: str, version: str | None, threshold: int | None) -> list[HashList]:
        """One HashList per hash type found, in list order (`types.list_types`).

        Sets :attr:`notice` to the one line that tells the operator what was skipped, or
        None when every entry was kept.
        """
        if not self.keep_video:
            self.unsupported.update(self.video)
            self.video.clear()
        for hash_type, count in sorted(self.other_type.items()):
            self._note(f"{count} {hash_type} entries ignored: only {self.hash_type} was asked for")
        for signal, count in sorted(self.unsupported.items()):
            self._note(f"{count} {signal} entries skipped: clearset cannot match that type")
        file_skips = self._file_skips()
        lists: list[HashList] = []
        for hash_type in types.list_type_names():
            parts = self._packed[hash_type]
            single = self._single[hash_type]
            if single:
                parts.append(
                    np.frombuffer(bytes(single), dtype=np.uint8).reshape(-1, types.width(hash_type))
                )
            if not parts:
                continue
            rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self._packed[hash_type] = []
            self._single[hash_type] = bytearray()
            hashes, repeats = sort_unique(rows)
            del rows, parts
            hashes = np.ascontiguousarray(hashes)
            hashes.flags.writeable = False  # a loaded list is a fact; its digest names it
            identity = ListIdentity(
                name=name,
                version=version,
                digest=list_digest(hash_type, hashes),
                hash_type=hash_type,
                entries=int(hashes.shape[0]),
                source=self.source,
            )
            lists.append(
                HashList(
                    identity=identity,
                    hashes=hashes,
                    duplicates_folded=repeats,
                    invalid_skipped=self.invalid.pop(hash_type, 0),
                    threshold=None if types.get(hash_type).exact else threshold,
                    skipped=self._skipped_kinds(hash_type),
                )
            )
        if not lists and self.video:
            return lists  # the file holds vPDQ entries only: its video list is all
        if not lists:
            detail = f" (skipped: {_describe_skips(file_skips)})" if file_skips else ""
            raise InputError(f"{self.source}: no valid hash entries{detail}")
        # Entries too malformed to have a type, and entries of types no list of this file
        # holds, are counted on the first list, and the file's warnings travel with it, so
        # that summing over the lists counts each once.
        lists[0].invalid_skipped += sum(self.invalid.values())
        leftover = Counter({f"invalid: {kind}": n for (_, kind), n in self.invalid_kinds.items()})
        self.invalid_kinds.clear()
        leftover.update({f"unsupported: {s}": n for s, n in self.unsupported.items()})
        leftover.update({f"other type: {t}": n for t, n in self.other_type.items()})
        lists[0].skipped = dict(sorted((Counter(lists[0].skipped) + leftover).items()))
        lists[0].warnings = list(self.warnings)
        if file_skips:
            kept = sum(len(hash_list) + hash_list.duplicates_folded for hash_list in lists)
            total = sum(file_skips.values())
            self.notice = (
                f"{self.source}: kept {kept} of {kept + total} entries, skipped {total} "
                f"({_describe_skips(file_skips)}); the list digest covers the kept entries, "
                "not the file"
            )
        return lists

    def _skipped_kinds(self, hash_type: str | None) -> dict[str, int]:
        """The invalid-entry counts of one hash type, by kind, taken out of the tally."""
        taken = {k: n for k, n in self.invalid_kinds.items() if k[0] == hash_type}
        for key in taken:
            del self.invalid_kinds[key]
        return {f"invalid: {kind}": n for (_, kind), n in sorted(taken.items())}

    def _file_skips(self) -> Counter[str]:
        """Every skip in the file by kind, before finish hands them out to lists."""
        skips = Counter[str]()
        for (_, kind), count in self.invalid_kinds.items():
            skips[f"invalid: {kind}"] += count
        skips.update({f"unsupported: {s}": n for s, n in self.unsupported.items()})
        skips.update({f"other type: {t}": n for t, n in self.other_type.items()})
        return skips

    def _note(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{self.source}: {message}")


def _describe_skips(skips: Counter[str] | dict[str, int]) -> str:
    """'3 video_md5 (type clearset cannot match), 1 non-hex character (invalid)'."""
    parts = []
    for key, count in sorted(skips.items(), key=lambda item: (-item[1], item[0])):
        group, _, kind = key.partition(": ")
        why = {
            "invalid": "invalid",
            "unsupported": "type clearset cannot match",
            "other type": "not the type asked for",
        }[group]
        parts.append(f"{count} {kind} ({why})")
    return ", ".join(parts)


def _placeholder_problem(packed: bytes, hash_type: str) -> str | None:
    """Why an entry is a placeholder rather than a hash (truncated or zero-filled exports)."""
    if not any(packed):
        return f"all-zero {hash_type} value (a placeholder or truncated entry, not a hash)"
    if packed == b"\xff" * len(packed):
        return f"all-ones {hash_type} value (a placeholder, not a hash)"
    return None


def decode_hex_block(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8[K, W] ASCII hex (W a multiple of 8) -> (uint8[K, W/2] bytes, bool[K] bad row).

    Arithmetic rather than a lookup table: numpy's table lookups cost several times more
    per byte than a few vectorised byte operations on an L2-sized block.
    """
    rows = text.shape[0]
    digit = (text - np.uint8(ord("0"))) < 10
    letter = ((text | np.uint8(0x20)) - np.uint8(ord("a"))) < 6  # | 0x20 folds case
    valid = digit | letter
    bad = (valid.view(np.uint64).reshape(rows, -1) != _ALL_TRUE).any(axis=1)
    # '0'-'9' have bit 6 clear, letters have it set: value = low nibble (+9 for letters).
    nibbles = (text & np.uint8(15)) + np.uint8(9) * (text >> np.uint8(6))
    pairs = nibbles.view(np.uint16)  # little-endian: first digit in the low byte
    packed = ((pairs << np.uint16(4)) | (pairs >> np.uint16(8))).astype(np.uint8)
    return packed, bad


def _hex_blocks(
    buf: np.ndarray, starts: np.ndarray, width: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, contiguous uint8[K, width]) blocks of the ``width`` bytes at ``starts``."""
    rows = starts.shape[0]
    stride = int(starts[1] - starts[0]) if rows > 1 else width
    even = stride >= width and (rows < 3 or bool((np.diff(starts) == stride).all()))
    if even:
        # Every line the same length (the usual file): slice a strided view, no gather.
        view = as_strided(
            buf[int(starts[0]) :], shape=(rows, width), strides=(stride, 1), writeable=False
        )
    offsets = np.arange(width)
    for first in range(0, rows, _HEX_BLOCK_ROWS):
        if even:
            yield first, np.ascontiguousarray(view[first : first + _HEX_BLOCK_ROWS])
        else:
            yield first, buf[starts[first : first + _HEX_BLOCK_ROWS, None] + offsets]
