"""Attention weights are a distribution over the real frames (and over grid cells)."""

from __future__ import annotations

import pytest
import torch

from video_mm.errors import ConfigError
from video_mm.models import create_model
from video_mm.models.attention import create_attention

FORMS = [("additive", "separate"), ("dot", "separate"), ("dot", "shared")]


@pytest.mark.parametrize(("kind", "kv"), FORMS)
def test_weights_sum_to_one_and_skip_masked_frames(kind: str, kv: str) -> None:
    torch.manual_seed(0)
    attn = create_attention(kind, query_dim=8, value_dim=6, attn_dim=5, kv=kv)
    values = torch.randn(3, 7, 6)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [True] + [False] * 6])
    context, weights = attn(torch.randn(3, 8), attn.prepare(values), mask)
    assert weights.shape == (3, 7) and context.shape == (3, attn.out_dim)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    assert weights[2, 0] == 1.0


@pytest.mark.parametrize(("kind", "kv"), FORMS)
def test_padding_content_is_ignored(kind: str, kv: str) -> None:
    torch.manual_seed(0)
    attn = create_attention(kind, 8, 6, 5, kv)
    query, values = torch.randn(2, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    noisy = values.clone()
    noisy[:, 3:] = 1e3 * torch.randn(2, 2, 6)
    c1, w1 = attn(query, attn.prepare(values), mask)
    c2, w2 = attn(query, attn.prepare(noisy), mask)
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(w1, w2)


def test_shared_kv_uses_one_projection() -> None:
    shared = create_attention("dot", 8, 6, 5, "shared")
    separate = create_attention("dot", 8, 6, 5, "separate")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(separate) - n(shared) == 6 * 5 + 5
    memory = shared.prepare(torch.randn(1, 4, 6))
    assert torch.equal(memory["keys"], memory["values"])


def test_unknown_forms_are_refused() -> None:
    with pytest.raises(ConfigError):
        create_attention("multiplicative", 8, 6, 5)
    with pytest.raises(ConfigError):
        create_attention("dot", 8, 6, 5, kv="tied")


@pytest.mark.parametrize(("kind", "kv"), FORMS)
def test_captioner_attention_over_frames_and_cells(kind: str, kv: str) -> None:
    torch.manual_seed(0)
    cfg = {"arch": "temporal_attention", "attention": kind, "kv": kv, "spatial": True,
           "embed_dim": 16, "hidden_dim": 16, "attn_dim": 8}
    model = create_model(cfg, vocab_size=12, feat_dim=10).eval()
    feats, grid = torch.randn(2, 5, 10), torch.randn(2, 5, 10, 3, 3)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    out = model(feats, mask, tokens, grid)
    assert out.attention.shape == (2, 4, 5) and out.spatial.shape == (2, 4, 5, 9)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(out.spatial.sum(-1), torch.ones(2, 4, 5))
    assert (out.attention[1, :, 2:] == 0).all()
