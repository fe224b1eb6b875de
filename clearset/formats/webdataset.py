"""WebDataset tar shards, including img2dataset output with its side files.

Every member of a tar becomes a manifest row, whatever its name: `.jpg`, `.jpe`, `.ppm`,
a member with no extension, `__meta__/x.jpg` (which webdataset itself skips), a `.json`
caption file, a link or a folder entry. Whether a member is an image is decided by its
bytes when it is hashed. Members are grouped into keys exactly as webdataset groups
them (see `split_ext`); removal is by key.

Facts of the img2dataset layout we respect: tar members are in download-completion
order, not key order; failed downloads are absent from the tar but present in the shard's
`.parquet` with their status, and become manifest rows with no bytes; its `sha256`/`md5`
columns hash the original download and are kept as upstream columns, never as ours.

The tar is read once, as a stream, and the SHA-256 of the whole file is taken on the
way: `clean` compares it before copying so that a cleaned copy holds only bytes that
this scan read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.atomic import atomic_path
from clearset.errors import InputError
from clearset.formats.base import (
    Format,
    Item,
    ShardRef,
    StreamedHashes,
    as_text,
    display_name,
    file_shards,
    is_image_ext,
    metadata_json,
    normalise_hex,
    original_size,
    read_bounded,
    split_ext,
)
from clearset.formats.parquet import parquet_codec, parquet_row_group
from clearset.formats.rewriting import (
    DropShard,
    ShardContents,
    WrittenShard,
    changed_since_scan,
    copy_file,
)
from clearset.settings import MAX_MEMBER_BYTES

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SIDE_COLUMNS = (
    "key",
    "url",
    "status",
    "error_message",
    "sha256",
    "md5",
    "original_width",
    "original_height",
)
GZIP_SUFFIXES = (".tar.gz", ".tgz")
#: Side-parquet columns that hold text even when stored as bytes (a non-UTF-8 URL).
SIDE_TEXT_COLUMNS = frozenset({*SIDE_COLUMNS, "caption", "exif"})


@dataclass
class TarMember:
    """One member as read from the stream: its bytes for a regular file, else a kind."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "fifo", "device", "other"
    data: bytes | None = None
    streamed: StreamedHashes | None = None
    linkname: str | None = None


@dataclass
class HashingReader:
    """A read-only stream that hashes every byte read through it."""

    raw: Any
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        self.size += len(block)
        return block

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def member_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.isfifo():
        return "fifo"
    if info.ischr() or info.isblk():
        return "device"
    return "other"


def tar_members(url: str, record: dict[str, Any] | None = None) -> Iterator[TarMember]:
    """Every member of a tar (or .tar.gz) shard in order; with `record`, the file's
    size and SHA-256 are put there once the whole file has been read."""
    try:
        with fsspec.open(url, "rb") as raw:
            hashing = HashingReader(raw)
            stream: Any = hashing
            if url.endswith(GZIP_SUFFIXES):
                stream = gzip.GzipFile(fileobj=hashing, mode="rb")  # type: ignore[call-overload]  # read forward only: never seeks
            # A plain tar is read 256 KiB at a time (a gzip stream a record at a time,
            # as tarfile reads it, so that a broken one fails where tarfile's would).
            yield from _stream_members(
                stream, tarfile.RECORDSIZE if stream is not hashing else _BLOCK
            )
            hashing.drain()  # the end-of-archive padding is part of the file too
            if record is not None:
                record.update(file_sha256=hashing.digest.hexdigest(), file_bytes=hashing.size)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{url}: not a readable tar shard ({exc})") from None


def tarfile_members(stream: Any) -> Iterator[TarMember]:
    """The members of a tar stream as `tarfile` reads them (mode "r|"): the reference
    `_stream_members` is held to, and what it hands a stream to at the first header it
    does not read itself."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            member = TarMember(name=info.name, kind=member_kind(info))
            plain = info.sparse is None and 0 < info.size <= MAX_MEMBER_BYTES
            if member.kind == "file" and plain:
                member.data = _file_bytes(tar, info)
            elif member.kind == "file":
                handle = tar.extractfile(info)
                member.data, member.streamed = read_bounded(handle, size=info.size)
            else:
                member.linkname = info.linkname or None
            yield member


def _file_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A regular member's bytes straight from the tar stream: what `extractfile(info)
    .read()` returns (and the same error for a cut-off member), without its two file
    objects per member."""
    stream: Any = tar.fileobj
    stream.seek(info.offset_data)
    data: bytes = stream.read(info.size)
    if len(data) != info.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


