"""Mean-pool baseline: Venugopalan et al., "Translating Videos to Natural Language Using Deep
Recurrent Neural Networks" (NAACL 2015).

The clip is summarised by the mean of its frame features, embedded by a linear layer; the decoder
LSTM sees this visual vector, concatenated with the previous word's embedding, at every step and
predicts the next word. Word order in the video is ignored, which is what makes it the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from video_mm.models.base import CaptionerOutput, CaptionModel, State, check_inputs, masked_mean


@dataclass
class MeanPoolConfig:
    embed_dim: int = 256  # word embedding, and the visual vector's width
    hidden_dim: int = 512
    num_layers: int = 1  # the paper stacks two
    dropout: float = 0.3


class MeanPoolCaptioner(CaptionModel):
    arch = "meanpool"

    def __init__(self, config: MeanPoolConfig, vocab_size: int, feat_dim: int) -> None:
        super().__init__(config, vocab_size, feat_dim)
        c = config
        # The video: v = W_v mean_t(x_t) + b_v.
        self.visual = nn.Linear(feat_dim, c.embed_dim)
        # The language model: LSTM over [E y_{t-1}; v], softmax over the vocabulary.
        self.embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(2 * c.embed_dim, c.hidden_dim, c.num_layers, batch_first=True,
                            dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, vocab_size)

    def encode(self, feats: Tensor, mask: Tensor) -> Tensor:
        """The visual vector ``v [B, E]``: mean over real frames, then the linear embedding."""
        return self.drop(self.visual(masked_mean(feats, mask)))

    def forward(self, feats: Tensor, mask: Tensor, tokens: Tensor,
                grid: Tensor | None = None) -> CaptionerOutput:
        check_inputs(self, feats, mask, tokens)
        v = self.encode(feats, mask)
        words = self.drop(self.embed(tokens[:, :-1]))
        x = torch.cat([words, v.unsqueeze(1).expand(-1, words.shape[1], -1)], dim=-1)
        h, _ = self.lstm(x)  # h0 = c0 = 0: the video enters through the input only
        return CaptionerOutput(self.out(self.drop(h)))

    def init_state(self, feats: Tensor, mask: Tensor, grid: Tensor | None = None) -> State:
        check_inputs(self, feats, mask)
        zeros = feats.new_zeros(feats.shape[0], self.config.num_layers, self.config.hidden_dim)
        return {"v": self.encode(feats, mask), "h": zeros, "c": zeros.clone()}

    def step(
        self, prev: Tensor, state: State, feats: Tensor, mask: Tensor
    ) -> tuple[Tensor, State, Tensor | None]:
        x = torch.cat([self.embed(prev), state["v"]], dim=-1).unsqueeze(1)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        out, (h, c) = self.lstm(x, hc)
        logprobs = torch.log_softmax(self.out(out[:, 0]).float(), dim=-1)
        return logprobs, {"v": state["v"], "h": h.transpose(0, 1), "c": c.transpose(0, 1)}, None
