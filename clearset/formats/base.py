"""What every format shares: the items a source yields, and the `Format` contract.

A source is a data set where it lies: a folder, WebDataset tar shards, or parquet files,
on local disk or behind any fsspec URL. It is split into shards, the unit of work that
any engine (local processes, Ray) hands to `clearset.stages.scan.scan_task`. Reading
a shard streams items one at a time so memory stays flat however large the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import fsspec
from braceexpand import braceexpand

from clearset.errors import InputError
from clearset.hashing.types import ByteDigests
from clearset.settings import IMAGE_EXTENSIONS, MAX_MEMBER_BYTES


@dataclass(frozen=True, slots=True)
class ShardRef:
    """One unit of work. `id` names the shard's files in a run folder; `name` is what
    users see in the manifest's `shard` column (the shard's path relative to the source)."""

    id: str
    name: str
    path: str
    # A folder has no shards of its own: its shards are runs of its sorted file list.
    files: tuple[str, ...] = ()
    # A URL list's shards are runs of its rows: [start, end) of the file at `path`.
    rows: tuple[int, int] | None = None
    # A text URL list's shard: the byte where its first record starts, and the file's
    # records in all (found in one pass when planning: no shard parses the rows before it).
    offset: int | None = None
    file_rows: int | None = None


@dataclass(slots=True)
class Item:
    """One member or file of a source (or one row that should have held an image).

    Every member of a shard and every file of a folder becomes one Item, whatever its
    name: whether it is an image is decided later by its bytes. An Item without bytes
    is either `missing` (a failed download, a metadata-only row: `missing_reason`) or
    `other` (a link, a folder, a device: `status="other"` and `missing_reason` says
    which); neither is ever copied into a cleaned copy as bytes nobody hashed."""

    key: str
    shard: str
    position: int
    members: tuple[str, ...]
    member: str | None
    data: bytes | None
    url: str | None = None
    # Hashes and status the source already carries (img2dataset's sha256/md5 of the
    # original download, LAION's md5). Kept apart from ours: they need not equal them.
    upstream_sha256: str | None = None
    upstream_md5: str | None = None
    upstream_status: str | None = None
    # Why `data` is None, when it is.
    missing_reason: str | None = None
    # "other" for members that hold no bytes to hash (links, folders, devices).
    status: str | None = None
    # Whether the name says image (`.jpg`...): an image-named member that does not
    # decode is an `error`; any other member that does not decode is `other`.
    expect_image: bool = True
    # The picture to decode when it differs from the stored bytes (a `.jpg.gz` member:
    # webdataset decompresses it before decoding). Crypto hashes stay on `data`.
    image_data: bytes | None = None
    # A member too large to hold in memory: hashed while streaming, never decoded.
    streamed: StreamedHashes | None = None
    # Metadata that could not be used (a `.json` url that is a list...): a row reason.
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamedHashes:
    size: int
    digests: dict[str, bytes]  # every registered byte digest, by type name

    @property
    def sha256(self) -> bytes:
        return self.digests["sha256"]

    @property
    def md5(self) -> bytes:
        return self.digests["md5"]


def read_bounded(
    handle: Any, limit: int = MAX_MEMBER_BYTES, size: int | None = None
) -> tuple[bytes | None, StreamedHashes | None]:
    """All of `handle` as bytes if it holds at most `limit` bytes; otherwise None and
    the crypto hashes of everything it holds, read in blocks (memory stays bounded).
    `size`, when the container says it (a tar header, a file's stat), saves the blocks."""
    if size is not None and size <= limit:
        return handle.read(size), None
    blocks: list[bytes] = []
    held = 0
    while held <= limit and (block := handle.read(1 << 20)):
        blocks.append(block)
        held += len(block)
    if held <= limit:
        return b"".join(blocks), None
    digests = ByteDigests()
    for block in blocks:
        digests.update(block)
    blocks.clear()
    while block := handle.read(1 << 20):
        digests.update(block)
    return None, StreamedHashes(digests.size, digests.result())


def metadata_json(raw: bytes | None, what: str) -> tuple[dict[str, Any], str | None]:
    """A sample's `.json` metadata as a dict, and a row note when it is unusable (not
    JSON, not an object, nested past the parser's depth): bad metadata is never a crash."""
    if not raw:
        return {}, None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}, f"bad_metadata: {what} is not valid JSON"
    except RecursionError:
        return {}, f"bad_metadata: {what} is too deeply nested"
    if not isinstance(value, dict):
        return {}, f"bad_metadata: {what} is not an object"
    return value, None


