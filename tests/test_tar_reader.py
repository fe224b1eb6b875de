"""The scan's own tar header reader against `tarfile`'s stream mode, its reference twin.

`webdataset._stream_members` parses plain file and folder headers itself and hands any
other header to `tarfile`; on whole, cut-off and damaged archives (ustar, pax and GNU
headers, links, folders, long names, empty and over-the-cap members, gzip) it must give
the same members with the same bytes, then the same error, as `tarfile_members`.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clearset.formats import webdataset
from clearset.formats.webdataset import TarMember, _stream_members, tarfile_members

Reader = Callable[[Any], Iterator[TarMember]]


def _archive(fmt: int, members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """A tar of (name, type, data) members; type None is a regular file."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind is None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = kind
                info.linkname = data.decode() if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
    return out.getvalue()


PLAIN = [
    ("000000001.jpg", None, bytes(range(256)) * 7),
    ("000000001.txt", None, b"a caption"),
    ("000000001.json", None, b'{"key": "000000001"}'),
    ("empty.jpg", None, b""),
    ("a-folder", tarfile.DIRTYPE, b""),
    ("big.bin", None, b"x" * 1500),  # over the cap the tests set: streamed, not held
    ("exactly-one-block", None, b"y" * 512),
]
ODD = [
    *PLAIN[:3],
    ("d" * 120 + "/long-name-" + "n" * 90 + ".jpg", None, b"long"),  # ustar prefix or pax
    ("link", tarfile.SYMTYPE, b"000000001.jpg"),
    ("hard", tarfile.LNKTYPE, b"000000001.txt"),
    ("fifo", tarfile.FIFOTYPE, b""),
    ("after-the-odd-ones.txt", None, b"still read"),
]
ARCHIVES = {
    "ustar": _archive(tarfile.USTAR_FORMAT, PLAIN),
    "gnu": _archive(tarfile.GNU_FORMAT, PLAIN),
    "pax-odd": _archive(tarfile.PAX_FORMAT, ODD),
    "gnu-odd": _archive(tarfile.GNU_FORMAT, ODD),
    "ustar-odd": _archive(tarfile.USTAR_FORMAT, ODD[:3] + ODD[4:]),
}


def _outcome(reader: Reader, data: bytes, gz: bool = False) -> tuple[list[tuple], Any]:
    """The members read before any error, and the error (type and message)."""
    stream: Any = io.BytesIO(data)
    if gz:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    got: list[tuple] = []
    try:
        for m in reader(stream):
            got.append((m.name, m.kind, m.data, m.linkname, m.streamed))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return got, (type(exc).__name__, str(exc))
    return got, None


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1,000-byte cap: big.bin takes the path of a member over the cap (a file object
    handed to `read_bounded`, which errs as tarfile's does when the member is cut off)."""
    monkeypatch.setattr(webdataset, "MAX_MEMBER_BYTES", 1000)


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_whole_archives(name: str) -> None:
    data = ARCHIVES[name]
    ours = _outcome(_stream_members, data)
    assert ours == _outcome(tarfile_members, data)
    assert ours[1] is None and len(ours[0]) >= 7


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_cut_off_archives(name: str) -> None:
    data = ARCHIVES[name]
    cuts = sorted({*range(0, len(data), 97), *(n * 512 + d for n in range(30) for d in (-1, 0, 1))})
    for cut in cuts:
        if 0 <= cut < len(data):
            assert _outcome(_stream_members, data[:cut]) == _outcome(tarfile_members, data[:cut]), (
                cut
            )


@pytest.mark.parametrize("name", ["ustar", "pax-odd"])
def test_damaged_headers(name: str) -> None:
    """One byte changed in each header field (name, mode, size, checksum, type, magic,
    device numbers, prefix) of the first and a later header, and in a data block."""
    data = ARCHIVES[name]
    headers = [0]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        headers += [m.offset for m in tar.getmembers()][2:4]
    positions = [h + f for h in headers for f in (0, 101, 125, 130, 150, 156, 257, 330, 400)]
    for position in [*positions, 600]:
        for value in (0x00, 0x20, 0x38, 0x41, 0x80, 0xFF):
            broken = bytearray(data)
            broken[position] = value
            assert _outcome(_stream_members, bytes(broken)) == _outcome(
                tarfile_members, bytes(broken)
            ), (position, value)


def test_empty_and_zero_streams() -> None:
    for data in (b"", b"\0" * 512, b"\0" * 1024, b"\0" * 100, b"not a tar" * 100):
        assert _outcome(_stream_members, data) == _outcome(tarfile_members, data)
    assert _outcome(_stream_members, b"")[1] == ("ReadError", "empty file")


def test_gzip_streams_cut_off() -> None:
    data = gzip.compress(ARCHIVES["pax-odd"] + ARCHIVES["ustar"][:4000])
    for cut in [*range(20, len(data), 131), len(data)]:
        assert _outcome(_stream_members, data[:cut], gz=True) == _outcome(
            tarfile_members, data[:cut], gz=True
        ), cut