#: How much of a plain (uncompressed) tar is read at a time (a few times this is what
#: reading a shard holds at once).
_BLOCK = 1 << 18


class _TarStream:
    """Reads from a forward-only stream exactly as `tarfile`'s stream mode does (the same
    `read(RECORDSIZE)` calls at the same moments, so that a broken gzip stream fails at
    the same member with the same error), keeping what it read ahead. A plain tar's
    stream may be read in larger `block`s: fewer calls, the same bytes and errors."""

    def __init__(self, stream: Any, block: int = tarfile.RECORDSIZE) -> None:
        self.stream = stream
        self.block = block
        # What was read ahead is `buffer[start:]`: a read takes its bytes by moving
        # `start`, not by copying the rest of the record each time.
        self.buffer = b""
        self.start = 0

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer only at the end of the stream (`tarfile._Stream.__read`)."""
        start = self.start
        end = start + size
        if len(self.buffer) >= end:
            self.start = end
            return self.buffer[start:end]
        have, parts = len(self.buffer) - start, [self.buffer[start:]]
        while have < size:
            block = self.stream.read(self.block)
            if not block:
                break
            parts.append(block)
            have += len(block)
        joined = b"".join(parts)
        # Only the rest is kept (less than a record): never a large member's bytes twice.
        self.buffer, self.start = joined[size:], 0
        return joined[:size]

    def handed_on(self, first: bytes) -> _HandedOn:
        """The rest of the stream, `first` (bytes already taken) ahead of it."""
        return _HandedOn(first + self.buffer[self.start :], self.stream)


@dataclass
class _HandedOn:
    """A file object over some bytes and then a stream, for `tarfile` to read on from."""

    head: bytes
    stream: Any

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        block: bytes = self.stream.read(size)
        return block


@dataclass
class _MemberData:
    """The file object `extractfile` gives for a member too large to hold: `size` bytes,
    and tarfile's error when the stream ends before them."""

    stream: _TarStream
    left: int

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(size)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        self.left -= size
        return data


#: `tarfile` itself, typed loosely: its header helpers (`nti`, `nts`, `calc_chksums`) and
#: `InvalidHeaderError` are not in its typed API, and using them keeps every judgement of
#: a header field tarfile's own.
_tarfile: Any = tarfile
#: Header types read here: regular files and folders (all an img2dataset shard holds).
#: Any other (pax and GNU extended headers, links, sparse files, devices) hands the rest
#: of the stream to `tarfile`.
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
#: A valid, empty regular member ahead of a handed-on stream: `tarfile` then reads the
#: real header at an offset past 0, where its rules for a bad header are those it would
#: have applied reading the whole archive (at offset 0 a bad header is an error, later
#: the end of the archive).
_LEAD_IN = tarfile.TarInfo("lead-in").tobuf(tarfile.USTAR_FORMAT)
#: (start, end) of the numeric header fields `TarInfo.frombuf` parses besides size and
#: checksum: mode, uid, gid, mtime, devmajor, devminor.
_NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
#: A numeric field `tarfile.nti` surely reads (octal digits, spaces around them, then a
#: NUL and anything): checked with one match instead of its decode and `int` per field.
_OCTAL = re.compile(rb"[ ]*[0-7]*[ ]*(?:\x00[\x00-\xff]*)?")
#: Those fields (mode, uid, gid, mtime, devmajor, devminor: bytes 100-124, 136-148 and
#: 329-345 of a header) as found in headers already read: members of a shard mostly share
#: them, and a header whose fields are here needs no check. At most this many are kept.
_PLAIN_NUMBERS: set[bytes] = set()
_PLAIN_NUMBERS_KEPT = 4096