def as_text(value: Any) -> tuple[str | None, bool]:
    """A metadata value (url, status) as text, and whether it was unusable.

    Numbers become their text and bytes are decoded (undecodable bytes as \\xNN); a
    list, mapping or other value is dropped and reported, never a crash."""
    if value is None:
        return None, False
    if isinstance(value, str):
        return display_name(value), False
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace"), False
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, True
    return str(value), False


class Source(Protocol):
    kind: ClassVar[str]
    url: str

    def shards(self) -> list[ShardRef]: ...

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        """Every item of `shard`; with `record`, the file's size and SHA-256 go there."""
        ...

    def spec(self) -> dict[str, Any]:
        """What run.json records to say which source a run read, and to check a resume."""
        ...


#: Where an Item's `extra` holds (width, height) a picture had before the source's tool
#: resized it (img2dataset's `original_width`/`original_height`).
ORIGINAL_SIZE = "original_size"


def original_size(record: dict[str, Any]) -> dict[str, Any]:
    """`{ORIGINAL_SIZE: (width, height)}` from a sample's metadata (img2dataset's .json,
    side parquet or parquet row), or `{}` where it does not record both as sizes."""
    width, height = record.get("original_width"), record.get("original_height")
    sizes = []
    for value in (width, height):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a parquet column with nulls is stored as floats
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 31:
            return {}
        sizes.append(value)
    return {ORIGINAL_SIZE: (sizes[0], sizes[1])}


def split_ext(name: str) -> tuple[str | None, str | None]:
    """Key and extension the way webdataset groups tar members.

    Everything after the first dot of the file name is the extension, so `a.b.jpg` is key
    `a` with extension `b.jpg`. We group exactly as webdataset will when training reads
    the shard, even where that surprises.
    """
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def is_image_ext(ext: str | None) -> bool:
    """True for extensions we hash as images (`jpg`, `b.jpg`, `JPEG`...)."""
    if not ext:
        return False
    return ext.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


def normalise_hex(value: Any) -> str | None:
    """Upstream hash columns as lower-case hex, or None when empty or not a hash."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return text if text and not text.strip("0123456789abcdef") else None


def expand_paths(url: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The filesystem and the concrete paths for a URL, a brace pattern or a glob."""
    try:
        fs, _ = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{url}: cannot open this location ({exc})") from None
    patterns = list(braceexpand(url)) if "{" in url else [url]
    paths: list[str] = []
    for pattern in patterns:
        _, path = fsspec.core.url_to_fs(pattern)
        if any(ch in path for ch in "*?["):
            paths.extend(sorted(fs.glob(path)))
        else:
            paths.append(path)
    return fs, paths


def find_files(
    url: str, suffixes: tuple[str, ...], what: str
) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    """(filesystem, root folder, sorted files) for a file, folder or pattern of files
    ending in `suffixes`; `what` names them in errors ("parquet file", "shard").

    The root is the folder the shards' names are relative to: the folder given, or the
    deepest folder holding every file of a pattern, so `s/{p,q}/0.tar` names `p/0.tar`
    and `q/0.tar`, never two shards called `0.tar`."""
    fs, paths = expand_paths(url)
    files: list[str] = []
    root = ""
    for path in paths:
        if fs.isdir(path):
            root = path
            files.extend(p for p in sorted(fs.find(path)) if p.endswith(suffixes))
        elif fs.exists(path):
            files.append(path)
        else:
            raise InputError(f"{protocol_url(fs, path)}: no such {what}")
    if not files:
        raise InputError(f"{url}: no {' or '.join(suffixes)} files found")
    files = list(dict.fromkeys(files))  # a pattern may name a file twice
    if len(paths) != 1 or not root:
        root = common_folder(files)
    return fs, root, files


def common_folder(files: list[str]) -> str:
    """The deepest folder that holds every one of `files`."""
    parts = [f.split("/")[:-1] for f in files]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return "/".join(common)


