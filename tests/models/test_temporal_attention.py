"""SA-LSTM on real clips: it learns their captions with either attention form (and over the CNN
grid); its initial state is computed from the frames; its attention is a distribution over the
real frames."""

from __future__ import annotations

import pytest
import torch

from video_mm.errors import ModelError
from video_mm.models import create_model, greedy

SMALL = {"embed_dim": 32, "hidden_dim": 64, "attn_dim": 32, "dropout": 0.0}
VARIANTS = {
    "additive": {"attention": "additive"},
    "dot-separate": {"attention": "dot", "kv": "separate"},
    "dot-shared": {"attention": "dot", "kv": "shared"},
    "spatial": {"attention": "additive", "spatial": True},
}


def _model(variant: str, vocab_size: int):
    torch.manual_seed(0)
    cfg = {"arch": "temporal_attention"} | SMALL | VARIANTS[variant]
    return create_model(cfg, vocab_size, 512)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_overfits_real_clips(real_batch, overfit, variant: str) -> None:
    model = _model(variant, len(real_batch.vocab))
    spatial = variant == "spatial"
    # lr 5e-3: at 1e-2 Adam overshoots with dot attention (loss 0.05 at step 50, 2.0 at 150, 0.25
    # at 250 on an AVX2 CPU), and the CPU's rounding decided whether it settled in time
    losses = overfit(model, real_batch, steps=250, lr=5e-3, use_grid=spatial)
    assert losses[0] > 4.0
    assert losses[-1] < 0.05
    grid = real_batch.grid if spatial else None
    hyps = greedy(model, real_batch.feats, real_batch.mask, grid=grid)
    assert [real_batch.vocab.decode(h.tokens) for h in hyps] == real_batch.captions
    # After training the weights still form a distribution over the real frames only.
    out = model(real_batch.feats, real_batch.mask, real_batch.tokens, grid)
    B, L = real_batch.tokens.shape
    assert out.attention.shape == (B, L - 1, real_batch.feats.shape[1])
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(B, L - 1))
    assert (out.attention.transpose(1, 2)[~real_batch.mask] == 0).all()
    if spatial:
        assert out.spatial.shape == (B, L - 1, real_batch.feats.shape[1], 16)
        torch.testing.assert_close(out.spatial.sum(-1), torch.ones(out.spatial.shape[:-1]))


def test_h0_and_c0_come_from_the_mean_frame(real_batch) -> None:
    model = _model("additive", len(real_batch.vocab)).eval()
    feats, mask = real_batch.feats, real_batch.mask
    state = model.init_state(feats, mask)
    mean = (feats * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(state["h"], torch.tanh(model.init_h(mean)))
    torch.testing.assert_close(state["c"], torch.tanh(model.init_c(mean)))
    assert not torch.allclose(state["h"], state["c"])  # one layer per state
    changed = feats.clone()
    changed[2] = torch.randn_like(changed[2])
    h = model.init_state(changed, mask)["h"]
    assert not torch.allclose(h[2], state["h"][2])
    torch.testing.assert_close(h[[0, 1, 3, 4, 5]], state["h"][[0, 1, 3, 4, 5]])
    padded = feats.clone()
    padded[-1, int(mask[-1].sum()):] = 50.0  # padding content is not a frame
    torch.testing.assert_close(model.init_state(padded, mask)["h"], state["h"])


def test_spatial_model_needs_the_grid(real_batch) -> None:
    model = _model("spatial", len(real_batch.vocab))
    with pytest.raises(ModelError, match="grid"):
        model(real_batch.feats, real_batch.mask, real_batch.tokens)


def test_bad_inputs_are_refused(real_batch) -> None:
    model = _model("additive", len(real_batch.vocab))
    feats, mask, tokens = real_batch.feats, real_batch.mask, real_batch.tokens
    with pytest.raises(ModelError, match="dim"):
        model(feats[..., :100], mask, tokens)
    with pytest.raises(ModelError, match="at least one"):
        model(feats, torch.zeros_like(mask), tokens)
    with pytest.raises(ModelError, match="mask"):
        model(feats, mask.float(), tokens)


def test_motion_and_time_inputs_respect_each_clips_real_length() -> None:
    """|v_i - v_{i-1}| and relative time use only a clip's real frames: a one-frame clip padded
    into a batch has no motion, and every clip's time runs from 0 at its first frame to 1 at its
    last real one."""
    from video_mm.models.temporal_attention import change, time_features

    feats = torch.tensor([[[0.0], [1.0], [3.0], [6.0]], [[5.0], [0.0], [0.0], [0.0]]])
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert change(feats, mask)[:, :, 0].tolist() == [[1.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    tau = torch.acos(time_features(mask)[..., 4].clamp(-1, 1)) / torch.pi  # cos(pi * tau)
    torch.testing.assert_close(tau[0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    torch.testing.assert_close(tau[1, :3], torch.tensor([0.0, 0.5, 1.0]))
