"""Build captioners from configs, save them as self-describing folders, load them offline.

A config is a JSON object: ``arch`` (``meanpool`` | ``lrcn`` | ``temporal_attention``), an
optional ``name``, and the architecture's hyper-parameters (its ``*Config`` dataclass). The
shipped ones live in ``configs/models/<name>.json`` and are picked by name.

A saved captioner is a folder in the format :mod:`video_mm.artifacts` owns (config, weights,
vocabulary, feature recipe, card); an end-to-end LRCN's CNN is inside its weights. Only
:func:`export_frozen` adds ``backbone.safetensors``: a fine-tuned CNN, named by the backbone spec's
``weights`` relative to the folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model

from video_mm.artifacts import (
    BackboneSpec,
    FeatureRecipe,
    pad_features,
    read_saved,
    resolve_device,
    write_saved,
)
from video_mm.data.vocab import Vocabulary
from video_mm.errors import ConfigError, ModelError
from video_mm.features.backbones import save_backbone
from video_mm.models.base import CaptionModel
from video_mm.models.decoding import Decoding, Hypothesis
from video_mm.models.lrcn import LRCN, LRCNConfig
from video_mm.models.meanpool import MeanPoolCaptioner, MeanPoolConfig
from video_mm.models.temporal_attention import TemporalAttentionCaptioner, TemporalAttentionConfig
from video_mm.records import Caption
from video_mm.settings import CONFIG_DIR

MODEL_CONFIGS = CONFIG_DIR / "models"
FORMAT = "video-mm-captioner/1"
BACKBONE_FILE = "backbone.safetensors"  # an exported fine-tuned CNN, beside the frozen model
ARCHS: dict[str, tuple[type[CaptionModel], type]] = {
    "meanpool": (MeanPoolCaptioner, MeanPoolConfig),
    "lrcn": (LRCN, LRCNConfig),
    "temporal_attention": (TemporalAttentionCaptioner, TemporalAttentionConfig),
}


def list_configs() -> list[str]:
    """Names of the shipped captioner configs (the folder also holds retrieval ones)."""
    names = []
    for path in sorted(MODEL_CONFIGS.glob("*.json")):
        try:
            arch = json.loads(path.read_text()).get("arch")
        except ValueError:
            continue
        if arch in ARCHS:
            names.append(path.stem)
    return names


def read_config_json(
    config: str | Path | dict[str, Any], *, kind: str, shipped: list[str]
) -> dict[str, Any]:
    """A config dict from a shipped name in ``configs/models/``, a JSON file or a dict; ``name``
    defaults to the file's stem. Captioners and retrieval models share it."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if not path.suffix and not path.exists():
        path = MODEL_CONFIGS / f"{config}.json"
    if not path.is_file():
        raise ConfigError(f"no {kind} config {config!r}; shipped ones: {shipped}")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    data.setdefault("name", path.stem)
    return data


def load_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A config dict from a shipped name (``"attention"``), a JSON file or a dict; ``name``
    defaults to the file's stem or the arch."""
    data = read_config_json(config, kind="model", shipped=list_configs())
    if data.get("arch") not in ARCHS:
        raise ConfigError(f"model config needs arch in {sorted(ARCHS)}, got {data.get('arch')!r}")
    data.setdefault("name", data["arch"])
    return data


def create_model(
    config: str | Path | dict[str, Any], vocab_size: int, feat_dim: int, *,
    load_backbone_weights: bool = True,
) -> CaptionModel:
    """A freshly initialised captioner. An end-to-end LRCN builds its CNN here (its ``feat_dim``
    is then the CNN's); ``load_backbone_weights=False`` starts that CNN from random weights, for
    loading a checkpoint that holds them anyway."""
    data = load_config(config)
    cls, cfg_cls = ARCHS[data["arch"]]
    known = {f.name for f in fields(cfg_cls)}
    params = {k: v for k, v in data.items() if k not in ("arch", "name")}
    if unknown := sorted(set(params) - known):
        raise ConfigError(f"{data['name']}: unknown keys {unknown} for {data['arch']}; "
                          f"known: {sorted(known)}")
    try:
        cfg = cfg_cls(**params)
    except TypeError as exc:
        raise ConfigError(f"{data['name']}: {exc}") from exc
    if vocab_size < 5:
        raise ConfigError(f"vocab_size must count 4 special tokens and a word, got {vocab_size}")
    if isinstance(cfg, LRCNConfig) and cfg.end_to_end:
        from video_mm.features.backbones import create_backbone

        weights = cfg.backbone_weights if load_backbone_weights else "none"
        cnn = create_backbone(cfg.backbone, weights, trainable=True)
        if cfg.frame_size:
            cnn.preprocess = replace(cnn.preprocess, resize=cfg.frame_size, crop=cfg.frame_size)
        model: CaptionModel = LRCN(cfg, vocab_size, cnn.dim, cnn=cnn)
    else:
        model = cls(cfg, vocab_size, feat_dim)
    model.name = data["name"]
    return model


