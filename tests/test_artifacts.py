"""A saved model has one owner: a run folder loads wherever a model folder does, the feature recipe
travels with the model, and padding and device choice behave the same for every model kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.artifacts import (
    BackboneSpec,
    FeatureRecipe,
    load_recipe,
    model_dirs,
    model_folder,
    model_name,
    pad_features,
    read_saved,
    resolve_device,
)
from video_mm.data.vocab import Vocabulary
from video_mm.errors import ConfigError, ModelError
from video_mm.models import create_model, from_pretrained, save_pretrained
from video_mm.provenance import describe
from video_mm.records import Clip, clip_id
from video_mm.retrieval import RetrievalModel, load_config
from video_mm.retrieval import from_pretrained as retrieval_from_pretrained
from video_mm.retrieval import save_pretrained as retrieval_save_pretrained
from video_mm.settings import ModelSettings

SPEC = BackboneSpec("resnet18", "none", "none:seed0", dim=8)
RECIPE = FeatureRecipe(n_frames=4, size=96, mean=[0.5] * 8, std=[2.0] * 8)


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.build(["a dog runs on the grass", "a cat sleeps"], min_count=1)


def test_a_run_folder_loads_as_its_best_model(tmp_path: Path, vocab: Vocabulary) -> None:
    torch.manual_seed(0)
    model = create_model({"arch": "meanpool", "embed_dim": 16, "hidden_dim": 16}, len(vocab), 8)
    run = tmp_path / "run"
    save_pretrained(run / "best", model, vocab, SPEC, recipe=RECIPE)
    (run / "metrics.csv").write_text("epoch\n1\n")

    assert model_folder(run) == run / "best" and model_folder(run / "best") == run / "best"
    assert model_name(run) == model_name(run / "best") == "run"  # served under the run's name
    captioner = from_pretrained(run)
    assert captioner.recipe == RECIPE and load_recipe(run) == RECIPE
    feats = [np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)]
    again = from_pretrained(run / "best").caption(feats, beam_size=1)
    assert captioner.caption(feats, beam_size=1) == again
    # re-saving keeps the recipe it was trained with
    captioner.save_pretrained(tmp_path / "copy")
    assert read_saved(tmp_path / "copy", kind="captioner").recipe == RECIPE


def test_served_models_may_be_runs(tmp_path: Path, vocab: Vocabulary, settings) -> None:
    torch.manual_seed(0)
    model = RetrievalModel(load_config({"embed_dim": 8, "text": {"word_dim": 8, "hidden": 8}}),
                           8, vocab)
    model.backbone = SPEC
    run = tmp_path / "retrieval_run"
    retrieval_save_pretrained(run / "best", model, recipe=RECIPE)
    served = settings.model_copy(update={"models": ModelSettings(retrieval=str(run))})
    assert model_dirs(served) == ([], run)
    loaded = retrieval_from_pretrained(run)
    assert loaded.recipe == RECIPE and loaded.backbone == SPEC
    texts = ["a dog runs", "a cat"]
    assert np.allclose(loaded.embed_texts(texts), model.eval().embed_texts(texts), atol=1e-6)


def test_folders_that_are_not_models_are_refused(tmp_path: Path, settings) -> None:
    with pytest.raises(ConfigError, match=r"config\.json is missing"):
        read_saved(tmp_path, kind="captioner")
    missing = settings.model_copy(update={"models": ModelSettings(captioners=["/no/such/run"])})
    with pytest.raises(ConfigError, match="not found"):
        model_dirs(missing)


def test_default_recipe_follows_the_saved_backbone(tmp_path: Path, vocab: Vocabulary) -> None:
    model = create_model({"arch": "meanpool", "embed_dim": 16, "hidden_dim": 16}, len(vocab), 8)
    save_pretrained(tmp_path, model, vocab, BackboneSpec("resnet50", "w.pt", dim=8))
    recipe = load_recipe(tmp_path)
    assert (recipe.backbone, recipe.weights, recipe.mean) == ("resnet50", "w.pt", None)
    assert from_pretrained(tmp_path).recipe is None


def test_a_recipe_saved_before_precision_was_recorded_loads_as_float32(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    model = create_model({"arch": "meanpool", "embed_dim": 16, "hidden_dim": 16}, len(vocab), 8)
    save_pretrained(tmp_path, model, vocab, SPEC, recipe=RECIPE, trained_on="nothing")
    recipe = json.loads((tmp_path / "features.json").read_text())
    del recipe["precision"]
    (tmp_path / "features.json").write_text(json.dumps(recipe))
    assert load_recipe(tmp_path).precision == "float32"
    info = describe(tmp_path)
    assert info is not None and info.precision == "float32"  # vmm models list shows it


def test_pad_features_masks_the_padding() -> None:
    feats, mask = pad_features([np.ones((2, 3), np.float32), np.full((4, 3), 2.0, np.float32)])
    assert feats.shape == (2, 4, 3) and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert feats[0, 2:].abs().sum() == 0 and feats[1].eq(2).all()
    grids, _ = pad_features([np.ones((1, 2, 3, 3)), np.ones((2, 2, 3, 3))])
    assert grids.shape == (2, 2, 2, 3, 3)
    for bad in ([], [np.zeros((0, 3))], [np.ones((2, 3)), np.ones((2, 4))]):
        with pytest.raises(ModelError):
            pad_features(bad)


def test_resolve_device() -> None:
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError):
        resolve_device("no-such-device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_clip_owns_its_id() -> None:
    clip = Clip("abc", 3, 1.0, 2.0)
    assert clip.id == clip_id("abc", 3) == "abc:3"
    assert clip.id.startswith(clip_id("abc", ""))
