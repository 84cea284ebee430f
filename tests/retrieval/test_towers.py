"""Towers: unit vectors out, padding ignored, only the transformer sees frame order."""

from __future__ import annotations

import pytest
import torch

from video_mm.data.vocab import Vocabulary
from video_mm.errors import ModelError
from video_mm.retrieval.towers import (
    LearnedTextConfig,
    LearnedTextTower,
    VideoTower,
    VideoTowerConfig,
)


@pytest.mark.parametrize("pooling", ["mean", "attention", "transformer"])
def test_video_tower_gives_unit_vectors_and_ignores_padding(pooling):
    torch.manual_seed(0)
    tower = VideoTower(24, 16, VideoTowerConfig(pooling=pooling, hidden=32, heads=2)).eval()
    feats = torch.rand(3, 5, 24)
    mask = torch.ones(3, 5, dtype=torch.bool)
    out = tower(feats, mask)
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    padded = torch.cat([feats, torch.rand(3, 4, 24)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    assert torch.allclose(tower(padded, pad_mask), out, atol=1e-5)


def test_only_the_transformer_tells_frame_order_apart():
    torch.manual_seed(0)
    feats = torch.rand(1, 6, 24)
    mask = torch.ones(1, 6, dtype=torch.bool)
    for pooling, order_matters in (("mean", False), ("attention", False), ("transformer", True)):
        tower = VideoTower(24, 16, VideoTowerConfig(pooling=pooling, hidden=32, heads=2)).eval()
        same = torch.allclose(tower(feats, mask), tower(feats.flip(1), mask), atol=1e-5)
        assert same != order_matters, pooling


def test_video_tower_refuses_bad_shapes():
    tower = VideoTower(24, 16, VideoTowerConfig(pooling="mean"))
    with pytest.raises(ModelError):
        tower(torch.rand(2, 5, 23), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ModelError):
        tower(torch.rand(2, 5, 24), torch.zeros(2, 5, dtype=torch.bool))


@pytest.mark.parametrize("encoder", ["gru", "mean"])
def test_learned_text_tower_encodes_captions(encoder):
    vocab = Vocabulary.build(["a red circle moves left", "a blue square grows"])
    tower = LearnedTextTower(vocab, 16, LearnedTextConfig(word_dim=8, hidden=16, encoder=encoder))
    tower.eval()
    out = tower.encode(["a red circle", "a blue square grows quickly", "unknown words"])
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    # a caption's vector does not depend on what else is in the batch (padding is masked)
    alone = tower.encode(["a red circle"])
    assert torch.allclose(alone[0], out[0], atol=1e-5)
