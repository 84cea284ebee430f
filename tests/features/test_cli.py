"""``vmm features`` on a folder of real clips with one bad file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.numpy import load_file
from typer.testing import CliRunner

from video_mm.cli import app
from video_mm.errors import WeightsNotFound
from video_mm.features.cache import loads


def test_folder_with_a_bad_video(isolated: Path, avi_clips: list[Path], gif_clip: Path) -> None:
    folder = isolated / "videos"
    folder.mkdir()
    for clip in (avi_clips[0], gif_clip):
        (folder / clip.name).symlink_to(clip)
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    (folder / "notes.txt").write_text("not a video, and not picked up")
    out = isolated / "feats"
    args = ["features", str(folder), "--out", str(out), "--backbone", "mobilenet_v3_small",
            "--n-frames", "3", "--json"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # one video failed
    report = json.loads(result.stdout)
    assert report["failed"] == 1 and report["cache_hits"] == 0
    bad = [r for r in report["videos"] if "error" in r]
    assert [r["id"] for r in bad] == ["broken"]
    for clip in (avi_clips[0], gif_clip):
        data = load_file(str(out / f"{clip.stem}.safetensors"))
        assert data["features"].shape == (3, 576) and data["timestamps"].shape == (3,)
        assert (data["timestamps"][1:] > data["timestamps"][:-1]).all()
    assert not (out / "broken.safetensors").exists()

    again = json.loads(CliRunner().invoke(app, args).stdout)
    assert again["cache_hits"] == 2


def test_missing_weights_file_is_one_clear_line(isolated: Path, avi_clips: list[Path]) -> None:
    missing = isolated / "no-such.pth"
    args = ["features", str(avi_clips[0]), "--out", str(isolated), "--weights", str(missing)]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, WeightsNotFound)  # main() prints it as one line, exit 2
    assert str(missing) in str(result.exception)


def test_lists_backbones() -> None:
    result = CliRunner().invoke(app, ["features", "--list-backbones"])
    assert result.exit_code == 0 and "resnet50" in result.stdout.split()


def test_damaged_video_is_extracted_with_its_warning(isolated: Path) -> None:
    """An MP4 cut after half its bytes: its features come from the 50 frames that are there, and
    the report, stderr and the file say what was lost, also when read back from the cache."""
    from video_mm.io.ffmpeg import run_ffmpeg

    whole = isolated / "whole.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-c:v",
                "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
                str(whole)])  # fmt: skip
    data = whole.read_bytes()
    (cut := isolated / "cut.mp4").write_bytes(data[: len(data) // 2 + 101])
    args = ["features", str(cut), "--out", str(isolated / "feats"), "--backbone",
            "mobilenet_v3_small", "--n-frames", "3", "--json"]  # fmt: skip
    for hits in (0, 1):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        (row,) = report["videos"]
        assert report["cache_hits"] == hits
        cut_warning = r"decoded \d\d of 100 frames: the file is cut at 2\.\d s"
        assert re.fullmatch(cut_warning, row["warning"])
        assert f"warning: {cut}: {row['warning']}" in result.stderr
        assert loads(Path(row["out"]).read_bytes()).warning == row["warning"]
    times = load_file(row["out"])["timestamps"]
    assert times[0] == 0.0 and 1.9 < times[-1] < 2.2  # uniform over what is there