def file_shards(url: str, suffixes: tuple[str, ...], what: str) -> list[ShardRef]:
    """One shard per file: the shards of tar and parquet sources."""
    fs, root, files = find_files(url, suffixes, what)
    refs = []
    for path in files:
        name = relative_name(path, root)
        refs.append(ShardRef(id=shard_id_for(name), name=name, path=protocol_url(fs, path)))
    check_unique(refs, url)
    return refs


def check_unique(refs: list[ShardRef], url: str) -> None:
    """Refuse two shards that would share a name or run-folder file, before any work."""
    seen: dict[str, str] = {}
    for ref in refs:
        # Case-folded: on a case-insensitive disk `A.tar` and `a.tar` share one marker.
        for token in (f"name:{ref.name}", f"id:{ref.id.lower()}"):
            if token in seen:
                raise InputError(
                    f"{url}: shards {seen[token]} and {ref.path} would share one name "
                    f"({ref.name}); give them as separate sources"
                )
            seen[token] = ref.path


def shard_fingerprint(shard: ShardRef) -> dict[str, Any]:
    """Size and modification stamp of a shard's files, recorded at scan time so that a
    later clean can refuse a source that changed since (it would copy unscanned bytes)."""
    fs, root = fsspec.core.url_to_fs(shard.path)
    paths = [f"{root}/{name}" for name in shard.files] if shard.files else [root]
    digest = hashlib.sha256()
    total = 0
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    for path in paths:
        try:
            if local:
                # Never through a link: a link's target is not part of the source.
                found = os.lstat(path)
                size, stamp = found.st_size, str(found.st_mtime_ns)
            else:
                list_folder_once(fs, path)
                info = fs.info(path)
                stamp = next((str(info[k]) for k in _STAMP_KEYS if info.get(k) is not None), "")
                size = int(info.get("size") or 0)
        except (OSError, FileNotFoundError):
            raise InputError(f"{protocol_url(fs, path)}: no longer readable") from None
        total += size
        digest.update(f"{path}\0{size}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    return {"files": len(paths), "bytes": total, "stamp": digest.hexdigest()}


#: (file system, folder) -> that folder's listing, taken once per process.
_listed: dict[tuple[int, str], list[dict[str, Any]]] = {}


def list_folder_once(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Make `fs` answer the size, stamp and existence of every file in `path`'s folder
    from one listing (in pages, 1,000 names each on S3), taken the first time a process
    asks, not from a HEAD request per file and per question: reading and cleaning a
    shard ask about its tar and side files about ten times. The listing goes into the
    file system's own listings cache (which `info`, `exists` and `open` consult), and
    back into it if something cleared the cache since. Sources are never written during
    a run, so a listing taken at a process's first shard stays true for its last."""
    folder = fs._parent(path)
    key = (id(fs), folder)
    if key not in _listed:
        try:
            _listed[key] = fs.ls(folder, detail=True)
        except (OSError, FileNotFoundError):
            return  # asked one file at a time, as before
    cache = getattr(fs, "dircache", None)
    if cache is not None and folder not in cache:
        cache[folder] = _listed[key]


# What filesystems call a file's version: local mtime, S3/GCS/Azure etags and times.
_STAMP_KEYS = ("mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "created")


#: Bytes that stand for themselves in a shard id; every other byte is %XX-escaped.
_ID_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
#: Longest id kept whole; longer ones end in a digest (file names stop at 255 bytes).
_ID_MAX = 180


def shard_id_for(name: str) -> str:
    """A file-name-safe id for a shard's run-folder files, unique by construction.

    The id is the source-relative name with every byte outside [A-Za-z0-9._-] written
    as %XX (so `a/b.tar` is `a%2Fb.tar` and can never meet a shard called `a__b.tar`),
    and the extension kept (`x.tar` and `x.tar.gz` differ). A leading dot is escaped too,
    so no id is hidden or looks like a temporary file."""
    raw = name.encode("utf-8", "surrogateescape")
    text = "".join(chr(b) if b in _ID_SAFE else f"%{b:02X}" for b in raw)
    if text.startswith("."):
        text = "%2E" + text[1:]
    if len(text) > _ID_MAX:
        # `~` is escaped everywhere else, so a shortened id never equals a whole one.
        text = text[: _ID_MAX - 17] + "~" + hashlib.sha256(raw).hexdigest()[:16]
    return text or "shard"


def display_name(name: str) -> str:
    """A file or member name as valid UTF-8 for the manifest: undecodable bytes (kept by
    Python as surrogate escapes) are written as \\xNN instead of failing."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def relative_name(path: str, root: str) -> str:
    root = root.rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.rsplit("/", 1)[-1]


def protocol_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path back as a URL fsspec can reopen in another process."""
    return fs.unstrip_protocol(path)


class Rewriter(Protocol):
    """How a format writes one shard again without the removed keys (`clean`)."""

    def __call__(
        self,
        shard: ShardRef,
        dest_root: Path,
        removed: Container[str],
        *,
        any_removed: bool,
        contents: Any,
        link: bool = False,
        drop_empty: bool = False,
    ) -> Any: ...


@dataclass(frozen=True)
class OpenOptions:
    """The scan options that say how to read a source; each format takes its own."""

    image_column: str | None = None
    base_dir: str | None = None
    url_column: str | None = None
    shard_rows: int | None = None
    fetch: Any = None  # FetchSettings, for the URL-list format


class Format:
    """One data-set format: how it is detected, read and rewritten, in one module.

    A format module defines a subclass and the registry (`clearset.formats.FORMATS`)
    names one instance of it. `name` is what run.json records as the source's kind and
    what `--kind` takes. The hooks below have defaults that suit a format of plain
    files; a format overrides only what it does differently."""

    #: The source kind: recorded in run.json, given to `--kind`.
    name: ClassVar[str]
    #: The class that reads it (`Source`): built from run.json's spec with `reader(**spec)`.
    reader: ClassVar[Callable[..., Source]]
    #: File names that are this format's shards, for detection; () for a format that is
    #: never detected (a folder is what is left; a URL list is asked for with --fetch).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: What one shard file is called in a survey ("tar shard").
    noun: ClassVar[str] = "file"
    #: How a cleaned copy is written; None where it cannot be (clean then says so).
    rewriter: ClassVar[Rewriter | None] = None
    #: Whether items are fetched from URLs the source lists (`scan --fetch`).
    fetches: ClassVar[bool] = False
    #: Whether card and licence files at the top of the source folder go to the copy.
    carries_cards: ClassVar[bool] = False
    #: The suffix of the files a Hugging Face `datasets` config loads from the copy.
    data_files_suffix: ClassVar[str | None] = None
    #: How Croissant describes the parquet files of a cleaned copy.
    croissant_parquet: ClassVar[str] = "the cleaned parquet"
    #: Whether Croissant lists the copy's images as a record set (a folder of files).
    croissant_images: ClassVar[bool] = False
    #: Where `prompts` finds captions: "members" (a `.txt` member of each key, read
    #: with the reader) or "column" (a caption column of the files, read row by row).
    captions_in: ClassVar[str] = "members"

    def claims(self, name: str) -> bool:
        """Whether a file of this name is one of this format's shards."""
        return bool(self.suffixes) and name.endswith(self.suffixes)

    def open(self, url: str, options: OpenOptions) -> Source:
        """The source at `url` (an absolute URL), refusing options it does not take."""
        if options.image_column is not None or options.base_dir is not None:
            raise InputError(f"{url}: --image-column and --base-dir apply to parquet sources only")
        return self.reader(url=url)


def absolute_url(url: str) -> str:
    """A local path as an absolute path (a run may be resumed or cleaned from another
    folder); URLs with a protocol as they are."""
    protocol, _ = fsspec.core.split_protocol(url)
    if protocol not in (None, "file", "local"):
        return url
    _, path = fsspec.core.split_protocol(url)
    if "{" in path or any(c in path for c in "*?["):
        head = path.split("{")[0]
        head = re.split(r"[*?\[]", head)[0]
        folder = head.rsplit("/", 1)[0] if "/" in head else ""
        rest = path[len(folder) :]
        return os.path.abspath(folder or ".") + (rest if folder else "/" + rest)
    return os.path.abspath(path)
