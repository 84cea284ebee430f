"""A dataset's features come from each record's window of its file, and the cache keeps windows
apart; clips of the standard datasets (already cut from their source video) are read whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import BLUE_WINDOW, RED_WINDOW
from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import load_dataset
from video_mm.data.features import extract_features
from video_mm.features.cache import FeatureCache
from video_mm.features.extract import FeatureExtractor, cache_key, extract_video
from video_mm.records import ClipFeatures
from video_mm.settings import FeatureSettings

RECIPE = FeatureRecipe(backbone="resnet18", n_frames=3, size=48)  # "none": seeded random weights
SETTINGS = FeatureSettings(batch_size=8)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(SETTINGS.model_copy(update={"backbone": RECIPE.backbone}))


def direct(
    video: Path, extractor: FeatureExtractor, window: tuple[float, float] | None = None
) -> ClipFeatures:
    """Features of ``window`` of ``video`` sampled directly, as the recipe says."""
    start, end = window or (None, None)
    return extract_video(video, RECIPE.sampling(), extractor=extractor, start=start, end=end)


def test_each_span_of_one_file_gets_its_window_s_features(
    spans_manifest: Path, red_blue_video: Path, extractor: FeatureExtractor, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    red, blue, past_end = load_dataset(spans_manifest)
    cache_dir = tmp_path / "cache"
    feats = extract_features([red, blue, past_end], RECIPE, settings=SETTINGS,
                             cache_dir=cache_dir, progress=False)  # fmt: skip
    assert sorted(feats) == sorted([red.video_id, blue.video_id])  # the third is skipped
    assert f"skipped {past_end.video_id}" in capsys.readouterr().err
    for record, window in ((red, RED_WINDOW), (blue, BLUE_WINDOW)):
        want = direct(red_blue_video, extractor, window).features
        np.testing.assert_allclose(feats[record.video_id], want, rtol=1e-4, atol=1e-4)
    assert np.abs(feats[red.video_id] - feats[blue.video_id]).max() > 1.0  # features ~8

    cache = FeatureCache(cache_dir)
    assert len(cache.fs.glob(f"{cache.root}/*/*.safetensors")) == 2  # one entry a window
    again = extract_features([blue, red], RECIPE, settings=SETTINGS, cache_dir=cache_dir,
                             progress=False)  # fmt: skip
    assert all(np.array_equal(again[v], feats[v]) for v in feats)


@pytest.mark.parametrize("fmt", ["msrvtt", "msvd"])
def test_precut_clips_are_read_whole_under_their_old_cache_key(
    fmt: str, precut_datasets: dict[str, Path], red_blue_video: Path,
    extractor: FeatureExtractor, tmp_path: Path,
) -> None:  # fmt: skip
    """Their annotation times (100-104 s, in the source video) are not applied to the cut file:
    features are the whole file's, and cached where a whole file's always were."""
    (record,) = load_dataset(precut_datasets[fmt])
    feats = extract_features([record], RECIPE, settings=SETTINGS, cache_dir=tmp_path,
                             progress=False)  # fmt: skip
    whole = direct(red_blue_video, extractor)
    np.testing.assert_allclose(feats[record.video_id], whole.features, rtol=1e-4, atol=1e-4)
    key = cache_key(red_blue_video, RECIPE.sampling(), extractor)
    assert key.sampler == RECIPE.sampling().model_dump()  # no window in a whole file's key
    assert FeatureCache(tmp_path).get(key) is not None