def model_config(model: CaptionModel) -> dict[str, Any]:
    """The config dict ``create_model`` rebuilds ``model`` from."""
    return {"name": getattr(model, "name", model.arch), "arch": model.arch,
            **asdict(model.config)}


def save_pretrained(
    directory: str | Path, model: CaptionModel, vocab: Vocabulary, backbone: BackboneSpec, *,
    trained_on: str = "", scores: dict[str, float] | None = None, notes: str = "",
    recipe: FeatureRecipe | None = None,
) -> Path:
    """Write the model folder (see :mod:`video_mm.artifacts`), with ``recipe`` when given;
    returns it."""
    if len(vocab) != model.vocab_size:
        raise ModelError(f"vocabulary has {len(vocab)} words, the model {model.vocab_size}")
    config = {
        "format": FORMAT, "model": model_config(model), "vocab_size": model.vocab_size,
        "feat_dim": model.feat_dim, "backbone": asdict(backbone),
        "trained_on": trained_on, "scores": scores or {},
    }
    return write_saved(directory, config=config, weights=model, vocab=vocab, recipe=recipe,
                       card=_model_card(config, notes))


def _model_card(config: dict[str, Any], notes: str) -> str:
    m, b = config["model"], config["backbone"]
    params = ", ".join(f"{k}={v}" for k, v in m.items() if k not in ("name", "arch"))
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in config["scores"].items())
    lines = [
        f"# {m['name']} ({m['arch']})", "",
        "A video-mm captioner. Load it with `video_mm.models.from_pretrained(<this folder>)`.", "",
        f"- Architecture: `{m['arch']}` ({params})",
        f"- Vocabulary: {config['vocab_size']} tokens (`vocab.json`)",
        f"- Expects: {b['input']} of backbone `{b['name']}` with weights `{b['weights']}` "
        f"(id `{b['weights_id']}`), dim {config['feat_dim']}"
        + (", plus its spatial grid" if b["grid"] else ""),
        f"- Trained on: {config['trained_on'] or 'not recorded'}", "",
        "## Scores", "",
        ("| metric | value |\n|---|---|\n" + scores) if scores else "No scores recorded.",
    ]
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def from_pretrained(directory: str | Path, device: str | None = None) -> Captioner:
    """Load a folder written by :func:`save_pretrained` (or a training run's ``best/``), or a
    hub repo id holding one (through the Hugging Face cache; downloaded only when online)."""
    from video_mm.features.hub import local_folder

    saved = read_saved(local_folder(directory, what="captioner"), kind="captioner", fmt=FORMAT)
    config, folder = saved.config, saved.folder
    vocab = Vocabulary.load(folder / config["vocab"])
    model = create_model(config["model"], config["vocab_size"], config["feat_dim"],
                         load_backbone_weights=False)
    missing, unexpected = load_model(model, str(saved.weights), strict=False)
    if missing or unexpected:
        raise ModelError(f"{saved.weights} does not fit {config['model']['name']}: missing "
                         f"{missing}, unexpected {unexpected}")
    spec, recipe = BackboneSpec(**config["backbone"]), saved.recipe
    if (folder / spec.weights).is_file():  # a CNN saved beside the model: make it findable
        spec = replace(spec, weights=str((folder / spec.weights).resolve()))
    if recipe is not None and (folder / recipe.weights).is_file():
        recipe = replace(recipe, weights=str((folder / recipe.weights).resolve()))
    return Captioner(model, vocab, spec,
                     trained_on=config.get("trained_on", ""), scores=config.get("scores", {}),
                     device=device, recipe=recipe)


