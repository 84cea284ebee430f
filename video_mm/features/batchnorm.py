"""A CNN's batch-norm statistics re-estimated on frames of the user's own videos (AdaBN).

A batch norm normalises with the mean and variance of the data its CNN was trained on. Those are
wrong in two cases this project meets: randomly initialised weights (``weights = "none"``, the
offline default), whose statistics are 0 and 1, so no layer is normalised and the features are
dominated by a few growing directions; and a pretrained CNN on videos unlike its training images.
Re-estimating the statistics on the user's frames, nothing else changed (Li et al., "Revisiting
Batch Normalization For Practical Domain Adaptation", 2016), fixes the first and adapts the
second. On the synthetic benchmark a retrieval model on a random ResNet-18's features reached
val t2v R@1 48.2; on the same network with estimated statistics, 53.5 (BENCHMARKS.md, "Frame
encoders").
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from video_mm.errors import ConfigError
from video_mm.features.backbones import Backbone


def batchnorms(backbone: Backbone) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch norm of ``backbone``, in module order."""
    return [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def frame_batches(frames: np.ndarray, batch_size: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``frames`` ``[N, H, W, 3]`` in shuffled batches: a batch of one video's frames would give
    a variance far below the data's, and the estimate averages batches."""
    order = np.random.default_rng(seed).permutation(len(frames))
    for i in range(0, len(order), batch_size):
        yield frames[np.sort(order[i : i + batch_size])]


@torch.no_grad()
def estimate_batchnorm(
    backbone: Backbone, frames: np.ndarray, *, batch_size: int = 64, progress: bool = False
) -> int:
    """Replace every batch norm's running mean and variance in ``backbone`` (in place) with their
    average over uint8 ``frames`` ``[N, H, W, 3]``, fed through its own preprocessing in shuffled
    batches; returns how many frames were read. The weights stay as they were.
    """
    norms = batchnorms(backbone)
    if not norms:
        raise ConfigError(f"backbone {backbone.name} has no batch norm to estimate")
    if len(frames) == 0:
        raise ConfigError("no frames to estimate batch-norm statistics on")
    was_training, momenta = backbone.training, [m.momentum for m in norms]
    backbone.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, each weighted equally
        m.train()
    try:
        for batch in tqdm(frame_batches(frames, batch_size), desc="batch norm", unit="batch",
                          total=-(-len(frames) // batch_size), disable=not progress):
            backbone(backbone.preprocess(torch.from_numpy(batch)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        backbone.train(was_training)
    return len(frames)
