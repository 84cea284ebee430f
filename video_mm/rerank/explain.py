"""Co-attention pictures: which frames each word of a query looked at, and whether they match.

The same figure as the captioner's attention pictures (:func:`video_mm.train.explain.draw`): the
sampled frames in a strip with their times, the query as the title, and a heat map with one row
per word and one column per frame: the re-ranker's word-to-frame co-attention (the text stream's
cross-attention over the video stream in the two-stream model, the words' self-attention over the
frame tokens in the single-stream one; mean over heads and layers, renormalised over the frames;
a re-ranker that reads k x k cells a frame has its cells' attention summed into their frame's).
The match probability is printed under it with the model's name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from video_mm.artifacts import load_recipe, pool_grid, warn_precision
from video_mm.errors import ConfigError
from video_mm.settings import FeatureSettings


def explain_match(
    video: Path | str, model_dir: Path | str, query: str, out: Path | str, *,
    feature_settings: FeatureSettings | None = None,
) -> tuple[float, list[str]]:  # fmt: skip
    """Draw ``query``'s co-attention over ``video``'s frames to ``out`` (PNG); returns the match
    probability and the words drawn."""
    from video_mm.features.extract import FeatureExtractor
    from video_mm.io.sampling import sample_frames
    from video_mm.rerank.model import from_pretrained
    from video_mm.rerank.stored import relative_times
    from video_mm.train.explain import draw

    if not query.strip():
        raise ConfigError("explaining a re-ranker needs a query (--query)")
    model = from_pretrained(model_dir)
    recipe = model.recipe or load_recipe(model_dir)
    sampling = recipe.sampling()
    batch = sample_frames(video, sampler=sampling.sampler, n=sampling.n_frames, size=sampling.size)
    settings = recipe.feature_settings(feature_settings)
    warn_precision(model_dir, recipe, settings)
    k = recipe.grid_pool
    clip = next(iter(FeatureExtractor(settings, grid=k > 1).extract([batch])))
    start, end = float(batch.times[0]), float(batch.times[-1])
    times = relative_times(batch.times, start, end + (end - start) / max(len(batch.times) - 1, 1))
    feats = pool_grid(clip.grid, k) if k > 1 else clip.features
    words, weights, logit = model.co_attention(query, recipe.apply(feats), times)
    weights = weights / np.clip(weights.sum(1, keepdims=True), 1e-9, None)
    probability = 1.0 / (1.0 + math.exp(-logit))
    draw(batch, query, words, weights, None, Path(out),
         f"{model.name} ({model.config.variant.replace('_', '-')}): match p = {probability:.2f}")
    return probability, words
