"""Fixtures for the feature tests: a few real msvd14 clips and a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def avi_clips(msvd14_videos: list[Path]) -> list[Path]:
    return [v for v in msvd14_videos if v.suffix == ".avi"]


@pytest.fixture(scope="session")
def gif_clip(msvd14_videos: list[Path]) -> Path:
    return next(v for v in msvd14_videos if v.suffix == ".gif")


@pytest.fixture
def bad_video(tmp_path: Path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 64)
    return path