def _stream_members(stream: Any, block: int = tarfile.RECORDSIZE) -> Iterator[TarMember]:
    """The members of an uncompressed tar stream: the same members, bytes and errors as
    `tarfile_members` (`tests/test_tar_reader.py` holds it to that on broken archives),
    with the header of a plain file or folder parsed here. `tarfile.TarInfo.frombuf`
    spent ~30 us a header in Python (three checksums of 512 bytes, a dozen fields),
    about a tenth of a scan's time for a 256-px picture with its .txt and .json."""
    source = _TarStream(stream, block)
    offset = 0  # of the next header
    padding = 0  # after the last member's data, before the next header
    encoding, errors = tarfile.ENCODING, "surrogateescape"
    while True:
        if padding and len(source.read(padding)) != padding:
            raise tarfile.ReadError("unexpected end of data")
        try:
            header = source.read(tarfile.BLOCKSIZE)
        except zlib.error as exc:
            raise tarfile.ReadError(f"zlib error: {exc}") from None
        # `TarFile.next`'s rules: a missing, short or bad first header is an error; a
        # later one ends the archive, as an all-zero block does anywhere.
        if len(header) != tarfile.BLOCKSIZE:
            if offset == 0:
                raise tarfile.ReadError("empty file" if not header else "truncated header")
            return
        if header.count(0) == tarfile.BLOCKSIZE:
            return
        try:
            kind, size = _plain_header(header)
        except tarfile.HeaderError as exc:
            if offset == 0:
                raise tarfile.ReadError(str(exc)) from None
            return
        if kind is None:
            handed_on = tarfile_members(source.handed_on(_LEAD_IN + header))
            next(handed_on)  # the lead-in
            yield from handed_on
            return
        name = _tarfile.nts(header[0:100], encoding, errors)
        # ustar's name prefix, mostly empty (a first byte NUL): then no decoding.
        prefix = _tarfile.nts(header[345:500], encoding, errors) if header[345] else ""
        if kind == "dir":
            name = name.rstrip("/")
        if prefix:
            name = prefix + "/" + name
        member = TarMember(name=name.rstrip("/") if kind == "dir" else name, kind=kind)
        if kind == "dir":
            member.linkname = _tarfile.nts(header[157:257], encoding, errors) or None
            offset += tarfile.BLOCKSIZE  # a folder's size, if any, is not skipped
            padding = 0
        else:
            if 0 < size <= MAX_MEMBER_BYTES:
                member.data = source.read(size)
                if len(member.data) != size:
                    raise tarfile.ReadError("unexpected end of data")
            else:
                member.data, member.streamed = read_bounded(_MemberData(source, size), size=size)
            blocks = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            offset += tarfile.BLOCKSIZE + blocks
            padding = blocks - size
        yield member


