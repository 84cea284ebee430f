"""Configs build models; a saved captioner is a self-describing folder that loads back to the very
same model; the Captioner wrapper captions real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.errors import ConfigError, ModelError, WeightsNotFound
from video_mm.models import (
    BackboneSpec,
    Captioner,
    create_model,
    from_pretrained,
    greedy,
    list_configs,
    load_config,
    save_pretrained,
)
from video_mm.models.factory import MODEL_CONFIGS
from video_mm.records import Caption

SMALL = {"embed_dim": 32, "hidden_dim": 64, "dropout": 0.0}
RESNET18 = BackboneSpec("resnet18", "none", "none:seed0", dim=512)


def test_every_shipped_config_builds() -> None:
    names = list_configs()
    assert {"meanpool", "lrcn", "attention", "attention_dot", "attention_spatial"} <= set(names)
    for name in names:
        model = create_model(name, vocab_size=50, feat_dim=512)
        assert model.name == name
        assert model.arch == load_config(name)["arch"]


def test_config_from_dict_and_file(tmp_path: Path) -> None:
    cfg = {"arch": "temporal_attention", "attention": "dot", "kv": "shared"} | SMALL
    model = create_model(cfg, 20, 16)
    assert model.name == "temporal_attention" and model.config.kv == "shared"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(cfg))
    assert create_model(path, 20, 16).name == "mine"
    assert create_model(MODEL_CONFIGS / "lrcn.json", 20, 16).config.conditioning == "both"


@pytest.mark.parametrize("bad", [
    {"arch": "transformer"},
    {"arch": "lrcn", "hidden": 3},
    {"arch": "temporal_attention", "attention": "cosine"},
    "no_such_config",
])
def test_bad_configs_are_refused(bad) -> None:
    with pytest.raises(ConfigError):
        create_model(bad, 20, 16)


CONFIGS = [
    {"arch": "meanpool"},
    {"arch": "lrcn", "conditioning": "input"},
    {"arch": "lrcn", "conditioning": "both"},
    {"arch": "temporal_attention", "attention": "additive", "attn_dim": 16},
    {"arch": "temporal_attention", "attention": "dot", "kv": "separate", "attn_dim": 16},
    {"arch": "temporal_attention", "spatial": True, "attn_dim": 16},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_save_load_gives_identical_outputs(real_batch, tmp_path: Path, cfg: dict) -> None:
    torch.manual_seed(0)
    vocab = real_batch.vocab
    model = create_model(cfg | SMALL | {"name": "m1"}, len(vocab), 512).eval()
    spatial = cfg.get("spatial", False)
    spec = BackboneSpec("resnet18", "none", "none:seed0", 512, grid=spatial)
    folder = save_pretrained(tmp_path / "ckpt", model, vocab, spec, trained_on="msvd14 (6 clips)",
                             scores={"CIDEr": 0.5})
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors",
                                                  "vocab.json", "README.md"}
    card = (folder / "README.md").read_text()
    assert "msvd14 (6 clips)" in card and "CIDEr" in card and "resnet18" in card

    loaded = from_pretrained(folder, device="cpu")
    assert loaded.vocab == vocab and loaded.backbone == spec and loaded.name == "m1"
    assert loaded.scores == {"CIDEr": 0.5}
    b = real_batch
    grid = b.grid if spatial else None
    with torch.no_grad():
        before, after = model(b.feats, b.mask, b.tokens, grid), loaded.model(b.feats, b.mask,
                                                                              b.tokens, grid)
    assert torch.equal(before.logits, after.logits)
    if before.attention is not None:
        assert torch.equal(before.attention, after.attention)
    g1, g2 = greedy(model, b.feats, b.mask, grid=grid), greedy(loaded.model, b.feats, b.mask,
                                                               grid=grid)
    assert [h.tokens for h in g1] == [h.tokens for h in g2]


def test_missing_files_are_typed_errors(tmp_path: Path, vocab) -> None:
    model = create_model({"arch": "meanpool"} | SMALL, len(vocab), 512)
    folder = save_pretrained(tmp_path / "ckpt", model, vocab, RESNET18)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFound):
        from_pretrained(folder)
    with pytest.raises(ConfigError):
        from_pretrained(tmp_path / "nowhere")


def test_trained_captioner_round_trip_captions_real_clips(real_batch, overfit,
                                                          tmp_path: Path) -> None:
    """Train on real clips, save, load, caption from numpy features of different lengths: the
    loaded captioner says the training captions, with scores and per-word attention."""
    torch.manual_seed(0)
    b = real_batch
    cfg = {"arch": "temporal_attention", "attn_dim": 32, "name": "sa-lstm"} | SMALL
    model = create_model(cfg, len(b.vocab), 512)
    overfit(model, b, steps=250)
    Captioner(model, b.vocab, RESNET18).save_pretrained(tmp_path / "sa")
    captioner = from_pretrained(tmp_path / "sa")
    lengths = b.mask.sum(1).tolist()
    features = [b.feats[i, :n].numpy() for i, n in enumerate(lengths)]
    for beam in (1, 3):
        captions = captioner.caption(features, beam_size=beam, batch_size=4)
        assert all(isinstance(c, Caption) for c in captions)
        assert [c.text for c in captions] == b.captions
        for c, n in zip(captions, lengths, strict=True):
            assert c.model == "sa-lstm"
            assert -1.0 < c.score <= 0.0  # mean log-prob per token of a well-learnt caption
            assert len(c.attention) == len(c.text.split())
            assert all(len(row) == n and abs(sum(row) - 1) < 1e-3 for row in c.attention)


def test_captioner_needs_grids_for_a_spatial_model(vocab) -> None:
    model = create_model("attention_spatial", len(vocab), 512)
    captioner = Captioner(model, vocab, RESNET18)
    feats = [np.random.default_rng(0).standard_normal((4, 512), dtype=np.float32)]
    with pytest.raises(ModelError, match="grid"):
        captioner.caption(feats)
    grids = [np.random.default_rng(1).standard_normal((4, 512, 2, 2), dtype=np.float32)]
    (caption,) = captioner.caption(feats, grids=grids, max_len=5)
    assert len(caption.text.split()) <= 5


def test_end_to_end_lrcn_saves_its_cnn(tmp_path: Path, vocab) -> None:
    torch.manual_seed(0)
    model = create_model("lrcn_e2e", len(vocab), 0).eval()
    with torch.no_grad():
        model.cnn.trunk[0].weight.mul_(1.5)  # as if fine-tuned: the file must carry this
    spec = BackboneSpec("resnet18", "none", model.cnn.weights_id, 512, input="frames")
    save_pretrained(tmp_path / "e2e", model, vocab, spec)
    loaded = from_pretrained(tmp_path / "e2e", device="cpu")
    assert torch.equal(loaded.model.cnn.trunk[0].weight, model.cnn.trunk[0].weight)
    frames = [np.random.default_rng(i).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
              for i in range(2)]
    captions = loaded.caption(frames, beam_size=2, max_len=4)
    assert len(captions) == 2


def test_end_to_end_lrcn_exports_to_a_frozen_backbone(tmp_path: Path, vocab, msvd14_videos):
    """The exported CNN file, loaded the pipeline's way (it carries the frame size the CNN was
    trained at), gives features that, standardised by the exported recipe as the end-to-end model
    standardised its CNN's outputs, make the exported LRCN caption real frames exactly as the
    end-to-end model did."""
    from video_mm.artifacts import FeatureRecipe
    from video_mm.features.extract import FeatureExtractor
    from video_mm.io.sampling import sample_frames
    from video_mm.models import export_frozen
    from video_mm.settings import FeatureSettings

    torch.manual_seed(0)
    model = create_model(load_config("lrcn_e2e") | {"frame_size": 64}, len(vocab), 0).eval()
    with torch.no_grad():
        model.cnn.trunk[0].weight.mul_(1.5)
    model.set_feature_stats(torch.rand(512), torch.rand(512) + 0.5)
    e2e = Captioner(model, vocab, BackboneSpec("resnet18", "none", input="frames"),
                    recipe=FeatureRecipe(n_frames=3, size=64))
    folder = export_frozen(e2e, tmp_path / "frozen", trained_on="msvd14")
    served = from_pretrained(folder)
    assert served.backbone.input == "features" and not served.model.takes_frames
    assert served.backbone.weights_id.startswith("sha256:") and served.trained_on == "msvd14"
    recipe = served.recipe
    assert recipe is not None and recipe.weights == served.backbone.weights
    assert Path(recipe.weights) == (folder / "backbone.safetensors").resolve()
    extractor = FeatureExtractor(FeatureSettings(backbone=recipe.backbone, weights=recipe.weights))
    assert extractor.backbone.preprocess.crop == 64
    frames = [sample_frames(v, n=3, size=64).frames for v in msvd14_videos[:2]]
    feats = [recipe.apply(extractor.extract_frames(f)) for f in frames]
    assert [c.text for c in served.caption(feats, beam_size=2, max_len=6)] == \
        [c.text for c in e2e.caption(frames, beam_size=2, max_len=6)]
    with pytest.raises(ModelError):
        export_frozen(served, tmp_path / "again")
