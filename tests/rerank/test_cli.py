"""``vmm train reranker`` and ``vmm eval retrieval --rerank`` end to end on the 14 msvd14 clips."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from video_mm.cli import app


@pytest.mark.parametrize("grid_pool", [1, 2], ids=["frames", "cells"])
def test_train_reranker_then_eval_with_and_without(isolated, shared_data, grid_pool) -> None:  # type: ignore[no-untyped-def]
    data, runner = shared_data / "msvd14", CliRunner()
    split = ["--train-split", "all", "--val-split", "all"]
    result = runner.invoke(app, [
        "train", "retrieval", "--data", str(data), "--text-tower", "learned", "--out",
        str(isolated / "ret"), "--epochs", "1", "--n-frames", "2", "--pooling", "mean", *split,
        "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    tiny = isolated / "tiny.json"
    tiny.write_text(json.dumps({"arch": "reranker", "hidden": 32, "layers": 1, "heads": 2,
                                "intermediate": 64, "grid_pool": grid_pool}))  # fmt: skip
    result = runner.invoke(app, [
        "train", "reranker", "--data", str(data), "--retrieval", str(isolated / "ret"),
        "--out", str(isolated / "rr"), "--model-config", str(tiny), "--epochs", "1", *split,
        "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 1 and "val_rerank_t2v_R@1" in summary
    saved = json.loads((isolated / "rr" / "best" / "config.json").read_text())
    assert saved["retrieval"] == "ret" and saved["prior_weight"] in (0.0, 0.25, 0.5, 1.0, 2.0)
    recipe = json.loads((isolated / "rr" / "best" / "features.json").read_text())
    assert recipe["n_frames"] == 2 and recipe["grid_pool"] == grid_pool
    # cells: the backbone's 512 channels in 2 x 2 cells, where the retrieval model reads 512
    assert saved["feat_dim"] == 512 * grid_pool**2

    result = runner.invoke(app, [
        "eval", "retrieval", "--model", str(isolated / "ret"), "--data", str(data), "--split",
        "all", "--queries", str(data / "heldout_captions.json"), "--rerank", str(isolated / "rr"),
        "--rerank-k", "5", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["n_clips"] == 14 and scores["k"] == 5
    for stage in ("dual", "rerank"):
        assert 0 <= scores[f"{stage}_t2v_R@1"] <= scores[f"{stage}_t2v_R@5"] <= 100
    # re-ranking the top 5 moves nothing across rank 5: R@5 and R@10 are the first stage's
    assert scores["rerank_t2v_R@5"] == scores["dual_t2v_R@5"]
    assert scores["rerank_t2v_R@10"] == scores["dual_t2v_R@10"]
    for stage in ("dual", "rerank"):
        assert scores[f"{stage}_t2v_R@1"] <= scores[f"{stage}_t2v_shared_R@1"] <= 100
    assert scores["dual_t2v_R@1_ceiling"] == scores["rerank_t2v_R@1_ceiling"] > 0
