"""A frame encoder whose batch-norm statistics are estimated on a dataset's frames.

The dataset half of :mod:`video_mm.features.batchnorm`: the frames are sampled as a model's
feature recipe samples them (and cached with the dataset's other frames), so the statistics are
those of what the encoder will be shown; the result is a weights file any recipe names as
``[features] weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import by_split, load_dataset
from video_mm.data.frames import sample_dataset_frames
from video_mm.errors import ConfigError
from video_mm.features.backbones import Fetch, create_backbone, save_backbone
from video_mm.features.batchnorm import batchnorms, estimate_batchnorm


@dataclass
class AdaptedBackbone:
    """What :func:`adapt_batchnorm` wrote."""

    backbone: str
    weights_from: str
    path: Path
    videos: int
    frames: int
    layers: int


def adapt_batchnorm(
    data: Path,
    recipe: FeatureRecipe,
    out: Path,
    *,
    split: str = "train",
    max_frames: int = 4096,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    fetch: Fetch | None = None,
    progress: bool = True,
) -> AdaptedBackbone:
    """Estimate ``recipe``'s backbone's batch-norm statistics on (up to ``max_frames``, spread
    evenly over the videos) frames of ``split`` of dataset ``data``, sampled as ``recipe`` says,
    and save the result to ``out``. Only a held-in split should be used: the statistics are
    learnt from it."""
    chosen = by_split(load_dataset(data), split)
    if not chosen:
        raise ConfigError(f"dataset {data} has no {split!r} videos")
    backbone = create_backbone(recipe.backbone, recipe.weights, fetch=fetch)
    frames = sample_dataset_frames(chosen, recipe, cache_dir=cache_dir, progress=progress)
    if not frames:
        raise ConfigError(f"no readable videos in the {split!r} split of {data}")
    every = np.concatenate(list(frames.values()))
    if len(every) > max_frames:
        every = every[np.linspace(0, len(every) - 1, max_frames).round().astype(int)]
    n = estimate_batchnorm(backbone, every, batch_size=batch_size, progress=progress)
    return AdaptedBackbone(recipe.backbone, recipe.weights, save_backbone(backbone, out),
                           len(frames), n, len(batchnorms(backbone)))
