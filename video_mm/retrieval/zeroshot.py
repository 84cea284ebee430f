"""Text search with no training: a pretrained CLIP or SigLIP pair as a retrieval model.

A clip's vector is the mean of its frames' image embeddings, each L2-normalised (CLIP4Clip's
meanP); a query's is the text tower's embedding of it; both come from the same pretrained dual
encoder, so their inner product is the model's own image-text score. The result is an ordinary
:class:`RetrievalModel` (video tower: L2 norm, mean, no projection; text tower ``hf``) that saves,
loads and serves like a trained one, with a feature recipe naming the image tower
(``hf:<ref>``) and no feature standardisation.

:func:`init_config` is the same model with a linear projection on each side starting at the
identity (and the chosen temporal pooling), for ``vmm train retrieval --init hf:<ref>``: training
starts from the zero-shot space instead of from scratch.
"""

from __future__ import annotations

from typing import Any

from video_mm.artifacts import BackboneSpec, FeatureRecipe
from video_mm.errors import ConfigError
from video_mm.features.hub import HubSource, read_hf_config, resolve
from video_mm.retrieval.model import RetrievalModel, load_config
from video_mm.retrieval.towers import text_embed_dim

DUAL_TYPES = ("clip", "siglip", "siglip2")
ZERO_SHOT_NOTE = "zero-shot: a pretrained image-text model, never trained on video"


def _source(ref: str, revision: str | None, offline: bool) -> tuple[HubSource, Any]:
    ref = ref.removeprefix("hf:")
    source = resolve(ref, revision=revision, offline=offline, what="dual encoder")
    config = read_hf_config(source.folder)
    if config.model_type not in DUAL_TYPES:
        raise ConfigError(f"{ref} is a {config.model_type!r} model; zero-shot search needs a "
                          f"CLIP or SigLIP dual encoder ({', '.join(DUAL_TYPES)})")
    return source, config


def feature_recipe(source: HubSource, n_frames: int = 8) -> FeatureRecipe:
    """Frames for the image tower: decoded at its processor's resize size, not standardised
    (the embeddings are used as the model made them)."""
    from video_mm.features.hf import image_size, load_image_processor, preprocess_from_processor

    config = read_hf_config(source.folder)
    pre = preprocess_from_processor(load_image_processor(source.folder), image_size(config))
    return FeatureRecipe(backbone=f"hf:{source.ref}", weights=source.revision or "none",
                         n_frames=n_frames, size=pre.resize, normalize=False)


def model_config(
    ref: str, config: Any, *, revision: str = "", source_id: str = "", name: str | None = None,
    trainable: bool = False, pooling: str = "mean", tune_layers: int = 0,
) -> dict[str, Any]:
    """The retrieval config of the zero-shot model (or, ``trainable``, of one to fine-tune)."""
    dim = text_embed_dim(config)
    projection = "linear" if trainable else "none"
    slug = ref.rstrip("/").split("/")[-1]
    return {
        "name": name or (f"{slug}-finetuned" if trainable else f"{slug}-zeroshot"),
        "embed_dim": dim,
        "temperature": 0.01 if trainable else 0.07,
        "video": {"pooling": pooling if trainable else "mean", "norm": "l2",
                  "projection": projection, "hidden": dim, "dropout": 0.0},
        "text_tower": "hf",
        "text": {"model": ref, "revision": revision, "projection": projection,
                 "tune_layers": tune_layers, "source_id": source_id},
    }


def zero_shot(
    ref: str, *, revision: str | None = None, n_frames: int = 8, name: str | None = None,
    offline: bool = False,
) -> RetrievalModel:
    """The zero-shot retrieval model of the dual encoder ``ref`` (``hf:`` prefix optional: a
    folder or a hub repo id, resolved through the hub cache)."""
    source, config = _source(ref, revision, offline)
    cfg = load_config(model_config(source.ref, config, revision=revision or "",
                                   source_id=source.id, name=name))
    recipe = feature_recipe(source, n_frames)
    model = RetrievalModel(cfg, cfg.embed_dim, None)
    model.backbone = BackboneSpec(recipe.backbone, recipe.weights, source.id, cfg.embed_dim)
    model.recipe = recipe
    model.trained_on = ZERO_SHOT_NOTE
    return model.eval()


def init_config(
    ref: str, *, revision: str | None = None, n_frames: int = 8, pooling: str = "mean",
    tune_layers: int = 0, offline: bool = False,
) -> tuple[dict[str, Any], FeatureRecipe]:
    """The model config and feature recipe for fine-tuning on top of ``ref``
    (``vmm train retrieval --init hf:<ref>``)."""
    source, config = _source(ref, revision, offline)
    cfg = model_config(source.ref, config, revision=revision or "", source_id=source.id,
                       trainable=True, pooling=pooling, tune_layers=tune_layers)
    return cfg, feature_recipe(source, n_frames)
