"""Stage helpers: models read features the way they were trained on them; thumbnails come from
the frames the features decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from video_mm.artifacts import FeatureRecipe
from video_mm.io.sampling import sample_frames
from video_mm.pipeline.stages import (
    FeatureSpec,
    Models,
    features_stage,
    probe_stage,
    segment_stage,
)
from video_mm.records import ClipFeatures
from video_mm.settings import FeatureSettings, SamplingSettings, Settings


def test_models_inputs_apply_the_standardisation_saved_with_the_model() -> None:
    spec = FeatureSpec(FeatureSettings(), SamplingSettings())
    raw = [ClipFeatures(np.array([[3.0, 6.0], [1.0, 2.0]], np.float32), np.zeros(2), "resnet18")]
    models = Models(
        specs={"trained": spec, "plain": spec},
        recipes={"trained": FeatureRecipe(mean=[1.0, 2.0], std=[2.0, 4.0])},
    )
    np.testing.assert_allclose(models.inputs("trained", {spec.key: raw})[0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(models.inputs("plain", {spec.key: raw})[0], raw[0].features)


def _thumbnail_array(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert data[:2] == b"\xff\xd8" and image.format == "JPEG"
    return np.asarray(image.convert("RGB"), np.int16)


def test_thumbnails_are_cut_from_the_frames_the_features_decode(
    msvd14_videos: list[Path], fast_settings: Settings
) -> None:
    """One JPEG a clip, the sampled frame nearest the clip's middle of the spec decoded largest
    (not scaled up), with no second decode; without any model, each clip's middle frame."""
    s = fast_settings
    video = msvd14_videos[0]
    clips = segment_stage(video, probe_stage(video, s), "v", s)
    assert len(clips) >= 2
    small = FeatureSpec(s.features, s.sampling)
    large = FeatureSpec(s.features, s.sampling.model_copy(update={"size": 160}))
    decoded = features_stage(video, clips, [small, large], s)
    assert set(decoded.features) == {small.key, large.key}
    assert set(decoded.thumbnails) == {c.index for c in clips}
    for clip in clips:
        batch = sample_frames(video, n=s.sampling.n_frames, start=clip.start, end=clip.end,
                              size=160)
        middle = batch.frames[np.argmin(np.abs(batch.times - (clip.start + clip.end) / 2))]
        thumb = _thumbnail_array(decoded.thumbnails[clip.index])
        assert thumb.shape == middle.shape  # 160 px short side: under 320 px wide, kept as is
        assert np.abs(thumb - middle).mean() < 8  # JPEG error only
    fallback = features_stage(video, clips, [], s)
    assert fallback.features == {} and set(fallback.thumbnails) == {c.index for c in clips}
    assert _thumbnail_array(fallback.thumbnails[clips[0].index]).shape[0] == s.sampling.size
