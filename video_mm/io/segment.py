"""Cut a video into clips, the unit that is captioned, embedded and searched.

``fixed``: windows of ``window_s`` seconds every ``stride_s`` seconds. ``shots``: PySceneDetect's
ContentDetector (HSV and edge change between consecutive frames) on frames decoded small, so a long
video is scanned once at a fraction of full-size decode cost.
"""

from __future__ import annotations

import itertools

from scenedetect import FrameTimecode
from scenedetect.detectors import ContentDetector

from video_mm.io.decode import open_video
from video_mm.io.guard import Source
from video_mm.records import Clip, VideoInfo
from video_mm.settings import IOSettings, SegmentSettings


def segment(
    source: Source,
    info: VideoInfo,
    settings: SegmentSettings,
    video_id: str,
    *,
    limits: IOSettings | None = None,
) -> list[Clip]:
    """The clips of a video, in order, each with its start and end in seconds."""
    if settings.method == "fixed":
        spans = fixed_windows(
            info.duration, settings.window_s, settings.stride_s, settings.min_clip_s
        )
    elif settings.method == "shots":
        spans = detect_shots(
            source, settings.shot_threshold, settings.min_clip_s, settings.shot_size, limits=limits
        )
    else:
        raise ValueError(f"unknown segment method {settings.method!r}: choose fixed or shots")
    return [Clip(video_id=video_id, index=i, start=s, end=e) for i, (s, e) in enumerate(spans)]


def fixed_windows(
    duration: float, window_s: float, stride_s: float, min_clip_s: float = 0.0
) -> list[tuple[float, float]]:
    """Windows ``[k*stride, k*stride + window)`` clipped to the video; a tail shorter than
    ``min_clip_s`` joins the window before it instead of becoming a clip of its own."""
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window_s and stride_s must be positive, got {window_s} and {stride_s}")
    spans: list[tuple[float, float]] = []
    start = 0.0
    while start < duration - 1e-9 or not spans:
        end = min(start + window_s, duration)
        if spans and end - start < min_clip_s:
            spans[-1] = (spans[-1][0], round(float(duration), 6))
            break
        spans.append((round(start, 6), round(float(end), 6)))
        if end >= duration:
            break
        start += stride_s
    return spans


def detect_shots(
    source: Source,
    threshold: float = 27.0,
    min_clip_s: float = 1.0,
    size: int = 128,
    *,
    limits: IOSettings | None = None,
) -> list[tuple[float, float]]:
    """Shots as ``(start, end)`` seconds; a shot is at least ``min_clip_s`` long."""
    with open_video(source, size=size, limits=limits) as reader:
        times = reader.frame_times()
        fps = reader.info.fps or 25.0
        detector = ContentDetector(
            threshold=threshold, min_scene_len=max(1, round(min_clip_s * fps))
        )
        cuts: list[int] = []
        for index, frame in reader.iter_frames():
            found = detector.process_frame(FrameTimecode(index, fps), frame[..., ::-1])
            cuts.extend(int(c.frame_num) for c in found)
        duration = max(reader.info.duration, float(times[-1]) + 1.0 / fps)
    bounds = [0.0, *(float(times[c]) for c in sorted(set(cuts)) if 0 < c < len(times)), duration]
    return [(round(s, 6), round(e, 6)) for s, e in itertools.pairwise(bounds) if e > s]
