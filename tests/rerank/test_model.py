"""The re-ranker learns matched vs mismatched pairs on the tiny set; saving keeps its scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.errors import ConfigError, ModelError
from video_mm.rerank.model import (
    Reranker,
    from_pretrained,
    is_reranker,
    load_config,
    pad_clips,
    save_pretrained,
)
from video_mm.rerank.negatives import order_swapped
from video_mm.rerank.training import (
    Epoch,
    RerankTrainConfig,
    WordCache,
    loss_fn,
)
from video_mm.retrieval.training import ClipSet

TINY = {"hidden": 64, "layers": 1, "heads": 2, "intermediate": 128}  # as in conftest


def test_learns_matched_pairs_on_held_out_clips(trained, tiny_test: ClipSet) -> None:
    model, result = trained
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    right = []
    for i in range(len(tiny_test)):
        pos = model.score(tiny_test.captions[i][0], [tiny_test.features[i]])[0]
        other = tiny_test.captions[(i + 1) % len(tiny_test)][0]
        neg = model.score(other, [tiny_test.features[i]])[0]
        right += [pos > 0, neg < 0]
    assert np.mean(right) >= 0.75  # chance: 0.5


def test_tells_the_order_of_events(trained, tiny_test: ClipSet) -> None:
    model, _ = trained
    pairs = [(c, order_swapped(c), i) for i, caps in enumerate(tiny_test.captions)
             for c in caps[:1] if order_swapped(c)]  # fmt: skip
    right = [model.score(c, [tiny_test.features[i]])[0] > model.score(s, [tiny_test.features[i]])[0]
             for c, s, i in pairs]  # fmt: skip
    assert len(pairs) >= 10 and np.mean(right) >= 0.7  # chance: 0.5


def test_save_load_gives_identical_scores(trained, tiny_test: ClipSet, tmp_path: Path) -> None:
    model, result = trained
    assert is_reranker(result.best_dir)
    loaded = from_pretrained(result.best_dir, device="cpu")
    query = tiny_test.captions[0][0]
    assert np.array_equal(model.score(query, tiny_test.features), loaded.score(query,
                                                                              tiny_test.features))
    assert loaded.name == "tiny" and "val_rerank_t2v_R@1" in loaded.scores
    card = (result.best_dir / "README.md").read_text()
    assert "# tiny (video-text re-ranker, two-stream)" in card
    # MiniLM's own weights are read from the package, not copied: the file stays small
    assert (result.best_dir / "model.safetensors").stat().st_size < 5 * 2**20


def test_single_stream_variant_learns(tiny_train: ClipSet) -> None:
    torch.manual_seed(0)
    config = load_config({"variant": "single_stream", **TINY})
    model = Reranker(config, tiny_train.features[0].shape[1])
    run = RerankTrainConfig(negatives=["in_batch", "swapped"], batch_size=32, mlm_weight=0.5)
    words = WordCache(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    batches = [b for epoch in range(2) for b in Epoch(model, tiny_train, run, epoch, None, words)]
    losses = []
    for batch in batches * 2:
        loss = loss_fn(model, batch, run.mlm_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    words_, grid, _ = model.co_attention(tiny_train.captions[0][0], tiny_train.features[0])
    assert len(words_) == grid.shape[0] and grid.shape[1] == len(tiny_train.features[0])


def test_bad_configs_and_inputs_are_typed_errors() -> None:
    with pytest.raises(ConfigError, match="variant"):
        load_config({"variant": "three_stream"})
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config({"hiddne": 3})
    with pytest.raises(ModelError):
        pad_clips([np.zeros((0, 4), np.float32)])
    with pytest.raises(ConfigError, match="negatives"):
        RerankTrainConfig.load(negatives=["nearest"])


def test_first_stage_prior_is_added_with_its_saved_weight(trained, tiny_test: ClipSet,
                                                          tmp_path: Path) -> None:  # fmt: skip
    model, _ = trained
    query, feats = tiny_test.captions[0][0], tiny_test.features[:5]
    prior = np.linspace(-2.0, 2.0, 5).astype(np.float32)
    model.prior_weight = 0.5
    try:
        folder = save_pretrained(tmp_path / "with-prior", model)
    finally:
        model.prior_weight = 0.0
    loaded = from_pretrained(folder, device="cpu")
    assert loaded.prior_weight == 0.5
    np.testing.assert_allclose(loaded.score(query, feats, prior=prior),
                               model.score(query, feats) + 0.5 * prior, rtol=1e-5, atol=1e-5)
