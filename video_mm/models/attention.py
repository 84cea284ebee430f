"""Soft attention: a query (the decoder's previous hidden state) weighs a set of vectors.

Both forms split the work in two so a decoder pays for the vectors' projections once per clip:
``prepare(values)`` projects the vectors to a memory of keys and values, ``forward(query, memory,
mask)`` scores every key, turns the scores into weights with a softmax in which masked positions
get exactly zero weight, and returns the weighted sum of the values with the weights.

The vectors may carry extra leading dimensions (``[B, T, N, D]`` for the N grid cells of each of
T frames); the query ``[B, H]`` is broadcast over them and the softmax runs over the last one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from video_mm.errors import ConfigError

Memory = dict[str, Tensor]


def _broadcast(query: Tensor, like: Tensor) -> Tensor:
    """``[B, A]`` -> ``[B, 1, ..., 1, A]`` so it adds to ``like [B, ..., N, A]``."""
    return query.view(query.shape[0], *([1] * (like.dim() - 2)), query.shape[-1])


def attend(scores: Tensor, values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax of ``scores [B, ..., N]`` (``-inf`` where ``mask`` is False), then the weighted sum
    of ``values [B, ..., N, D]``: returns (context ``[B, ..., D]``, weights ``[B, ..., N]``)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
    context = (weights.unsqueeze(-1) * values).sum(-2)
    return context, weights


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): e_i = w^T tanh(W h + U v_i + b); the context is sum_i a_i v_i."""

    def __init__(self, query_dim: int, value_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(value_dim, attn_dim)  # its bias is b
        self.w = nn.Linear(attn_dim, 1, bias=False)
        self.out_dim = value_dim

    def prepare(self, values: Tensor) -> Memory:
        return {"keys": self.U(values), "values": values}

    def forward(
        self, query: Tensor, memory: Memory, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        keys = memory["keys"]
        scores = self.w(torch.tanh(keys + _broadcast(self.W(query), keys))).squeeze(-1)
        return attend(scores, memory["values"], mask)


class DotProductAttention(nn.Module):
    """Vaswani et al. (2017), one head: a_i = softmax_i(q . k_i / sqrt(d)) with q = W_q h,
    k_i = W_k v_i and values W_v v_i; with ``shared_kv`` one projection makes keys and values."""

    def __init__(self, query_dim: int, value_dim: int, attn_dim: int, shared_kv: bool) -> None:
        super().__init__()
        self.W_q = nn.Linear(query_dim, attn_dim)
        self.W_k = nn.Linear(value_dim, attn_dim)
        self.W_v = None if shared_kv else nn.Linear(value_dim, attn_dim)
        self.scale = 1.0 / math.sqrt(attn_dim)
        self.out_dim = attn_dim

    def prepare(self, values: Tensor) -> Memory:
        keys = self.W_k(values)
        return {"keys": keys, "values": keys if self.W_v is None else self.W_v(values)}

    def forward(
        self, query: Tensor, memory: Memory, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        keys = memory["keys"]
        scores = (keys * _broadcast(self.W_q(query), keys)).sum(-1) * self.scale
        return attend(scores, memory["values"], mask)


def create_attention(
    kind: str, query_dim: int, value_dim: int, attn_dim: int, kv: str = "separate"
) -> AdditiveAttention | DotProductAttention:
    """``kind``: ``additive`` | ``dot``; ``kv`` (dot only): ``separate`` | ``shared``."""
    if kind == "additive":
        return AdditiveAttention(query_dim, value_dim, attn_dim)
    if kind == "dot":
        if kv not in ("separate", "shared"):
            raise ConfigError(f"kv must be 'separate' or 'shared', got {kv!r}")
        return DotProductAttention(query_dim, value_dim, attn_dim, shared_kv=kv == "shared")
    raise ConfigError(f"attention must be 'additive' or 'dot', got {kind!r}")
