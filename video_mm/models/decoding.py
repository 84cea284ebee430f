"""Turning a captioner's next-word distributions into captions: greedy and beam search.

Both run a whole batch of clips at once over the model's ``init_state`` / ``step`` and never
emit ``<pad>`` or ``<bos>``. A hypothesis's score is its summed log-probability divided by the
GNMT length penalty ((5 + n) / 6) ** alpha, n counting the words and the ``<eos>``; alpha = 0
ranks by the plain log-probability. Beam search ranks finished and open hypotheses by that
score at every step; a finished one stays in its beam slot, extended by ``<pad>`` at no cost.
With one beam it picks the arg-max word each step, exactly as greedy does. Plain beam search can
lose the greedy caption (its prefix may fall out of the beam and the survivors end worse), so the
greedy caption joins the final candidates: a wider beam never returns a worse caption than greedy.
Both say at least ``min_len`` words before ``<eos>``: a weak model's likeliest "caption" is
often the empty one, which is no caption at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from video_mm.errors import ModelError
from video_mm.models.base import CaptionModel, State


@dataclass
class Hypothesis:
    tokens: list[int]  # the words, without <bos> and <eos>
    logprob: float  # summed log-probability of the words and, when finished, the <eos>
    score: float  # logprob / length penalty: what the search ranks by
    finished: bool  # ended with <eos> (False: cut at max_len)
    attention: np.ndarray | None = None  # [len(tokens), T] frame weights per word

    @property
    def length(self) -> int:
        """How many tokens were scored: the words and the <eos> when there is one."""
        return len(self.tokens) + int(self.finished)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, self.length)


def length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    return ((5.0 + length) / 6.0) ** alpha


def _select(state: State, index: Tensor) -> State:
    return {k: v.index_select(0, index) for k, v in state.items()}


def _forbid(logprobs: Tensor, history: Tensor, no_repeat_ngram: int, pad_id: int,
            bos_id: int, eos_id: int, min_len: int) -> Tensor:
    """Rule out ``<pad>``, ``<bos>``, ``<eos>`` before ``min_len`` words and (with n > 0) any
    word that would repeat an n-gram already in that row's ``history [N, t]``."""
    logprobs = logprobs.clone()
    logprobs[:, [pad_id, bos_id]] = float("-inf")
    if history.shape[1] < min_len:
        logprobs[:, eos_id] = float("-inf")
    n = no_repeat_ngram
    if n > 0 and history.shape[1] >= n - 1:
        for row, seq in enumerate(history.tolist()):
            prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
            banned = [seq[i + n - 1] for i in range(len(seq) - n + 1)
                      if tuple(seq[i:i + n - 1]) == prefix]
            if banned:
                logprobs[row, banned] = float("-inf")
    return logprobs


def _check(model: CaptionModel, max_len: int, min_len: int, beam_size: int = 1) -> None:
    if max_len < 1:
        raise ModelError(f"max_len must be at least 1, got {max_len}")
    if not 0 <= min_len <= max_len:
        raise ModelError(f"min_len must be in 0..max_len={max_len}, got {min_len}")
    if not 1 <= beam_size <= model.vocab_size - 2:
        raise ModelError(f"beam_size must be in 1..{model.vocab_size - 2}, got {beam_size}")


def _hypothesis(tokens: list[int], attn: Tensor | None, logprob: float, eos_id: int,
                alpha: float) -> Hypothesis:
    finished = eos_id in tokens
    words = tokens[: tokens.index(eos_id)] if finished else tokens
    n = len(words) + int(finished)
    attention = attn[: len(words)].float().cpu().numpy() if attn is not None else None
    return Hypothesis(words, logprob, logprob / length_penalty(max(n, 1), alpha), finished,
                      attention)


