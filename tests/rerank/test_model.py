"""The re-ranker learns matched vs mismatched pairs on the tiny set; saving keeps its scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.rerank.conftest import _train, held_out_accuracy
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
    FirstStage,
    RerankTrainConfig,
    WordCache,
    listwise_loss,
    loss_fn,
)
from video_mm.retrieval.training import ClipSet

TINY = {"hidden": 64, "layers": 1, "heads": 2, "intermediate": 128}  # as in conftest


def test_learns_matched_pairs_on_held_out_clips(trained, tiny_test: ClipSet) -> None:
    model, result = trained
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert held_out_accuracy(model, tiny_test) >= 0.75  # chance: 0.5


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
    with pytest.raises(ConfigError, match="loss"):
        RerankTrainConfig.load(loss="pointwise")
    with pytest.raises(ConfigError, match="hard_per_row"):
        RerankTrainConfig.load(hard_per_row=0)


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


@pytest.mark.parametrize("motion", ["deviation", "delta", "abs_delta"])
def test_motion_and_word_places_ignore_padding(tiny_train: ClipSet, motion: str) -> None:
    """A clip scores the same alone and padded in a batch beside a longer one; a query the same
    alone and padded beside a longer one (the places are among its own tokens)."""
    torch.manual_seed(0)
    model = Reranker(load_config({**TINY, "motion": motion, "word_places": True}),
                     tiny_train.features[0].shape[1]).eval()  # fmt: skip
    model.fit_feature_stats(tiny_train.features)
    short, long_ = tiny_train.features[0][:6], tiny_train.features[1][:10]
    query, longer = "a red circle rises", "first a red circle rises then a blue square falls"
    alone = model.score(query, [short])[0]
    assert np.isclose(model.score(query, [short, long_])[0], alone, atol=1e-5)
    tokens = model.text.tokenize([query, longer])
    with torch.no_grad():
        words = model.text.words(**tokens)
        feats, times, mask = pad_clips([short, short])
        batch = model(words, tokens["attention_mask"], feats, times, mask).logits
    assert np.isclose(float(batch[0]), alone, atol=1e-5)


def test_motion_statistics_scale_the_changes_within_clips(tiny_train: ClipSet) -> None:
    model = Reranker(load_config({**TINY, "motion": "deviation"}), tiny_train.features[0].shape[1])
    model.fit_feature_stats(tiny_train.features)
    video = model.video
    x = (torch.as_tensor(tiny_train.features[0]) - video.feat_mean) / video.feat_std
    changes = video.changes(x[None], torch.ones(1, len(x), dtype=torch.bool))[0]
    assert torch.allclose(changes.sum(0), torch.zeros(x.shape[1]), atol=1e-4)  # about the mean
    # within-clip changes are a fraction of each dimension's spread over the training set
    assert bool((video.motion_std < 1.0).all()) and float(video.motion_std.min()) > 0.0
    with pytest.raises(ConfigError, match="motion"):
        load_config({"motion": "optical_flow"})


def test_reads_the_retrieval_models_frame_states(tiny_train: ClipSet, tiny_val: ClipSet,
                                                 tmp_path: Path) -> None:  # fmt: skip
    """frames = "retrieval": the retrieval model's frame transformer is copied in, stays frozen
    while the rest learns, and is saved with the re-ranker (same scores after loading)."""
    from video_mm.data.vocab import Vocabulary
    from video_mm.rerank.training import train_reranker
    from video_mm.retrieval.model import RetrievalModel
    from video_mm.retrieval.model import load_config as retrieval_config
    from video_mm.train.loop import TrainConfig

    torch.manual_seed(0)
    vocab = Vocabulary.build([c for caps in tiny_train.captions for c in caps], min_count=1)
    dual = RetrievalModel(retrieval_config({"embed_dim": 32, "video": {
        "pooling": "transformer", "hidden": 32, "layers": 1, "heads": 2}}),
        tiny_train.features[0].shape[1], vocab).eval()  # fmt: skip
    run = RerankTrainConfig(
        train=TrainConfig(epochs=3, lr=2e-3, warmup_steps=5, progress=False, device="cpu"),
        negatives=["in_batch", "hard", "swapped"], batch_size=32, pairs_per_clip=2,
        prior_weights=[0.0, 1.0],
    )  # fmt: skip
    config = {**TINY, "name": "on-states", "frames": "retrieval", "motion": "delta"}
    model, result = train_reranker(config, tiny_train, tiny_val, dual, out_dir=tmp_path / "run",
                                   run=run)  # fmt: skip
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert model.frames is not None and model.video.feat_mean.shape == (32,)
    for key, value in dual.video.pool.state_dict().items():
        assert torch.equal(model.frames.pool.state_dict()[key], value), key
    loaded = from_pretrained(result.best_dir, device="cpu")
    query = tiny_val.captions[0][0]
    assert np.array_equal(loaded.score(query, tiny_val.features),
                          model.score(query, tiny_val.features))  # fmt: skip
    with pytest.raises(ConfigError, match="retrieval"):
        train_reranker(config, tiny_train, tiny_val, None, out_dir=tmp_path / "none", run=run)


def test_reversed_negative_is_the_caption_on_its_clip_played_backwards(tiny_train: ClipSet) -> None:
    model = Reranker(load_config(TINY), tiny_train.features[0].shape[1])
    run = RerankTrainConfig(negatives=["reversed"], batch_size=8)
    batch = next(iter(Epoch(model, tiny_train, run, 0, None, WordCache(model))))
    labels = batch["labels"].tolist()
    assert 0.0 in labels and 1.0 in labels
    for row, label in enumerate(labels):
        if label == 0.0:  # follows its positive: the same clip, frames in the other order
            n = int(batch["frame_mask"][row].sum())
            assert labels[row - 1] == 1.0 and int(batch["frame_mask"][row - 1].sum()) == n
            assert torch.equal(batch["feats"][row, :n], batch["feats"][row - 1, :n].flip(0))
            assert torch.equal(batch["words"][row], batch["words"][row - 1])


def test_learns_over_cells_on_held_out_clips(trained_cells, cells_test: ClipSet,
                                             tmp_path: Path) -> None:  # fmt: skip
    """grid_pool = 2: each event is in a cell of its own and the rest is background; the model
    reads cells as tokens, tells matched from mismatched pairs on new clips, and saving keeps
    its scores."""
    model, result = trained_cells
    assert model.video.cells == 4 and model.feat_dim == cells_test.features[0].shape[1]
    assert held_out_accuracy(model, cells_test) >= 0.75  # chance: 0.5
    loaded = from_pretrained(result.best_dir, device="cpu")
    assert loaded.config.grid_pool == 2
    query = cells_test.captions[0][0]
    assert np.array_equal(model.score(query, cells_test.features),
                          loaded.score(query, cells_test.features))  # fmt: skip
    words, grid, _ = loaded.co_attention(query, cells_test.features[0])
    T = len(cells_test.features[0])
    assert grid.shape == (len(words), T)  # a frame's cells summed: word x frame
    np.testing.assert_allclose(grid.sum(1), 1.0, atol=0.1)  # [VID] takes the rest


def test_cells_are_tokens_with_their_place(tiny_train: ClipSet) -> None:
    """Each cell of each frame is a token (T x k x k + [VID]); moving an object to another cell
    changes the score, where a pooled frame could not tell; features that are not k x k cells
    of one width are a typed error."""
    torch.manual_seed(0)
    D = tiny_train.features[0].shape[1]
    model = Reranker(load_config({**TINY, "grid_pool": 2}), 4 * D).eval()
    x = np.zeros((6, D, 4), np.float32)
    x[:, :, 0] = tiny_train.features[0][:6]
    moved = x[:, :, [3, 1, 2, 0]]
    feats, times, mask = pad_clips([x.reshape(6, -1)])
    states, full = model.video(feats, times, mask)
    assert states.shape == (1, 1 + 6 * 4, TINY["hidden"]) and bool(full.all())
    scores = model.score("a red circle rises", [x.reshape(6, -1), moved.reshape(6, -1)])
    assert scores[0] != scores[1]
    with pytest.raises(ConfigError, match="cells"):
        Reranker(load_config({**TINY, "grid_pool": 2}), 30)
    with pytest.raises(ConfigError, match="grid_pool"):
        load_config({"grid_pool": 2, "frames": "retrieval"})


def test_listwise_loss_is_a_softmax_over_each_rows_pairs() -> None:
    # two rows: a matched pair and two negatives, then a matched pair and one negative
    logits = torch.tensor([2.0, 0.5, 1.0, 3.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    first = -torch.log_softmax(torch.tensor([2.0, 0.5, 1.0]), 0)[0]
    second = -torch.log_softmax(torch.tensor([3.0, 0.0]), 0)[0]
    assert torch.isclose(listwise_loss(logits, labels), (first + second) / 2)


def test_listwise_training_ranks_own_captions_first_on_held_out_clips(
    tiny_train: ClipSet, tiny_val: ClipSet, tiny_test: ClipSet, tmp_path: Path
) -> None:
    model, result = _train({"name": "tiny-listwise", **TINY}, tiny_train, tiny_val, tmp_path,
                           loss="listwise")  # fmt: skip
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    n = len(tiny_test)
    # each clip's own caption against the next clip's, on the clip: a ranking, not a sign
    right = [model.score(tiny_test.captions[i][0], [tiny_test.features[i]])[0]
             > model.score(tiny_test.captions[(i + 1) % n][0], [tiny_test.features[i]])[0]
             for i in range(n)]  # fmt: skip
    assert np.mean(right) >= 0.75  # chance: 0.5
    assert "listwise loss" in (result.best_dir / "README.md").read_text()


def test_rows_get_hard_per_row_hard_negatives(tiny_train: ClipSet) -> None:
    model = Reranker(load_config(TINY), tiny_train.features[0].shape[1])
    hard = [[np.array([(i + j) % len(tiny_train) for j in range(1, 6)])
             for _ in caps] for i, caps in enumerate(tiny_train.captions)]  # fmt: skip
    run = RerankTrainConfig(negatives=["hard"], batch_size=8, hard_per_row=3, loss="listwise")
    batch = next(iter(Epoch(model, tiny_train, run, 0, hard, WordCache(model))))
    labels = batch["labels"]
    assert int(labels.sum()) == 8 and len(labels) == 8 * 4  # each row: its pair + 3 hard


def test_first_stage_logits_join_the_training_pairs(tiny_train: ClipSet) -> None:
    """train_prior: each pair's dual-encoder logit (its clip played backwards for a reversed
    negative), times the weight, is what the loss adds to the match logit."""
    from video_mm.data.vocab import Vocabulary
    from video_mm.rerank.training import dual_logit_scale
    from video_mm.retrieval.model import RetrievalModel
    from video_mm.retrieval.model import load_config as retrieval_config

    torch.manual_seed(0)
    vocab = Vocabulary.build([c for caps in tiny_train.captions for c in caps], min_count=1)
    dual = RetrievalModel(retrieval_config({"embed_dim": 32, "video": {
        "pooling": "transformer", "hidden": 32, "layers": 1, "heads": 2}}),
        tiny_train.features[0].shape[1], vocab).eval()  # fmt: skip
    stage = FirstStage(dual, tiny_train)
    text, clip = tiny_train.captions[3][0], tiny_train.features[3]
    got = stage([(text, 3, 1.0, False), (text, 3, 0.0, True)]).numpy()
    t = dual.embed_texts([text])[0]
    want = dual_logit_scale(dual) * np.array([t @ dual.embed_videos([clip])[0],
                                              t @ dual.embed_videos([clip[::-1].copy()])[0]])
    assert np.allclose(got, want, atol=1e-5) and abs(got[0] - got[1]) > 1e-6

    model = Reranker(load_config(TINY), tiny_train.features[0].shape[1])
    run = RerankTrainConfig(negatives=["in_batch", "reversed"], batch_size=8, train_prior=0.5)
    batch = next(iter(Epoch(model, tiny_train, run, 0, None, WordCache(model), first_stage=stage)))
    assert batch["prior"].shape == batch["labels"].shape
    with torch.no_grad():
        plain = loss_fn(model, {k: v for k, v in batch.items() if k != "prior"})
        assert not torch.isclose(loss_fn(model, batch), plain)
