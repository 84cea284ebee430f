"""The bad-input corpus: each case gives its typed error, in bounded time (the per-test timeout),
and leaves the process healthy (a good clip still decodes, no file descriptors leak)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from video_mm.errors import (
    CorruptVideo,
    DecodeTimeout,
    ForbiddenSource,
    NotAVideo,
    NotFound,
    VideoError,
    VideoTooLarge,
)
from video_mm.io import open_video, probe, sample_frames
from video_mm.io.ffmpeg import run_ffmpeg
from video_mm.io.isolate import run_isolated
from video_mm.settings import IOSettings


def _zero(d: Path, good: Path) -> Path:
    (p := d / "zero.mp4").write_bytes(b"")
    return p


def _random(d: Path, good: Path) -> Path:
    (p := d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(8192))
    return p


def _text(d: Path, good: Path) -> Path:
    (p := d / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    return p


def _moov_missing(d: Path, good: Path) -> Path:
    data = good.read_bytes()  # moov is written last, so a cut file has none
    assert data.find(b"moov") > len(data) * 0.6
    (p := d / "no_moov.mp4").write_bytes(data[: len(data) // 2])
    return p


def _hls(d: Path, good: Path) -> Path:
    (p := d / "list.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{good}\n")
    return p


def _hls_renamed(d: Path, good: Path) -> Path:
    (p := d / "innocent.mp4").write_text(f"#EXTM3U\n#EXTINF:1.0,\nfile:{good}\n#EXT-X-ENDLIST\n")
    return p


def _ffconcat(d: Path, good: Path) -> Path:
    (p := d / "list.txt").write_text(f"ffconcat version 1.0\nfile '{good}'\n")
    return p


def _audio_only(d: Path, good: Path) -> Path:
    p = d / "audio.m4a"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(p)])
    return p


def _huge_header(d: Path, good: Path) -> Path:
    """A Matroska file whose header declares 100000x100000 frames (MJPEG, packets of noise)."""
    small, p = d / "small.mkv", d / "huge.mkv"
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=5:duration=1",
            "-c:v",
            "mjpeg",
            str(small),
        ]
    )
    rng = np.random.default_rng(0)
    with av.open(str(small)) as src, av.open(str(p), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        stream.codec_context.width = stream.codec_context.height = 100_000
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            noise = av.Packet(rng.bytes(64))
            noise.pts, noise.dts, noise.time_base = packet.pts, packet.dts, packet.time_base
            noise.stream = stream
            out.mux(noise)
    return p


BAD: list[tuple[str, Callable[[Path, Path], Path], type[Exception], str]] = [
    ("zero bytes", _zero, NotAVideo, "empty"),
    ("random bytes", _random, NotAVideo, "not a video"),
    ("text named .mp4", _text, NotAVideo, "not a video"),
    ("truncated mp4, moov missing", _moov_missing, CorruptVideo, "cannot open"),
    ("HLS playlist", _hls, ForbiddenSource, "playlist"),
    ("HLS playlist named .mp4", _hls_renamed, ForbiddenSource, "playlist"),
    ("ffconcat file", _ffconcat, ForbiddenSource, "playlist"),
    ("audio only", _audio_only, NotAVideo, "audio only"),
    ("header declaring 100000x100000", _huge_header, VideoTooLarge, "100000x100000"),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s clip with its moov atom at the end (ffmpeg's default)."""
    p = tmp_path_factory.mktemp("good") / "good.mp4"
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=25:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(p),
        ]
    )
    return p


