"""Real inputs for the captioner tests, computed once per session.

Six msvd14 clips, 8 frames each at 112 px, through a randomly initialised resnet18 that keeps its
4x4 grid for spatial attention (its preprocessing crops 112 px instead of 224 to stay cheap): real
videos through the real sampler and extractor, fast enough for CPU. Each clip is paired with its
shortest training caption.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.data.vocab import Vocabulary
from video_mm.models import CaptionModel, caption_loss
from video_mm.settings import FeatureSettings, SamplingSettings

N_CLIPS, N_FRAMES, SIZE = 6, 8, 112


@dataclass
class Batch:
    """Padded tensors of a few clips and one caption each."""

    feats: torch.Tensor  # [B, T, D]
    mask: torch.Tensor  # [B, T]
    grid: torch.Tensor  # [B, T, C, h, w]
    tokens: torch.Tensor  # [B, L]
    captions: list[str]
    vocab: Vocabulary


@pytest.fixture(scope="session")
def msvd14_features(msvd14_videos: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """video id -> (pooled [T, 512], grid [T, 512, 7, 7]) of the first N_CLIPS clips."""
    from video_mm.features.backbones import create_backbone
    from video_mm.features.extract import FeatureExtractor, extract_video

    backbone = create_backbone("resnet18", "none", grid=True)
    backbone.preprocess = replace(backbone.preprocess, resize=SIZE, crop=SIZE)
    extractor = FeatureExtractor(
        FeatureSettings(backbone="resnet18", weights="none", device="cpu", grid=True, cache=False),
        backbone=backbone,
    )
    sampling = SamplingSettings(sampler="uniform", n_frames=N_FRAMES, size=SIZE)
    out = {}
    for path in msvd14_videos[:N_CLIPS]:
        f = extract_video(path, sampling, extractor=extractor)
        out[path.stem] = (f.features, f.grid)
    return out


@pytest.fixture(scope="session")
def vocab(msvd14_captions: dict[str, list[str]]) -> Vocabulary:
    return Vocabulary.build([c for caps in msvd14_captions.values() for c in caps], min_count=1)


@pytest.fixture(scope="session")
def real_batch(msvd14_features, msvd14_captions, vocab) -> Batch:
    """The clips with their shortest caption; the last clip loses its last 3 frames to padding
    so every test also sees a mask at work."""
    ids = sorted(msvd14_features)
    pooled = [torch.from_numpy(msvd14_features[i][0]).float() for i in ids]
    grids = [torch.from_numpy(msvd14_features[i][1]).float() for i in ids]
    pooled[-1], grids[-1] = pooled[-1][:-3], grids[-1][:-3]
    # Random-weight CNN features share a large offset; standardise each channel (as a
    # normalisation layer would) so the clips differ in more than a few directions.
    stacked = torch.cat(pooled)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-6
    cells = torch.cat(grids).transpose(0, 1).flatten(1)  # [C, all cells]
    g_mean, g_std = cells.mean(1)[:, None, None], cells.std(1)[:, None, None] + 1e-6
    T = max(len(p) for p in pooled)
    feats = torch.zeros(len(ids), T, pooled[0].shape[1])
    grid = torch.zeros(len(ids), T, *grids[0].shape[1:])
    mask = torch.zeros(len(ids), T, dtype=torch.bool)
    for b, (p, g) in enumerate(zip(pooled, grids, strict=True)):
        feats[b, : len(p)], mask[b, : len(p)] = (p - mean) / std, True
        grid[b, : len(g)] = (g - g_mean) / g_std
    captions = [min(msvd14_captions[i], key=lambda c: (len(c.split()), c)) for i in ids]
    tokens = torch.from_numpy(vocab.encode_batch(captions))
    return Batch(feats, mask, grid, tokens, captions, vocab)


def _overfit(model: CaptionModel, batch: Batch, steps: int, lr: float = 1e-2,
             use_grid: bool = False) -> list[float]:
    """Train ``model`` on ``batch`` alone with Adam; the loss at every step."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch.feats, batch.mask, batch.tokens, batch.grid if use_grid else None)
        loss = caption_loss(out, batch.tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="session")
def overfit():
    """``overfit(model, batch, steps, lr=1e-2, use_grid=False) -> losses``; leaves it in eval."""
    return _overfit


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one CPU thread is as fast and does not fight other processes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
