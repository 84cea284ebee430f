"""`vmm caption`, `vmm index`, `vmm status` through the real CLI app on real clips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.pipeline.conftest import CUT_WARNING
from video_mm.cli import app
from video_mm.cli import service as service_cli
from video_mm.settings import Settings


@pytest.fixture
def cli(fast_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(service_cli, "get_settings", lambda: fast_settings)
    return CliRunner()


def test_caption_vtt_srt_json(cli: CliRunner, msvd14_videos: list[Path]) -> None:
    video = next(v for v in msvd14_videos if v.suffix == ".avi")
    vtt = cli.invoke(app, ["caption", str(video), "--format", "vtt"])
    assert vtt.exit_code == 0, vtt.output
    assert vtt.stdout.startswith("WEBVTT\n\n1\n00:00:00.000 --> 00:00:04.000\n<v ")
    # what the captions are worth goes to stderr, per model (the tiny models: random CNN)
    assert "warning: lrcn: frame encoder has random weights: not for real video" in vtt.stderr
    srt = cli.invoke(app, ["caption", str(video), "--format", "srt", "--model", "lrcn"])
    assert srt.exit_code == 0 and srt.stdout.startswith("1\n00:00:00,000 --> 00:00:04,000\n")
    data = json.loads(cli.invoke(app, ["caption", str(video), "--format", "json"]).stdout)
    assert data["filename"] == video.name and len(data["video_id"]) == 64
    assert {c["model"] for c in data["cues"]} == {"lrcn", "attention"}
    assert all(c["text"] for c in data["cues"])


def test_caption_n_best_with_scores_and_decoding_overrides(
    cli: CliRunner, msvd14_videos: list[Path]
) -> None:
    """--n-best 4 widens the beam to hold 4 and lists each clip's 4 best captions (distinct, the
    first the cue's caption, each with its score); other decoding options rerun the job."""
    video = msvd14_videos[1]
    res = cli.invoke(app, ["caption", str(video), "--format", "json", "--n-best", "4"])
    assert res.exit_code == 0, res.output
    cues = json.loads(res.stdout)["cues"]
    for cue in cues:
        ranked = cue["n_best"]
        assert len(ranked) == 4 and len({r["text"] for r in ranked}) == 4
        assert ranked[0] == {"text": cue["text"], "score": cue["score"]}
        assert all(r["text"] and r["score"] < 0 for r in ranked)
    text = cli.invoke(app, ["caption", str(video), "--n-best", "4", "--model", "lrcn"]).stdout
    assert text.count("    2. ") == text.count("    4. ") == len(cues) // 2
    short = cli.invoke(app, ["caption", str(video), "--format", "json", "--max-len", "2",
                             "--beam-size", "1"])
    assert short.exit_code == 0, short.output
    assert all(1 <= len(c["text"].split()) <= 2 for c in json.loads(short.stdout)["cues"])
    bad = cli.invoke(app, ["caption", str(video), "--beam-size", "2", "--n-best", "3"])
    assert bad.exit_code != 0 and "n_best" in str(bad.exception or bad.output)


def test_index_then_status(cli: CliRunner, msvd14_videos: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    result = cli.invoke(app, ["index", str(msvd14_videos[0]), str(bad), "--here", "--json"])
    assert result.exit_code == 1  # one video failed
    rows = json.loads(result.stdout)
    assert [r["state"] for r in rows] == ["done", "failed"]
    assert rows[1]["error"].startswith("not_a_video: notes.mp4:")
    status = cli.invoke(app, ["status", "--json"])
    jobs = {j["id"]: j for j in json.loads(status.stdout)}
    assert jobs[rows[0]["job_id"]]["progress"] == 1.0
    one = json.loads(cli.invoke(app, ["status", rows[1]["job_id"][:8], "--json"]).stdout)
    assert one["state"] == "failed" and one["stage"] == "probe" and one["attempts"] == 1
    again = cli.invoke(app, ["index", str(msvd14_videos[0]), "--here", "--json"])
    assert json.loads(again.stdout)[0]["job_id"] == rows[0]["job_id"]  # nothing redone


def test_damaged_video_indexes_and_captions_with_its_warning(
    cli: CliRunner, cut_mp4: Path
) -> None:
    result = cli.invoke(app, ["index", str(cut_mp4), "--here", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["state"] == "done" and row["warning"] == CUT_WARNING and row["error"] is None
    caption = cli.invoke(app, ["caption", str(cut_mp4), "--format", "json"])
    assert caption.exit_code == 0
    assert json.loads(caption.stdout)["cues"]
    assert f"warning: {cut_mp4}: {CUT_WARNING}" in caption.stderr


def test_worker_refuses_unknown_queue(cli: CliRunner) -> None:
    result = cli.invoke(app, ["worker", "-Q", "cpu,tpu"])
    assert result.exit_code != 0 and "tpu" in result.output
