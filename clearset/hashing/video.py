"""Video: detect a video by its bytes, and hash it with Meta's vPDQ (PDQ of sampled frames).

vPDQ as Meta's `vpdq` defines it (ThreatExchange/vpdq, `filehasher.cpp`): decode every
frame of the first video stream in order, and hash frame number ``n`` (0-based, in
decoding order) when ``n % int(seconds_per_hash * frame_rate) == 0``, where the frame rate
is the stream's average (its ``r_frame_rate`` when the container gives none); the frame is
converted to RGB at the stream's own size and hashed with PDQ; its timestamp is
``n / frame_rate``. Each hashed frame keeps its number, timestamp and PDQ quality. We do
the same with PyAV (FFmpeg inside the wheel), from memory: the video and its frames never
touch the disk. The frames are hashed by clearset's own PDQ, one compiled pass a frame
(`fused.fused_pdq_luma` from the Y plane), whose numpy twin is `frame_pdq_reference`.

Like Meta's hasher, frames are hashed as stored: a rotation the container records is not
applied (lists made by `vpdq` hold the unrotated frames); it is reported in `rotation`.

Limits, so that no video can crash or hang a worker: a video whose frames are over the
pixel cap is not decoded (`too_large`); at most `VIDEO_MAX_FRAMES` frames are hashed (a
longer video's row says `frame_cap`, and its frames cover only its start); decoding stops
after `VIDEO_TIME_LIMIT_S` seconds (`time_limit`, no frames kept: a partial vPDQ would
claim to cover what it does not). The clock is read between frames: one frame's decoding is
bounded by the pixel cap, not by the clock, so a stream whose single frame took minutes
would be stopped only after it.

A variable frame rate is hashed as Meta's hasher does: every `int(seconds_per_hash *
average rate)`-th decoded frame, its timestamp `n / average rate` (so timestamps of a VFR
stream are approximate; frame numbers are exact).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from clearset import settings
from clearset.hashing.crypto import crypto_digests
from clearset.hashing.fast_pdq import PDQ_MIN_DIM, pdq_from_luma, pdq_from_rgb_full

#: Seconds between hashed frames (Meta's default: one frame a second).
VIDEO_SECONDS_PER_HASH = 1.0
#: Most frames hashed for one video: an hour at one frame a second. A longer video is
#: hashed over its first hour only, and its row says so (`frame_cap`).
VIDEO_MAX_FRAMES = 3600
#: Longest one video may take to decode and hash, in seconds (a per-item time limit).
VIDEO_TIME_LIMIT_S = 120.0

#: ISO base media brands that are still pictures (AVIF, HEIF), not video.
_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)

STATUS_OK = "ok"
STATUS_ERROR = "error"


def sniff_video(data: bytes | None) -> str | None:
    """The video container `data` starts like ("mp4", "mov", "webm", "mkv", "avi"), or
    None. By content only: a video under a wrong extension is found, a picture is not."""
    if not data or len(data) < 12:
        return None
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in data[:64] else "mkv"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    return None


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One hashed frame: its number in decoding order, its time, its PDQ and quality."""

    frame_number: int
    timestamp: float
    pdq: bytes
    quality: int


@dataclass(slots=True)
class VideoHashes:
    """Everything a video member yields: byte digests, metadata and its vPDQ frames."""

    digests: dict[str, bytes]
    size: int
    container: str | None = None
    status: str = STATUS_OK
    reason: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    frame_rate: float | None = None
    rotation: int | None = None
    #: Frames decoded (every frame, hashed or not).
    frames_decoded: int = 0
    frames: list[VideoFrame] = field(default_factory=list)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _frame_rate(stream: object) -> float | None:
    for name in ("average_rate", "base_rate", "guessed_rate"):
        rate = getattr(stream, name, None)
        if rate:
            value = float(Fraction(rate))
            if value > 0:
                return value
    return None