def _plain_header(header: bytes) -> tuple[str | None, int]:
    """("file" or "dir", size) of a valid header of a plain file or folder, (None, 0)
    for a valid header of any other type; tarfile's HeaderError for an invalid one."""
    checksum = _tarfile.nti(header[148:156])
    # sum(header), from adler32's low half: 1 + the sum of the bytes modulo 65521, exact
    # for 256 bytes (at most 65,280), in C rather than a Python loop over 512 ints.
    total = (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2
    if checksum != 256 + total - sum(header[148:156]) and checksum not in (
        _tarfile.calc_chksums(header)
    ):
        raise _tarfile.InvalidHeaderError("bad checksum")
    kind = header[156:157]
    if kind not in _PLAIN_TYPES:
        # Whatever else `frombuf` would refuse, it refuses when handed on too.
        tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        return None, 0
    numbers = header[100:124] + header[136:148] + header[329:345]
    if numbers not in _PLAIN_NUMBERS:
        for start, end in _NUMBER_FIELDS:
            if not _OCTAL.fullmatch(header, start, end):
                _tarfile.nti(header[start:end])  # not plain octal: tarfile's own judgement
        if len(_PLAIN_NUMBERS) >= _PLAIN_NUMBERS_KEPT:
            _PLAIN_NUMBERS.clear()
        _PLAIN_NUMBERS.add(numbers)
    field = header[124:136]
    if _OCTAL.fullmatch(field):
        size = int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    else:
        size = _tarfile.nti(field)
    if size < 0:
        return None, 0  # a negative base-256 size: whatever tarfile makes of it
    if kind == tarfile.DIRTYPE or (
        kind == tarfile.AREGTYPE
        and _tarfile.nts(header[0:100], tarfile.ENCODING, "surrogateescape").endswith("/")
    ):
        return "dir", size
    return "file", size


@dataclass
class WebDatasetSource:
    kind: ClassVar[str] = "webdataset"
    url: str

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    def shards(self) -> list[ShardRef]:
        return file_shards(self.url, TAR_SUFFIXES, "shard")

    def read_shard(self, shard: ShardRef, record: dict[str, Any] | None = None) -> Iterator[Item]:
        side = _read_side_parquet(shard.path)
        seen: set[str] = set()
        position = 0
        for key, members, exts in _grouped(tar_members(shard.path, record)):
            seen.add(key)
            meta, note = _member_json(members)
            row = side.get(key, {})
            url, bad_url = as_text(row.get("url") or meta.get("url"))
            status, bad_status = as_text(row.get("status") or meta.get("status"))
            if bad_url or bad_status:
                note = note or "bad_metadata: url or status is not text"
            names = tuple(display_name(m.name) for m in members)
            # The same for every member of the key: worked out once.
            shown_key = display_name(key)
            sha256 = normalise_hex(row.get("sha256") or meta.get("sha256"))
            md5 = normalise_hex(row.get("md5") or meta.get("md5"))
            extra = original_size(row) or original_size(meta)
            for member, shown, ext in zip(members, names, exts, strict=True):
                yield Item(
                    key=shown_key,
                    shard=shard.name,
                    position=position,
                    members=names,
                    member=shown,
                    data=member.data,
                    url=url,
                    upstream_sha256=sha256,
                    upstream_md5=md5,
                    upstream_status=status,
                    missing_reason=_kind_reason(member),
                    status="other" if member.kind != "file" else None,
                    expect_image=is_image_ext(ext),
                    image_data=_gunzipped(member),
                    streamed=member.streamed,
                    note=note,
                    extra=dict(extra),
                )
                position += 1
        # Keys the side file knows but the tar lacks: failed downloads, mostly.
        for key, row in side.items():
            if key in seen:
                continue
            status, _ = as_text(row.get("status"))
            why, _ = as_text(row.get("error_message"))
            url, _ = as_text(row.get("url"))
            yield Item(
                key=display_name(key),
                shard=shard.name,
                position=position,
                members=(),
                member=None,
                data=None,
                url=url,
                upstream_sha256=normalise_hex(row.get("sha256")),
                upstream_md5=normalise_hex(row.get("md5")),
                upstream_status=status,
                missing_reason=_not_in_shard(status, why),
            )
            position += 1


def _not_in_shard(status: str | None, why: str | None) -> str:
    return f"not_in_shard: upstream status {status}, {why or 'absent from the tar'}"[:200]


def member_key(name: str) -> str:
    """The key a member belongs to: webdataset's, or the whole name when it has no
    extension (such a member is its own key, and is still hashed and accounted for)."""
    key, _ = split_ext(name)
    return key if key is not None else name


def _grouped(
    members: Iterator[TarMember],
) -> Iterator[tuple[str, list[TarMember], list[str | None]]]:
    """(key, members, their extensions) for consecutive members sharing a key (as
    `member_key` gives it), in tar order."""
    current_key: str | None = None
    current: list[TarMember] = []
    exts: list[str | None] = []
    for member in members:
        key, ext = split_ext(member.name)
        if key is None:
            key = member.name
        if key != current_key and current:
            yield current_key or "", current, exts
            current, exts = [], []
        current_key = key
        current.append(member)
        exts.append(ext)
    if current:
        yield current_key or "", current, exts


def _kind_reason(member: TarMember) -> str | None:
    if member.kind == "file":
        return None
    target = f" to {display_name(member.linkname)}" if member.linkname else ""
    return f"not_a_file: {member.kind}{target}"[:200]


def _gunzipped(member: TarMember) -> bytes | None:
    """A `.gz` member's content, as webdataset's reader yields it before decoding."""
    if member.data is None or not member.name.endswith(".gz"):
        return None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(member.data)) as handle:
            data, streamed = read_bounded(handle, MAX_MEMBER_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    return data if streamed is None else None


def _member_json(members: list[TarMember]) -> tuple[dict[str, Any], str | None]:
    """The key's `.json` member as a dict, and a note when it is unusable."""
    raw = next((m.data for m in members if m.name.endswith(".json") and m.data), None)
    return metadata_json(raw, ".json member")


def _holds_bytes(field_type: pa.DataType) -> bool:
    if pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type):
        return True
    if pa.types.is_struct(field_type):
        return any(_holds_bytes(field_type.field(i).type) for i in range(field_type.num_fields))
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type):
        return _holds_bytes(field_type.value_type)
    return False


