"""Temporal attention (SA-LSTM): Yao et al., "Describing Videos by Exploiting Temporal Structure"
(ICCV 2015), with the decoder of Xu et al., "Show, Attend and Tell" (ICML 2015).

1. The frame features v_1..v_T initialise the decoder: with the mean v = 1/T sum_t v_t,
   h0 = tanh(W_h v + b_h) and c0 = tanh(W_c v + b_c), one layer per state.
2. At step t the previous hidden state h_{t-1} queries the frames with soft attention,
   a_t = softmax(score(h_{t-1}, v_i)), and the context is phi_t = sum_i a_ti v_i. The score is a
   config switch: ``additive`` (Bahdanau: w^T tanh(W h + U v_i + b)) or ``dot`` (scaled
   dot-product with Q, K, V projections; ``kv`` = ``separate`` or ``shared`` K/V projection).
   Padded frames get zero weight.
3. With ``spatial`` (Show, Attend and Tell) each frame is first summarised by attention over the
   cells of its CNN grid, queried by the same h_{t-1}; the temporal attention then runs over
   these per-frame summaries.
4. The LSTM reads [E y_{t-1}; phi_t]; the next word is predicted from [h_t; phi_t].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from video_mm.models.attention import create_attention
from video_mm.models.base import CaptionerOutput, CaptionModel, State, check_inputs, masked_mean


@dataclass
class TemporalAttentionConfig:
    embed_dim: int = 256
    hidden_dim: int = 512
    attention: str = "additive"  # additive | dot
    attn_dim: int = 256
    kv: str = "separate"  # dot only: separate | shared K/V projections
    spatial: bool = False  # attend over the CNN grid cells of each frame too
    grid_dim: int | None = None  # channels of the grid; None: the pooled feature dim
    dropout: float = 0.3


class TemporalAttentionCaptioner(CaptionModel):
    arch = "temporal_attention"

    def __init__(self, config: TemporalAttentionConfig, vocab_size: int, feat_dim: int) -> None:
        super().__init__(config, vocab_size, feat_dim)
        c = config
        H = c.hidden_dim
        # 1. Initial state from the mean frame.
        self.init_h = nn.Linear(feat_dim, H)
        self.init_c = nn.Linear(feat_dim, H)
        # 3. Spatial attention over grid cells (optional), then 2. temporal attention over frames.
        self.uses_grid = c.spatial
        frame_dim = feat_dim
        self.spatial_attn = None
        if c.spatial:
            self.spatial_attn = create_attention(c.attention, H, c.grid_dim or feat_dim,
                                                 c.attn_dim, c.kv)
            frame_dim = self.spatial_attn.out_dim
        self.temporal_attn = create_attention(c.attention, H, frame_dim, c.attn_dim, c.kv)
        ctx = self.temporal_attn.out_dim
        # 4. The decoder LSTM and the word prediction.
        self.embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        self.lstm = nn.LSTMCell(c.embed_dim + ctx, H)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(H + ctx, vocab_size)

    def init_state(self, feats: Tensor, mask: Tensor, grid: Tensor | None = None) -> State:
        check_inputs(self, feats, mask, grid=grid)
        mean = masked_mean(feats, mask)
        state = {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean))}
        if self.spatial_attn is not None:
            cells = grid.flatten(3).transpose(2, 3)  # [B, T, h*w, C]
            memory = self.spatial_attn.prepare(cells)
        else:
            memory = self.temporal_attn.prepare(self.drop(feats))
        return state | {"keys": memory["keys"], "values": memory["values"]}

    def attend(self, state: State, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """phi_t with the frame weights a_t (and the cell weights when spatial)."""
        memory = {"keys": state["keys"], "values": state["values"]}
        cell_weights = None
        if self.spatial_attn is not None:
            frames, cell_weights = self.spatial_attn(state["h"], memory)  # [B, T, C']
            memory = self.temporal_attn.prepare(frames)
        context, frame_weights = self.temporal_attn(state["h"], memory, mask)
        return context, frame_weights, cell_weights

    def decode(
        self, prev: Tensor, state: State, mask: Tensor
    ) -> tuple[Tensor, State, Tensor, Tensor | None]:
        """One step of 2-4: next-word logits, the new state, frame and cell weights."""
        context, alpha, beta = self.attend(state, mask)
        x = torch.cat([self.drop(self.embed(prev)), context], dim=-1)
        h, c = self.lstm(x, (state["h"], state["c"]))
        logits = self.out(self.drop(torch.cat([h, context], dim=-1)))
        return logits, state | {"h": h, "c": c}, alpha, beta

    def forward(self, feats: Tensor, mask: Tensor, tokens: Tensor,
                grid: Tensor | None = None) -> CaptionerOutput:
        check_inputs(self, feats, mask, tokens, grid)
        state = self.init_state(feats, mask, grid)
        logits, alphas, betas = [], [], []
        for t in range(tokens.shape[1] - 1):
            step_logits, state, alpha, beta = self.decode(tokens[:, t], state, mask)
            logits.append(step_logits)
            alphas.append(alpha)
            betas.append(beta)
        spatial = torch.stack(betas, 1) if self.spatial_attn is not None else None
        return CaptionerOutput(torch.stack(logits, 1), torch.stack(alphas, 1), spatial)

    def step(
        self, prev: Tensor, state: State, feats: Tensor, mask: Tensor
    ) -> tuple[Tensor, State, Tensor | None]:
        logits, state, alpha, beta = self.decode(prev, state, mask)
        if beta is not None:
            state = state | {"spatial": beta}  # the last step's cell weights, for drawing
        return torch.log_softmax(logits.float(), dim=-1), state, alpha
