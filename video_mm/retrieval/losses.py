"""Symmetric InfoNCE over in-batch negatives, with a learnable temperature and hard negatives.

Row ``i`` of ``video`` and of ``text`` is a matching pair; every other row of the batch is a
negative. The loss is the mean of the video->text and text->video cross-entropies over the
similarity matrix scaled by ``exp(logit_scale)`` (CLIP's parametrisation of 1/temperature, clamped
so it cannot blow up). Hard negatives are an extra column per row: ``hard_text[i]`` is a caption
of a clip similar to clip ``i`` (so not its own), ``hard_video[i]`` that similar clip itself; the
model must rank the true partner above them, as noise-contrastive estimation with chosen noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_LOGIT_SCALE = math.log(100.0)


def info_nce(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    *,
    hard_text: Tensor | None = None,
    hard_video: Tensor | None = None,
) -> Tensor:
    """``video``, ``text``: ``[B, E]`` unit vectors, row ``i`` a pair. Returns a scalar."""
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    sim = video @ text.t()
    v2t, t2v = sim, sim.t()
    if hard_text is not None:
        v2t = torch.cat([v2t, (video * hard_text).sum(-1, keepdim=True)], dim=1)
    if hard_video is not None:
        t2v = torch.cat([t2v, (text * hard_video).sum(-1, keepdim=True)], dim=1)
    target = torch.arange(len(video), device=video.device)
    return 0.5 * (F.cross_entropy(scale * v2t, target) + F.cross_entropy(scale * t2v, target))
