"""Per-frame features of a dataset's videos, computed the way a model's recipe says.

Training and evaluation (captioners and retrieval alike) read a dataset through here: each
record's video, or its ``start``/``end`` window within the file when it has one (see
:class:`~video_mm.data.datasets.VideoRecord`), goes through :mod:`video_mm.features` (batched,
decode overlapped, cached by video sha256 plus the window) and is reduced as the
:class:`~video_mm.artifacts.FeatureRecipe` says (globally pooled, or the CNN grid pooled to k x k
cells).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from video_mm.artifacts import FeatureRecipe, pool_grid
from video_mm.data.datasets import VideoRecord
from video_mm.errors import VideoMMError
from video_mm.settings import FeatureSettings


def extract_features(
    records: Sequence[VideoRecord],
    recipe: FeatureRecipe,
    *,
    settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``[T, D]`` features of each record's video (or its start/end window), by video id.

    Goes through :mod:`video_mm.features` (batched, decode overlapped, cached by video sha256 and
    window). A video that cannot be read, or whose window starts after the file ends, is skipped
    with a warning line rather than ending the run.
    """
    from video_mm.features.cache import FeatureCache
    from video_mm.features.extract import FeatureExtractor, Window, extract_videos

    settings = recipe.feature_settings(settings)
    extractor = FeatureExtractor(settings, grid=recipe.grid_pool > 1)
    cache = FeatureCache(cache_dir) if cache_dir else None
    out: dict[str, np.ndarray] = {}
    todo = [r for r in records if r.path is not None]
    missing = len(records) - len(todo)
    bar = tqdm(total=len(todo), desc="features", disable=not progress)
    windows = [Window(r.path, r.start, r.end) for r in todo]
    runs = extract_videos(windows, recipe.sampling(), extractor, cache=cache)
    for r, (_, feats) in zip(todo, runs, strict=True):
        bar.update()
        if isinstance(feats, VideoMMError):
            tqdm.write(f"skipped {r.video_id}: {feats}", file=sys.stderr)
            continue
        if len(feats.features) == 0:
            continue
        out[r.video_id] = (
            pool_grid(feats.grid, recipe.grid_pool)
            if recipe.grid_pool > 1
            else feats.features.astype(np.float32)
        )
    bar.close()
    if missing:
        tqdm.write(f"{missing} videos have no file on disk and were left out", file=sys.stderr)
    return out
