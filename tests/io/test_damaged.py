"""Damaged files are read for what is there: at least 90% of the frames ffmpeg decodes, a warning
that says what was lost, no native log line on the real stderr, and a typed error (naming the
file, in our words) for what cannot be read at all. The corpus is benchmarks/damaged.py's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.io import damaged_corpus
from video_mm.errors import CorruptVideo
from video_mm.io import decode, open_video, probe, sample_frames
from video_mm.io.ffmpeg import run_ffmpeg
from video_mm.io.sampling import sample_indices
from video_mm.settings import IOSettings

ROOT = damaged_corpus.ROOT


corpus = damaged_corpus.load()
NATIVE = ("[h264 @", "[mpeg2video @", "[mov,mp4", "[mpegts @", "coder.cc", ".cc:", "Traceback")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("damaged")
    corpus.make_corpus(d)
    return d


@pytest.fixture
def decord_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto offers every sound local file to Decord first, as it does a long one without
    B-frames (short files and B-frame files go to PyAV, which reads them for less)."""
    monkeypatch.setattr(decode, "_pyav_is_cheaper", lambda scan: False)


NAMES = [
    "cut_25.mp4",
    "cut_50.mp4",
    "cut_75.mp4",
    "cut_95.mp4",
    "flip_middle.mp4",
    "broken_nal.mp4",
    "flip_mpeg2.ts",
    "cut_mpeg2.ts",
    "cut_h264.ts",
    "cut_packet_mpeg2.ts",
    "cut_packet_h264.ts",
    "cut_frag.mp4",
    "lost_fragment.mp4",
]