@torch.no_grad()
def greedy(
    model: CaptionModel, feats: Tensor, mask: Tensor, *, grid: Tensor | None = None,
    max_len: int = 20, min_len: int = 1, no_repeat_ngram: int = 0,
    length_penalty_alpha: float = 0.0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
) -> list[Hypothesis]:
    """The most likely word at every step, for each clip of the batch."""
    _check(model, max_len, min_len)
    B = feats.shape[0]
    state = model.init_state(feats, mask, grid)
    prev = torch.full((B,), bos_id, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    total = torch.zeros(B, device=feats.device)
    tokens, attns = [], []
    for _ in range(max_len):
        logprobs, state, attn = model.step(prev, state, feats, mask)
        history = torch.stack(tokens, 1) if tokens else prev.new_empty(B, 0)
        logprobs = _forbid(logprobs, history, no_repeat_ngram, pad_id, bos_id, eos_id, min_len)
        best, word = logprobs.max(-1)
        word = word.masked_fill(done, pad_id)
        total += best.masked_fill(done, 0.0)
        tokens.append(word)
        if attn is not None:
            attns.append(attn)
        done |= word == eos_id
        prev = word
        if bool(done.all()):
            break
    seqs = torch.stack(tokens, 1).tolist()
    attn_all = torch.stack(attns, 1) if attns else None
    return [_hypothesis(seqs[i], attn_all[i] if attn_all is not None else None,
                        float(total[i]), eos_id, length_penalty_alpha) for i in range(B)]


@torch.no_grad()
def beam_search(
    model: CaptionModel, feats: Tensor, mask: Tensor, *, grid: Tensor | None = None,
    beam_size: int = 3, max_len: int = 20, min_len: int = 1, length_penalty_alpha: float = 0.0,
    n_best: int = 1, no_repeat_ngram: int = 0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
) -> list[list[Hypothesis]]:
    """The ``n_best`` highest-scoring captions of each clip, best first, found with
    ``beam_size`` hypotheses per clip kept at every step."""
    _check(model, max_len, min_len, beam_size)
    if not 1 <= n_best <= beam_size:
        raise ModelError(f"n_best must be in 1..beam_size={beam_size}, got {n_best}")
    B, K, dev = feats.shape[0], beam_size, feats.device
    # Every clip starts K beams from one state; all but the first start at -inf so step one
    # expands a single hypothesis.
    state = model.init_state(feats, mask, grid)
    rows = torch.arange(B, device=dev).repeat_interleave(K)
    state = _select(state, rows)
    feats_k, mask_k = feats.index_select(0, rows), mask.index_select(0, rows)
    grid_rows = torch.arange(B, device=dev)[:, None] * K
    total = torch.full((B, K), float("-inf"), device=dev)
    total[:, 0] = 0.0
    lengths = torch.zeros(B, K, dtype=torch.long, device=dev)
    finished = torch.zeros(B, K, dtype=torch.bool, device=dev)
    prev = torch.full((B * K,), bos_id, dtype=torch.long, device=dev)
    history = prev.new_empty(B * K, 0)
    attn_history: Tensor | None = None
    for t in range(max_len):
        logprobs, state, attn = model.step(prev, state, feats_k, mask_k)
        logprobs = _forbid(logprobs, history, no_repeat_ngram, pad_id, bos_id, eos_id, min_len)
        V = logprobs.shape[-1]
        logprobs = logprobs.view(B, K, V)
        # A finished hypothesis continues only with <pad>, at no cost and no extra length.
        logprobs = logprobs.masked_fill(finished.unsqueeze(-1), float("-inf"))
        logprobs[..., pad_id] = logprobs[..., pad_id].masked_fill(finished, 0.0)
        cand_total = (total.unsqueeze(-1) + logprobs).view(B, K * V)
        cand_len = torch.where(finished, lengths, t + 1).unsqueeze(-1).expand(B, K, V)
        rank = cand_total / length_penalty(cand_len.reshape(B, K * V).float(),
                                           length_penalty_alpha)
        _, index = rank.topk(K, dim=-1)
        beam, word = index // V, index % V
        flat = (grid_rows + beam).view(-1)
        total = cand_total.gather(1, index)
        was_finished = finished.gather(1, beam)
        lengths = torch.where(was_finished, lengths.gather(1, beam), t + 1)
        finished = was_finished | (word == eos_id)
        state = _select(state, flat)
        history = torch.cat([history.index_select(0, flat), word.view(-1, 1)], dim=1)
        if attn is not None:
            attn = attn.unsqueeze(1)
            attn_history = attn if attn_history is None else torch.cat([attn_history, attn], 1)
            attn_history = attn_history.index_select(0, flat)
        prev = word.view(-1)
        if bool(finished.all()):
            break
    seqs, totals = history.tolist(), total.tolist()
    fallback = greedy(model, feats, mask, grid=grid, max_len=max_len, min_len=min_len,
                      no_repeat_ngram=no_repeat_ngram, length_penalty_alpha=length_penalty_alpha,
                      pad_id=pad_id, bos_id=bos_id, eos_id=eos_id) if K > 1 else [None] * B
    out = []
    for b in range(B):
        hyps = {}
        for k in range(K):
            r = b * K + k
            a = attn_history[r] if attn_history is not None else None
            h = _hypothesis(seqs[r], a, totals[b][k], eos_id, length_penalty_alpha)
            hyps.setdefault((tuple(h.tokens), h.finished), h)
        if (g := fallback[b]) is not None:
            hyps.setdefault((tuple(g.tokens), g.finished), g)
        out.append(sorted(hyps.values(), key=lambda h: -h.score)[:n_best])
    return out
