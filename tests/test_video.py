"""Video: vPDQ hashing against Meta's `vpdq`, Meta's match rule on the PDQ index, bad
input, and a video2dataset-style WebDataset scanned, matched and cleaned.

Every video here is generated with PyAV: a procedural scene (smooth noise panning under a
moving square), small (96-160 px, 4-6 s), encoded with the codecs the wheel carries.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clearset.errors import InputError
from clearset.hashing.video import hash_video, sniff_video, vpdq_lines
from clearset.matching.matcher import Matcher
from clearset.matching.vpdq import (
    VpdqHash,
    VpdqIndex,
    VpdqList,
    brute_force_match,
    load_vpdq_list,
    parse_signal,
    to_signal,
)
from tests.conftest import cli

FPS = 24


def scene(seed: int, width: int = 160, height: int = 96, seconds: float = 6) -> list[np.ndarray]:
    """A moving procedural scene, one RGB frame per 1/FPS s: four discs drifting over a
    striped background, their sizes, colours and paths drawn from `seed`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    params = rng.random((5, 6))
    stripes = np.sin(xx[..., None] / width * (2 + 3 * params[0, :3]) * np.pi + params[0, 3:] * 6)
    frames = []
    for number in range(int(seconds * FPS)):
        t = number / FPS
        frame = 60 + 40 * stripes
        for p in params[1:]:
            cx = width * (0.2 + 0.6 * p[0]) + 10 * np.sin(t * (0.5 + p[1]))
            cy = height * (0.2 + 0.6 * p[2]) + 6 * np.cos(t * (0.5 + p[3]))
            radius = height * (0.15 + 0.2 * p[4])
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < radius * radius] = 255 * p[[5, 0, 2]]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def encode(frames: list[np.ndarray], codec: str = "libx264", fmt: str = "mp4") -> bytes:
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


def resized(frames: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(f).resize((width, height), 2)) for f in frames]