def _read_side_parquet(tar_url: str) -> dict[str, dict[str, Any]]:
    """img2dataset's per-shard parquet, keyed by key; empty when there is none."""
    for suffix in TAR_SUFFIXES:
        if tar_url.endswith(suffix):
            side_url = tar_url[: -len(suffix)] + ".parquet"
            break
    else:
        return {}
    fs, path = fsspec.core.url_to_fs(side_url)
    if not fs.exists(path):
        return {}
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            # A side file is copied into a cleaned copy as metadata, unhashed: it may hold
            # no bytes (image or otherwise) that nobody scanned.
            binary = [
                f.name
                for f in parquet.schema_arrow
                if _holds_bytes(f.type) and f.name not in SIDE_TEXT_COLUMNS
            ]
            if binary:
                raise InputError(
                    f"{side_url}: side parquet has a bytes column ({binary[0]}); a cleaned "
                    "copy would carry it unscanned: scan it as a parquet source of its own"
                )
            columns = [c for c in SIDE_COLUMNS if c in parquet.schema_arrow.names]
            if "key" not in columns:
                return {}
            table = parquet.read(columns=columns)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{side_url}: unreadable side parquet ({exc})") from None
    rows = table.to_pylist()
    found = {}
    for row in rows:
        key, _ = as_text(row.get("key"))
        if key is not None:
            found[key] = row
    return found


# How a shard is written again without removed keys (`clean`).


def side_urls(tar_url: str) -> tuple[str, str] | None:
    """img2dataset's side files for a tar: (`NNNNN.parquet`, `NNNNN_stats.json`)."""
    for suffix in TAR_SUFFIXES:
        if tar_url.endswith(suffix):
            stem = tar_url[: -len(suffix)]
            return f"{stem}.parquet", f"{stem}_stats.json"
    return None


def _exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return bool(fs.exists(path))


def _sibling(target: Path, url: str) -> Path:
    return target.with_name(url.rsplit("/", 1)[-1])


def write_webdataset_shard(
    shard: ShardRef,
    dest_root: Path,
    removed: Container[str],
    *,
    any_removed: bool,
    contents: ShardContents,
    link: bool = False,
    drop_empty: bool = False,
) -> WrittenShard:
    """The tar without the removed keys' members, and its side files to match.

    A tar is copied whole only when nothing goes and it holds nothing but files and
    folders, and only when its bytes are those the scan hashed; otherwise it is
    rewritten member by member, each member checked against the manifest."""
    target = dest_root / shard.name
    written = WrittenShard()
    sides = side_urls(shard.path)
    side_parquet, side_stats = sides if sides else (None, None)
    present = [u for u in (side_parquet, side_stats) if u and _exists(u)]
    plain = all(None not in hashes for hashes in contents.members.values())
    if not any_removed and not drop_empty and plain and contents.file_sha256:
        copy_file(shard.path, target, link=link, sha256=contents.file_sha256)
        written.files.append(shard.name)
        for url in present:
            copy_file(url, _sibling(target, url), link=link)
            written.files.append(str(_sibling(target, url).relative_to(dest_root)))
        written.copied_whole = True
        return written
    try:
        with atomic_path(target) as tmp:
            _filter_tar(shard, tmp, removed, written, contents)
            if drop_empty and written.keys_kept == 0:
                raise DropShard
    except DropShard:
        written.dropped_empty = True
        return written
    written.files.append(shard.name)
    removed_rows: list[dict[str, Any]] = []
    if side_parquet in present:
        removed_rows = _filter_side_parquet(side_parquet, _sibling(target, side_parquet), removed)
        written.files.append(str(_sibling(target, side_parquet).relative_to(dest_root)))
    if side_stats in present:
        _rewrite_stats(side_stats, _sibling(target, side_stats), removed_rows, written)
        written.files.append(str(_sibling(target, side_stats).relative_to(dest_root)))
    return written


