"""LRCN: Donahue et al., "Long-term Recurrent Convolutional Networks for Visual Recognition and
Description" (CVPR 2015), as an encoder-decoder for video description.

1. A CNN turns every frame into a feature vector x_t. Usually the features are computed once by
   a frozen backbone; with ``end_to_end`` the CNN is part of this model and trains with it, and
   the model takes preprocessed frames instead of features. Its CNN's outputs are standardised
   with fixed per-dimension statistics (``set_feature_stats``: the training set's, through the
   CNN it started from), as features are for a frozen backbone, so the encoder starts from inputs
   of the same scale either way and an exported frozen pair computes the same function.
2. An encoder LSTM reads x_1..x_T; its final state (h_T, c_T) summarises the clip.
3. A decoder LSTM generates the caption word by word, conditioned on the clip in one of three ways:
   ``input``: the visual vector v = h_T joins the word embedding at every step (h0 = c0 = 0);
   ``init``:  (h_T, c_T) become the decoder's (h0, c0) and the input is the word alone;
   ``both``:  both of the above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from video_mm.errors import ConfigError, ModelError
from video_mm.models.base import CaptionerOutput, CaptionModel, State, check_inputs

CONDITIONING = ("input", "init", "both")


@dataclass
class LRCNConfig:
    embed_dim: int = 256
    hidden_dim: int = 512  # encoder and decoder alike, so the encoder's state can start the decoder
    num_layers: int = 1
    conditioning: str = "both"  # input | init | both
    dropout: float = 0.3
    end_to_end: bool = False  # train the CNN with the captioner (feats are then frames)
    backbone: str = "resnet18"  # the CNN used end to end
    backbone_weights: str = "none"  # its starting weights when the model is first built
    frame_size: int = 0  # end to end: the CNN sees frames at this side (0: its own preprocess)

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING:
            raise ConfigError(f"conditioning must be one of {CONDITIONING}, got "
                              f"{self.conditioning!r}")


class LRCN(CaptionModel):
    arch = "lrcn"

    def __init__(self, config: LRCNConfig, vocab_size: int, feat_dim: int,
                 cnn: nn.Module | None = None) -> None:
        super().__init__(config, vocab_size, feat_dim)
        c = config
        if c.end_to_end and cnn is None:
            raise ConfigError("an end-to-end LRCN needs its CNN (build it with create_model)")
        # 1. The CNN, when it trains with the captioner.
        self.cnn = cnn if c.end_to_end else None
        self.takes_frames = self.cnn is not None
        if self.takes_frames:  # x_t = (cnn(frame) - mean) / std, fixed once training starts
            self.register_buffer("feat_mean", torch.zeros(feat_dim))
            self.register_buffer("feat_std", torch.ones(feat_dim))
        # 2. The encoder.
        self.encoder = nn.LSTM(feat_dim, c.hidden_dim, c.num_layers, batch_first=True,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        # 3. The decoder: the visual vector widens its input in the `input` and `both` modes.
        self.feed_visual = c.conditioning in ("input", "both")
        self.init_from_video = c.conditioning in ("init", "both")
        self.embed = nn.Embedding(vocab_size, c.embed_dim, padding_idx=0)
        in_dim = c.embed_dim + (c.hidden_dim if self.feed_visual else 0)
        self.decoder = nn.LSTM(in_dim, c.hidden_dim, c.num_layers, batch_first=True,
                               dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, vocab_size)

    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Fix the standardisation of the CNN's outputs (end to end only)."""
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def frame_features(self, feats: Tensor, mask: Tensor) -> Tensor:
        """x_t: the given features, or the CNN run over the real frames (standardised) when end
        to end."""
        if self.cnn is None:
            return feats
        pooled = self.cnn(feats[mask])
        pooled = pooled[0] if isinstance(pooled, tuple) else pooled
        x = pooled.new_zeros(*mask.shape, pooled.shape[-1])
        x[mask] = (pooled - self.feat_mean) / self.feat_std
        return x

    def encode(self, feats: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's final state ``(h_T, c_T)``, each ``[layers, B, H]``, at each clip's last
        real frame (padding must come at the end)."""
        lengths = mask.sum(1)
        if not bool((mask == (torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]))
                    .all()):
            raise ModelError("LRCN reads frames in order: the mask must pad at the end only")
        x = self.drop(self.frame_features(feats, mask))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.encoder(packed)
        return h, c

    def decoder_start(self, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """(h0, c0) of the decoder: the encoder's final state, or zeros in `input` mode."""
        if self.init_from_video:
            return h, c
        return torch.zeros_like(h), torch.zeros_like(c)

    def forward(self, feats: Tensor, mask: Tensor, tokens: Tensor,
                grid: Tensor | None = None, *, clip_index: Tensor | None = None) -> CaptionerOutput:
        """Teacher-forced logits. ``clip_index [B']``: caption ``i`` describes clip
        ``clip_index[i]``, so a clip with several captions goes through the CNN and the encoder
        once (what makes end-to-end training affordable); None: caption ``i`` is clip ``i``'s."""
        check_inputs(self, feats, mask, tokens, clip_index=clip_index)
        h, c = self.encode(feats, mask)
        if clip_index is not None:
            h, c = h[:, clip_index], c[:, clip_index]
        x = self.drop(self.embed(tokens[:, :-1]))
        if self.feed_visual:
            v = self.drop(h[-1])
            x = torch.cat([x, v.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        out, _ = self.decoder(x, self.decoder_start(h, c))
        return CaptionerOutput(self.out(self.drop(out)))

    def init_state(self, feats: Tensor, mask: Tensor, grid: Tensor | None = None) -> State:
        check_inputs(self, feats, mask)
        h, c = self.encode(feats, mask)
        h0, c0 = self.decoder_start(h, c)
        return {"v": h[-1], "h": h0.transpose(0, 1), "c": c0.transpose(0, 1)}

    def step(
        self, prev: Tensor, state: State, feats: Tensor, mask: Tensor
    ) -> tuple[Tensor, State, Tensor | None]:
        x = self.embed(prev)
        if self.feed_visual:
            x = torch.cat([x, state["v"]], dim=-1)
        if self.decoder.num_layers == 1:  # one cell: a quarter of nn.LSTM's per-call cost
            d = self.decoder
            h, c = torch.lstm_cell(x, (state["h"][:, 0], state["c"][:, 0]), d.weight_ih_l0,
                                   d.weight_hh_l0, d.bias_ih_l0, d.bias_hh_l0)
            logprobs = torch.log_softmax(self.out(h).float(), dim=-1)
            return logprobs, {"v": state["v"], "h": h[:, None], "c": c[:, None]}, None
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        out, (h, c) = self.decoder(x.unsqueeze(1), hc)
        logprobs = torch.log_softmax(self.out(out[:, 0]).float(), dim=-1)
        return logprobs, {"v": state["v"], "h": h.transpose(0, 1), "c": c.transpose(0, 1)}, None
