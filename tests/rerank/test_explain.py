"""`vmm explain --model RERANKER --query ...` draws a query's co-attention over a real clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from video_mm.artifacts import FeatureRecipe
from video_mm.rerank.model import Reranker, load_config, save_pretrained


@pytest.mark.parametrize("grid_pool", [1, 2], ids=["frames", "cells"])
def test_explain_draws_word_by_frame_co_attention(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid_pool: int
) -> None:
    """One token a frame, or 2 x 2 cells a frame (the grid computed as its recipe says, the
    cells' attention summed into their frame's)."""
    from video_mm.cli import app
    from video_mm.settings import get_settings

    monkeypatch.setenv("VMM_DATA_DIR", str(tmp_path / "vmm"))
    get_settings.cache_clear()
    torch.manual_seed(0)
    model = Reranker(load_config({"name": "tiny-reranker", "hidden": 32, "layers": 1, "heads": 2,
                                  "intermediate": 64, "grid_pool": grid_pool}),
                     576 * grid_pool**2)  # fmt: skip
    recipe = FeatureRecipe(backbone="mobilenet_v3_small", weights="none", n_frames=6, size=112,
                           grid_pool=grid_pool, normalize=False)
    folder = save_pretrained(tmp_path / "reranker", model, recipe=recipe)
    video = shared_data / "msrvtt" / "video8560" / "video8560.mp4"
    out = tmp_path / "explain.png"
    query = "a man talks and then the crowd cheers"
    res = CliRunner().invoke(app, ["explain", str(video), "--model", str(folder), "--query",
                                   query, "--out", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["png"] == str(out) and 0.0 < summary["match"] < 1.0
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 10
    missing = CliRunner().invoke(app, ["explain", str(video), "--model", str(folder)])
    assert missing.exit_code != 0 and "query" in str(missing.exception or missing.output)
