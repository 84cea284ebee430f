"""Turning a captioner's next-word distributions into captions: greedy and beam search.

Both run a whole batch of clips at once over the model's ``init_state`` / ``step`` and never
emit ``<pad>`` or ``<bos>``. A hypothesis's score is its summed log-probability divided by the
GNMT length penalty ((5 + n) / 6) ** alpha, n counting the words and the ``<eos>``; alpha = 0
ranks by the plain log-probability. Beam search ranks finished and open hypotheses by that
score at every step; a finished one stays in its beam slot, extended by ``<pad>`` at no cost.
With one beam it picks the arg-max word each step, exactly as greedy does. Plain beam search can
lose the greedy caption (its prefix may fall out of the beam and the survivors end worse), so the
greedy caption joins the final candidates: a wider beam never returns a worse caption than greedy.
The greedy search runs as extra rows of the beam's batch, so both cost one model step a word.
Both say at least ``min_len`` words before ``<eos>``: a weak model's likeliest "caption" is
often the empty one, which is no caption at all.

A weak model also loops ("a blue circle that that that a blue circle that that ..."): the search
can forbid any repeated n-gram of words (``no_repeat_ngram``, 3 by default), the same word twice in
a row (``no_repeat_adjacent``, on by default: "first first", "that that"), and lower each word by
log(r) per earlier use in the caption (``repetition_penalty`` r). Both change what the search ranks
by, never the reported log-probability, which stays the model's own. :class:`Decoding` carries
these options from ``Settings.models`` to every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from video_mm.errors import ModelError
from video_mm.models.base import CaptionModel, State
from video_mm.settings import ModelSettings


@dataclass(frozen=True)
class Decoding:
    """How captions are decoded: one value object from the settings (``[models]``) to the search,
    so every caller (pipeline, ``vmm caption``, ``vmm eval``, ``vmm explain``) decodes alike."""

    beam_size: int = 3  # 1: greedy
    max_len: int = 20  # words at most
    length_penalty: float = 0.0  # GNMT alpha; 0 ranks by the plain log-probability
    no_repeat_ngram: int = 3  # n > 0: no n-gram of words twice in a caption
    no_repeat_adjacent: bool = True  # never the same word twice in a row ("that that")
    repetition_penalty: float = 1.0  # r > 1: a word r times less likely per earlier use
    n_best: int = 1  # captions returned per clip, best first (at most beam_size)
    min_len: int = 1  # words before <eos> at least

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.max_len < 1 or not 0 <= self.min_len <= self.max_len:
            raise ModelError(f"bad decoding settings: {self}")
        if self.no_repeat_ngram < 0 or self.length_penalty < 0 or self.repetition_penalty < 1:
            raise ModelError("no_repeat_ngram and length_penalty must be >= 0, "
                             f"repetition_penalty >= 1: {self}")
        if not 1 <= self.n_best <= self.beam_size:
            raise ModelError(f"n_best must be in 1..beam_size={self.beam_size}, got {self.n_best}")

    @classmethod
    def from_settings(cls, models: ModelSettings, **overrides: Any) -> Decoding:
        """The configured decoding (``Settings.models``), with the given fields replaced (a
        ``None`` override keeps the setting: CLI options that were not given)."""
        values = dict(beam_size=models.beam_size, max_len=models.max_caption_len,
                      length_penalty=models.length_penalty,
                      no_repeat_ngram=models.no_repeat_ngram,
                      no_repeat_adjacent=models.no_repeat_adjacent,
                      repetition_penalty=models.repetition_penalty, n_best=models.n_best)
        given = {k: v for k, v in overrides.items() if v is not None}
        values |= given
        if "n_best" not in given:  # the configured n-best, as many as the beam holds
            values["n_best"] = min(values["n_best"], values["beam_size"])
        elif "beam_size" not in given:  # asked for more captions than the beam holds: widen it
            values["beam_size"] = max(values["beam_size"], values["n_best"])
        return cls(**values)

    def search(self, model: CaptionModel, feats: Tensor, mask: Tensor, *,
               grid: Tensor | None = None, pad_id: int = 0, bos_id: int = 1,
               eos_id: int = 2) -> list[list[Hypothesis]]:
        """The ``n_best`` captions of each clip of the batch: greedy with one beam, else beam
        search."""
        common = dict(grid=grid, max_len=self.max_len, min_len=self.min_len,
                      no_repeat_ngram=self.no_repeat_ngram,
                      no_repeat_adjacent=self.no_repeat_adjacent,
                      repetition_penalty=self.repetition_penalty,
                      length_penalty_alpha=self.length_penalty, pad_id=pad_id, bos_id=bos_id,
                      eos_id=eos_id)
        if self.beam_size == 1:
            return [[h] for h in greedy(model, feats, mask, **common)]
        return beam_search(model, feats, mask, beam_size=self.beam_size, n_best=self.n_best,
                           **common)


@dataclass
class Hypothesis:
    tokens: list[int]  # the words, without <bos> and <eos>
    logprob: float  # the model's summed log-probability of the words (and the <eos>, if any)
    score: float  # (logprob - repetition penalties) / length penalty: what the search ranks by
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
            bos_id: int, eos_id: int, min_len: int, repetition_penalty: float = 1.0,
            no_repeat_adjacent: bool = False) -> Tensor:
    """The search's view of the model's ``logprobs [N, V]`` given each row's ``history [N, t]``:
    ``<pad>``, ``<bos>`` ruled out, ``<eos>`` too before ``min_len`` words, (with n > 0) every word
    that would repeat an n-gram of the history, the last word again (``no_repeat_adjacent``), and
    each word lowered by log(r) per earlier use. Vectorised over rows: it runs at every step of
    every beam."""
    logprobs = logprobs.clone()
    logprobs[:, [pad_id, bos_id]] = float("-inf")
    t = history.shape[1]
    if t < min_len:
        logprobs[:, eos_id] = float("-inf")
    if t == 0:
        return logprobs
    if no_repeat_adjacent:
        # (a finished beam's last token is <eos> or <pad>: it continues with <pad> regardless)
        logprobs.scatter_(1, history[:, -1:], float("-inf"))
    if repetition_penalty > 1.0:
        said = torch.zeros_like(logprobs).scatter_add_(1, history, torch.ones_like(
            history, dtype=logprobs.dtype))
        logprobs -= said * float(np.log(repetition_penalty))
    n = no_repeat_ngram
    if n > 0 and t >= n:
        windows = history.unfold(1, n, 1)  # [N, t - n + 1, n]: every n-gram said so far
        # an n-gram whose first n - 1 words are the last n - 1 said: its last word is banned
        match = (windows[..., : n - 1] == history[:, t - n + 1:].unsqueeze(1)).all(-1)
        banned = torch.zeros_like(logprobs).scatter_add_(1, windows[..., n - 1],
                                                         match.to(logprobs.dtype))
        logprobs.masked_fill_(banned > 0, float("-inf"))
    return logprobs


def _check(model: CaptionModel, max_len: int, min_len: int, beam_size: int = 1) -> None:
    if max_len < 1:
        raise ModelError(f"max_len must be at least 1, got {max_len}")
    if not 0 <= min_len <= max_len:
        raise ModelError(f"min_len must be in 0..max_len={max_len}, got {min_len}")
    if not 1 <= beam_size <= model.vocab_size - 2:
        raise ModelError(f"beam_size must be in 1..{model.vocab_size - 2}, got {beam_size}")


def _hypothesis(tokens: list[int], attn: Tensor | None, logprob: float, penalized: float,
                eos_id: int, alpha: float) -> Hypothesis:
    finished = eos_id in tokens
    words = tokens[: tokens.index(eos_id)] if finished else tokens
    n = len(words) + int(finished)
    attention = attn[: len(words)].float().cpu().numpy() if attn is not None else None
    return Hypothesis(words, logprob, penalized / length_penalty(max(n, 1), alpha), finished,
                      attention)


@torch.inference_mode()
def greedy(
    model: CaptionModel, feats: Tensor, mask: Tensor, *, grid: Tensor | None = None,
    max_len: int = 20, min_len: int = 1, no_repeat_ngram: int = 0,
    no_repeat_adjacent: bool = False, repetition_penalty: float = 1.0,
    length_penalty_alpha: float = 0.0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
) -> list[Hypothesis]:
    """The most likely word at every step, for each clip of the batch."""
    _check(model, max_len, min_len)
    B = feats.shape[0]
    state = model.init_state(feats, mask, grid)
    prev = torch.full((B,), bos_id, dtype=torch.long, device=feats.device)
    done = torch.zeros(B, dtype=torch.bool, device=feats.device)
    total = torch.zeros(B, device=feats.device)
    raw = torch.zeros(B, device=feats.device)
    tokens, attns = [], []
    for _ in range(max_len):
        logprobs, state, attn = model.step(prev, state, feats, mask)
        history = torch.stack(tokens, 1) if tokens else prev.new_empty(B, 0)
        ranked = _forbid(logprobs, history, no_repeat_ngram, pad_id, bos_id, eos_id, min_len,
                         repetition_penalty, no_repeat_adjacent)
        best, word = ranked.max(-1)
        word = word.masked_fill(done, pad_id)
        total += best.masked_fill(done, 0.0)
        raw += logprobs.gather(1, word[:, None]).squeeze(1).masked_fill(done, 0.0)
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
                        float(raw[i]), float(total[i]), eos_id, length_penalty_alpha)
            for i in range(B)]


@torch.inference_mode()
def beam_search(
    model: CaptionModel, feats: Tensor, mask: Tensor, *, grid: Tensor | None = None,
    beam_size: int = 3, max_len: int = 20, min_len: int = 1, length_penalty_alpha: float = 0.0,
    n_best: int = 1, no_repeat_ngram: int = 0, no_repeat_adjacent: bool = False,
    repetition_penalty: float = 1.0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
) -> list[list[Hypothesis]]:
    """The ``n_best`` highest-scoring captions of each clip, best first, found with
    ``beam_size`` hypotheses per clip kept at every step."""
    _check(model, max_len, min_len, beam_size)
    if not 1 <= n_best <= beam_size:
        raise ModelError(f"n_best must be in 1..beam_size={beam_size}, got {n_best}")
    B, K, dev = feats.shape[0], beam_size, feats.device
    # Every clip starts K beams from one state; all but the first start at -inf so step one
    # expands a single hypothesis. With K > 1 the clip's greedy search runs in the same batch,
    # as B more rows after the B * K beam rows: one model step a word for both searches.
    G = B if K > 1 else 0
    state = model.init_state(feats, mask, grid)
    rows = torch.arange(B, device=dev).repeat_interleave(K)
    rows = torch.cat([rows, torch.arange(G, device=dev)])
    state = _select(state, rows)
    feats_k, mask_k = feats.index_select(0, rows), mask.index_select(0, rows)
    grid_rows = torch.arange(B, device=dev)[:, None] * K
    greedy_rows = torch.arange(B * K, B * K + G, device=dev)
    total = torch.full((B, K), float("-inf"), device=dev)  # what the search ranks by
    total[:, 0] = 0.0
    raw = torch.zeros(B, K, device=dev)  # the model's own log-probability of the same words
    lengths = torch.zeros(B, K, dtype=torch.long, device=dev)
    finished = torch.zeros(B, K, dtype=torch.bool, device=dev)
    g_total, g_raw = torch.zeros(G, device=dev), torch.zeros(G, device=dev)  # greedy rows
    g_done = torch.zeros(G, dtype=torch.bool, device=dev)
    prev = torch.full((B * K + G,), bos_id, dtype=torch.long, device=dev)
    history = prev.new_empty(B * K + G, 0)
    attn_history: Tensor | None = None
    for t in range(max_len):
        model_lp, state, attn = model.step(prev, state, feats_k, mask_k)
        logprobs = _forbid(model_lp, history, no_repeat_ngram, pad_id, bos_id, eos_id, min_len,
                           repetition_penalty, no_repeat_adjacent)
        # the greedy rows: the arg-max word, as greedy() picks it
        g_best, g_word = logprobs[B * K:].max(-1)
        g_word = g_word.masked_fill(g_done, pad_id)
        g_total += g_best.masked_fill(g_done, 0.0)
        g_raw += model_lp[B * K:].gather(1, g_word[:, None]).squeeze(1).masked_fill(g_done, 0.0)
        g_done |= g_word == eos_id
        V = logprobs.shape[-1]
        logprobs, model_lp = logprobs[: B * K].view(B, K, V), model_lp[: B * K].view(B, K, V)
        # A finished hypothesis continues only with <pad>, at no cost and no extra length.
        logprobs = logprobs.masked_fill(finished.unsqueeze(-1), float("-inf"))
        logprobs[..., pad_id] = logprobs[..., pad_id].masked_fill(finished, 0.0)
        model_lp = model_lp.masked_fill(finished.unsqueeze(-1), 0.0)
        cand_total = (total.unsqueeze(-1) + logprobs).view(B, K * V)
        cand_len = torch.where(finished, lengths, t + 1).unsqueeze(-1).expand(B, K, V)
        rank = cand_total / length_penalty(cand_len.reshape(B, K * V).float(),
                                           length_penalty_alpha)
        _, index = rank.topk(K, dim=-1)
        beam, word = index // V, index % V
        flat = torch.cat([(grid_rows + beam).view(-1), greedy_rows])
        total = cand_total.gather(1, index)
        raw = (raw.unsqueeze(-1) + model_lp).view(B, K * V).gather(1, index)
        was_finished = finished.gather(1, beam)
        lengths = torch.where(was_finished, lengths.gather(1, beam), t + 1)
        finished = was_finished | (word == eos_id)
        state = _select(state, flat)
        prev = torch.cat([word.view(-1), g_word])
        history = torch.cat([history.index_select(0, flat), prev.view(-1, 1)], dim=1)
        if attn is not None:
            attn = attn.unsqueeze(1)
            attn_history = attn if attn_history is None else torch.cat([attn_history, attn], 1)
            attn_history = attn_history.index_select(0, flat)
        if bool(finished.all()) and bool(g_done.all()):
            break
    seqs, totals, raws = history.tolist(), total.tolist(), raw.tolist()
    g_totals, g_raws = g_total.tolist(), g_raw.tolist()
    fallback = [
        _hypothesis(seqs[B * K + b],
                    attn_history[B * K + b] if attn_history is not None else None,
                    g_raws[b], g_totals[b], eos_id, length_penalty_alpha)
        for b in range(G)
    ] or [None] * B
    out = []
    for b in range(B):
        hyps = {}
        for k in range(K):
            r = b * K + k
            a = attn_history[r] if attn_history is not None else None
            h = _hypothesis(seqs[r], a, raws[b][k], totals[b][k], eos_id, length_penalty_alpha)
            hyps.setdefault((tuple(h.tokens), h.finished), h)
        if (g := fallback[b]) is not None:
            hyps.setdefault((tuple(g.tokens), g.finished), g)
        out.append(sorted(hyps.values(), key=lambda h: -h.score)[:n_best])
    return out
