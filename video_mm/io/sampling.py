"""Which frames of a video (or of a time span of it) to decode, returned with their timestamps.

- ``uniform``: ``n`` frames evenly spaced over the span, first and last included (repeats when the
  span has fewer than ``n`` frames, so a batch always has ``n``).
- ``fps``: the frame shown at each multiple of ``1/fps`` seconds from the span's start.
- ``keyframes``: only the keyframes in the span: no decoding of the frames between them, so it is
  the fast choice on long-GOP files, and approximate (keyframes fall where the encoder put them).

A span that starts after the last frame is shown still yields that last frame (the tail clip of a
file whose header promises more than its frames hold), unless ``strict_window`` asks for
:class:`~video_mm.errors.WindowPastEnd`: a dataset record's window that its file does not have.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from video_mm.errors import WindowPastEnd
from video_mm.io.decode import Reader, open_video
from video_mm.io.guard import Source
from video_mm.records import FrameBatch, VideoInfo
from video_mm.settings import IOSettings

Sampler = Literal["uniform", "fps", "keyframes"]
SAMPLERS: tuple[str, ...] = ("uniform", "fps", "keyframes")


def sample_frames(
    source_or_reader: Source | Reader,
    *,
    sampler: Sampler = "uniform",
    n: int = 16,
    fps: float = 1.0,
    start: float | None = None,
    end: float | None = None,
    size: int | None = None,
    limits: IOSettings | None = None,
    strict_window: bool = False,
) -> FrameBatch:
    """Sample frames of ``[start, end)`` seconds (default: the whole video) into a FrameBatch.

    A reader passed in is used as is (its ``size`` applies); a source is opened and closed here.
    ``strict_window``: a ``start`` at or after the end of the video raises
    :class:`~video_mm.errors.WindowPastEnd` instead of yielding the last frame.
    """
    if isinstance(source_or_reader, Reader):
        return _sample(source_or_reader, sampler, n, fps, start, end, strict_window)
    with open_video(source_or_reader, size=size, limits=limits) as reader:
        return _sample(reader, sampler, n, fps, start, end, strict_window)


def _video_end(times: np.ndarray, info: VideoInfo) -> float:
    """When the last frame stops being shown: its time plus the usual frame interval."""
    if len(times) == 0:
        return 0.0
    if len(times) > 1:
        return float(times[-1] + np.median(np.diff(times)))
    return float(times[-1]) + (1.0 / info.fps if info.fps > 0 else 0.0)


def sample_indices(
    times: np.ndarray,
    keyframes: np.ndarray,
    *,
    sampler: Sampler = "uniform",
    n: int = 16,
    fps: float = 1.0,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """The frame indices a sampler picks, from frame times alone (no decoding)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    lo = 0 if start is None else int(np.searchsorted(times, start - 1e-9, side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end - 1e-9, side="left"))
    if hi <= lo:  # a span shorter than one frame still yields the frame shown at its start
        lo = min(
            max(int(np.searchsorted(times, (start or 0.0) + 1e-9, side="right")) - 1, 0),
            len(times) - 1,
        )
        hi = lo + 1
    if sampler == "uniform":
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        return np.linspace(lo, hi - 1, n).round().astype(np.int64)
    if sampler == "fps":
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        t0 = times[lo] if start is None else start
        t1 = times[hi - 1] if end is None else end
        wanted = t0 + np.arange(0, max(t1 - t0, 0.0) * fps + 1e-9) / fps
        wanted = wanted[wanted < t1] if end is not None else wanted
        picked = np.searchsorted(times, wanted + 1e-6, side="right") - 1
        return (
            np.clip(picked, lo, hi - 1).astype(np.int64)
            if picked.size
            else np.array([lo], np.int64)
        )
    keys = keyframes[(keyframes >= lo) & (keyframes < hi)]
    return keys.astype(np.int64) if keys.size else np.array([lo], np.int64)


def _sample(
    reader: Reader,
    sampler: Sampler,
    n: int,
    fps: float,
    start: float | None,
    end: float | None,
    strict_window: bool,
) -> FrameBatch:
    times = reader.frame_times()
    if strict_window and start is not None and start >= (last := _video_end(times, reader.info)):
        span = f"{start:g}-{end:g} s" if end is not None else f"from {start:g} s"
        raise WindowPastEnd(
            reader.info.path, f"the window {span} starts after the video ends ({last:.2f} s)"
        )
    keys = reader.keyframe_indices() if sampler == "keyframes" else np.zeros(0, np.int64)
    idx = sample_indices(times, keys, sampler=sampler, n=n, fps=fps, start=start, end=end)
    frames = reader.get_frames(idx)
    return FrameBatch(
        frames=frames, times=times[idx].astype(np.float64), indices=idx, warning=reader.warning
    )
