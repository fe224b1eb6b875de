"""Hash lists once per machine: a built Matcher kept as flat arrays every worker maps.

Each worker process used to load the lists and build the PDQ indexes itself, so a
ten-million-entry PDQ list (~1.5 GiB with its index) cost that much again per worker.
`save_matcher` writes a Matcher's arrays (the sorted list entries, the exact lists'
first-8-byte keys, each PDQ list's bucket offsets and rows) as plain ``.npy`` files into a
folder; `open_matcher` maps them read-only, so every process on a machine shares one copy
through the page cache and opening costs milliseconds, not a load and a build.
`matcher_key` names the folder by everything the arrays and the match results depend on
(each list's identity and loading record, thresholds, settings, this format), so a changed
list or threshold never meets a stale folder. `shared_matcher` does all three.

Layout of a folder (format `SHARED_FORMAT`)::

    FOLDER/list-index.json          format, key, settings, per list: identity, threshold,
                                    loading record, and each array's file, dtype, shape
    FOLDER/list-<n>-hashes.npy      uint8[N, width]: list n's entries, sorted, unique
    FOLDER/list-<n>-first-keys.npy  uint64[N]: their first 8 bytes (exact lists)
    FOLDER/list-<n>-pdq-offsets.npy uint32[chunks, 2**bits + 1] (non-empty PDQ lists)
    FOLDER/list-<n>-pdq-rows.npy    uint32[chunks, N]           (non-empty PDQ lists)
    FOLDER/video-<n>-{entries,offsets,rows}.npy  vPDQ list n: its listed videos' kept
                                    frames (uint8[F, 32]) and their PDQ index
    FOLDER/video-<n>-owner.npy      int64[F]: the listed video each kept frame is of
    FOLDER/video-<n>-kept.npy       int64[V]: kept frames per listed video

Handling: the folder holds the list's entries. It is a cache of what the operator
supplied, like the list file itself, not an output: it is created readable by its owner
only, its files are named unlike any output (no parquet, no ``run.json``-like names), and
nothing may publish, gather, hash into a receipt or scan it. Put it in a run folder or a
cache folder, never under a source being scanned (a folder source reads every file).

In memory instead (`save_matcher_in_memory`, Linux): the same files, each an anonymous
memory file (memfd) that the saving process holds open and its workers map through
``/proc/<pid>/fd/<n>``. Such a file has no name on any disk: the kernel frees it when the
last process holding or mapping it exits, however it ends (kill -9 included), so no copy
of a list outlives the command that made it. Only workers on the same machine can map it.

A folder appears whole or not at all: it is written under a temporary sibling name and
renamed into place, so processes or ranks racing to write the same one end with one
complete folder, the first rename's; the others drop theirs and use it. A folder that is
nonetheless damaged (a file missing, truncated, of the wrong shape; an unreadable JSON) is
refused with a one-line `RunFolderError`, never used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clearset.errors import ClearsetError, OutputError, RunFolderError
from clearset.hashing import types
from clearset.lists.model import HashList, ListIdentity, first_key, list_digest
from clearset.matching.matcher import Matcher, MatchSettings
from clearset.matching.pdq_index import (
    DEFAULT_CHUNKS,
    PDQIndex,
    build_index_arrays,
    index_layout,
)
from clearset.matching.vpdq import VpdqIndex

#: Version of the folder layout above; part of every key, so a new layout gets new folders.
SHARED_FORMAT = 1

#: What a folder's JSON is called, and the prefix `shared_matcher` names folders with.
SHARED_JSON = "list-index.json"
SHARED_FOLDER_PREFIX = "list-index-"

_KIND = "clearset-list-index"

# Rename errors that mean another process put a folder there first.
_TAKEN_ERRNOS = frozenset({errno.EEXIST, errno.ENOTEMPTY})


def _list_record(hash_list: HashList) -> dict[str, Any]:
    """Everything about a list except its arrays: what a reopened HashList gets back."""
    return {
        "identity": hash_list.identity.to_dict(),
        "threshold": hash_list.threshold,
        "duplicates_folded": hash_list.duplicates_folded,
        "invalid_skipped": hash_list.invalid_skipped,
        "warnings": list(hash_list.warnings),
        "skipped": dict(hash_list.skipped),
    }


def _key_of(settings: dict[str, Any], records: list[dict[str, Any]]) -> str:
    text = json.dumps(
        {
            "format": SHARED_FORMAT,
            "pdq_chunks": DEFAULT_CHUNKS,
            "settings": settings,
            "lists": records,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def matcher_key(matcher: Matcher) -> str:
    """Hex SHA-256 naming the folder of `matcher`'s arrays.

    Over each list's identity (name, version, digest, type, entries, source), threshold
    and loading record, the match settings and `SHARED_FORMAT`: anything that would make
    an opened Matcher differ from a fresh one gives another key.
    """
    records = [_list_record(hl) for hl in matcher.lists] + _video_records(matcher)
    return _key_of(matcher.settings.to_dict(), records)


def _video_records(matcher: Matcher) -> list[dict[str, Any]]:
    """Each vPDQ list's identity and listed video names (what a reopened index gets back)."""
    return [
        {"video": identity, "names": list(index.names), "min_quality": index.min_quality}
        for identity, index in matcher.video_indexes
    ]