def test_corpus_names(workdir: Path) -> None:
    made = {c.name for c in corpus.make_corpus(workdir)}
    assert made == {*NAMES, "lost_init.mp4"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_decodes_what_ffmpeg_decodes(workdir: Path, name: str) -> None:
    path = workdir / name
    theirs = corpus.ffmpeg_frames(path)
    assert theirs > 0
    with open_video(path, size=32) as reader:
        frames = reader.get_frames(np.arange(len(reader)))
        ours = len(reader) - len(reader.lost_frames())
        warning = reader.warning
    assert len(frames) == len(reader) and frames.shape[1:] == (32, 43, 3)
    assert ours >= 0.9 * theirs, (ours, theirs)
    assert warning.startswith(f"decoded {ours}"), warning


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
def test_a_few_sampled_frames_still_say_what_was_lost(workdir: Path, name: str) -> None:
    """A job samples a few frames; what the file has lost is known from its structure (index,
    fragments, packet ends, NAL lengths, Decord's open) or met on the way to those frames."""
    warning = sample_frames(workdir / name, n=4, size=32).warning
    assert warning.startswith("decoded "), warning


def test_a_lost_fragment_is_counted_from_the_sequence_numbers(workdir: Path) -> None:
    info = probe(workdir / "lost_fragment.mp4")
    assert info.warning == "decoded 75 of 100 frames: 1 fragment of the file is lost"
    assert (info.frame_count, info.expected_frames, info.lost_fragments) == (75, 100, 1)
    assert (info.fps, info.variable_fps, info.duration) == (25.0, False, 4.0)  # a gap, not VFR
    times = sample_frames(workdir / "lost_fragment.mp4", n=4, size=32).times
    assert times.tolist() == [0.0, 2.0, 2.96, 3.96]  # frame 25 is the first after the gap


@pytest.mark.parametrize("name", ["cut_packet_mpeg2.ts", "cut_packet_h264.ts"])
def test_a_transport_stream_cut_between_packets_is_cut(workdir: Path, name: str) -> None:
    """Nothing in the container says so; its last frame, decoded by the probe, is incomplete."""
    assert (workdir / name).stat().st_size % 188 == 0
    warning = probe(workdir / name).warning
    assert re.fullmatch(r"decoded \d+ frames: the file is cut at \d\.\d s", warning), warning
    sound = probe(workdir / ("good_mpeg2.ts" if "mpeg2" in name else "good_h264.ts"))
    assert sound.warning == ""


def test_cut_file_samples_its_real_span(workdir: Path) -> None:
    path = workdir / "cut_50.mp4"
    info = probe(path)
    assert info.warning == "decoded 50 of 100 frames: the file is cut at 2.0 s"
    assert (info.frame_count, info.expected_frames, info.duration) == (50, 100, 2.0)
    uniform = sample_frames(path, n=5, size=32)
    assert uniform.indices.tolist() == [0, 12, 24, 37, 49]  # uniform over the 50 that are there
    assert uniform.warning == info.warning
    fps = sample_frames(path, sampler="fps", fps=2.0, size=32)
    assert fps.times.tolist() == [0.0, 0.48, 1.0, 1.48]  # real timestamps (CFR: frame k at k/25)
    with open_video(path) as reader:
        keys = sample_indices(reader.frame_times(), reader.keyframe_indices(), sampler="keyframes")
    assert keys.tolist() == [0, 25]  # a keyframe every 25 frames, none past the cut


def test_too_little_left_fails(workdir: Path) -> None:
    path = workdir / "cut_25.mp4"
    with pytest.raises(CorruptVideo, match=r"decoded 25 of 100 frames.*io\.min_decoded_share"):
        probe(path, IOSettings(min_decoded_share=0.5))
    with pytest.raises(CorruptVideo, match=str(path)):
        sample_frames(path, limits=IOSettings(min_decoded_share=0.5))


def test_lost_init_is_a_typed_error_in_our_words(workdir: Path) -> None:
    path = workdir / "lost_init.mp4"
    with pytest.raises(CorruptVideo) as caught:
        sample_frames(path)
    assert caught.value.source == str(path)
    assert "cannot open it" in caught.value.reason
    assert not any(s in str(caught.value) for s in (*NATIVE, "/project/", "0x"))


def test_decord_failure_retries_with_pyav(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decord_first: None
) -> None:
    """broken_nal.mp4 probes sound, so Decord gets it; where its log lines are not captured (not
    glibc) it fails mid-file, and the reader goes on through PyAV."""
    monkeypatch.setattr(decode, "native_errors", lambda: 0)
    path = tmp_path / "broken.mp4"
    path.write_bytes((workdir / "broken_nal.mp4").read_bytes())
    assert probe(path).warning == ""
    with open_video(path, size=32) as reader:
        assert reader.backend == "decord"
        assert len(reader.get_frames(np.arange(40))) == 40  # before the damage: Decord
        assert reader.backend == "decord" and reader.warning == ""
        reader.get_frames(np.arange(len(reader)))
        assert reader.backend == "pyav"
        assert reader.warning == "decoded 97 of 100 frames: 3 damaged frames did not decode"
        assert reader.lost_frames() == {45, 46, 47}
    assert str(path) in {key[0] for key in decode._pyav_files}


def test_damage_decord_reports_on_opening_goes_to_pyav(
    workdir: Path, tmp_path: Path, decord_first: None
) -> None:
    """Opening reads every packet's headers, and Decord's FFmpeg logs the broken NAL lengths."""
    path = tmp_path / "broken.mp4"
    path.write_bytes((workdir / "broken_nal.mp4").read_bytes())
    with open_video(path, size=32) as reader:
        assert reader.backend == "pyav"
    assert decode._pyav_files[decode._file_key(path)] == "its decoder reports damage"


@pytest.mark.timeout(120)
def test_concealed_damage_hands_the_file_to_pyav_and_is_remembered(
    tmp_path: Path, decord_first: None
) -> None:
    """Bytes flipped 8 s into a 16 s MP4: Decord opens it and reads the first frames; the batch
    whose decoding makes its FFmpeg log errors is decoded again by PyAV, which counts the frames
    it concealed, and the file is read with PyAV from then on (until it changes on disk)."""
    sound = tmp_path / "long.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=16",
                *corpus.X264, "-movflags", "+faststart", str(sound)])  # fmt: skip
    path = tmp_path / "flip_late.mp4"
    path.write_bytes(corpus._flip(sound.read_bytes(), 40, 2000))
    # Damage inside frames a job does not decode is not seen: a full check is a full decode.
    assert sample_frames(path, n=4, size=32).warning == ""
    with open_video(path, size=32) as reader:
        assert reader.backend == "decord"
        reader.get_frames(np.arange(100))
        assert reader.backend == "decord" and reader.warning == ""
        frames = reader.get_frames(np.arange(len(reader)))
        assert reader.backend == "pyav" and len(frames) == 400
        assert re.fullmatch(
            r"decoded 400 frames: \d+ frames? decoded with damage concealed", reader.warning
        ), reader.warning
    assert decode._pyav_files[decode._file_key(path)] == "Decord's decoder reported damage"
    with open_video(path, size=32) as again:
        assert again.backend == "pyav"
    os.utime(path, ns=(1, 1))  # changed on disk: Decord may try it again
    assert decode._decord_may_read(path, probe(path))


@pytest.mark.timeout(120)
def test_cli_prints_no_native_log_lines(workdir: Path, tmp_path: Path) -> None:
    """`vmm frames` in a child process: its real stderr (fd 2) holds our warning or error line,
    and no line from FFmpeg or Decord."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, says in [
        ("flip_mpeg2.ts", "warning: "),
        ("broken_nal.mp4", "warning: "),  # --n 100: the frames that do not decode are asked for
        ("cut_50.mp4", "warning: "),
        ("lost_init.mp4", "error: "),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "video_mm", "frames", str(workdir / name), "--out",
             str(tmp_path / name), "--n", "100"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert run.returncode == (2 if says == "error: " else 0), run.stderr
        assert says + str(workdir / name) in run.stderr
        assert not any(s in run.stderr for s in NATIVE), run.stderr


def test_damage_the_demuxer_marks_sends_the_file_to_pyav(workdir: Path) -> None:
    """Flipped bytes in a transport stream break its continuity: the probe says so, and PyAV (which
    counts what does not decode) reads it rather than Decord."""
    path = workdir / "flip_mpeg2.ts"
    info = probe(path)
    assert re.fullmatch(r"the container marks \d+ packets? damaged", info.warning), info.warning
    with open_video(path, size=32) as reader:
        assert reader.backend == "pyav"
        assert reader.warning == info.warning  # nothing read yet: the probe's word
        reader.get_frames(np.arange(len(reader)))
        assert reader.warning.startswith(f"decoded {len(reader) - len(reader.lost_frames())}")
