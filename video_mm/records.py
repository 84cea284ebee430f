"""The typed records that flow between stages. Plain data: no I/O, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata, read without decoding the stream."""

    path: str
    container: str
    codec: str
    pix_fmt: str
    width: int  # display width (rotation applied)
    height: int  # display height (rotation applied)
    rotation: int  # degrees clockwise the frames are turned for display: 0, 90, 180, 270
    duration: float  # seconds
    fps: float  # average frame rate
    variable_fps: bool
    frame_count: int
    has_audio: bool
    size_bytes: int
    # A damaged file: what is lost ("decoded 49 of 100 frames: the file is cut at 2.0 s"), the
    # frames its header promises (frame_count is what is there), where its data ends early and
    # how many fragments of a fragmented MP4 are gone.
    warning: str = ""
    expected_frames: int = 0
    cut_at: float | None = None
    lost_fragments: int = 0


def clip_id(video_id: str, index: int | str) -> str:
    """A clip's id everywhere (catalog rows, index entries): ``"<video_id>:<index>"``; with
    ``index=""`` the prefix every clip id of the video starts with."""
    return f"{video_id}:{index}"


@dataclass(frozen=True)
class Clip:
    """A time span of one video; the unit that is captioned, embedded and searched."""

    video_id: str
    index: int
    start: float
    end: float

    @property
    def id(self) -> str:
        return clip_id(self.video_id, self.index)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class FrameBatch:
    """Frames sampled from a video: RGB uint8 ``[T, H, W, 3]`` in display orientation."""

    frames: np.ndarray
    times: np.ndarray  # [T] float64 seconds from the start of the video
    indices: np.ndarray  # [T] int64 frame numbers in decode order
    warning: str = ""  # what of a damaged file was lost (the reader's warning), else empty

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class ClipFeatures:
    """Per-frame CNN features of one clip (or of a whole video)."""

    features: np.ndarray  # [T, D] float32
    times: np.ndarray  # [T] float64 seconds
    backbone: str
    grid: np.ndarray | None = None  # [T, C, h, w] when spatial features were asked for
    warning: str = ""  # what of a damaged video was lost while decoding it


@dataclass(frozen=True)
class Caption:
    text: str
    score: float  # mean log-probability per word under the model
    model: str
    attention: list[list[float]] | None = None  # [words, frames]
    # the next best captions of the same clip, best first: {"text", "score"} each (n-best)
    alternatives: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Hit:
    """One search result: a clip with where it is, what it shows, and how well it matched."""

    video_id: str
    clip_index: int
    start: float
    end: float
    score: float
    caption: str = ""
    thumbnail: str = ""
    extra: dict = field(default_factory=dict)
