"""Temporal attention (SA-LSTM): Yao et al., "Describing Videos by Exploiting Temporal Structure"
(ICCV 2015), with the decoder of Xu et al., "Show, Attend and Tell" (ICML 2015).

1. The frame features v_1..v_T initialise the decoder: with the mean v = 1/T sum_t v_t,
   h0 = tanh(W_h v + b_h) and c0 = tanh(W_c v + b_c), one layer per state.
2. Motion: a frame's features describe a state, not a change, so each frame is described by
   [v_i; m_i] with m_i = tanh(W_m |v_i - v_{i-1}| + b_m) (m_1 from |v_2 - v_1|), the embedded
   magnitude of change between neighbouring frames: the light stand-in for Yao et al.'s 3-D CNN
   (or a flow stream). The magnitude matters: which object acts is where features *change*, in
   either direction, and no odd function of a signed difference sums to that over a span.
   ``motion_dim = 0`` attends over v_i alone.
3. At step t the previous hidden state h_{t-1} queries the frames with soft attention,
   a_t = softmax(score(h_{t-1}, k_i)), and the context phi_t is the weighted sum of the frames
   [v_i; m_i]. The keys k_i are the frames' projections plus, with ``time_keys``, an embedding
   P(tau_i) of the frame's relative time tau_i = i / (T - 1): when both objects of "A and then B"
   are on screen throughout, frames differ too little by content for a word to find "the first
   half" by content alone. The score is a config switch: ``additive`` (Bahdanau:
   w^T tanh(W h + k_i), k_i = U v_i + b) or ``dot`` (scaled dot-product with Q, K, V projections;
   ``kv`` = ``separate`` or ``shared`` K/V projection). Padded frames get zero weight.
4. With ``spatial`` (Show, Attend and Tell) each frame is first summarised by attention over the
   cells of its CNN grid, queried by the same h_{t-1}; the temporal attention then runs over
   these per-frame summaries, each joined with its m_i. The grid comes beside the features, or,
   with ``cells = k``, the features themselves are a k x k grid flattened channel-major
   (``[C * k * k]``, what ``features.grid_pool = k`` makes), so a trainer needs nothing else.
5. The LSTM reads [E y_{t-1}; phi_t]; the next word is predicted from [h_t; phi_t].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from video_mm.errors import ModelError
from video_mm.models.attention import create_attention
from video_mm.models.base import CaptionerOutput, CaptionModel, State, check_inputs, masked_mean

TIME_FREQUENCIES = 4  # sin/cos pairs describing a frame's relative time


def time_features(mask: Tensor) -> Tensor:
    """``[B, T, 2F]`` sin/cos features of each frame's relative time tau = i / (T_real - 1)."""
    length = mask.sum(1, keepdim=True).clamp_min(2) - 1  # [B, 1]
    tau = torch.arange(mask.shape[1], device=mask.device)[None] / length  # [B, T]
    angles = tau.unsqueeze(-1) * torch.pi * torch.arange(1, TIME_FREQUENCIES + 1,
                                                         device=mask.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def change(feats: Tensor, mask: Tensor) -> Tensor:
    """``|v_i - v_{i-1}|`` for each frame, the first frame taking the second's (``[B, T, D]``);
    zero where a neighbour is padding, so a one-frame clip has no motion."""
    if feats.shape[1] < 2:
        return torch.zeros_like(feats)
    both_real = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).to(feats.dtype)
    diff = (feats[:, 1:] - feats[:, :-1]).abs() * both_real
    return torch.cat([diff[:, :1], diff], dim=1)


@dataclass
class TemporalAttentionConfig:
    embed_dim: int = 256
    hidden_dim: int = 512
    attention: str = "additive"  # additive | dot
    attn_dim: int = 256
    kv: str = "separate"  # dot only: separate | shared K/V projections
    motion_dim: int = 256  # channels of m_i (2.); 0: no motion features
    time_keys: bool = True  # keys carry each frame's relative time (3.)
    spatial: bool = False  # attend over the CNN grid cells of each frame too
    grid_dim: int | None = None  # channels of the grid; None: the pooled feature dim
    cells: int = 0  # k > 0: the features are a flattened k x k grid, attended over when spatial
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
        # 2. Motion.
        self.motion = nn.Linear(feat_dim, c.motion_dim) if c.motion_dim else None
        # 4. Spatial attention over grid cells (optional), then 3. temporal attention over frames.
        self.uses_grid = c.spatial and not c.cells
        frame_dim = feat_dim
        self.spatial_attn = None
        if c.spatial:
            if c.cells and feat_dim % (c.cells * c.cells):
                raise ModelError(f"feature dim {feat_dim} is not {c.cells} x {c.cells} cells")
            grid_dim = feat_dim // (c.cells * c.cells) if c.cells else c.grid_dim or feat_dim
            self.spatial_attn = create_attention(c.attention, H, grid_dim, c.attn_dim, c.kv)
            frame_dim = self.spatial_attn.out_dim
        if self.motion is not None:
            frame_dim += c.motion_dim
        self.temporal_attn = create_attention(c.attention, H, frame_dim, c.attn_dim, c.kv)
        self.time = nn.Linear(2 * TIME_FREQUENCIES, c.attn_dim) if c.time_keys else None
        ctx = self.temporal_attn.out_dim
        # 5. The decoder LSTM and the word prediction.
        self.embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        self.lstm = nn.LSTMCell(c.embed_dim + ctx, H)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(H + ctx, vocab_size)

    def init_state(self, feats: Tensor, mask: Tensor, grid: Tensor | None = None) -> State:
        check_inputs(self, feats, mask, grid=grid)
        mean = masked_mean(feats, mask)
        state = {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean))}
        if self.motion is not None:
            state["motion"] = torch.tanh(self.motion(change(feats, mask)))
        if self.time is not None:
            state["time"] = self.time(time_features(mask))
        if self.spatial_attn is not None:
            if grid is None:  # the features are the grid (``cells``)
                grid = feats.unflatten(-1, (-1, self.config.cells, self.config.cells))
            cells = grid.flatten(3).transpose(2, 3)  # [B, T, h*w, C]
            memory = self.spatial_attn.prepare(cells)
        else:
            memory = self._frame_memory(self.drop(feats), state)
        return state | {"keys": memory["keys"], "values": memory["values"]}

    def _frame_memory(self, frames: Tensor, state: State) -> dict[str, Tensor]:
        """Keys and values of the temporal attention over frames [v_i; m_i] (2., 3.)."""
        if self.motion is not None:
            frames = torch.cat([frames, state["motion"]], dim=-1)
        memory = self.temporal_attn.prepare(frames)
        if self.time is not None:
            memory["keys"] = memory["keys"] + state["time"]
        return memory

    def attend(self, state: State, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """phi_t (3.) with the frame weights a_t (and the cell weights when spatial)."""
        memory = {"keys": state["keys"], "values": state["values"]}
        cell_weights = None
        if self.spatial_attn is not None:
            frames, cell_weights = self.spatial_attn(state["h"], memory)  # [B, T, C']
            memory = self._frame_memory(frames, state)
        context, frame_weights = self.temporal_attn(state["h"], memory, mask)
        return context, frame_weights, cell_weights

    def decode(
        self, prev: Tensor, state: State, mask: Tensor
    ) -> tuple[Tensor, State, Tensor, Tensor | None]:
        """One step of 3-5: next-word logits, the new state, frame and cell weights."""
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
