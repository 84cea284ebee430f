"""Sampled frames of a dataset's videos, for models that train their CNN (an end-to-end LRCN).

Such a model reads frames, not features, so what a training run would otherwise compute again
every epoch is the decoding: each record's frames (within its ``start``/``end`` window when it has
one) are sampled once as the recipe says (uniform, ``n_frames``, short side ``size``), kept as uint8
``[T, H, W, 3]`` and cached by video sha256 and window beside the features
(:func:`video_mm.features.cache.frames_key`). The model's own ``preprocess`` turns
them into its input per batch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import VideoRecord
from video_mm.errors import VideoMMError


def sample_dataset_frames(
    records: Sequence[VideoRecord],
    recipe: FeatureRecipe,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """uint8 frames ``[T, H, W, 3]`` of each record's video (or window of it), by video id,
    sampled as :func:`video_mm.data.features.extract_features` samples them for features. A video
    that cannot be read, or whose window starts after the file ends, is skipped with a warning
    line rather than ending the run."""
    from video_mm.features.cache import FeatureCache, file_sha256, frames_key, window_sampler
    from video_mm.features.extract import Window, sample_window

    cache = FeatureCache(cache_dir) if cache_dir else None
    sampling = recipe.sampling()
    out: dict[str, np.ndarray] = {}
    todo = [r for r in records if r.path is not None]
    for r in tqdm(todo, desc="frames", disable=not progress):
        try:
            key = frames_key(file_sha256(r.path),
                             window_sampler(sampling.model_dump(), r.start, r.end))  # fmt: skip
        except OSError:
            key = None  # unreadable: sample_window below raises the typed error
        frames = cache.get_frames(key) if cache is not None and key is not None else None
        if frames is None:
            try:
                frames = sample_window(Window(r.path, r.start, r.end), sampling).frames
            except VideoMMError as exc:
                tqdm.write(f"skipped {r.video_id}: {exc}", file=sys.stderr)
                continue
            if cache is not None and key is not None and len(frames):
                cache.put_frames(key, frames)
        if len(frames):
            out[r.video_id] = frames
    if missing := len(records) - len(todo):
        tqdm.write(f"{missing} videos have no file on disk and were left out", file=sys.stderr)
    return out
