"""Mean-pool baseline on real clips: it learns their captions; the video enters only as input."""

from __future__ import annotations

import torch

from video_mm.models import create_model, greedy

SMALL = {"embed_dim": 32, "hidden_dim": 64, "dropout": 0.0}


def test_overfits_real_clips(real_batch, overfit) -> None:
    torch.manual_seed(0)
    model = create_model({"arch": "meanpool"} | SMALL, len(real_batch.vocab), 512)
    losses = overfit(model, real_batch, steps=150)
    assert losses[0] > 4.0  # about log(vocabulary) at the start
    assert losses[-1] < 0.05
    hyps = greedy(model, real_batch.feats, real_batch.mask)
    assert [real_batch.vocab.decode(h.tokens) for h in hyps] == real_batch.captions


def test_video_vector_is_the_mean_of_real_frames(real_batch) -> None:
    torch.manual_seed(0)
    model = create_model({"arch": "meanpool"} | SMALL, len(real_batch.vocab), 512).eval()
    feats, mask = real_batch.feats, real_batch.mask
    state = model.init_state(feats, mask)
    assert (state["h"] == 0).all() and (state["c"] == 0).all()
    shuffled = feats[:, torch.randperm(feats.shape[1])]
    last = int(mask[-1].sum())
    # Order does not matter to a mean; padding content does not enter it.
    full = mask[:-1]
    torch.testing.assert_close(model.init_state(feats[:-1], full)["v"],
                               model.init_state(shuffled[:-1], full)["v"])
    noisy = feats.clone()
    noisy[-1, last:] = 100.0
    torch.testing.assert_close(model.init_state(noisy, mask)["v"], state["v"])
    assert not torch.allclose(model.init_state(feats.flip(0), mask.flip(0))["v"], state["v"])
