"""A long file captioned in spans: 2 s of red then 2 s of blue, written once with ffmpeg, and the
datasets that describe it (a JSONL manifest of its two windows; MSR-VTT and MSVD annotations whose
times are in a source video the file was cut from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_mm.io.ffmpeg import run_ffmpeg

RED_WINDOW = (0.5, 1.5)
BLUE_WINDOW = (2.5, 3.5)


@pytest.fixture(scope="session")
def red_blue_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    colour = "color=c={}:size=64x48:rate=10:duration=2"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", colour.format("red"), "-f", "lavfi",
                "-i", colour.format("blue"), "-filter_complex", "[0][1]concat=n=2:v=1[v]",
                "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                str(out)])  # fmt: skip
    return out


@pytest.fixture
def spans_manifest(tmp_path: Path, red_blue_video: Path) -> Path:
    """Two captioned windows of one file, plus a window that starts after the file ends."""
    rows = [
        {"video": str(red_blue_video), "captions": ["a red screen"], "start": RED_WINDOW[0],
         "end": RED_WINDOW[1]},
        {"video": str(red_blue_video), "captions": ["a blue screen"], "start": BLUE_WINDOW[0],
         "end": BLUE_WINDOW[1]},
        {"video": str(red_blue_video), "captions": ["nothing"], "start": 10, "end": 12},
    ]  # fmt: skip
    path = tmp_path / "spans" / "manifest.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def precut_datasets(tmp_path: Path, red_blue_video: Path) -> dict[str, Path]:
    """MSR-VTT and MSVD folders whose one clip is the file, with times in its source video (well
    past the clip's own 4 s)."""
    msrvtt, msvd = tmp_path / "msrvtt", tmp_path / "msvd"
    for folder, name in ((msrvtt, "video0"), (msvd, "abc_100_104")):
        (folder / "videos").mkdir(parents=True)
        (folder / "videos" / f"{name}.mp4").symlink_to(red_blue_video)
    (msrvtt / "videodatainfo.json").write_text(json.dumps({
        "videos": [{"video_id": "video0", "split": "train", "start time": 100.0,
                    "end time": 104.0}],
        "sentences": [{"video_id": "video0", "caption": "red then blue"}],
    }))  # fmt: skip
    (msvd / "MSVD_train.tsv").write_text("red then blue, a colour change\tabc_100_104\n")
    return {"msrvtt": msrvtt, "msvd": msvd}
