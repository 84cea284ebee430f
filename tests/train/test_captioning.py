"""Captioner training on a tiny synthetic set: it learns, resumes exactly, and evaluates."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from video_mm.errors import ConfigError
from video_mm.models.decoding import Decoding
from video_mm.settings import FeatureSettings
from video_mm.train.captioning import (
    CaptionBatches,
    CaptionTrainConfig,
    evaluate_captioner,
    train_captioner,
)
from video_mm.train.loop import TrainConfig

BACKBONE = "mobilenet_v3_small"  # random weights; the cheapest backbone keeps these tests fast


def _config(epochs: int, **kw) -> CaptionTrainConfig:
    config = CaptionTrainConfig.load(
        epochs=epochs, lr=5e-3, warmup_steps=5, patience=None, progress=False, seed=3,
        n_frames=4, size=64, batch_size=16, backbone=BACKBONE, **{"val_split": "all", **kw},
    )  # fmt: skip
    config.model = {"embed_dim": 32, "hidden_dim": 64}
    return config


def test_training_lowers_val_loss_and_raises_cider(tiny_synth: Path, feature_cache: Path,
                                                   tmp_path: Path) -> None:
    result = train_captioner(tiny_synth, "attention", tmp_path / "run", _config(8),
                             cache_dir=feature_cache)
    first, last = result.history[0], result.history[-1]
    assert last["val_loss"] < first["val_loss"] * 0.8
    assert max(h["CIDEr"] for h in result.history[1:]) > first["CIDEr"] + 0.1
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 9


def test_resume_matches_uninterrupted(tiny_synth: Path, feature_cache: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    train_captioner(tiny_synth, "lrcn", tmp_path / "a", _config(3), cache_dir=feature_cache)

    real = CaptionBatches.__call__

    def interrupted(self: CaptionBatches, epoch: int):
        if epoch == 1:
            raise KeyboardInterrupt("killed during epoch 2")
        return real(self, epoch)

    monkeypatch.setattr(CaptionBatches, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(tiny_synth, "lrcn", tmp_path / "b", _config(3), cache_dir=feature_cache)
    monkeypatch.setattr(CaptionBatches, "__call__", real)
    result = train_captioner(tiny_synth, "lrcn", tmp_path / "b", _config(3),
                             cache_dir=feature_cache)
    assert result.epochs_run == 3
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["history"] == b["history"]
    best_a = load_file(tmp_path / "a" / "best" / "model.safetensors")
    best_b = load_file(tmp_path / "b" / "best" / "model.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_scheduled_sampling_and_scst_run(tiny_synth: Path, feature_cache: Path,
                                         tmp_path: Path) -> None:
    config = _config(2, scheduled_sampling=0.25, scst_epochs=1, scst_samples=3)
    result = train_captioner(tiny_synth, "meanpool", tmp_path / "run", config,
                             cache_dir=feature_cache)
    assert (tmp_path / "run" / "scst" / "last.pt").exists()
    assert result.best_metric is not None


def test_cli_train_then_eval_json(tiny_synth: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from video_mm.cli import app
    from video_mm.settings import get_settings

    monkeypatch.setenv("VMM_DATA_DIR", str(tmp_path / "vmm"))  # the feature cache goes there
    get_settings.cache_clear()

    config = tmp_path / "tiny.toml"
    config.write_text(
        "batch_size = 16\n[train]\nepochs = 2\nlr = 3e-3\nprogress = true\n"
        f"[features]\nn_frames = 4\nsize = 64\nbackbone = '{BACKBONE}'\n"
        "[model]\nembed_dim = 32\nhidden_dim = 64\n"
    )
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "captioner", "--data", str(tiny_synth), "--arch", "lrcn",
                              "--conditioning", "init", "--out", str(run), "--config", str(config),
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # all of it: the epoch lines go to stderr
    assert "epoch 2: train_loss=" in res.stderr
    assert summary["epochs_run"] == 2
    assert json.loads((run / "best" / "config.json").read_text())["model"]["conditioning"] == "init"
    res = runner.invoke(app, ["eval", "captioner", "--model", str(run / "best"), "--data",
                              str(tiny_synth), "--split", "train", "--json", "--beam-size", "2"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    for key in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert 0.0 <= scores[key] <= 10.0
    predictions = json.loads((run / "best" / "predictions_train.json").read_text())
    assert len(predictions["predictions"]) == scores["n_videos"] > 0


def test_int8_training_is_recorded_and_float32_serving_is_said_once(
    tiny_synth: Path, feature_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    int8 = FeatureSettings(precision="int8", calibration_frames=8)
    run = tmp_path / "int8_run"
    train_captioner(tiny_synth, "attention", run, _config(1), feature_settings=int8,
                    cache_dir=feature_cache)
    assert json.loads((run / "best" / "features.json").read_text())["precision"] == "int8"

    def evaluate(settings: FeatureSettings) -> None:
        evaluate_captioner(run / "best", tiny_synth, "test", feature_settings=settings,
                           cache_dir=feature_cache, fast=True, progress=False)

    with caplog.at_level(logging.WARNING, logger="video_mm.artifacts"):
        evaluate(int8)
        assert not caplog.records  # served as trained
        evaluate(FeatureSettings())
        evaluate(FeatureSettings())
    [record] = caplog.records
    assert "int8_run was trained on int8 features but is served float32" in record.getMessage()


def test_bad_config_is_a_typed_error(tmp_path: Path) -> None:
    from video_mm.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochz = 3\n")
    with pytest.raises(ConfigError):
        CaptionTrainConfig.load(bad)
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2


def test_spatial_attention_trains_on_grid_cells_and_explains(
    tiny_synth: Path, feature_cache: Path, tmp_path: Path
) -> None:
    """``attention-spatial`` attends over the features.grid_pool cells: it trains through the
    same trainer (loss falls), evaluates, and its picture carries the per-cell weights."""
    from PIL import Image

    from video_mm.train.captioning import evaluate_captioner
    from video_mm.train.explain import explain_video

    config = _config(6, grid_pool=2)
    result = train_captioner(tiny_synth, "attention-spatial", tmp_path / "run", config,
                             cache_dir=feature_cache)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"] * 0.8
    saved = json.loads((result.best_dir / "config.json").read_text())["model"]
    assert saved["spatial"] is True and saved["cells"] == 2
    scores = evaluate_captioner(result.best_dir, tiny_synth, "all", cache_dir=feature_cache,
                                progress=False, fast=True)
    assert scores["CIDEr"] > 0.1
    video = next((tiny_synth / "videos").glob("*.mp4"))
    caption = explain_video(video, result.best_dir, tmp_path / "x.png",
                            decoding=Decoding(beam_size=1))
    assert caption.text and Image.open(tmp_path / "x.png").size[1] > 300

    with pytest.raises(ConfigError, match="grid_pool"):
        train_captioner(tiny_synth, "attention-spatial", tmp_path / "bad", _config(1),
                        cache_dir=feature_cache)


def test_cli_offers_every_trainable_arch() -> None:
    from video_mm.cli.train import ARCHS
    from video_mm.train.captioning import ARCH_CONFIGS

    assert tuple(ARCH_CONFIGS) == ARCHS


def test_no_validation_split_trains_without_validation_and_says_so(
    tiny_synth: Path, feature_cache: Path, tmp_path: Path
) -> None:
    """A dataset with no videos in the validation split trains (saying so; best/ is the last
    epoch, loadable from the run folder); SCST, which needs validation, refuses before training."""
    from video_mm.models.factory import from_pretrained

    result = train_captioner(tiny_synth, "meanpool", tmp_path / "run",
                             _config(3, val_split="nosuch"), cache_dir=feature_cache)
    assert "'nosuch'" in result.unvalidated and "--val-split" in result.unvalidated
    assert result.best_metric is None and result.best_epoch == result.epochs_run == 3
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] and all("CIDEr" not in row for row in result.history)
    assert from_pretrained(tmp_path / "run").caption  # the run folder loads as a model
    with pytest.raises(ConfigError, match="--val-split"):
        train_captioner(tiny_synth, "meanpool", tmp_path / "scst",
                        _config(1, val_split="nosuch", scst_epochs=1), cache_dir=feature_cache)
    assert not (tmp_path / "scst").exists()


def test_end_to_end_lrcn_trains_its_cnn_on_frames(tiny_synth: Path, feature_cache: Path,
                                                  tmp_path: Path) -> None:
    """``lrcn_e2e`` through the trainer: it reads frames (no features computed), the loss falls,
    the CNN (the recipe's backbone, at the recipe's frame size) learns with its batch-norm
    statistics frozen, and the saved model reproduces its best epoch's validation CIDEr-D."""
    from video_mm.data.datasets import load_dataset
    from video_mm.data.frames import sample_dataset_frames
    from video_mm.features.backbones import create_backbone
    from video_mm.models.factory import from_pretrained
    from video_mm.train.captioning import decode_all
    from video_mm.train.explain import explain_video
    from video_mm.train.metrics import caption_scores

    config = _config(4)
    config.batch_size = 8  # clips a step, each with all its captions
    result = train_captioner(tiny_synth, "lrcn", tmp_path / "run", config,
                             model_config="lrcn_e2e", cache_dir=feature_cache)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]

    loaded = from_pretrained(result.best_dir, device="cpu")
    assert loaded.backbone.input == "frames" and loaded.model.takes_frames
    cnn, start = loaded.model.cnn, create_backbone(BACKBONE, "none")
    assert cnn.preprocess.crop == 64
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, cnn.state_dict()[k])]
    assert any(k.endswith("weight") for k in moved)
    assert not [k for k in moved if "running_" in k or "num_batches" in k]

    records = load_dataset(tiny_synth)
    frames = sample_dataset_frames(records, loaded.recipe, cache_dir=feature_cache,
                                   progress=False)
    refs = {r.video_id: r.captions for r in records if r.video_id in frames and r.captions}
    preds = decode_all(loaded.model, loaded.vocab, frames, list(refs), config.max_len,
                       prepare=cnn.preprocess)
    assert caption_scores(refs, preds, fast=True)["CIDEr"] == pytest.approx(result.best_metric)
    some = [frames[v] for v in list(refs)[:4]]
    f, m, _ = loaded.batch(some)
    with torch.no_grad():  # standardised CNN outputs stay of order one: the CNN has not blown up
        assert float(loaded.model.frame_features(f, m)[m].abs().mean()) < 10
    video = next((tiny_synth / "videos").glob("*.mp4"))
    caption = explain_video(video, result.best_dir, tmp_path / "x.png",
                            decoding=Decoding(beam_size=1))
    assert caption.text and (tmp_path / "x.png").is_file()


def test_end_to_end_refuses_grid_cells_before_decoding(tiny_synth: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grid_pool must be 1"):
        train_captioner(tiny_synth, "lrcn", tmp_path / "run", _config(1, grid_pool=2),
                        model_config="lrcn_e2e", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