def shared_matcher(matcher: Matcher, root: Path) -> Matcher:
    """`matcher` saved under `root` (once per machine, whoever comes first) and reopened
    mapped: the Matcher a worker should use. `matcher` itself can then be dropped."""
    folder = Path(root) / f"{SHARED_FOLDER_PREFIX}{matcher_key(matcher)}"
    save_matcher(matcher, folder)
    return open_matcher(folder)


def save_matcher(matcher: Matcher, folder: Path) -> None:
    """Build every index `matcher` will need and write them into `folder`, atomically.

    If `folder` already holds a complete save, nothing is done. Several processes may call
    this for the same folder at once: one rename wins, the others remove their own copy.
    A damaged `folder` raises `RunFolderError` (delete it and run again); so does one
    saved for other lists (`matcher_key` differs): the folder is named by the key. A
    place that cannot take the files (disk full, no permission) raises `OutputError`.
    """
    folder = Path(folder)
    key = matcher_key(matcher)
    if _present(folder):
        _check_existing(folder, key)
        return
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # mkdtemp: a fresh name per writer, and mode 0700: the files are the operator's list.
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.writing-", dir=folder.parent))
        _write(matcher, key, tmp.joinpath)
        for path in tmp.iterdir():
            path.chmod(0o600)  # like the folder: the owner's alone, wherever it is moved
        os.rename(tmp, folder)
    except OSError as exc:
        if exc.errno not in _TAKEN_ERRNOS or tmp is None or not folder.is_dir():
            problem = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OutputError(
                f"{folder}: cannot write the list index: {problem}; free some space or "
                "fix the folder's permissions, and run again"
            ) from exc
        _check_existing(folder, key)  # another writer won: use theirs, if it is whole
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _present(folder: Path) -> bool:
    """Whether something is at `folder` already (an empty folder is not something)."""
    return folder.exists() and not (folder.is_dir() and not any(folder.iterdir()))


def _check_existing(folder: Path, key: str) -> None:
    recorded = _read_json(_Files(folder)).get("key")
    if recorded != key:
        raise RunFolderError(
            f"{folder}: holds the list index of other lists or settings (key {recorded!s:.12}, "
            f"expected {key:.12}); name the folder by matcher_key, or delete it"
        )
    open_matcher(folder)  # shapes and dtypes of every array: refuse a damaged folder


