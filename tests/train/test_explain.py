"""`vmm explain` writes a readable attention picture for a trained captioner."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from video_mm.settings import FeatureSettings
from video_mm.train.captioning import CaptionTrainConfig, train_captioner
from video_mm.train.explain import explain_video


def test_explain_writes_png(tiny_synth: Path, feature_cache: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            caplog: pytest.LogCaptureFixture) -> None:
    from video_mm.cli import app
    from video_mm.settings import get_settings

    monkeypatch.setenv("VMM_DATA_DIR", str(tmp_path / "vmm"))
    get_settings.cache_clear()

    config = CaptionTrainConfig.load(epochs=6, lr=5e-3, warmup_steps=5, progress=False, n_frames=4,
                                     size=64, backbone="mobilenet_v3_small", batch_size=16,
                                     val_split="all")
    config.model = {"embed_dim": 32, "hidden_dim": 64}
    result = train_captioner(tiny_synth, "attention", tmp_path / "explained", config,
                             cache_dir=feature_cache)
    out = tmp_path / "explain.png"
    video = next((tiny_synth / "videos").glob("*.mp4"))
    res = CliRunner().invoke(app, ["explain", str(video), "--model", str(result.best_dir),
                                   "--out", str(out), "--json", "--beam-size", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["png"] == str(out) and summary["caption"]
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 300 and image.shape[1] > 600  # a real figure, not an empty canvas
    assert image.std() > 10

    # Explained with features of another precision than it was trained on: said, once.
    with caplog.at_level(logging.WARNING, logger="video_mm.artifacts"):
        for _ in range(2):
            explain_video(video, result.best_dir, tmp_path / "bf16.png",
                          feature_settings=FeatureSettings(precision="bfloat16"))
    [record] = caplog.records
    assert "explained was trained on float32 features but is served bfloat16" in record.getMessage()
