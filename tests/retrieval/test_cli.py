"""``vmm train retrieval`` and ``vmm eval retrieval`` end to end on the 14 real msvd14 clips."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from video_mm.cli import app

METRICS = [f"{d}_{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MedR", "MeanR")]



def test_train_then_eval_with_held_out_captions(isolated, shared_data):
    data, out = shared_data / "msvd14", isolated / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "retrieval", "--data", str(data), "--text-tower", "learned", "--out", str(out),
        "--epochs", "2", "--n-frames", "2", "--train-split", "all", "--val-split", "all",
        "--pooling", "mean", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] in (1, 2) and (out / "best" / "model.safetensors").is_file()
    assert json.loads((out / "best" / "features.json").read_text())["n_frames"] == 2

    result = runner.invoke(app, [
        "eval", "retrieval", "--model", str(out / "best"), "--data", str(data), "--split", "all",
        "--queries", str(data / "heldout_captions.json"), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert set(METRICS) <= set(scores)
    assert scores["n_clips"] == 14 and scores["n_queries"] > 14 * 10  # the held-out captions
    assert 0 <= scores["t2v_R@1"] <= scores["t2v_R@5"] <= scores["t2v_R@10"] <= 100
    # a hit on any clip the sentence was written for counts too: never below the own-clip R@1
    assert scores["t2v_R@1"] <= scores["t2v_shared_R@1"] <= scores["t2v_shared_R@5"] <= 100
    assert 0 < scores["t2v_R@1_ceiling"] <= 100

    table = runner.invoke(app, [
        "eval", "retrieval", "--model", str(out / "best"), "--data", str(data), "--split", "all",
    ])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "t2v, shared" in table.stdout and "R@1 can be at most" in table.stdout


def test_unknown_text_tower_is_a_clear_error(isolated, shared_data):
    result = CliRunner().invoke(app, [
        "train", "retrieval", "--data", str(shared_data / "msvd14"), "--text-tower", "bert",
        "--out", str(isolated / "x"),
    ])  # fmt: skip
    assert result.exit_code != 0
    assert "text tower" in str(result.exception) or "text tower" in result.output
