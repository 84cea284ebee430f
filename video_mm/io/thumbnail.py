"""JPEG thumbnails: the frame shown at a given time (or a frame already decoded), scaled to a
given width."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from video_mm.io.decode import open_video
from video_mm.io.guard import Source
from video_mm.settings import IOSettings

JPEG_QUALITY = 85


def thumbnail_jpeg(
    source: Source, time: float, width: int = 320, *, limits: IOSettings | None = None
) -> bytes:
    """JPEG bytes of the frame shown at ``time`` seconds (clamped to the video), ``width`` px wide,
    in display orientation."""
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    with open_video(source, limits=limits) as reader:
        frame = reader.get_frames([frame_at(reader.frame_times(), time)])[0]
    return jpeg_bytes(frame, width)


def frame_at(times: np.ndarray, time: float) -> int:
    """Index of the frame shown at ``time`` seconds: the last one starting at or before it."""
    return max(int(np.searchsorted(times, time + 1e-6, side="right")) - 1, 0)


def jpeg_bytes(frame: np.ndarray, width: int) -> bytes:
    """JPEG bytes of one RGB uint8 frame ``[H, W, 3]`` scaled to ``width`` px wide."""
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    image = Image.fromarray(frame)
    height = max(1, round(image.height * width / image.width))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def write_jpeg(frame: np.ndarray, path: str, quality: int = JPEG_QUALITY) -> None:
    """Write one RGB uint8 frame as a JPEG file."""
    Image.fromarray(frame).save(path, format="JPEG", quality=quality)
