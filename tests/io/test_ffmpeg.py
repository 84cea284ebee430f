from __future__ import annotations

import os
from pathlib import Path

import pytest

from video_mm.io.ffmpeg import ffmpeg_encoders, ffmpeg_exe


def test_system_ffmpeg_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    ffmpeg_exe.cache_clear()
    try:
        monkeypatch.setenv("PATH", str(tmp_path))
        assert ffmpeg_exe() == str(fake)
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        ffmpeg_exe.cache_clear()
        bundled = ffmpeg_exe()  # imageio-ffmpeg's binary when there is no system one
        assert "imageio_ffmpeg" in bundled and os.access(bundled, os.X_OK)
    finally:
        ffmpeg_exe.cache_clear()


def test_encoders_listed() -> None:
    assert {"libx264", "mjpeg", "mpeg4"} <= ffmpeg_encoders()