class MemoryIndex:
    """A saved Matcher whose files are anonymous memory files held open by this process.

    `files` names where a process on this machine opens each one (``/proc/<pid>/fd/<n>``,
    while this process lives and has not called `close`); pass it to `open_matcher`.
    Closing drops this process's hold; the memory is freed once no process maps it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._fds: dict[str, int] = {}

    def create(self, name: str) -> Path:
        """A new, empty memory file for `name`: the path this process writes it through."""
        fd = os.memfd_create(f"clearset-{name}", os.MFD_CLOEXEC)
        self._fds[name] = fd
        return Path(f"/proc/self/fd/{fd}")

    @property
    def files(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, f"/proc/{self.pid}/fd/{fd}") for name, fd in self._fds.items())

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def memory_index_possible() -> bool:
    """Whether this system has anonymous memory files that other processes can open."""
    return hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd")


def save_matcher_in_memory(matcher: Matcher) -> MemoryIndex:
    """`save_matcher`'s files, built into anonymous memory files (see the module's text).

    Nothing is written to any disk. `OSError` (no memory files here, too many open) is
    raised as it is: the caller saves to a folder instead."""
    index = MemoryIndex()
    try:
        _write(matcher, matcher_key(matcher), index.create)
    except BaseException:
        index.close()
        raise
    return index


def _write(matcher: Matcher, key: str, place: Callable[[str], Path]) -> None:
    """Write `matcher`'s files, each at `place(its name)`."""
    records: list[dict[str, Any]] = []
    for number, hash_list in enumerate(matcher.lists):
        record = _list_record(hash_list)
        arrays: dict[str, dict[str, Any]] = {}
        prefix = f"list-{number}"
        arrays["hashes"] = _save(place, f"{prefix}-hashes.npy", hash_list.hashes)
        if types.is_exact(hash_list.hash_type):
            keys = hash_list._first_keys
            if keys is None:
                keys = first_key(hash_list.hashes)
            arrays["first_keys"] = _save(place, f"{prefix}-first-keys.npy", keys)
        elif len(hash_list):
            arrays.update(_save_pdq_index(matcher, number, place, prefix))
        record["arrays"] = arrays
        records.append(record)
    for number, video in enumerate(_video_records(matcher)):
        index = matcher.video_indexes[number][1]
        prefix = f"video-{number}"
        video["arrays"] = {
            "kept": _save(place, f"{prefix}-kept.npy", index.kept_counts),
            "owner": _save(place, f"{prefix}-owner.npy", index.owner),
            **{
                name: _save(place, f"{prefix}-{name}.npy", array)
                for name, array in index.index.arrays.items()
            },
        }
        records.append(video)
    body = {
        "kind": _KIND,
        "format": SHARED_FORMAT,
        "key": key,
        "settings": matcher.settings.to_dict(),
        "lists": records,
        "note": "a cache of the operator's hash lists (their entries): not an output",
    }
    path = place(SHARED_JSON)
    with open(path, "w") as handle:
        handle.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
    _fsync(path)


def _save_pdq_index(
    matcher: Matcher, number: int, place: Callable[[str], Path], prefix: str
) -> dict[str, dict[str, Any]]:
    built = matcher._indexes.get(number)
    offsets_name, rows_name = f"{prefix}-pdq-offsets.npy", f"{prefix}-pdq-rows.npy"
    if built is not None:
        return {
            "pdq_offsets": _save(place, offsets_name, built.arrays["offsets"]),
            "pdq_rows": _save(place, rows_name, built.arrays["rows"]),
        }
    offsets_path, rows_path = place(offsets_name), place(rows_name)
    # Built straight into the files: the builder's heap never holds a second copy, and
    # the pages written are the page cache every worker then maps.
    hashes = matcher.lists[number].hashes
    chunks, bits = index_layout(len(hashes))
    offsets = np.lib.format.open_memmap(
        offsets_path, mode="w+", dtype=np.uint32, shape=(chunks, (1 << bits) + 1)
    )
    rows = np.lib.format.open_memmap(
        rows_path, mode="w+", dtype=np.uint32, shape=(chunks, len(hashes))
    )
    offsets[:] = 0
    build_index_arrays(hashes, offsets, rows)
    described = {
        "pdq_offsets": _describe(offsets_name, offsets),
        "pdq_rows": _describe(rows_name, rows),
    }
    offsets.flush()
    rows.flush()
    del offsets, rows
    _fsync(offsets_path)
    _fsync(rows_path)
    return described


def _save(place: Callable[[str], Path], name: str, array: np.ndarray) -> dict[str, Any]:
    path = place(name)
    with open(path, "wb") as handle:  # np.save given a path would add ".npy" to a memfd's
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    _fsync(path)
    return _describe(name, array)


def _describe(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"file": name, "dtype": array.dtype.str, "shape": list(array.shape)}


def _fsync(path: Path) -> None:
    # Renamed into place only once on disk: a crash must not leave a whole-looking
    # folder of zeros behind.
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class IndexArrays(dict[str, Any]):
    """A saved Matcher's files held in memory, file name -> array (its JSON as text):
    what Ray's object store carries to workers on every node, once per node, where each
    worker reads the arrays from the node's shared memory without a copy of its own."""


