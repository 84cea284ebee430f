from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from video_mm.io import thumbnail_jpeg


def test_thumbnail(msvd14_videos: list[Path], corpus: dict[str, Path]) -> None:
    data = thumbnail_jpeg(msvd14_videos[0], 2.5, width=160)
    image = Image.open(io.BytesIO(data))
    assert data[:2] == b"\xff\xd8" and image.format == "JPEG"
    assert image.size == (160, 120)
    portrait = Image.open(io.BytesIO(thumbnail_jpeg(corpus["rotated.mp4"], 99.0, width=64)))
    assert portrait.size == (64, 114)  # display orientation; a time past the end gives the last
