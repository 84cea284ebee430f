"""Extraction on real msvd14 clips: shapes, timestamps, cache, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.errors import VideoError
from video_mm.features.backbones import create_backbone
from video_mm.features.cache import FeatureCache
from video_mm.features.extract import FeatureExtractor, extract_video, extract_videos
from video_mm.io.sampling import sample_frames
from video_mm.records import ClipFeatures
from video_mm.settings import FeatureSettings, SamplingSettings

SMALL = FeatureSettings(backbone="mobilenet_v3_small", batch_size=8)
FOUR = SamplingSettings(n_frames=4)


@pytest.fixture(scope="module")
def small() -> FeatureExtractor:
    return FeatureExtractor(SMALL, device="cpu")


@pytest.mark.parametrize("kind", ["avi", "gif"])
def test_real_clip_shapes_and_timestamps(
    kind: str, avi_clips: list[Path], gif_clip: Path
) -> None:
    clip = avi_clips[0] if kind == "avi" else gif_clip
    sampling = SamplingSettings(n_frames=6)
    feats = extract_video(clip, sampling, extractor=FeatureExtractor(SMALL, grid=True))
    frames = sample_frames(clip, n=6, size=sampling.size)
    assert feats.features.shape == (6, 576) and feats.features.dtype == np.float32
    assert feats.grid is not None and feats.grid.shape == (6, 576, 7, 7)
    assert np.isfinite(feats.features).all() and feats.features.std() > 0
    np.testing.assert_array_equal(feats.times, frames.times)
    assert (np.diff(feats.times) > 0).all() and feats.times[0] >= 0
    assert feats.backbone == "mobilenet_v3_small"


def test_cache_hits_on_second_run_and_misses_when_a_key_part_changes(
    tmp_path: Path, avi_clips: list[Path], small: FeatureExtractor
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    clip = avi_clips[0]
    first = extract_video(clip, FOUR, extractor=small, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    second = extract_video(clip, FOUR, extractor=small, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.times, second.times)

    # a renamed copy of the same bytes is the same video
    copy = tmp_path / "renamed.avi"
    copy.write_bytes(clip.read_bytes())
    extract_video(copy, FOUR, extractor=small, cache=cache)
    assert cache.hits == 2

    weights = tmp_path / "other.pth"
    torch.save({k: v + 0.01 for k, v in small.backbone.state_dict().items()}, weights)
    changes = [
        dict(source=avi_clips[1]),  # the video
        dict(sampling=SamplingSettings(n_frames=5)),  # the sampler
        dict(start=1.0, end=2.0),  # a window of the video
        dict(extractor=FeatureExtractor(SMALL, grid=True)),  # grid requested
        dict(extractor=FeatureExtractor(SMALL.model_copy(update={"weights": str(weights)}))),
        dict(extractor=FeatureExtractor(SMALL.model_copy(update={"backbone": "regnet_y_400mf"}))),
    ]
    for i, change in enumerate(changes):
        args = {"source": clip, "sampling": FOUR, "extractor": small, **change}
        extract_video(args.pop("source"), args.pop("sampling"), cache=cache, **args)
        assert (cache.hits, cache.misses) == (2, 2 + i), change


def test_batched_and_one_by_one_agree(avi_clips: list[Path]) -> None:
    """Frames of several clips packed into batches of 5 (crossing clip boundaries) give the
    features of each frame run alone."""
    backbone = create_backbone("resnet18")
    batched = FeatureExtractor(FeatureSettings(batch_size=5), backbone=backbone, device="cpu")
    clips = [sample_frames(c, n=n, size=224) for c, n in zip(avi_clips, (3, 7, 4), strict=False)]
    together = list(batched.extract(clips))
    single = FeatureExtractor(FeatureSettings(batch_size=1), backbone=backbone, device="cpu")
    for clip, feats in zip(clips, together, strict=True):
        assert feats.features.shape == (len(clip), 512)
        one = np.stack([single.extract_frames(clip.frames[i : i + 1])[0] for i in range(len(clip))])
        np.testing.assert_allclose(feats.features, one, rtol=1e-4, atol=1e-4)


def test_one_bad_video_is_reported_and_the_rest_continue(
    avi_clips: list[Path], bad_video: Path, small: FeatureExtractor
) -> None:
    sources = [avi_clips[0], bad_video, avi_clips[1]]
    results = list(extract_videos(sources, FOUR, small))
    assert [s for s, _ in results] == sources
    assert isinstance(results[0][1], ClipFeatures) and isinstance(results[2][1], ClipFeatures)
    assert isinstance(results[1][1], VideoError) and str(bad_video) in str(results[1][1])
    with pytest.raises(VideoError):
        extract_video(bad_video, FOUR, extractor=small)


def test_decoding_runs_ahead_by_at_most_the_queue(avi_clips: list[Path]) -> None:
    """The producer decodes ahead of inference, but never more than ``queue_size`` clips."""
    settings = SMALL.model_copy(update={"queue_size": 2, "batch_size": 2})
    ex = FeatureExtractor(settings, device="cpu")
    loaded: list[int] = []

    def load(i: int):
        loaded.append(i)
        return sample_frames(avi_clips[i % len(avi_clips)], n=2, size=112)

    for i, (job, feats) in enumerate(ex.run(range(8), load)):
        assert job == i and isinstance(feats, ClipFeatures)
        # beyond the clip just yielded: 2 queued, and 1 decoded that waits to be queued
        assert len(loaded) - (i + 1) <= 2 + 1


def test_a_failing_iterator_raises_in_the_caller(small: FeatureExtractor) -> None:
    def broken():
        raise RuntimeError("disk gone")
        yield

    with pytest.raises(RuntimeError, match="disk gone"):
        list(small.extract(broken()))


@pytest.mark.slow
def test_compiled_extractor_matches_eager(avi_clips: list[Path]) -> None:
    """``features.compile``: same features; a short last batch is padded, not recompiled."""
    clips = [sample_frames(c, n=n, size=224) for c, n in zip(avi_clips, (3, 6), strict=False)]
    eager = FeatureExtractor(SMALL, device="cpu")
    compiled = FeatureExtractor(SMALL.model_copy(update={"compile": True}), device="cpu")
    for a, b in zip(eager.extract(clips), compiled.extract(clips), strict=True):
        np.testing.assert_allclose(b.features, a.features, rtol=1e-3, atol=1e-3)


def test_threads_setting_sets_the_inference_threads() -> None:
    """``features.threads`` (e.g. one inference thread beside the decoding thread on two cores)
    is torch's intra-op thread count once the extractor is built; 0 leaves it alone."""
    before = torch.get_num_threads()
    try:
        FeatureExtractor(SMALL.model_copy(update={"threads": 1}), device="cpu")
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        FeatureExtractor(SMALL, device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
