"""``load_list``: read one operator hash list file into packed, validated HashLists.

This is the one entry point the CLI and the matcher call. It opens the path (a local
path or any fsspec URL, compressed files included), picks the format, runs every entry
through the shared validation, and returns one HashList per hash type the file holds.

When entries were skipped (unsupported signal types, types other than the one asked for,
or malformed entries under ``skip_invalid``) it says so in one line, by kind, on the
``clearset.lists`` logger at WARNING: with no logging set up, Python prints that line on
stderr. A spawned worker process that loads the same list again logs it at DEBUG, so
that a scan with eight workers says it once.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO

import fsspec

from clearset.errors import InputError, MissingExtraError
from clearset.hashing import types
from clearset.lists.collect import EntryCollector, shorten
from clearset.lists.formats import FORMAT_BY_NAME, ListFormat, detect_format
from clearset.lists.model import HashList, normalise_signal
from clearset.lists.vpdq import VpdqList, load_vpdq_list, looks_like_vpdq_file

# Bytes read to sniff a file's format when its extension does not name one.
SNIFF_BYTES = 64 << 10

# Suffixes fsspec decompresses on the fly (compression="infer"); not part of the format.
_COMPRESSION_SUFFIXES = ("gz", "bz2", "xz", "zst", "lz4", "zip")

# A PDQ Hamming distance is between 0 and 256 bits.
_PDQ_BITS = 256

log = logging.getLogger("clearset.lists")


def _file_name(source: str) -> str:
    """The last path component, without a compression suffix, for detection and naming."""
    path = source.split("://", 1)[-1].split("?", 1)[0]
    name = PurePosixPath(path).name
    stem, _, suffix = name.rpartition(".")
    if stem and suffix.lower() in _COMPRESSION_SUFFIXES:
        name = stem
    return name


def _default_name(source: str) -> str:
    name = _file_name(source)
    stem = name.rpartition(".")[0]
    return stem or name


@contextlib.contextmanager
def _open(source: str) -> Iterator[IO[bytes]]:
    """Open a list for reading as bytes; every failure becomes one line naming the path."""
    try:
        with fsspec.open(source, "rb", compression="infer") as stream:
            yield stream
    except InputError:
        raise
    except ImportError as error:
        raise MissingExtraError(f"{source}: cannot open: {error}") from None
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a directory, not a list file") from None
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except (OSError, ValueError, EOFError) as error:
        # Decompression errors and unknown URL protocols arrive as these.
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise InputError(f"{source}: cannot read list ({reason})") from None


def _resolve_hash_type(source: str, hash_type: str | None) -> str | None:
    if hash_type is None:
        return None
    ours = normalise_signal(hash_type)
    if ours is None:
        raise InputError(
            f"{source}: unknown hash type {shorten(hash_type)!r} "
            f"(expected one of {', '.join(types.list_type_names())})"
        )
    return ours


def _resolve_format(source: str, fmt: str | None) -> ListFormat:
    if fmt is not None:
        list_format = FORMAT_BY_NAME.get(fmt.strip().lower())
        if list_format is None:
            raise InputError(
                f"{source}: unknown list format {shorten(fmt)!r} "
                f"(expected one of {', '.join(FORMAT_BY_NAME)})"
            )
        return list_format()
    with _open(source) as stream:
        head = stream.read(SNIFF_BYTES)
    return detect_format(_file_name(source), head.decode("utf-8", errors="replace"))


def load_list(
    path: str,
    *,
    name: str | None = None,
    version: str | None = None,
    hash_type: str | None = None,
    fmt: str | None = None,
    skip_invalid: bool = False,
    threshold: int | None = None,
    column: str | None = None,
    videos: list[VpdqList] | None = None,
) -> list[HashList]:
    """Load a hash list file; one HashList per hash type found, in list order.

    ``name`` defaults to the file's stem and is shared by the per-type lists.
    ``hash_type`` declares the type of entries the file does not type itself (required
    for 64-hex lists, which could be PDQ or SHA-256); entries the file types otherwise
    are ignored with a warning. ``fmt`` is a name in ``FORMAT_BY_NAME`` (default:
    detected). ``skip_invalid`` counts malformed entries and keeps going instead of
    raising. ``threshold`` is this list's PDQ distance threshold. ``column`` names the
    hash column of a CSV/TSV or the hash field/array key of a JSON list. ``videos``: a
    caller that matches videos passes a list, to which the file's vPDQ entries are added
    as one `VpdqList` (the file may hold nothing else: then no HashList is returned);
    without it they are skipped as a type the caller cannot match.

    Raises InputError for anything wrong with the file, naming the path (and line).
    """
    source = str(path)
    if threshold is not None and not 0 <= threshold <= _PDQ_BITS:
        raise InputError(f"{source}: PDQ threshold must be 0..{_PDQ_BITS}, got {threshold}")
    ours = _resolve_hash_type(source, hash_type)
    if threshold is not None and ours is not None and types.get(ours).exact:
        raise InputError(f"{source}: a threshold applies only to PDQ lists, not {ours}")
    if videos is not None and fmt is None and hash_type is None:
        with _open(source) as stream:
            head = stream.read(SNIFF_BYTES).decode("utf-8", errors="replace")
        if looks_like_vpdq_file(head):  # one video's vPDQ as a whole file: no other entry
            videos.append(_load_video_list(source, name, version))
            return []
    list_format = _resolve_format(source, fmt)
    if column is not None and not list_format.accepts_column:
        raise InputError(
            f"{source}: column= applies to CSV, TSV and JSON lists, not {list_format.name}"
        )
    collector = EntryCollector(source, hash_type=ours, skip_invalid=skip_invalid)
    collector.keep_video = videos is not None and ours is None
    with _open(source) as stream:
        try:
            list_format.read(stream, collector, column)
        except (OSError, EOFError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise InputError(f"{source}: cannot read list ({reason})") from None
        except RecursionError:
            raise InputError(f"{source}: too deeply nested: not a hash list") from None
    lists = collector.finish(
        name=name if name is not None else _default_name(source),
        version=version,
        threshold=threshold,
    )
    if collector.video and videos is not None:
        videos.append(_load_video_list(source, name, version))
    exact = all(types.get(hash_list.hash_type).exact for hash_list in lists)
    if threshold is not None and lists and exact:
        raise InputError(f"{source}: a threshold applies only to PDQ lists; this file has none")
    if collector.notice:
        in_worker = multiprocessing.parent_process() is not None
        log.log(logging.DEBUG if in_worker else logging.WARNING, collector.notice)
    return lists


def _load_video_list(source: str, name: str | None, version: str | None) -> VpdqList:
    """The file's vPDQ entries as one list (read again, by `clearset.lists.vpdq`)."""
    with _open(source) as stream:
        try:
            text = stream.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{source}: not UTF-8 text: not a vPDQ list") from None
    named = name if name is not None else _default_name(source)
    return load_vpdq_list(source, text, named, version)
