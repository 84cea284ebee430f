"""Stage helpers: models read features the way they were trained on them; thumbnails come from
the frames the features decode."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from video_mm.artifacts import BackboneSpec, FeatureRecipe
from video_mm.io.sampling import sample_frames
from video_mm.pipeline.stages import (
    FeatureSpec,
    Models,
    feature_spec,
    features_stage,
    probe_stage,
    rerank_features_stage,
    segment_stage,
)
from video_mm.records import Clip, ClipFeatures
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


def test_serving_features_of_another_precision_is_said_once_per_model(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """int8 serving of a float32 model is allowed (it is the speed option), but not silent."""
    spec = BackboneSpec("resnet18", "none", dim=512)
    float32 = SimpleNamespace(backbone=spec, recipe=FeatureRecipe())
    int8 = SimpleNamespace(backbone=spec, recipe=FeatureRecipe(precision="int8"))
    served = settings.model_copy(update={"features": FeatureSettings(precision="int8")})
    with caplog.at_level(logging.WARNING, logger="video_mm.artifacts"):
        for _ in range(2):
            assert feature_spec(float32, Path("/m/f32_served_int8"), served).features.precision \
                == "int8"
        feature_spec(int8, Path("/m/int8_served_int8"), served)
    [record] = caplog.records
    message = record.getMessage()
    assert "f32_served_int8 was trained on float32 features but is served int8" in message
    assert "BENCHMARKS.md" in message


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


def test_one_extraction_serves_pooled_and_grid_models_each_by_its_recipe() -> None:
    """Models of one backbone and sampling share one pass, which keeps the grid when any of them
    reads it; each reads what its recipe says (pooled, or k x k cells), checked against its dim."""
    import pytest

    from video_mm.errors import ModelError

    pooled = FeatureSpec(FeatureSettings(grid=False), SamplingSettings())
    gridded = FeatureSpec(FeatureSettings(grid=True), SamplingSettings())
    assert pooled.key == gridded.key
    models = Models(
        specs={"mean": pooled, "cells": gridded, "wrong": gridded},
        recipes={"cells": FeatureRecipe(grid_pool=2, normalize=False),
                 "wrong": FeatureRecipe(grid_pool=2, normalize=False)},
        dims={"mean": 3, "cells": 12, "wrong": 27},
    )
    (spec,) = models.feature_specs()
    assert spec.features.grid
    grid = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    clip = ClipFeatures(grid.mean((2, 3)), np.zeros(2), "resnet18", grid)
    features = {spec.key: [clip]}
    np.testing.assert_array_equal(models.inputs("mean", features)[0], clip.features)
    cells = models.inputs("cells", features)[0]
    assert cells.shape == (2, 12)
    np.testing.assert_allclose(cells[0, :4], grid[0, 0].reshape(2, 2, 2, 2).mean((1, 3)).ravel())
    with pytest.raises(ModelError, match="27-d"):
        models.inputs("wrong", features)
    no_grid = {spec.key: [ClipFeatures(clip.features, np.zeros(2), "resnet18")]}
    with pytest.raises(ModelError, match="grid"):
        models.inputs("cells", no_grid)


def test_stored_clip_features_are_the_rerankers_inputs_with_the_first_stages_beside() -> None:
    """With a re-ranker that reads 2 x 2 cells, the stored blob holds each clip's cells (what
    search re-ranks with) and the retrieval model's pooled inputs (its logit, the prior); with
    none configured, the retrieval model's inputs alone, as before."""
    from video_mm.rerank.stored import clip_features_from_bytes

    spec = FeatureSpec(FeatureSettings(grid=True), SamplingSettings())
    grid = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    feats = {spec.key: [ClipFeatures(grid.mean((2, 3)), np.array([0.5, 1.5]), "resnet18", grid)]}
    clips = [Clip("v", 0, 0.0, 2.0)]
    models = Models(retrieval=object(), retrieval_name="ret", specs={"ret": spec},
                    dims={"ret": 3})  # fmt: skip
    ((pooled, times, first),) = clip_features_from_bytes(
        rerank_features_stage(models, clips, feats) or b"").values()
    np.testing.assert_array_equal(pooled, grid.mean((2, 3)))
    np.testing.assert_allclose(times, [0.25, 0.75])
    assert first is not None and np.array_equal(first, pooled)
    models.reranker_name = "reranker/rr"
    models.specs["reranker/rr"] = spec
    models.recipes["reranker/rr"] = FeatureRecipe(grid_pool=2, normalize=False)
    models.dims["reranker/rr"] = 12
    ((cells, _, first),) = clip_features_from_bytes(
        rerank_features_stage(models, clips, feats) or b"").values()
    assert cells.shape == (2, 12) and first.shape == (2, 3)
    np.testing.assert_array_equal(first, grid.mean((2, 3)))


def test_decoding_settings_change_the_job_fingerprint_and_nothing_else_of_models() -> None:
    """A video submitted again under other decoding settings is captioned again; a [models] key
    that does not change captions (the re-ranker) does not redo the job."""
    from video_mm.models.decoding import Decoding
    from video_mm.pipeline.submit import DECODING_SETTINGS, results_fingerprint

    base = Settings(data_dir=Path("/nonexistent"))
    fp = results_fingerprint(base)
    for key, value in (("beam_size", 5), ("max_caption_len", 9), ("no_repeat_ngram", 0),
                       ("no_repeat_adjacent", False), ("repetition_penalty", 1.3),
                       ("length_penalty", 0.5), ("n_best", 1)):
        other = base.model_copy(update={"models": base.models.model_copy(update={key: value})})
        assert results_fingerprint(other) != fp, key
    reranked = base.model_copy(update={"models": base.models.model_copy(
        update={"reranker": "/somewhere/reranker"})})
    assert results_fingerprint(reranked) == fp
    assert {"no_repeat_ngram", "repetition_penalty"} <= DECODING_SETTINGS
    assert Decoding.from_settings(base.models).no_repeat_ngram == 3