def index_arrays(folder: Path) -> IndexArrays:
    """The files of a folder `save_matcher` wrote, in memory (see `IndexArrays`)."""
    files = IndexArrays()
    for path in sorted(Path(folder).iterdir()):
        if path.name == SHARED_JSON:
            files[path.name] = path.read_text()
        elif path.suffix == ".npy":
            files[path.name] = np.load(path, allow_pickle=False)
    return files


class _Files:
    """Where a saved Matcher's files are: a folder, (name -> path) for memory files, or
    the arrays themselves (`IndexArrays`)."""

    def __init__(self, where: Path | str | Mapping[str, str] | IndexArrays) -> None:
        self.arrays = where if isinstance(where, IndexArrays) else None
        self.paths = dict(where) if isinstance(where, Mapping) and self.arrays is None else None
        self.folder = (
            Path(where) if self.paths is None and self.arrays is None else None  # type: ignore[arg-type]
        )

    def path(self, name: str) -> Path:
        if self.folder is not None:
            return self.folder / name
        assert self.paths is not None
        if name not in self.paths:
            raise FileNotFoundError(name)
        return Path(self.paths[name])

    def __str__(self) -> str:
        return str(self.folder) if self.folder is not None else "the list index in memory"

    def text(self, name: str) -> str:
        if self.arrays is not None:
            if name not in self.arrays:
                raise FileNotFoundError(name)
            return str(self.arrays[name])
        return self.path(name).read_text()

    def load(self, name: str) -> np.ndarray:
        if self.arrays is not None:
            if name not in self.arrays:
                raise FileNotFoundError(name)
            return np.asarray(self.arrays[name])
        return np.load(self.path(name), mmap_mode="r", allow_pickle=False)


def _read_json(folder: _Files) -> dict[str, Any]:
    try:
        body = json.loads(folder.text(SHARED_JSON))
    except FileNotFoundError:
        raise _damaged(folder, f"no {SHARED_JSON}") from None
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"{SHARED_JSON} unreadable ({exc})") from None
    if not isinstance(body, dict) or body.get("kind") != _KIND:
        raise _damaged(folder, f"{SHARED_JSON} is not a clearset list index")
    if body.get("format") != SHARED_FORMAT:
        raise RunFolderError(
            f"{folder}: a list index of format {body.get('format')} (this clearset reads "
            f"format {SHARED_FORMAT}); delete it and run again"
        )
    return body


def _damaged(folder: Path | _Files, problem: str) -> RunFolderError:
    return RunFolderError(f"{folder}: damaged list index: {problem}; delete it and run again")


def open_matcher(
    folder: Path | str | Mapping[str, str] | IndexArrays, *, verify: bool = False
) -> Matcher:
    """The Matcher saved in `folder` (or in the memory files of a `MemoryIndex.files`
    mapping, given as a dict, or `IndexArrays`), its arrays memory-mapped read-only (shared between
    every process that opens it), its PDQ indexes adopted as they are: nothing is rebuilt
    or copied. Its `match_table` returns exactly what the saved Matcher's would.

    Every array's file, dtype and shape are checked against the JSON, and the PDQ
    indexes' cheap invariants; `verify` also reads every array in full and checks it against
    the list digests and a rebuilt index: as slow as a build, for a cache of doubtful origin.
    A damaged folder raises `RunFolderError`.
    """
    files = _Files(folder)
    body = _read_json(files)
    try:
        settings = MatchSettings(**body["settings"])
        records = [_strip_arrays(record) for record in body["lists"]]
        if _key_of(settings.to_dict(), records) != body["key"]:
            raise _damaged(files, f"{SHARED_JSON} does not match its key")
        lists: list[HashList] = []
        indexes: dict[int, PDQIndex] = {}
        videos: list[tuple[dict[str, Any], VpdqIndex]] = []
        for record in body["lists"]:
            if "video" in record:
                videos.append((record["video"], _open_video(files, record)))
                continue
            hash_list, index = _open_list(files, record, verify)
            if index is not None:
                indexes[len(lists)] = index
            lists.append(hash_list)
    except RunFolderError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(files, f"{SHARED_JSON}: malformed ({type(exc).__name__}: {exc})") from None
    return Matcher(lists, settings, indexes=indexes, video_indexes=videos)