def picture(seed: int = 7, width: int = 160, height: int = 96) -> np.ndarray:
    """A still picture: blocks of colour, a different texture from the scenes."""
    rng = np.random.default_rng(seed)
    blocks = (rng.random((6, 10, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(blocks).resize((width, height), 0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    listed = scene(1)
    still = picture()
    made = {
        "listed.mp4": encode(listed),
        "reencoded.avi": encode(listed, "mpeg4", "avi"),
        "resized.webm": encode(resized(listed, 112, 64), "libvpx-vp9", "webm"),
        "trimmed.mp4": encode(listed[2 * FPS :]),
        # PDQ tolerates little cropping: 1 px a side here (2 % of the height); 2 px a
        # side already puts frames 26-44 bits away (docs/guides/video.md).
        "cropped.mp4": encode([f[1:-1, 1:-1] for f in listed]),
        "unrelated.mp4": encode(scene(2)),
        "unrelated2.mkv": encode(scene(4), "mpeg4", "matroska"),
        # The still picture shown for 3 s inside an unrelated scene.
        "inside.mp4": encode(scene(3)[: 2 * FPS] + [still] * (3 * FPS) + scene(3)[:FPS]),
        "still.png": b"",
    }
    for name, data in made.items():
        (folder / name).write_bytes(data)
    Image.fromarray(still).save(folder / "still.png")
    return {name: folder / name for name in made}


@pytest.fixture(scope="module")
def hashed(videos: dict[str, Path]) -> dict[str, VpdqHash]:
    found = {}
    for name, path in videos.items():
        if name.endswith(".png"):
            continue
        result = hash_video(path.read_bytes())
        assert result.status == "ok", (name, result.reason)
        found[name] = parse_signal(
            to_signal(
                [f.pdq for f in result.frames],
                [f.quality for f in result.frames],
                [f.timestamp for f in result.frames],
            )
        )
    return found


def test_frames_match_metas_vpdq_within_the_pdq_bars(videos: dict[str, Path]) -> None:
    vpdq = pytest.importorskip("vpdq")
    distances = []
    for name in ("listed.mp4", "reencoded.avi", "resized.webm", "unrelated2.mkv"):
        ours = hash_video(videos[name].read_bytes())
        theirs = vpdq.computeHash(str(videos[name]))
        assert [f.frame_number for f in ours.frames] == [f.frame_number for f in theirs]
        assert [round(f.timestamp, 3) for f in ours.frames] == [
            round(f.timestamp, 3) for f in theirs
        ]
        for a, b in zip(ours.frames, theirs, strict=True):
            if b.quality >= 50:
                distances.append(bin(int(a.pdq.hex(), 16) ^ int(b.hex, 16)).count("1"))
    assert len(distances) >= 20
    assert np.mean(distances) <= 2 and np.percentile(distances, 99) <= 10


def test_compiled_frame_pass_equals_the_numpy_twin(videos: dict[str, Path]) -> None:
    """Every hashed frame of the test videos (h264, mpeg4, vp9: rows padded past the
    width), and frames in other layouts: full-range planes (yuvj, or a color_range
    flag), 4:4:4, and RGB and grey frames (through RGB): the compiled pass gives the
    numpy path's hash and quality bit for bit."""
    from clearset.hashing.video import _frame_pdq, frame_pdq_reference

    padded = 0
    for name in ("listed.mp4", "reencoded.avi", "resized.webm", "unrelated2.mkv"):
        with av.open(str(videos[name])) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number % FPS == 0:
                    assert frame.format.name == "yuv420p"
                    padded += frame.planes[0].line_size > frame.width
                    assert _frame_pdq(frame) == frame_pdq_reference(frame), (name, number)
    assert padded >= 6
    still = picture(3, 90, 70)
    made = [av.VideoFrame.from_ndarray(still, format="rgb24")]
    grey = np.asarray(Image.fromarray(still).convert("L"))
    made.append(av.VideoFrame.from_ndarray(grey, format="gray"))
    for fmt in ("yuv420p", "yuvj420p", "yuv444p"):
        made.append(made[0].reformat(format=fmt))
    made.append(made[0].reformat(format="yuv420p"))
    made[-1].color_range = 2  # full range, said by the flag rather than the format
    for frame in made:
        got = _frame_pdq(frame)
        assert got == frame_pdq_reference(frame), frame.format.name
        # The Y plane (any range) is the picture's luma: a few bits from its RGB's.
        distance = bin(int(got[0].hex(), 16) ^ int(_frame_pdq(made[0])[0].hex(), 16))
        assert distance.count("1") <= 8


def test_metadata_and_detection_by_content(videos: dict[str, Path]) -> None:
    data = videos["resized.webm"].read_bytes()
    result = hash_video(data)
    assert (result.container, result.codec, result.width, result.height) == (
        "webm",
        "vp9",
        112,
        64,
    )
    assert result.frame_rate == FPS and abs((result.duration_s or 0) - 6) < 0.2
    assert [f.frame_number for f in result.frames] == [0, 24, 48, 72, 96, 120]
    assert sniff_video(videos["reencoded.avi"].read_bytes()) == "avi"
    assert sniff_video(videos["unrelated2.mkv"].read_bytes()) == "mkv"
    assert sniff_video(videos["still.png"].read_bytes()) is None
    assert vpdq_lines(result.frames)[1].endswith(",1.000")


def test_copies_are_found_and_unrelated_videos_are_not(hashed: dict[str, VpdqHash]) -> None:
    index = VpdqIndex(VpdqList("known", ("listed-1",), (hashed["listed.mp4"],)))
    for copy in ("listed.mp4", "reencoded.avi", "resized.webm", "trimmed.mp4", "cropped.mp4"):
        matches = index.match(hashed[copy])
        assert [m.name for m in matches] == ["listed-1"], copy
        assert matches[0].query_match_percent >= 80
    trimmed = index.match(hashed["trimmed.mp4"])[0]
    assert trimmed.query_match_percent == 100 and trimmed.target_match_percent < 100
    for other in ("unrelated.mp4", "unrelated2.mkv", "inside.mp4"):
        assert index.match(hashed[other]) == [], other


def test_index_gives_the_brute_force_percentages(hashed: dict[str, VpdqHash]) -> None:
    names = sorted(hashed)
    index = VpdqIndex(VpdqList("all", tuple(names), tuple(hashed[n] for n in names)))
    for query in names:
        scores = {m.name: m for m in index.scores(hashed[query])}
        for target in names:
            expected = brute_force_match(hashed[query], hashed[target])
            got = scores.get(target)
            pair = (got.query_match_percent, got.target_match_percent) if got else (0.0, 0.0)
            assert pair == pytest.approx(expected), (query, target)


def test_list_formats_load_the_same_videos(hashed: dict[str, VpdqHash], tmp_path: Path) -> None:
    video = hashed["listed.mp4"]
    signal = to_signal(video.pdq, video.quality.tolist(), video.timestamp.tolist())
    shapes = {
        "te.txt": f"vpdq {signal}\n",
        "export.csv": "signal_type,signal,id\n"
        + f'video_vpdq,"{signal.replace(chr(34), 2 * chr(34))}",v1\n',
        "lines.jsonl": json.dumps({"signal_type": "vpdq", "signal": signal, "id": "v1"}) + "\n",
        "one.txt": "".join(
            f"{n * 24},{q},{p.tobytes().hex()},{t:.3f}\n"
            for n, (p, q, t) in enumerate(
                zip(video.pdq, video.quality, video.timestamp, strict=True)
            )
        ),
    }
    digests = set()
    for name, text in shapes.items():
        (tmp_path / name).write_text(text)
        loaded = load_vpdq_list(str(tmp_path / name))
        assert len(loaded.videos) == 1, name
        assert loaded.videos[0].pdq.tobytes() == video.pdq.tobytes(), name
        digests.add(loaded.digest)
    assert len(digests) == 1
    (tmp_path / "bad.txt").write_text('vpdq ["nothex,50,0.0"]\n')
    with pytest.raises(InputError, match="bad.txt: not a vPDQ list"):
        load_vpdq_list(str(tmp_path / "bad.txt"))


def _audio_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 8000
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


def test_bad_input_is_one_row_with_a_reason(videos: dict[str, Path]) -> None:
    data = videos["listed.mp4"].read_bytes()
    cases = {
        "truncated": (hash_video(data[: len(data) // 3]), "corrupt"),
        "garbage": (hash_video(data[:32] + bytes(4000)), "corrupt"),
        "empty": (hash_video(b""), "empty"),
        "audio": (hash_video(_audio_only()), "no_video_stream"),
        "huge": (hash_video(data, max_pixels=100 * 64), "too_large"),
        "slow": (hash_video(data, time_limit_s=0), "time_limit"),
    }
    for name, (result, reason) in cases.items():
        assert result.status == "error" and str(result.reason).startswith(reason), name
        assert result.frames == [] and result.digests["sha256"], name
    assert (
        "Errno" not in cases["truncated"][0].reason and "<none>" not in cases["truncated"][0].reason
    )
    capped = hash_video(data, max_frames=2)
    assert capped.status == "ok" and len(capped.frames) == 2
    assert str(capped.reason).startswith("frame_cap")


def _shard(path: Path, samples: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, video in samples.items():
            for ext, data in (
                ("mp4", video),
                (
                    "json",
                    json.dumps({"key": key, "url": f"https://example.org/{key}.mp4"}).encode(),
                ),
                ("txt", f"caption of {key}".encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_video2dataset_shards_are_scanned_matched_and_cleaned(
    videos: dict[str, Path], hashed: dict[str, VpdqHash], tmp_path: Path
) -> None:
    wds = pytest.importorskip("webdataset")
    source = tmp_path / "src"
    source.mkdir()
    samples = {
        "000000000": videos["unrelated.mp4"].read_bytes(),
        "000000001": videos["inside.mp4"].read_bytes(),
        "000000002": videos["unrelated2.mkv"].read_bytes(),
    }
    _shard(source / "00000.tar", samples)
    (source / "00000_stats.json").write_text(json.dumps({"count": 3, "successes": 3}))
    # The still picture, listed by PDQ: found inside the video that shows it for 3 s.
    hashes = cli("hash", str(videos["still.png"]), check=True).stdout.split()[0]
    (tmp_path / "list.txt").write_text(hashes.replace("pdq=", "pdq ") + "\n")
    run = tmp_path / "run"
    cli("scan", str(source), "--out", str(run), "--list", str(tmp_path / "list.txt"), check=True)
    manifest = pq.read_table(run / "manifest").to_pylist()
    videos_rows = [r for r in manifest if r["member"].endswith(".mp4")]
    assert {r["status"] for r in videos_rows} == {"ok"}
    assert {r["video_frames"] for r in videos_rows} == {6}
    frames = pq.read_table(run / "frames")
    assert frames.num_rows == 18
    matches = pq.read_table(run / "matches.parquet").to_pylist()
    assert [(m["key"], m["member"], m["field"]) for m in matches] == [
        ("000000001", "000000001.mp4", "pdq_frame")
    ]
    assert 2.0 <= matches[0]["timestamp"] < 5.0
    out = tmp_path / "clean"
    cli("clean", str(run), "--to", str(out), check=True)
    kept = {s["__key__"] for s in wds.WebDataset(str(out / "00000.tar"), shardshuffle=False)}
    assert kept == {"000000000", "000000002"}
    # A vPDQ list of the unrelated video, matched through the frame table.
    listed = VpdqList("videos", ("v",), (hashed["unrelated2.mkv"],))
    table = (
        Matcher([], video_lists=[listed])
        .match_table(pq.read_table(run / "manifest"), frames)
        .to_pylist()
    )
    assert [(m["key"], m["field"], m["entry"]) for m in table] == [("000000002", "vpdq", "v")]
    assert table[0]["query_match_percent"] == 100


def test_hash_prints_the_signal_lists_use(videos: dict[str, Path], tmp_path: Path) -> None:
    out = cli("hash", str(videos["trimmed.mp4"]), check=True).stdout
    signal = out.split()[0].removeprefix("vpdq=")
    assert len(parse_signal(signal).pdq) == 4 and "status=ok" in out
    (tmp_path / "list.txt").write_text(f"vpdq {signal}\n")
    assert len(load_vpdq_list(str(tmp_path / "list.txt")).videos) == 1


def test_parquet_of_video_bytes_is_hashed(videos: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow as pa

    source = tmp_path / "src"
    source.mkdir()
    table = pa.table(
        {
            "key": ["a", "b"],
            "video": [videos["trimmed.mp4"].read_bytes(), videos["unrelated2.mkv"].read_bytes()],
        }
    )
    pq.write_table(table, source / "part-0.parquet")
    cli("scan", str(source), "--out", str(tmp_path / "run"), check=True)
    rows = pq.read_table(tmp_path / "run" / "manifest").to_pylist()
    assert [(r["key"], r["status"], r["format"], r["video_frames"]) for r in rows] == [
        ("a", "ok", "mp4", 4),
        ("b", "ok", "mkv", 6),
    ]
    assert pq.read_table(tmp_path / "run" / "frames").num_rows == 10


def test_vpdq_list_through_scan_match_and_clean(videos: dict[str, Path], tmp_path: Path) -> None:
    """`hash --as-list` writes the listed video's vPDQ; `scan --list` loads it like any
    list (its identity in run.json, its index shared with the workers), copies match,
    clean drops them; `match --list` takes Meta's own hash file; video_md5 is MD5."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("reencoded.avi", "trimmed.mp4", "unrelated.mp4"):
        (source / name).write_bytes(videos[name].read_bytes())
    # A video under a wrong extension is still a video.
    (source / "cropped.bin").write_bytes(videos["cropped.mp4"].read_bytes())
    listed = tmp_path / "listed.txt"
    cli("hash", "--as-list", "threatexchange", str(videos["listed.mp4"]), "--out", str(listed),
        check=True)  # fmt: skip
    text = listed.read_text()
    assert text.count("\nvpdq [") == 1 and text.startswith("md5 ")
    run = tmp_path / "run"
    cli("scan", str(source), "--out", str(run), "--list", str(listed), check=True)
    info = json.loads((run / "run.json").read_text())
    records = {r["hash_type"]: r for r in info["settings"]["matching"]["lists"]}
    assert records["vpdq"]["entries"] == 1 and records["vpdq"]["frames"] == 6
    assert records["md5"]["skipped"] == {}
    matches = pq.read_table(run / "matches.parquet").to_pylist()
    found = {m["member"] or m["key"]: m for m in matches}
    assert {k.rsplit("/", 1)[-1] for k in found} == {"reencoded.avi", "trimmed.mp4", "cropped.bin"}
    assert all(m["field"] == "vpdq" and m["query_match_percent"] >= 80 for m in matches)
    cli("report", str(run), check=True)
    report = json.loads((run / "report.json").read_text())
    assert {r["hash_type"] for r in report["lists"]} == {"md5", "vpdq"}
    scanned = report["counts"]["scanned"]
    assert (scanned["videos"], scanned["images"], scanned["video_frames"]) == (4, 0, 22)
    assert 15 < scanned["video_seconds"] < 25
    out = tmp_path / "clean"
    printed = cli("clean", str(run), "--to", str(out), check=True).stdout
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["unrelated.mp4"]
    assert "1 video (0.00 hours, 6 frames hashed)" in printed, printed
    status = cli("status", str(run), check=True).stdout
    assert "4 videos (0.01 hours, 22 frames hashed)" in status, status
    # The documents count videos: a member of kind "video", in the EU summary's bands.
    cli("report", str(run), check=True)
    kept = json.loads((run / "report.json").read_text())["counts"]["kept"]
    assert (kept["videos"], kept["images"], kept["video_frames"]) == (1, 0, 6)
    # The receipt counts the kept video as a member kind of its own, and verifies.
    cli("keygen", str(tmp_path / "keys"), check=True)
    cli("receipt", str(run), "--key", str(tmp_path / "keys" / "clearset.key"), check=True)
    envelope = json.loads((run / "receipt.dsse.json").read_text())
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert predicate["kept"]["videos"] == 1 and predicate["kept"]["images"] == 0
    cli("verify", str(run / "receipt.dsse.json"), "--pubkey",
        str(tmp_path / "keys" / "clearset.pub"), check=True)  # fmt: skip
    cli("document", str(run), "--format", "eu-ai-act", check=True)
    summary = (run / "documents" / "eu-ai-act-summary.md").read_text()
    assert "Image, Video" in summary and "Less than 10,000 hours (0.00 hours in 1 video" in summary
    # Meta's vpdq hash file of the listed video, and the MD5 of a file as video_md5.
    meta = tmp_path / "listed.vpdq"
    frames = hash_video(videos["listed.mp4"].read_bytes()).frames
    meta.write_text("".join(f"{f.frame_number},{f.quality},{f.pdq.hex()},{f.timestamp:.3f}\n"
                            for f in frames))  # fmt: skip
    md5 = hashlib.md5(videos["unrelated.mp4"].read_bytes()).hexdigest()
    (tmp_path / "md5.te").write_text(f"video_md5 {md5}\n")
    cli("match", str(run), "--list", str(meta), "--list", str(tmp_path / "md5.te"), check=True)
    rows = pq.read_table(run / "matches.parquet").to_pylist()
    assert sorted((r["hash_type"], r["member"] or r["key"]) for r in rows) == sorted(
        [("vpdq", n) for n in found] + [("md5", "unrelated.mp4")]
    )


def test_shared_index_keeps_vpdq_lists(hashed: dict[str, VpdqHash], tmp_path: Path) -> None:
    """The list index every worker maps (a folder, and memory files) holds the vPDQ
    lists: an opened matcher gives the same matches and names the list the same."""
    from clearset.matching.shared import (
        matcher_key,
        open_matcher,
        save_matcher,
        save_matcher_in_memory,
    )

    listed = VpdqList("videos", ("a", "b"), (hashed["unrelated.mp4"], hashed["listed.mp4"]))
    built = Matcher([], video_lists=[listed])
    queries = [hashed["trimmed.mp4"], hashed["unrelated2.mkv"]]
    expected = built.video_indexes[0][1].match_many(queries)
    save_matcher(built, tmp_path / "index")
    memory = save_matcher_in_memory(built)
    try:
        for opened in (open_matcher(tmp_path / "index"), open_matcher(dict(memory.files))):
            assert opened.video_records() == built.video_records()
            assert matcher_key(opened) == matcher_key(built)
            assert opened.video_indexes[0][1].match_many(queries) == expected
    finally:
        memory.close()
    assert [[m.name for m in found] for found in expected] == [["b"], []]


def test_audit_names_the_training_video_a_generated_one_reproduces(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    """A generated video that copies a training video (trimmed) is reported with its
    match percentages; one that copies nothing is not; the limits are said."""
    training, generated = tmp_path / "training", tmp_path / "generated"
    training.mkdir()
    generated.mkdir()
    for name in ("listed.mp4", "unrelated.mp4"):
        (training / name).write_bytes(videos[name].read_bytes())
    (generated / "copy.mp4").write_bytes(videos["trimmed.mp4"].read_bytes())
    (generated / "new.mkv").write_bytes(videos["unrelated2.mkv"].read_bytes())
    run = tmp_path / "run"
    cli("scan", str(training), "--out", str(run), check=True)
    printed = cli("audit", str(generated), "--run", str(run), "--out", str(tmp_path / "audit"),
                  check=True).stdout  # fmt: skip
    assert "1 of 2 generated videos reproduce one of the 2 training videos" in printed
    assert "copy.mp4 -> listed (" in printed and "100 % of its frames, 67 %" in printed
    assert "vPDQ rule" in printed
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())["videos"]
    assert [(r["generated_file"], r["training_key"]) for r in summary["reproduced"]] == [
        ("copy.mp4", "listed")
    ]
    rows = pq.read_table(tmp_path / "audit" / "audit-videos.parquet").to_pylist()
    assert {r["generated_file"] for r in rows if r["reproduces"]} == {"copy.mp4"}


def test_variable_frame_rate_is_sampled_by_its_average_rate() -> None:
    """Frames 20-80 ms apart: hashed every int(average rate)-th frame, as Meta's hasher."""
    from fractions import Fraction

    buffer = io.BytesIO()
    steps = np.random.default_rng(0).choice([20, 40, 80], size=6 * FPS)
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, pts in zip(scene(1), np.cumsum([0, *steps[:-1]]), strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    result = hash_video(buffer.getvalue())
    assert result.status == "ok" and result.reason is None
    every = int(result.frame_rate or 0)
    assert [f.frame_number for f in result.frames] == list(range(0, 6 * FPS, every))
    assert 15 < (result.frame_rate or 0) < FPS  # the average, not the nominal 24
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(result.frames))


def test_video2dataset_side_parquet_and_fetched_video_urls(
    videos: dict[str, Path], tmp_path: Path
) -> None:
    """video2dataset's side parquet gives the rows their URLs and names the failed
    download; a URL list of videos is fetched into memory and hashed like a file."""
    import functools
    import http.server
    import threading

    import pyarrow as pa

    source = tmp_path / "src"
    source.mkdir()
    _shard(source / "00000.tar", {"000000000": videos["trimmed.mp4"].read_bytes()})
    side = {
        "key": ["000000000", "000000001"],
        "url": ["https://example.org/a.mp4", "https://example.org/b.mp4"],
        "status": ["success", "failed_to_download"],
        "error_message": [None, "http 404"],
    }
    pq.write_table(pa.table(side), source / "00000.parquet")
    cli("scan", str(source), "--out", str(tmp_path / "run"), check=True)
    rows = pq.read_table(tmp_path / "run" / "manifest").to_pylist()
    video = next(r for r in rows if r["member"] == "000000000.mp4")
    assert video["url"] == "https://example.org/a.mp4" and video["video_frames"] == 4
    missing = next(r for r in rows if r["key"] == "000000001")
    assert missing["status"] == "missing" and "http 404" in missing["reason"]

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    www = videos["listed.mp4"].parent
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "urls.txt").write_text(f"{base}/trimmed.mp4\n{base}/unrelated2.mkv\n")
        run = tmp_path / "fetched"
        cli("scan", str(tmp_path / "urls.txt"), "--fetch", "--out", str(run), check=True)
    finally:
        server.shutdown()
        server.server_close()
    fetched = sorted(
        (r["url"].rsplit("/", 1)[-1], r["status"], r["format"], r["video_frames"])
        for r in pq.read_table(run / "manifest").to_pylist()
    )
    assert fetched == [("trimmed.mp4", "ok", "mp4", 4), ("unrelated2.mkv", "ok", "mkv", 6)]
    assert pq.read_table(run / "frames").num_rows == 10
