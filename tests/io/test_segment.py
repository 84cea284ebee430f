"""Clips: fixed windows, and shots found by the detector on a clip with known cuts."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.io import probe, segment
from video_mm.io.ffmpeg import run_ffmpeg
from video_mm.io.segment import detect_shots, fixed_windows
from video_mm.settings import SegmentSettings


def test_fixed_windows() -> None:
    assert fixed_windows(25.0, 10, 10, 1) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert fixed_windows(20.5, 10, 10, 1) == [(0.0, 10.0), (10.0, 20.5)]  # short tail joins
    assert fixed_windows(3.0, 10, 10, 1) == [(0.0, 3.0)]
    assert fixed_windows(8.0, 4, 2, 1) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0)]
    with pytest.raises(ValueError):
        fixed_windows(8.0, 0, 2)


@pytest.fixture(scope="module")
def three_shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s testsrc, 1.5 s colour bars, 2 s mandelbrot: cuts at 2.0 s and 3.52 s (frame 88)."""
    out = tmp_path_factory.mktemp("shots") / "shots.mp4"
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25:duration=2",
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=160x120:rate=25:duration=1.5",
            "-f",
            "lavfi",
            "-i",
            "mandelbrot=size=160x120:rate=25",
            "-filter_complex",
            "[2]trim=duration=2[m];[0][1][m]concat=n=3:v=1[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "250",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ]
    )
    return out


def test_shots_found_at_the_cuts(three_shots: Path) -> None:
    spans = detect_shots(three_shots, threshold=27.0, min_clip_s=0.5)
    assert len(spans) == 3
    assert spans[0][0] == 0.0
    assert spans[1][0] == pytest.approx(2.0, abs=0.041)
    assert spans[2][0] == pytest.approx(3.52, abs=0.041)
    assert spans[2][1] == pytest.approx(5.52, abs=0.05)


def test_segment_returns_clips(three_shots: Path, msvd14_videos: list[Path]) -> None:
    info = probe(three_shots)
    clips = segment(three_shots, info, SegmentSettings(method="shots", min_clip_s=0.5), "v1")
    assert [c.index for c in clips] == [0, 1, 2] and {c.video_id for c in clips} == {"v1"}
    fixed = segment(three_shots, info, SegmentSettings(window_s=2.0, stride_s=2.0), "v1")
    assert [(c.start, c.end) for c in fixed] == [(0.0, 2.0), (2.0, 4.0), (4.0, info.duration)]
    gif = next(p for p in msvd14_videos if p.suffix == ".gif")
    shots = segment(gif, probe(gif), SegmentSettings(method="shots"), "g")
    assert shots[0].start == 0.0 and shots[-1].end == pytest.approx(probe(gif).duration)
