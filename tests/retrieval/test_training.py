"""Training the joint embedding on a tiny set lifts retrieval far above chance on held-out clips."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.errors import ConfigError
from video_mm.retrieval.model import from_pretrained, load_config
from video_mm.retrieval.training import (
    ClipSet,
    Epoch,
    RetrievalTrainConfig,
    build_model,
    evaluate,
    evaluate_on_dataset,
    nearest_other_clips,
    rank_metrics,
    shared_sentences,
    train_on_dataset,
    train_retrieval,
)
from video_mm.settings import FeatureSettings
from video_mm.train.loop import TrainConfig

SMALL = {"name": "tiny", "embed_dim": 64, "video": {"pooling": "transformer", "hidden": 128,
         "layers": 1, "heads": 2}, "text_tower": "learned",
         "text": {"word_dim": 64, "hidden": 128}}  # fmt: skip


def _run(epochs: int, hard: bool = False) -> RetrievalTrainConfig:
    return RetrievalTrainConfig(
        train=TrainConfig(epochs=epochs, lr=3e-3, warmup_steps=5, progress=False, device="cpu"),
        batch_size=32, pairs_per_clip=2, hard_negatives=hard,
    )  # fmt: skip


def test_rank_metrics_on_a_hand_made_matrix():
    # 3 clips; texts 0,1 -> clip 0, text 2 -> clip 1, text 3 -> clip 2
    sim = np.array([
        [0.9, 0.1, 0.0],  # rank 1
        [0.5, 0.8, 0.1],  # rank 2
        [0.2, 0.1, 0.3],  # rank 3
        [0.0, 0.1, 0.9],  # rank 1
    ])  # fmt: skip
    m = rank_metrics(sim, np.array([0, 0, 1, 2]))
    assert m["t2v_R@1"] == 50.0 and m["t2v_R@5"] == 100.0
    assert m["t2v_MedR"] == 1.5 and m["t2v_MeanR"] == 1.75
    # clip 0: its text 0 is 1st among all texts; clip 1: its text 2 (0.1) is beaten by 0.8 and
    # tied with two others (ties count against) -> rank 4; clip 2: text 3 is 1st
    assert m["v2t_R@1"] == pytest.approx(200 / 3) and m["v2t_MedR"] == 1.0
    assert m["v2t_MeanR"] == pytest.approx(2.0)
    assert m["rsum"] == pytest.approx(
        sum(m[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    )


def test_a_sentence_written_for_several_clips_finds_any_of_them() -> None:
    # "a dog runs" was written for clips 0 and 1; "a cat sits" for clip 2 only
    captions = [["a dog runs", "a brown dog runs"], ["a dog runs"], ["a cat sits"]]
    texts = ["a dog runs", "a brown dog runs", "a dog runs", "a cat sits"]
    owners = shared_sentences(texts, captions)
    assert owners.tolist() == [[True, True, False], [True, False, False], [True, True, False],
                               [False, False, True]]  # fmt: skip
    sim = np.array([
        [0.2, 0.9, 0.1],  # own clip 0 is 2nd, but clip 1 has the same sentence: a shared hit
        [0.2, 0.9, 0.1],  # own clip 0 is 2nd, and clip 1 lacks this sentence: a miss
        [0.1, 0.9, 0.3],  # own clip 1 is 1st
        [0.5, 0.4, 0.1],  # own clip 2 is 3rd
    ])  # fmt: skip
    m = rank_metrics(sim, np.array([0, 0, 1, 2]), owners)
    assert m["t2v_R@1"] == 25.0 and m["t2v_shared_R@1"] == 50.0
    assert m["t2v_shared_MedR"] == 1.5
    assert m["t2v_R@1_ceiling"] == pytest.approx(100 * (0.5 + 1 + 0.5 + 1) / 4)


def test_training_lifts_recall_far_above_chance(tiny_train, tiny_test, tmp_path):
    chance = 100.0 / len(tiny_test)
    untrained = evaluate(build_model(load_config(SMALL), tiny_train, 48), tiny_test)
    model, result = train_retrieval(
        load_config(SMALL), tiny_train, tiny_test, out_dir=tmp_path, run=_run(6), resume=False
    )
    scores = evaluate(model, tiny_test)
    assert untrained["t2v_R@1"] < 3 * chance
    assert scores["t2v_R@1"] > 8 * chance and scores["v2t_R@1"] > 8 * chance
    assert scores["t2v_R@10"] > 80 and scores["t2v_MedR"] <= 3
    assert result.best_metric == pytest.approx(scores["rsum"], abs=0.5)
    assert model.logit_scale.item() != pytest.approx(np.log(1 / 0.07))  # temperature learned
    # the saved best model reloads to the same embeddings
    again = from_pretrained(tmp_path / "best", device="cpu")
    texts = ["a red circle rises", "a navy box falls"]
    assert torch.allclose(again.encode_text(texts), model.encode_text(texts), atol=1e-5)
    video = again.embed_videos(tiny_test.features[:4])
    assert np.allclose(video, model.embed_videos(tiny_test.features[:4]), atol=1e-5)
    assert again.scores["val_rsum"] == pytest.approx(result.best_metric, abs=1e-3)
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "last.pt").is_file()


def test_hard_negatives_are_similar_clips_with_other_captions(tiny_train, tmp_path):
    nearest = nearest_other_clips(tiny_train)
    for i, j in enumerate(nearest):
        assert i != j and not set(tiny_train.captions[i]) & set(tiny_train.captions[j])
    same_colour_shape = np.mean([
        tiny_train.ids[i].split("-")[:2] == tiny_train.ids[j].split("-")[:2]
        for i, j in enumerate(nearest)
    ])  # fmt: skip
    assert same_colour_shape > 0.5  # neighbours differ in little: hard to tell apart
    model = build_model(load_config(SMALL), tiny_train, 48)
    batch = next(iter(Epoch(model, tiny_train, _run(1, hard=True), 0, nearest)))
    assert {"hard_text", "hard_feats", "hard_mask"} <= set(batch)
    assert torch.isfinite(model.loss(batch))


def test_hard_negative_training_learns(tiny_train, tiny_test, tmp_path):
    model, _ = train_retrieval(load_config(SMALL), tiny_train, tiny_test, out_dir=tmp_path,
                               run=_run(4, hard=True), resume=False)  # fmt: skip
    assert evaluate(model, tiny_test)["t2v_R@1"] > 8 * 100.0 / len(tiny_test)


def test_epochs_are_reproducible_and_use_distinct_clips(tiny_train):
    model = build_model(load_config(SMALL), tiny_train, 48)
    a = list(Epoch(model, tiny_train, _run(1), 3, None))
    b = list(Epoch(model, tiny_train, _run(1), 3, None))
    assert len(a) == len(Epoch(model, tiny_train, _run(1), 3, None))
    assert all(torch.equal(x["text"]["ids"], y["text"]["ids"]) for x, y in zip(a, b, strict=True))


def test_configs_load_and_refuse_unknown_keys(tmp_path: Path):
    for name in ("retrieval", "retrieval_minilm"):
        assert load_config(name).name == name
    with pytest.raises(ConfigError):
        load_config({**SMALL, "video": {"pooling": "mean", "nope": 1}})
    with pytest.raises(ConfigError):
        load_config({**SMALL, "text_tower": "bert"})
    run = RetrievalTrainConfig.load(epochs=3, n_frames=4, hard_negatives=True)
    assert run.train.epochs == 3 and run.features.n_frames == 4 and run.hard_negatives
    bad = tmp_path / "bad.toml"
    bad.write_text("pairs_per_clips = 3\n")
    with pytest.raises(ConfigError):
        RetrievalTrainConfig.load(bad)


def test_evaluation_needs_two_clips():
    model = build_model(load_config(SMALL), ClipSet(["a", "b"], [np.ones((2, 48))] * 2,
                                                    [["x"], ["y"]]), 48)  # fmt: skip
    with pytest.raises(ConfigError):
        evaluate(model, ClipSet(["a"], [np.ones((2, 48), np.float32)], [["x"]]))


def test_too_small_a_validation_split_trains_without_validation_and_says_so(
    tiny_train, tiny_test, tmp_path
):
    """One validation clip cannot be ranked: training says so before the first epoch, learns
    anyway (held-out recall far above chance) and keeps the last epoch as best/."""
    one = ClipSet(tiny_test.ids[:1], tiny_test.features[:1], tiny_test.captions[:1])
    model, result = train_retrieval(load_config(SMALL), tiny_train, one, out_dir=tmp_path,
                                    run=_run(6), resume=False)
    assert "1 clip" in result.unvalidated and "--val-split" in result.unvalidated
    assert result.best_metric is None and result.best_epoch == result.epochs_run == 6
    assert all("rsum" not in row for row in result.history)
    assert model.scores == {}
    assert evaluate(model, tiny_test)["t2v_R@1"] > 8 * 100.0 / len(tiny_test)


def test_float32_training_is_recorded_and_int8_serving_is_said_once(
    synth: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RetrievalTrainConfig.load(epochs=1, n_frames=2, size=64, backbone="mobilenet_v3_small",
                                    val_split="all", batch_size=8, progress=False)
    run.model = {"embed_dim": 16, "video": {"pooling": "mean"},
                 "text": {"word_dim": 16, "hidden": 16}}
    out, cache = tmp_path / "f32_run", tmp_path / "cache"
    train_on_dataset(synth, "learned", out, run, cache_dir=cache, resume=False)
    assert json.loads((out / "best" / "features.json").read_text())["precision"] == "float32"
    int8 = FeatureSettings(precision="int8", calibration_frames=8)
    with caplog.at_level(logging.WARNING, logger="video_mm.artifacts"):
        for _ in range(2):
            evaluate_on_dataset(out / "best", synth, "test", feature_settings=int8,
                                cache_dir=cache, progress=False)
    [record] = caplog.records
    assert "f32_run was trained on float32 features but is served int8" in record.getMessage()