def export_frozen(captioner: Captioner, directory: str | Path, **card: Any) -> Path:
    """Split an end-to-end LRCN into what the pipeline serves: its fine-tuned CNN as
    ``backbone.safetensors`` (loadable by ``create_backbone(name, path)``, which also reads the
    frame size it was trained at from the file) and an LRCN that reads that CNN's features,
    standardised by the recipe as the end-to-end model standardised them. Captions stay the same;
    features are then computed once and cached."""
    model = captioner.model
    if not model.takes_frames:
        raise ModelError(f"{captioner.name} already reads features; save it as it is")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cnn_file = save_backbone(model.cnn, out / BACKBONE_FILE)
    digest = hashlib.sha256(cnn_file.read_bytes()).hexdigest()
    config = model_config(model) | {"end_to_end": False}
    frozen = create_model(config, model.vocab_size, model.feat_dim)
    frozen.load_state_dict({k: v for k, v in model.state_dict().items()
                            if not k.startswith("cnn.") and k not in ("feat_mean", "feat_std")})
    spec = BackboneSpec(model.config.backbone, cnn_file.name, f"sha256:{digest}", model.feat_dim)
    recipe = replace(captioner.recipe or FeatureRecipe(), backbone=model.config.backbone,
                     weights=cnn_file.name, grid_pool=1, normalize=True,
                     mean=model.feat_mean.tolist(), std=model.feat_std.tolist())
    card.setdefault("trained_on", captioner.trained_on)
    card.setdefault("scores", captioner.scores)
    card.setdefault("recipe", recipe)
    return save_pretrained(out, frozen, captioner.vocab, spec, **card)


class Captioner:
    """A captioner ready to use: model, vocabulary and the features it expects (``recipe``:
    the saved ``features.json``, None for folders saved without one)."""

    def __init__(self, model: CaptionModel, vocab: Vocabulary, backbone: BackboneSpec, *,
                 trained_on: str = "", scores: dict[str, float] | None = None,
                 device: str | None = None, recipe: FeatureRecipe | None = None) -> None:
        self.model, self.vocab, self.backbone, self.recipe = model, vocab, backbone, recipe
        self.trained_on, self.scores = trained_on, dict(scores or {})
        self.device = resolve_device(device)
        self.model.to(self.device).eval()

    @property
    def name(self) -> str:
        return getattr(self.model, "name", self.model.arch)

    def save_pretrained(self, directory: str | Path, *, notes: str = "") -> Path:
        return save_pretrained(directory, self.model, self.vocab, self.backbone,
                               trained_on=self.trained_on, scores=self.scores, notes=notes,
                               recipe=self.recipe)

    def batch(
        self, features: list[np.ndarray], grids: list[np.ndarray] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Clips of different lengths as padded tensors on the model's device:
        ``(feats [B, T, ...], mask [B, T], grid [B, T, C, h, w] | None)``."""
        if not features:
            raise ModelError("no clips to caption")
        if self.model.takes_frames:
            features = [self.model.cnn.preprocess(f) for f in features]  # uint8 frames
        feats, mask = pad_features(features)
        grid = None
        if self.model.uses_grid:
            if grids is None or len(grids) != len(features):
                raise ModelError(f"{self.name} attends over the CNN grid: pass one grid per clip")
            grid = pad_features(grids)[0].to(self.device)
        return feats.to(self.device), mask.to(self.device), grid

    def caption(
        self, features: list[np.ndarray], decoding: Decoding | None = None, *,
        grids: list[np.ndarray] | None = None, batch_size: int = 64, **options: Any,
    ) -> list[Caption]:
        """One caption per clip: the best of :meth:`n_best`."""
        return [c[0] for c in self.n_best(features, decoding, grids=grids, batch_size=batch_size,
                                          **options)]

    def n_best(
        self, features: list[np.ndarray], decoding: Decoding | None = None, *,
        grids: list[np.ndarray] | None = None, batch_size: int = 64, **options: Any,
    ) -> list[list[Caption]]:
        """The ``decoding.n_best`` captions of each clip, best first. ``features``: per-frame
        features ``[T, D]`` (uint8 frames ``[T, H, W, 3]`` for an end-to-end model); ``grids``:
        ``[T, C, h, w]`` when the model attends over the grid; ``decoding``: how to search
        (default :class:`Decoding`), with ``options`` replacing its fields (``beam_size=1``).
        The score is the model's mean log-probability per token."""
        decoding = replace(decoding or Decoding(), **options)
        out: list[list[Caption]] = []
        self.model.eval()
        for i in range(0, len(features), batch_size):
            chunk = features[i:i + batch_size]
            feats, mask, grid = self.batch(chunk, grids[i:i + batch_size] if grids else None)
            found = decoding.search(self.model, feats, mask, grid=grid, pad_id=self.vocab.pad_id,
                                    bos_id=self.vocab.bos_id, eos_id=self.vocab.eos_id)
            for hyps, n in zip(found, mask.sum(1).tolist(), strict=True):
                out.append([self._caption(h, n) for h in hyps])
        return out

    def _caption(self, h: Hypothesis, frames: int) -> Caption:
        attn = None  # per word, over this clip's own frames (not the batch's padding)
        if h.attention is not None:
            attn = h.attention[:, :frames].round(4).tolist()
        return Caption(self.vocab.decode(h.tokens), h.mean_logprob, self.name, attn)