def assert_healthy(good: Path, fds_before: int) -> None:
    batch = sample_frames(good, n=4, size=32)
    assert len(batch) == 4
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 2  # no descriptors left open


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("name", "make", "error", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(
    name: str, make: Callable, error: type[Exception], says: str, good: Path, tmp_path: Path
) -> None:
    path = make(tmp_path, good)
    fds = len(os.listdir("/proc/self/fd"))
    for call in (probe, open_video, sample_frames):
        with pytest.raises(error, match=says) as caught:
            call(path)
        assert str(path) in str(caught.value)  # the message names the file
    assert_healthy(good, fds)


@pytest.mark.timeout(60)
def test_cut_mid_stream(good: Path, tmp_path: Path) -> None:
    """moov first (faststart), then half the media data: the header promises 50 frames, the file
    holds 24 whole ones and part of the 25th; they are read, with a warning, and below
    io.min_decoded_share it fails instead."""
    fast = tmp_path / "fast.mp4"
    run_ffmpeg(["-y", "-i", str(good), "-c", "copy", "-movflags", "+faststart", str(fast)])
    data = fast.read_bytes()
    (cut := tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    fds = len(os.listdir("/proc/self/fd"))
    info = probe(cut)
    assert (info.frame_count, info.expected_frames) == (24, 50)
    assert info.warning == "decoded 24 of 50 frames: the file is cut at 1.0 s"
    batch = sample_frames(cut, n=5, size=32)
    assert batch.warning == info.warning
    assert batch.times[-1] < info.cut_at  # uniform over the frames that are there
    with pytest.raises(CorruptVideo, match=r"decoded 24 of 50 frames.*io\.min_decoded_share"):
        sample_frames(cut, limits=IOSettings(min_decoded_share=0.6))
    assert_healthy(good, fds)


@pytest.mark.timeout(60)
def test_limits(good: Path) -> None:
    cases = [
        (IOSettings(max_duration_s=1.0), "io.max_duration_s"),
        (IOSettings(max_file_bytes=100), "io.max_file_bytes"),
        (IOSettings(max_width=64, max_height=64), "io.max_width"),
        (IOSettings(max_frames=10), "io.max_frames"),
    ]
    for limits, says in cases:
        with pytest.raises(VideoTooLarge, match=says):
            sample_frames(good, limits=limits)
    with pytest.raises(DecodeTimeout, match=r"io\.decode_timeout_s"):
        sample_frames(good, limits=IOSettings(decode_timeout_s=1e-9))
    assert len(sample_frames(good, limits=IOSettings(max_duration_s=2.5))) == 16


@pytest.mark.parametrize(
    "source",
    [
        "http://example.com/a.mp4",
        "https://x/y.m3u8",
        "concat:a.mp4|b.mp4",
        "pipe:0",
        "rtsp://cam/1",
        "file://otherhost/tmp/a.mp4",
        "subfile,,start,0,end,0,,:/etc/passwd",
    ],
)
def test_urls_and_protocols_refused(source: str) -> None:
    with pytest.raises(ForbiddenSource):
        probe(source)


def test_local_file_url_and_missing_file(good: Path, tmp_path: Path) -> None:
    assert probe(f"file://{good}").frame_count == 50
    with pytest.raises(NotFound):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(NotAVideo, match="regular file"):
        probe(tmp_path)


def test_errors_are_video_errors() -> None:
    for _, _, error, _ in BAD:
        assert issubclass(error, VideoError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decode_deadline_between_frames(
    good: Path, msvd14_videos: list[Path], backend: str
) -> None:
    """The decode-time limit also stops a reader mid-decode (checked between frames/batches)."""
    path = next(p for p in msvd14_videos if p.suffix == ".gif") if backend == "decord" else good
    with open_video(path, backend=backend) as reader:
        reader.limits = IOSettings(decode_timeout_s=1e-9)
        with pytest.raises(DecodeTimeout, match=str(path)):
            reader.get_frames([0, 49])
        reader.limits = IOSettings()
        assert len(reader.get_frames([0, 49])) == 2


@pytest.mark.timeout(120)
def test_isolated_probe(good: Path, tmp_path: Path) -> None:
    """In a child process: the same answers, the same typed errors, and a call that never
    returns is killed at the limit."""
    assert probe(good, isolate=True) == probe(good)
    with pytest.raises(VideoTooLarge, match="100000x100000"):
        probe(_huge_header(tmp_path, good), isolate=True)
    with pytest.raises(NotAVideo, match="audio only"):
        probe(_audio_only(tmp_path, good), limits=IOSettings(isolate_probe=True))
    with pytest.raises(DecodeTimeout, match="killed"):
        run_isolated(time.sleep, 600, timeout=0.5, source=str(good))
    assert_healthy(good, len(os.listdir("/proc/self/fd")))