def _filter_tar(
    shard: ShardRef,
    tmp: Path,
    removed: Container[str],
    written: WrittenShard,
    contents: ShardContents,
) -> None:
    """Stream members from source to output, skipping whole removed keys.

    Each kept member keeps its tar header (name, mode, mtime, owner) and its bytes, so a
    training reader sees exactly what it saw before, minus the removed samples. Every
    member must have a manifest row and its bytes the SHA-256 that row holds. Links are
    kept only when they point at a member already kept; FIFOs and devices never are."""

    src_url = shard.path
    gz = src_url.endswith(GZIP_SUFFIXES)
    kept_keys: set[str] = set()
    removed_keys: set[str] = set()
    kept_files: set[str] = set()
    try:
        with (
            fsspec.open(src_url, "rb") as raw,
            open(tmp, "wb") as out_raw,
            # mtime=0: the same input always gives the same bytes, so a resume is identical
            gzip.GzipFile(filename="", mode="wb", fileobj=out_raw, mtime=0)
            if gz
            else out_raw as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            hashing = HashingReader(raw)
            stream: Any = gzip.GzipFile(fileobj=hashing, mode="rb") if gz else hashing  # type: ignore[call-overload]  # read forward only: never seeks
            with tarfile.open(fileobj=stream, mode="r|") as source:
                for member in source:
                    scanned = contents.take(shard, member.name)
                    key = display_name(member_key(member.name))
                    if key in removed:
                        written.members_removed += 1
                        removed_keys.add(key)
                        continue
                    if not _keep_member(member, kept_files):
                        written.members_dropped += 1
                        continue
                    kept_keys.add(key)
                    if member.isreg():
                        reader = HashingReader(source.extractfile(member))
                        tar.addfile(member, reader)
                        if reader.digest.digest() != scanned:
                            raise changed_since_scan(
                                f"{src_url} (member {display_name(member.name)})"
                            )
                        kept_files.add(member.name)
                    else:
                        tar.addfile(member)
            hashing.drain()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InputError(f"{src_url}: not a readable tar shard ({exc})") from None
    if contents.file_sha256 and hashing.digest.hexdigest() != contents.file_sha256:
        raise changed_since_scan(src_url)
    written.keys_kept = len(kept_keys)
    written.keys_removed = len(removed_keys)


def _gzip_writer(raw: Any) -> gzip.GzipFile:
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)


def _keep_member(member: tarfile.TarInfo, kept_files: set[str]) -> bool:
    """Folders and files are kept; a link only when it points at a file already kept
    in this tar (so it can never reach a removed member or anything outside)."""
    if member.isreg() or member.isdir():
        return True
    if member.islnk():
        return member.linkname in kept_files
    if member.issym():
        if member.linkname.startswith("/"):
            return False
        target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
        return target in kept_files
    return False  # FIFOs, devices and anything else: no bytes of ours to hand out


def _filter_side_parquet(
    src_url: str, target: Path, removed: Container[str]
) -> list[dict[str, Any]]:
    """img2dataset's per-shard parquet without the removed keys' rows (one row per key,
    small): returns the removed rows' status columns so the stats can be corrected."""
    try:
        with fsspec.open(src_url, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            table = parquet.read()
            codec, row_group = parquet_codec(parquet.metadata), parquet_row_group(parquet.metadata)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{src_url}: unreadable side parquet ({exc})") from None
    if "key" not in table.column_names:
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, row_group_size=row_group, compression=codec)
        return []
    keys = table.column("key").to_pylist()
    drop = [k is not None and str(k) in removed for k in keys]
    columns = [c for c in ("status", "error_message") if c in table.column_names]
    removed_rows = table.filter(pa.array(drop)).select(columns).to_pylist()
    with atomic_path(target) as tmp:
        kept = table.filter(pc.invert(pa.array(drop)))
        pq.write_table(kept, tmp, row_group_size=row_group, compression=codec)
    return removed_rows


def _rewrite_stats(
    src_url: str, target: Path, removed_rows: list[dict[str, Any]], written: WrittenShard
) -> None:
    """img2dataset's `_stats.json` with its counts corrected for the removed keys.

    Without a side parquet we know only that removed tar keys were successes."""
    try:
        with fsspec.open(src_url, "rb") as handle:
            stats = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise InputError(f"{src_url}: unreadable stats file ({exc})") from None
    if not isinstance(stats, dict):
        raise InputError(f"{src_url}: stats file is not a JSON object")
    rows = removed_rows or [{"status": "success"}] * written.keys_removed
    status_dict = stats.get("status_dict")
    for row in rows:
        status = row.get("status") or "success"
        _decrement(stats, "count")
        if status == "success":
            _decrement(stats, "successes")
        elif status in ("failed_to_download", "failed_to_resize"):
            _decrement(stats, status)
        if isinstance(status_dict, dict):
            label = "success" if status == "success" else row.get("error_message") or status
            _decrement(status_dict, label)
            if status_dict.get(label) == 0:
                del status_dict[label]
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(stats, indent=4))


def _decrement(counts: dict[str, Any], name: str) -> None:
    if isinstance(counts.get(name), int) and counts[name] > 0:
        counts[name] -= 1


class WebDataset(Format):
    """WebDataset tar shards (img2dataset's output, side files and all)."""

    name = "webdataset"
    reader = WebDatasetSource
    suffixes = TAR_SUFFIXES
    noun = "tar shard"
    rewriter = staticmethod(write_webdataset_shard)
    carries_cards = True
    data_files_suffix = ".tar"
    croissant_parquet = "img2dataset's side parquet beside each tar"
