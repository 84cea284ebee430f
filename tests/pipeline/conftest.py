"""Fast pipeline settings over the tiny models of tests/conftest.py, and damaged input."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.settings import Settings


@pytest.fixture
def fast_settings(tmp_path: Path, pipeline_settings) -> Settings:  # type: ignore[no-untyped-def]
    return pipeline_settings(tmp_path / "vmm")


CUT_WARNING = "decoded 50 of 100 frames: the file is cut at 2.0 s"


@pytest.fixture
def cut_mp4(tmp_path: Path) -> Path:
    """A 4 s, 100-frame H.264 MP4 (moov first) cut after half its bytes: 50 frames are there."""
    from video_mm.io.ffmpeg import run_ffmpeg

    whole = tmp_path / "whole.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-c:v",
                "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(whole)])  # fmt: skip
    data = whole.read_bytes()
    (cut := tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2 + 101])
    return cut
