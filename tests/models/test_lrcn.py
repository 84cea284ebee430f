"""LRCN on real clips in its three conditioning modes, and trained end to end with its CNN."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from video_mm.errors import ConfigError, ModelError
from video_mm.models import caption_loss, create_model, greedy, load_config

SMALL = {"embed_dim": 32, "hidden_dim": 64, "dropout": 0.0}


@pytest.mark.parametrize("conditioning", ["input", "init", "both"])
def test_overfits_real_clips(real_batch, overfit, conditioning: str) -> None:
    torch.manual_seed(0)
    cfg = {"arch": "lrcn", "conditioning": conditioning} | SMALL
    model = create_model(cfg, len(real_batch.vocab), 512)
    losses = overfit(model, real_batch, steps=150)
    assert losses[0] > 4.0
    assert losses[-1] < 0.05
    hyps = greedy(model, real_batch.feats, real_batch.mask)
    assert [real_batch.vocab.decode(h.tokens) for h in hyps] == real_batch.captions


def _model(conditioning: str, vocab_size: int):
    torch.manual_seed(0)
    cfg = {"arch": "lrcn", "conditioning": conditioning} | SMALL
    return create_model(cfg, vocab_size, 512).eval()


@pytest.mark.parametrize("conditioning", ["init", "both"])
def test_h0_comes_from_the_frames(real_batch, conditioning: str) -> None:
    model = _model(conditioning, len(real_batch.vocab))
    feats, mask = real_batch.feats, real_batch.mask
    h0 = model.init_state(feats, mask)["h"]
    h_enc, _ = model.encode(feats, mask)
    torch.testing.assert_close(h0, h_enc.transpose(0, 1))
    assert h0.abs().min() > 0
    changed = feats.clone()
    changed[0, 2] += torch.randn(512)
    h1 = model.init_state(changed, mask)["h"]
    assert not torch.allclose(h1[0], h0[0])
    torch.testing.assert_close(h1[1:], h0[1:])  # other clips unchanged


def test_input_mode_leaves_h0_at_zero(real_batch) -> None:
    model = _model("input", len(real_batch.vocab))
    feats, mask = real_batch.feats, real_batch.mask
    state = model.init_state(feats, mask)
    assert (state["h"] == 0).all() and (state["c"] == 0).all()
    # ... the frames come in through the visual vector fed at every step instead.
    other = model.init_state(feats + torch.randn_like(feats), mask)
    assert (other["h"] == 0).all()
    assert not torch.allclose(other["v"], state["v"])
    assert model.decoder.input_size == 32 + 64


def test_padding_is_ignored_and_must_come_last(real_batch) -> None:
    model = _model("both", len(real_batch.vocab))
    feats, mask, tokens = real_batch.feats, real_batch.mask, real_batch.tokens
    padded = torch.cat([feats, torch.randn(feats.shape[0], 3, 512)], 1)
    pmask = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(padded, pmask, tokens).logits,
                               model(feats, mask, tokens).logits)
    holes = mask.clone()
    holes[0, 1] = False
    with pytest.raises(ModelError, match="pad at the end"):
        model(feats, holes, tokens)


def test_unknown_conditioning_is_refused() -> None:
    with pytest.raises(ConfigError):
        create_model({"arch": "lrcn", "conditioning": "concat"}, 10, 8)


def test_end_to_end_trains_the_cnn(msvd14_videos, vocab) -> None:
    """Real frames through a trainable resnet18: the CNN's weights receive gradients and move,
    and the caption loss falls."""
    from video_mm.io.sampling import sample_frames

    torch.manual_seed(0)
    model = create_model(load_config("lrcn_e2e") | {"dropout": 0.0}, len(vocab), 0)
    cnn = model.cnn
    cnn.preprocess = replace(cnn.preprocess, resize=64, crop=64)
    frames = torch.stack([cnn.preprocess(sample_frames(v, n=3, size=64).frames)
                          for v in msvd14_videos[:2]])  # [2, 3, 3, 64, 64]
    mask = torch.ones(2, 3, dtype=torch.bool)
    tokens = torch.from_numpy(vocab.encode_batch(["a man is cooking", "a cat plays"]))
    assert model.takes_frames and model.feat_dim == 512
    before = cnn.trunk[0].weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = caption_loss(model(frames, mask, tokens), tokens)
        opt.zero_grad()
        loss.backward()
        assert cnn.trunk[0].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert not torch.equal(before, cnn.trunk[0].weight)
    assert losses[-1] < 0.5 * losses[0]


def test_a_clip_with_several_captions_is_encoded_once(real_batch) -> None:
    """``clip_index`` maps captions to clips: the same logits as repeating each clip per caption."""
    model = _model("both", len(real_batch.vocab))
    feats, mask, tokens = real_batch.feats, real_batch.mask, real_batch.tokens
    index = torch.tensor([0, 0, 1, 2, 2])
    with torch.no_grad():
        shared = model(feats[:3], mask[:3], tokens[index], clip_index=index).logits
        repeated = model(feats[index], mask[index], tokens[index]).logits
    torch.testing.assert_close(shared, repeated)
    with pytest.raises(ModelError, match="clip_index"):
        model(feats[:2], mask[:2], tokens[index], clip_index=index)


@pytest.mark.parametrize("layers", [1, 2])
def test_decoding_step_matches_the_decoder_lstm(layers: int) -> None:
    """One decoding step (an LSTM cell with the decoder's weights when it has one layer) gives
    what running the decoder LSTM over the same word gives."""
    torch.manual_seed(0)
    model = create_model({"arch": "lrcn", "num_layers": layers, **SMALL}, 12, 10).eval()
    feats, mask = torch.randn(3, 5, 10), torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad():
        state = model.init_state(feats, mask)
        prev = torch.tensor([1, 4, 7])
        logprobs, new, _ = model.step(prev, state, feats, mask)
        x = torch.cat([model.embed(prev), state["v"]], dim=-1)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        out, (h, c) = model.decoder(x.unsqueeze(1), hc)
        want = torch.log_softmax(model.out(out[:, 0]), -1)
    assert logprobs == pytest.approx(want, abs=1e-5)
    assert new["h"] == pytest.approx(h.transpose(0, 1), abs=1e-5)
    assert new["c"] == pytest.approx(c.transpose(0, 1), abs=1e-5)
