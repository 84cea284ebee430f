"""Decoding in a child process (``io.isolate_decode``): the same frames as in-process, typed errors
raised again unchanged, and a decoder stuck in native code killed at ``io.decode_timeout_s``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from video_mm.errors import NotAVideo
from video_mm.io.decode import open_video
from video_mm.io.isolate import IsolatedReader
from video_mm.io.sampling import sample_frames
from video_mm.settings import IOSettings

REPO = Path(__file__).resolve().parents[2]
HANG = REPO / "tests" / "workers" / "hang"  # a sitecustomize that hangs open_container natively


def test_isolated_reader_gives_the_frames_of_the_in_process_one(
    msvd14_videos: list[Path],
) -> None:
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    gif = next(p for p in msvd14_videos if p.suffix == ".gif")
    for video in (avi, gif):
        with open_video(video, size=96) as here, \
                open_video(video, size=96, limits=IOSettings(isolate_decode=True)) as there:
            assert isinstance(there, IsolatedReader) and not isinstance(here, IsolatedReader)
            assert there.backend == here.backend and there.info == here.info
            assert len(there) == len(here)
            np.testing.assert_array_equal(there.frame_times(), here.frame_times())
            np.testing.assert_array_equal(there.keyframe_indices(), here.keyframe_indices())
            idx = [len(here) - 1, 0, 3, 3]
            np.testing.assert_array_equal(there.get_frames(idx), here.get_frames(idx))
            a = sample_frames(there, n=5)
            b = sample_frames(here, n=5)
            np.testing.assert_array_equal(a.frames, b.frames)
            assert there.warning == here.warning == ""
            with pytest.raises(IndexError):
                there.get_frames([len(here)])


def test_errors_in_the_child_are_raised_again_typed(tmp_path: Path) -> None:
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(20_000)))
    with pytest.raises(NotAVideo) as info:
        open_video(bad, limits=IOSettings(isolate_decode=True))
    assert str(bad) in str(info.value)


def test_a_decoder_stuck_in_native_code_is_killed_at_the_deadline(tmp_path: Path) -> None:
    """In a process of its own: the hanging ``sitecustomize`` reaches the decode process only
    through the environment its fork server starts with."""
    stuck = tmp_path / "stuck.mp4"
    stuck.write_bytes(b"VMM-HANG" + bytes(range(256)) * 40)
    script = textwrap.dedent(f"""
        from video_mm.errors import DecodeTimeout
        from video_mm.io.decode import open_video
        from video_mm.settings import IOSettings
        if __name__ == "__main__":
            try:
                open_video({str(stuck)!r}, limits=IOSettings(isolate_decode=True,
                                                             decode_timeout_s=1.0))
            except DecodeTimeout as exc:
                print("DecodeTimeout:", exc)
    """)
    (tmp_path / "run.py").write_text(script)
    env = {**os.environ, "VMM_TEST_HANG": "probe",
           "PYTHONPATH": os.pathsep.join([str(HANG), str(REPO)])}
    out = subprocess.run([sys.executable, str(tmp_path / "run.py")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert "DecodeTimeout:" in out.stdout, out.stderr
    assert "longer than 1 s (io.decode_timeout_s); the decoder process was killed" in out.stdout
