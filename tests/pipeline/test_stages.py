"""Stage helpers that need no video: models read features the way they were trained on them."""

from __future__ import annotations

import numpy as np

from video_mm.pipeline.stages import FeatureSpec, Models
from video_mm.records import ClipFeatures
from video_mm.settings import FeatureSettings, SamplingSettings
from video_mm.train.captioning import FeatureRecipe


def test_models_inputs_apply_the_standardisation_saved_with_the_model() -> None:
    spec = FeatureSpec(FeatureSettings(), SamplingSettings())
    raw = [ClipFeatures(np.array([[3.0, 6.0], [1.0, 2.0]], np.float32), np.zeros(2), "resnet18")]
    models = Models(
        specs={"trained": spec, "plain": spec},
        recipes={"trained": FeatureRecipe(mean=[1.0, 2.0], std=[2.0, 4.0])},
    )
    np.testing.assert_allclose(models.inputs("trained", {spec.key: raw})[0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(models.inputs("plain", {spec.key: raw})[0], raw[0].features)
