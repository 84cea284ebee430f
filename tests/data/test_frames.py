"""A dataset's sampled frames for end-to-end training: decoded once, then read from the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import load_dataset
from video_mm.data.frames import sample_dataset_frames
from video_mm.features.cache import FeatureCache


def test_frames_are_sampled_once_then_cached(shared_data: Path, tmp_path: Path) -> None:
    records = load_dataset(shared_data / "msvd14")[:3]
    recipe = FeatureRecipe(n_frames=4, size=48)
    first = sample_dataset_frames(records, recipe, cache_dir=tmp_path, progress=False)
    assert sorted(first) == sorted(r.video_id for r in records)
    for frames in first.values():
        assert frames.dtype == np.uint8 and frames.shape[0] == 4 and min(frames.shape[1:3]) == 48
    again = sample_dataset_frames(records, recipe, cache_dir=tmp_path, progress=False)
    assert all(np.array_equal(first[v], again[v]) for v in first)
    cache = FeatureCache(tmp_path)
    assert len(cache.fs.glob(f"{cache.root}/*/*.safetensors")) == 3  # one entry a video


def test_an_unreadable_video_is_skipped(shared_data: Path, tmp_path: Path) -> None:
    records = load_dataset(shared_data / "msvd14")[:2]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    records[0] = replace(records[0], path=broken)
    frames = sample_dataset_frames(records, FeatureRecipe(n_frames=2, size=32), progress=False)
    assert list(frames) == [records[1].video_id]