def _rotation(stream: object, frame: object | None = None) -> int | None:
    """Degrees the container asks players to rotate by, where PyAV exposes it."""
    for holder in (frame, stream):
        value = getattr(holder, "rotation", None) if holder is not None else None
        if isinstance(value, int | float) and value:
            return int(value) % 360
    return None


def hash_video(
    data: bytes,
    *,
    seconds_per_hash: float = VIDEO_SECONDS_PER_HASH,
    max_frames: int = VIDEO_MAX_FRAMES,
    max_pixels: int | None = None,
    time_limit_s: float = VIDEO_TIME_LIMIT_S,
) -> VideoHashes:
    """Byte digests and vPDQ of one video held in memory. Never raises for bad video
    data: a broken, empty, audio-only, oversized or too-slow video is one result with
    `status="error"` and a reason, and its byte digests like every item."""
    import av  # PyAV loads FFmpeg's libraries: only when a video is met

    result = VideoHashes(digests=crypto_digests(data), size=len(data))
    result.container = sniff_video(data)
    if not data:
        result.status, result.reason = STATUS_ERROR, "empty: zero-byte file"
        return result
    cap = settings.MAX_PIXELS if max_pixels is None else max_pixels
    started = time.monotonic()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            _decode(container, result, seconds_per_hash, max_frames, cap, started, time_limit_s)
    except _Stop as stop:
        result.status, result.reason = STATUS_ERROR, stop.reason
        result.frames = []
    except (av.FFmpegError, ValueError, IndexError, OverflowError, MemoryError) as exc:
        # FFmpeg's own words without its error number or the "<none>" file name PyAV adds.
        said = getattr(exc, "strerror", None) or type(exc).__name__
        result.status, result.reason = STATUS_ERROR, f"corrupt: {said} (truncated or damaged)"
        result.frames = []
    if result.status == STATUS_OK and not result.frames:
        result.status, result.reason = STATUS_ERROR, "no_frames: no frame decoded"
    return result


def _decode(
    container: object,
    result: VideoHashes,
    seconds_per_hash: float,
    max_frames: int,
    max_pixels: int,
    started: float,
    time_limit_s: float,
) -> None:
    streams = getattr(container, "streams")  # noqa: B009 - PyAV is untyped here
    if not streams.video:
        raise _Stop("no_video_stream: no video stream (audio only?)")
    stream = streams.video[0]
    context = stream.codec_context
    result.codec = context.name
    result.width, result.height = context.width or None, context.height or None
    if context.width * context.height > max_pixels:
        raise _Stop(
            f"too_large: {context.width}×{context.height} frames exceed the "
            f"{max_pixels:,}-pixel cap"
        )
    rate = _frame_rate(stream)
    result.frame_rate = rate
    result.rotation = _rotation(stream)
    if stream.duration is not None and stream.time_base is not None:
        result.duration_s = float(stream.duration * stream.time_base)
    elif getattr(container, "duration", None):
        result.duration_s = getattr(container, "duration") / 1_000_000  # noqa: B009
    if not rate:
        raise _Stop("no_frame_rate: the stream gives no frame rate")
    every = max(1, int(seconds_per_hash * rate))
    # One decoding thread: a scan runs a worker per core, and FFmpeg's frame threads cost
    # CPU time (bench/video.py: ~25 % fewer frames per CPU-second with "AUTO").
    context.thread_count = 1
    number = -1
    for frame in getattr(container, "decode")(stream):  # noqa: B009
        number += 1
        if time.monotonic() - started > time_limit_s:
            raise _Stop(f"time_limit: decoding took over {time_limit_s:g} s")
        if number % every:
            continue
        if len(result.frames) >= max_frames:
            result.reason = (
                f"frame_cap: hashed the first {max_frames} frames "
                f"({max_frames * every} decoded); the rest is not covered"
            )
            break
        if frame.width * frame.height > max_pixels:
            raise _Stop(f"too_large: a {frame.width}×{frame.height} frame exceeds the cap")
        pdq, quality = _frame_pdq(frame)
        result.frames.append(VideoFrame(number, number / rate, pdq, quality))
        if result.rotation is None:
            result.rotation = _rotation(stream, frame)
    result.frames_decoded = number + 1
    if result.duration_s is None and number >= 0:
        result.duration_s = (number + 1) / rate


