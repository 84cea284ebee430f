"""InfoNCE: matched pairs score low, mismatched high; temperature and hard negatives matter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from video_mm.retrieval.losses import MAX_LOGIT_SCALE, info_nce


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def test_aligned_pairs_have_lower_loss_than_shuffled():
    g = torch.Generator().manual_seed(0)
    video = _unit(torch.randn(16, 32, generator=g))
    text = _unit(video + 0.1 * torch.randn(16, 32, generator=g))
    scale = torch.tensor(math.log(1 / 0.07))
    aligned = info_nce(video, text, scale)
    shuffled = info_nce(video, text.roll(1, 0), scale)
    assert aligned < 0.5 < math.log(16) < shuffled


def test_temperature_is_learned_and_clamped():
    video = _unit(torch.randn(8, 16))
    scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    info_nce(video, video.clone(), scale).backward()
    assert scale.grad is not None and scale.grad < 0  # sharper helps when pairs are exact
    huge = torch.tensor(50.0)
    assert torch.isfinite(info_nce(video, video, huge))
    assert math.log(100) == MAX_LOGIT_SCALE


def test_hard_negatives_add_a_column_the_pair_must_beat():
    g = torch.Generator().manual_seed(1)
    video = _unit(torch.randn(8, 16, generator=g))
    text = _unit(video + 0.3 * torch.randn(8, 16, generator=g))
    scale = torch.tensor(math.log(1 / 0.07))
    plain = info_nce(video, text, scale)
    near = _unit(video + 0.3 * torch.randn(8, 16, generator=g))  # as close as the true caption
    assert info_nce(video, text, scale, hard_text=near, hard_video=_unit(near)) > plain
