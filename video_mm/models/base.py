"""What every captioner shares: its output record, its decoding state, input checks and the loss.

A captioner is conditioned on per-frame features ``feats [B, T, D]`` with ``mask [B, T]`` (True for
real frames, False for padding at the end) and predicts the next word. Decoding only needs
``init_state`` and ``step``; the state is a dict of batch-first tensors so a beam search can
repeat and reorder it without knowing what is inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from video_mm.errors import ModelError

State = dict[str, Tensor]


@dataclass
class CaptionerOutput:
    logits: Tensor  # [B, L-1, V] scores of tokens[:, 1:] given tokens[:, :-1]
    attention: Tensor | None = None  # [B, L-1, T] weights over frames, per predicted word
    spatial: Tensor | None = None  # [B, L-1, T, h*w] weights over grid cells, when a grid is used


class CaptionModel(nn.Module):
    """Base of the captioners: subclasses define ``forward``, ``init_state`` and ``step``."""

    arch: ClassVar[str]
    uses_grid: bool = False  # needs grid features [B, T, C, h, w] beside the pooled ones
    takes_frames: bool = False  # ``feats`` are preprocessed frames [B, T, 3, H, W] (end to end)

    def __init__(self, config: Any, vocab_size: int, feat_dim: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.feat_dim = feat_dim

    def init_state(self, feats: Tensor, mask: Tensor, grid: Tensor | None = None) -> State:
        raise NotImplementedError

    def step(
        self, prev: Tensor, state: State, feats: Tensor, mask: Tensor
    ) -> tuple[Tensor, State, Tensor | None]:
        """One word: ``prev [B]`` ids -> (log-probabilities ``[B, V]``, new state, attention)."""
        raise NotImplementedError


def check_inputs(
    model: CaptionModel, feats: Tensor, mask: Tensor, tokens: Tensor | None = None,
    grid: Tensor | None = None, *, clip_index: Tensor | None = None,
) -> None:
    """Refuse inputs whose shapes disagree, with a message that names the mismatch
    (``clip_index``: which clip each caption describes, when clips have several)."""
    want = 5 if model.takes_frames else 3
    if feats.dim() != want:
        raise ModelError(f"feats must have {want} dims, got shape {tuple(feats.shape)}")
    if not model.takes_frames and feats.shape[-1] != model.feat_dim:
        raise ModelError(f"feats have dim {feats.shape[-1]}, the model expects {model.feat_dim}")
    if mask.shape != feats.shape[:2] or mask.dtype != torch.bool:
        raise ModelError(f"mask must be bool {tuple(feats.shape[:2])}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if not bool(mask.any(1).all()):
        raise ModelError("every clip needs at least one unmasked frame")
    rows = feats.shape[0] if clip_index is None else len(clip_index)
    if clip_index is not None and len(clip_index) and (
            int(clip_index.min()) < 0 or int(clip_index.max()) >= feats.shape[0]):
        raise ModelError(f"clip_index must index the {feats.shape[0]} clips")
    if tokens is not None and (tokens.dim() != 2 or tokens.shape[0] != rows
                               or tokens.shape[1] < 2):
        raise ModelError(f"tokens must be [B={rows}, L>=2], got {tuple(tokens.shape)}")
    if model.uses_grid:
        if grid is None:
            raise ModelError("this model attends over the CNN grid: pass grid [B, T, C, h, w]")
        if grid.dim() != 5 or grid.shape[:2] != feats.shape[:2]:
            raise ModelError(f"grid must be [B, T, C, h, w] matching feats, got "
                             f"{tuple(grid.shape)}")


def masked_mean(feats: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real frames of each clip: ``[B, T, D] -> [B, D]``."""
    m = mask.unsqueeze(-1).to(feats.dtype)
    return (feats * m).sum(1) / m.sum(1).clamp_min(1.0)


def caption_loss(
    output: CaptionerOutput, tokens: Tensor, pad_id: int = 0, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy of each next word (padding ignored): the teacher-forcing objective."""
    logits = output.logits
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1),
        ignore_index=pad_id, label_smoothing=label_smoothing,
    )
