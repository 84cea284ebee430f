"""``vmm probe`` and ``vmm frames`` as a user runs them (a real process: exit codes, stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image


def vmm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "video_mm", *args], capture_output=True, text=True, timeout=300
    )


def test_probe_json(msvd14_videos: list[Path]) -> None:
    gif = next(p for p in msvd14_videos if p.suffix == ".gif")
    run = vmm("probe", str(gif), "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["codec"] == "gif" and info["frame_count"] > 0 and info["width"] > 0


def test_probe_bad_file_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    run = vmm("probe", str(bad))
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert str(bad) in run.stderr and "not a video" in run.stderr


def test_frames_writes_jpegs_and_listing(msvd14_videos: list[Path], tmp_path: Path) -> None:
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    out = tmp_path / "frames"
    run = vmm("frames", str(avi), "--n", "5", "--sampler", "fps", "--fps", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    listing = json.loads((out / "frames.json").read_text())
    assert len(listing) >= 10  # 2 fps over a 7 s clip
    assert [e["index"] for e in listing] == sorted(e["index"] for e in listing)
    assert listing[1]["time"] > listing[0]["time"] == 0.0
    for i in range(len(listing)):
        assert Image.open(out / f"{i:06d}.jpg").size == (320, 240)
    run = vmm("frames", str(avi), "--n", "4", "--size", "64", "--out", str(tmp_path / "u"))
    assert run.returncode == 0, run.stderr
    assert len(json.loads((tmp_path / "u" / "frames.json").read_text())) == 4
    assert Image.open(tmp_path / "u" / "000003.jpg").size == (85, 64)
