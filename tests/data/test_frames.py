"""A dataset's sampled frames for end-to-end training: decoded once (within each record's window of
its file), then read from the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import BLUE_WINDOW, RED_WINDOW
from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import load_dataset
from video_mm.data.frames import sample_dataset_frames
from video_mm.features.cache import FeatureCache
from video_mm.io.sampling import sample_frames


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


def test_each_span_of_one_file_gets_its_window_s_frames(
    spans_manifest: Path, red_blue_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    red, blue, past_end = load_dataset(spans_manifest)
    recipe = FeatureRecipe(n_frames=3, size=48)
    frames = sample_dataset_frames([red, blue, past_end], recipe, cache_dir=tmp_path,
                                   progress=False)  # fmt: skip
    assert sorted(frames) == sorted([red.video_id, blue.video_id])
    assert f"skipped {past_end.video_id}" in capsys.readouterr().err
    for record, window, colour in ((red, RED_WINDOW, 0), (blue, BLUE_WINDOW, 2)):
        start, end = window
        want = sample_frames(red_blue_video, n=3, size=48, start=start, end=end).frames
        assert np.array_equal(frames[record.video_id], want)
        assert (frames[record.video_id].mean(axis=(0, 1, 2)).argmax()) == colour  # red / blue
    cache = FeatureCache(tmp_path)
    assert len(cache.fs.glob(f"{cache.root}/*/*.safetensors")) == 2  # one entry a window
    again = sample_dataset_frames([blue, red], recipe, cache_dir=tmp_path, progress=False)
    assert all(np.array_equal(again[v], frames[v]) for v in frames)


@pytest.mark.parametrize("fmt", ["msrvtt", "msvd"])
def test_precut_clips_are_read_whole(
    fmt: str, precut_datasets: dict[str, Path], red_blue_video: Path
) -> None:
    (record,) = load_dataset(precut_datasets[fmt])
    frames = sample_dataset_frames([record], FeatureRecipe(n_frames=3, size=48), progress=False)
    whole = sample_frames(red_blue_video, n=3, size=48).frames
    assert np.array_equal(frames[record.video_id], whole)