def _open_video(folder: _Files, record: dict[str, Any]) -> VpdqIndex:
    """A saved vPDQ list's index, its arrays mapped read-only as they are."""
    arrays = record["arrays"]
    videos, frames = len(record["names"]), arrays["entries"]["shape"][0]
    kept = _map(folder, arrays["kept"], np.int64, (videos,))
    owner = _map(folder, arrays["owner"], np.int64, (frames,))
    entries = _map(folder, arrays["entries"], np.uint8, (frames, 32))
    offsets = _map(folder, arrays["offsets"], np.uint32, None)
    rows = _map(folder, arrays["rows"], np.uint32, None)
    try:
        index = PDQIndex.from_arrays(entries, offsets, rows)
    except ClearsetError as exc:
        raise _damaged(folder, str(exc)) from None
    return VpdqIndex(
        None,
        record["min_quality"],
        arrays=(kept, owner, index),
        names=tuple(str(name) for name in record["names"]),
    )


def _strip_arrays(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "arrays"}


def _open_list(
    folder: _Files, record: dict[str, Any], verify: bool
) -> tuple[HashList, PDQIndex | None]:
    identity = ListIdentity(**record["identity"])
    hash_type = identity.hash_type
    if hash_type not in types.list_type_names():
        raise _damaged(folder, f"unknown hash type {hash_type!r}")
    arrays = record["arrays"]
    entries = identity.entries
    hashes = _map(folder, arrays["hashes"], np.uint8, (entries, types.width(hash_type)))
    first_keys = None
    index = None
    if types.is_exact(hash_type):
        first_keys = _map(folder, arrays["first_keys"], np.uint64, (entries,))
    elif entries:
        offsets = _map(folder, arrays["pdq_offsets"], np.uint32, None)
        rows = _map(folder, arrays["pdq_rows"], np.uint32, None)
        try:
            index = PDQIndex.from_arrays(hashes, offsets, rows)
        except ClearsetError as exc:
            raise _damaged(folder, str(exc)) from None
    if verify:
        _verify(folder, identity, hashes, first_keys, index)
    hash_list = HashList(
        identity=identity,
        hashes=hashes,
        duplicates_folded=record["duplicates_folded"],
        invalid_skipped=record["invalid_skipped"],
        threshold=record["threshold"],
        warnings=list(record["warnings"]),
        skipped=dict(record["skipped"]),
        _first_keys=first_keys,
    )
    return hash_list, index


def _map(
    folder: _Files, described: dict[str, Any], dtype: type, shape: tuple[int, ...] | None
) -> np.ndarray:
    name = described["file"]
    if "/" in name or name.startswith("."):
        raise _damaged(folder, f"array file name {name!r}")
    try:
        array = folder.load(name)
    except FileNotFoundError:
        raise _damaged(folder, f"{name} is missing") from None
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"{name} unreadable ({exc})") from None
    expected = shape if shape is not None else tuple(described["shape"])
    if array.dtype != np.dtype(dtype) or array.shape != expected:
        raise _damaged(
            folder,
            f"{name} is {array.dtype}{list(array.shape)}, expected "
            f"{np.dtype(dtype)}{list(expected)}",
        )
    if list(array.shape) != list(described["shape"]) or not array.flags.c_contiguous:
        raise _damaged(folder, f"{name} does not match {SHARED_JSON}")
    return array


def _verify(
    folder: _Files,
    identity: ListIdentity,
    hashes: np.ndarray,
    first_keys: np.ndarray | None,
    index: PDQIndex | None,
) -> None:
    if list_digest(identity.hash_type, hashes) != identity.digest:
        raise _damaged(folder, f"list {identity.name!r}: entries differ from its digest")
    if first_keys is not None and not np.array_equal(first_keys, first_key(hashes)):
        raise _damaged(folder, f"list {identity.name!r}: first keys differ from its entries")
    if index is not None:
        rebuilt = PDQIndex(np.asarray(hashes)).arrays
        for name in ("offsets", "rows"):
            if not np.array_equal(index.arrays[name], rebuilt[name]):
                raise _damaged(folder, f"list {identity.name!r}: PDQ index {name} differ")