#: Planar YUV formats whose first plane is the luma PDQ needs: read straight, no RGB.
_PLANAR_YUV = frozenset(
    {"yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p", "yuv410p", "yuv411p"}
)
#: Full-range ("JPEG") colour range, as FFmpeg numbers it.
_FULL_RANGE = 2


def _y_plane(frame: object) -> tuple[np.ndarray, bool] | None:
    """A planar YUV frame's Y plane as an H x W uint8 view of the decoder's buffer (rows
    `line_size` bytes apart, nothing copied) and whether it is full range; None for
    another pixel format."""
    name = getattr(frame, "format").name  # noqa: B009 - PyAV is untyped here
    if name not in _PLANAR_YUV:
        return None
    plane = getattr(frame, "planes")[0]  # noqa: B009
    width, height = getattr(frame, "width"), getattr(frame, "height")  # noqa: B009
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]
    full = name.startswith("yuvj") or getattr(frame, "color_range", 0) == _FULL_RANGE
    return rows, full


def luma_from_plane(plane: np.ndarray, full_range: bool) -> np.ndarray:
    """PDQ's float32 luma of a Y plane, in numpy: the reference twin of the compiled
    pass (`fused.fused_pdq_luma`), which computes the same values in the same order."""
    luma = plane.astype(np.float32)
    if not full_range:
        luma -= np.float32(16.0)
        luma *= np.float32(255.0 / 219.0)
    return luma


def _frame_pdq(frame: object) -> tuple[bytes, int]:
    """PDQ of one decoded frame, by the compiled per-picture pass (`fused`). From a
    planar YUV frame (nearly every video), the luma is its Y plane, rescaled from video
    range: (Y - 16) * 255 / 219 is what Meta's path gets (FFmpeg's BT.601 conversion to
    RGB, then PDQ's 0.299 R + 0.587 G + 0.114 B) up to rounding and clipping, without
    converting the frame to RGB; the plane is read in place, once. Other pixel formats
    go through RGB as Meta's hasher does, then the same compiled pass as a still RGB
    picture. `frame_pdq_reference` is the numpy twin, equal bit for bit."""
    from clearset.hashing.fused import fused_pdq, fused_pdq_luma  # numba: on first use

    found = _y_plane(frame)
    if found is not None:
        return fused_pdq_luma(*found)
    rgb = np.ascontiguousarray(getattr(frame, "to_ndarray")(format="rgb24"))  # noqa: B009
    height, width = rgb.shape[:2]
    if min(height, width) < PDQ_MIN_DIM:
        return bytes(32), 0
    result = fused_pdq(rgb, 1, (height, 1, 1), (width, 1, 1))
    return result.hashes[0], result.quality


def frame_pdq_reference(frame: object) -> tuple[bytes, int]:
    """`_frame_pdq` as separate numpy steps (`fast_pdq`): the twin tests and
    bench/video.py compare the compiled pass with."""
    found = _y_plane(frame)
    if found is None:
        rgb = getattr(frame, "to_ndarray")(format="rgb24")  # noqa: B009
        return pdq_from_rgb_full(np.ascontiguousarray(rgb))
    return pdq_from_luma(luma_from_plane(*found))


def vpdq_lines(frames: list[VideoFrame]) -> list[str]:
    """Frames as python-threatexchange's compact vPDQ features: `pdq_hex,quality,seconds`
    (the strings its `vpdq_to_json` puts in a JSON list; HMA stores the same)."""
    return [f"{f.pdq.hex()},{f.quality},{f.timestamp:.3f}" for f in frames]
