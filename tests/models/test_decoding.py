"""Greedy and beam search over every architecture: beam 1 is greedy, wider beams score at least as
well, and the search options (n-best, max length, no-repeat n-gram, length penalty) hold."""

from __future__ import annotations

import itertools

import pytest
import torch

from video_mm.errors import ModelError
from video_mm.models import beam_search, create_model, greedy
from video_mm.models.decoding import Decoding, length_penalty

SMALL = {"embed_dim": 16, "hidden_dim": 24, "dropout": 0.0}
ARCHS = [
    {"arch": "meanpool"},
    {"arch": "lrcn", "conditioning": "input"},
    {"arch": "lrcn", "conditioning": "both"},
    {"arch": "temporal_attention", "attention": "additive", "attn_dim": 8},
    {"arch": "temporal_attention", "attention": "dot", "kv": "shared", "attn_dim": 8},
    {"arch": "temporal_attention", "spatial": True, "attn_dim": 8},
]
V, D = 15, 10


def _inputs(seed: int, B: int = 5, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, D, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    grid = torch.randn(B, T, D, 2, 2, generator=g)
    return feats, mask, grid


def _model(cfg: dict, seed: int):
    torch.manual_seed(seed)
    # A sharper output layer makes the models commit to words, as trained ones do.
    model = create_model(cfg | SMALL, V, D).eval()
    with torch.no_grad():
        model.out.weight.mul_(4.0)
    return model


@pytest.mark.parametrize("cfg", ARCHS, ids=lambda c: "-".join(map(str, c.values())))
def test_beam_one_equals_greedy(cfg: dict) -> None:
    for seed in range(3):
        model, (feats, mask, grid) = _model(cfg, seed), _inputs(seed)
        for ngram in (0, 2):
            g = greedy(model, feats, mask, grid=grid, max_len=12, no_repeat_ngram=ngram)
            b = beam_search(model, feats, mask, grid=grid, beam_size=1, max_len=12,
                            no_repeat_ngram=ngram)
            assert [h.tokens for h in g] == [h[0].tokens for h in b]
            for hg, (hb,) in zip(g, b, strict=True):
                assert hg.finished == hb.finished
                assert hg.logprob == pytest.approx(hb.logprob, abs=1e-4)
                if hg.attention is not None:
                    assert hg.attention == pytest.approx(hb.attention, abs=1e-6)


@pytest.mark.parametrize("cfg", ARCHS, ids=lambda c: "-".join(map(str, c.values())))
def test_wider_beam_never_scores_worse_than_greedy(cfg: dict) -> None:
    improved = 0
    for seed in range(3):
        model, (feats, mask, grid) = _model(cfg, seed), _inputs(seed)
        g = greedy(model, feats, mask, grid=grid, max_len=12)
        for k in (2, 4, 8):
            best = [h[0] for h in beam_search(model, feats, mask, grid=grid, beam_size=k,
                                              max_len=12)]
            for hg, hb in zip(g, best, strict=True):
                assert hb.logprob >= hg.logprob - 1e-4
                improved += hb.logprob > hg.logprob + 1e-4
    assert improved > 0  # the search does find captions greedy misses


def test_beam_search_runs_greedy_in_the_same_steps() -> None:
    """The greedy candidate is searched in the beam's batch: one model step a word in all, and
    the greedy captions it adds are greedy()'s own."""
    model, (feats, mask, _) = _model(ARCHS[3], 0), _inputs(0)
    calls = []
    step = model.step
    model.step = lambda *a: calls.append(a[0].shape[0]) or step(*a)  # type: ignore[method-assign]
    found = beam_search(model, feats, mask, beam_size=3, n_best=3, max_len=12)
    assert len(calls) <= 12 and set(calls) == {5 * 3 + 5}  # B * K beam rows + B greedy rows
    model.step = step  # type: ignore[method-assign]
    for g, hyps in zip(greedy(model, feats, mask, max_len=12), found, strict=True):
        same = [h for h in hyps if h.tokens == g.tokens and h.finished == g.finished]
        assert hyps[0].score >= g.score - 1e-5
        for h in same:
            assert h.logprob == pytest.approx(g.logprob, abs=1e-4)


def test_scores_are_the_models_log_probabilities() -> None:
    """Re-score each hypothesis by teacher forcing: the search's number must match."""
    model, (feats, mask, _) = _model(ARCHS[3], 0), _inputs(0)
    for hyps in [greedy(model, feats, mask, max_len=10),
                 [h[0] for h in beam_search(model, feats, mask, beam_size=4, max_len=10)]]:
        for b, h in enumerate(hyps):
            seq = [1, *h.tokens, *([2] if h.finished else [])]
            out = model(feats[b:b + 1], mask[b:b + 1], torch.tensor([[*seq, 0]]))
            lp = torch.log_softmax(out.logits[0], -1)
            rescored = sum(lp[t, seq[t + 1]].item() for t in range(len(seq) - 1))
            assert h.logprob == pytest.approx(rescored, abs=1e-3)
            assert h.attention.shape == (len(h.tokens), feats.shape[1])


def test_n_best_is_sorted_distinct_and_limited() -> None:
    model, (feats, mask, _) = _model(ARCHS[0], 1), _inputs(1)
    out = beam_search(model, feats, mask, beam_size=5, n_best=5, max_len=7)
    assert len(out) == feats.shape[0]
    for hyps in out:
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
        assert all(len(h.tokens) <= 7 for h in hyps)
        assert all(0 not in h.tokens and 1 not in h.tokens for h in hyps)
    with pytest.raises(ModelError):
        beam_search(model, feats, mask, beam_size=2, n_best=3)
    with pytest.raises(ModelError):
        beam_search(model, feats, mask, beam_size=V)


def test_no_repeat_ngram_holds() -> None:
    model, (feats, mask, _) = _model(ARCHS[1], 2), _inputs(2)
    # Without the rule this untrained model repeats itself within 20 words.
    plain = beam_search(model, feats, mask, beam_size=3, max_len=20)
    assert any(len(set(h[0].tokens)) < len(h[0].tokens) for h in plain)
    for n in (1, 2, 3):
        for hyps in [[[h] for h in greedy(model, feats, mask, max_len=20, no_repeat_ngram=n)],
                     beam_search(model, feats, mask, beam_size=3, n_best=3, max_len=20,
                                 no_repeat_ngram=n)]:
            for h in (h for group in hyps for h in group):
                grams = [tuple(h.tokens[i:i + n]) for i in range(len(h.tokens) - n + 1)]
                assert len(grams) == len(set(grams))


def test_no_repeat_adjacent_holds() -> None:
    model, (feats, mask, _) = _model(ARCHS[1], 2), _inputs(2)
    plain = [h[0] for h in beam_search(model, feats, mask, beam_size=3, max_len=20)]
    assert any(a == b for h in plain for a, b in itertools.pairwise(h.tokens))
    for hyps in [[[h] for h in greedy(model, feats, mask, max_len=20, no_repeat_adjacent=True)],
                 beam_search(model, feats, mask, beam_size=3, n_best=3, max_len=20,
                             no_repeat_adjacent=True)]:
        for h in (h for group in hyps for h in group):
            assert all(a != b for a, b in itertools.pairwise(h.tokens))


def test_length_penalty_favours_longer_captions() -> None:
    model, (feats, mask, _) = _model(ARCHS[0], 3), _inputs(3, B=8)
    short = beam_search(model, feats, mask, beam_size=6, max_len=15, length_penalty_alpha=0.0)
    long = beam_search(model, feats, mask, beam_size=6, max_len=15, length_penalty_alpha=2.0)
    n_short = sum(len(h[0].tokens) for h in short)
    n_long = sum(len(h[0].tokens) for h in long)
    assert n_long >= n_short
    for h in long:
        assert h[0].score == pytest.approx(h[0].logprob / length_penalty(h[0].length, 2.0))


def test_batch_decodes_like_single_clips() -> None:
    model, (feats, mask, _) = _model(ARCHS[3], 4), _inputs(4)
    batch = beam_search(model, feats, mask, beam_size=3, max_len=10)
    for b in range(feats.shape[0]):
        n = int(mask[b].sum())
        single = beam_search(model, feats[b:b + 1, :n], mask[b:b + 1, :n], beam_size=3,
                             max_len=10)
        assert single[0][0].tokens == batch[b][0].tokens
        assert single[0][0].logprob == pytest.approx(batch[b][0].logprob, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    for cfg in ARCHS:
        model, (feats, mask, grid) = _model(cfg, 5), _inputs(5)
        cpu = beam_search(model, feats, mask, grid=grid, beam_size=3, max_len=10)
        model.cuda()
        gpu = beam_search(model, feats.cuda(), mask.cuda(), grid=grid.cuda(), beam_size=3,
                          max_len=10)
        g = greedy(model, feats.cuda(), mask.cuda(), grid=grid.cuda(), max_len=10)
        assert [h[0].tokens for h in cpu] == [h[0].tokens for h in gpu]
        assert all(isinstance(h.logprob, float) for h in g)


def test_min_len_keeps_a_model_that_prefers_silence_talking() -> None:
    """A model whose likeliest first word is <eos> would caption nothing; with min_len (1 by
    default) greedy and beam search say words first, and min_len=0 still allows silence."""
    model, (feats, mask, _) = _model(ARCHS[0], 0), _inputs(0)
    with torch.no_grad():
        model.out.bias[2] += 100.0  # <eos> always wins
    assert all(h.tokens == [] for h in greedy(model, feats, mask, min_len=0))
    for hyps in (greedy(model, feats, mask, min_len=2),
                 [h[0] for h in beam_search(model, feats, mask, beam_size=3, min_len=2)]):
        assert all(len(h.tokens) == 2 and h.finished for h in hyps)
    assert all(len(h[0].tokens) == 1 for h in beam_search(model, feats, mask, beam_size=3))
    with pytest.raises(ModelError):
        greedy(model, feats, mask, max_len=3, min_len=4)


def _repeats_a_trigram(words: list) -> bool:
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("steps", [5, 15])
def test_default_settings_stop_a_weak_model_looping(real_batch, overfit, steps: int) -> None:
    """A barely trained captioner on real clips loops ("cooking cooking cooking ..."); with the
    shipped decoding settings no caption repeats a word trigram or says a word twice in a row, and
    each is still a caption."""
    from video_mm.models import Captioner
    from video_mm.models.factory import BackboneSpec
    from video_mm.settings import Settings

    torch.manual_seed(0)
    b = real_batch
    model = create_model({"arch": "temporal_attention", "attn_dim": 8} | SMALL, len(b.vocab),
                         b.feats.shape[-1])
    overfit(model, b, steps=steps, lr=3e-3)
    captioner = Captioner(model, b.vocab, BackboneSpec("resnet18", "none"), device="cpu")
    lengths = b.mask.sum(1).tolist()
    feats = [b.feats[i, :n].numpy() for i, n in enumerate(lengths)]
    shipped = Decoding.from_settings(Settings().models)
    assert shipped.no_repeat_ngram == 3 and shipped.no_repeat_adjacent and shipped.beam_size == 3
    old = Decoding(beam_size=3, max_len=20, no_repeat_ngram=0)  # what the pipeline used before
    looping = [c.text for c in captioner.caption(feats, old)]
    assert any(_repeats_a_trigram(t.split()) for t in looping), looping
    for clip in captioner.n_best(feats, shipped):
        assert len(clip) == shipped.n_best
        for c in clip:
            words = c.text.split()
            assert words and not _repeats_a_trigram(words), c.text
            assert all(a != b for a, b in itertools.pairwise(words)), c.text
            assert len(c.text.split()) <= shipped.max_len


def test_repetition_penalty_lowers_repeated_words_not_the_reported_score() -> None:
    model, (feats, mask, _) = _model(ARCHS[1], 2), _inputs(2)

    def repeats(hyps) -> int:
        return sum(len(h.tokens) - len(set(h.tokens)) for h in hyps)

    plain = [h[0] for h in beam_search(model, feats, mask, beam_size=3, max_len=15)]
    for r in (1.5, 4.0):
        pen = [h[0] for h in beam_search(model, feats, mask, beam_size=3, max_len=15,
                                         repetition_penalty=r)]
        assert repeats(pen) < repeats(plain)
        for b, h in enumerate(pen):  # the reported log-probability is still the model's own
            seq = [1, *h.tokens, *([2] if h.finished else [])]
            out = model(feats[b:b + 1], mask[b:b + 1], torch.tensor([[*seq, 0]]))
            lp = torch.log_softmax(out.logits[0], -1)
            assert h.logprob == pytest.approx(
                sum(lp[t, seq[t + 1]].item() for t in range(len(seq) - 1)), abs=1e-3)
            assert h.score <= h.logprob + 1e-6  # ranked below it by the penalties
    g = greedy(model, feats, mask, max_len=15, repetition_penalty=4.0)
    assert repeats(g) < repeats(greedy(model, feats, mask, max_len=15))


def test_decoding_comes_from_the_settings_with_overrides() -> None:
    from video_mm.settings import ModelSettings

    s = ModelSettings(beam_size=5, max_caption_len=9, length_penalty=0.6, no_repeat_ngram=2,
                      no_repeat_adjacent=False, repetition_penalty=1.3, n_best=4)
    d = Decoding.from_settings(s)
    assert (d.beam_size, d.max_len, d.length_penalty, d.no_repeat_ngram, d.no_repeat_adjacent,
            d.repetition_penalty, d.n_best) == (5, 9, 0.6, 2, False, 1.3, 4)
    assert Decoding.from_settings(s, n_best=7).beam_size == 7  # n-best alone widens the beam
    assert Decoding.from_settings(s, beam_size=1, max_len=None).n_best == 1  # greedy: one
    assert Decoding.from_settings(s, beam_size=1).max_len == 9
    with pytest.raises(ModelError, match="n_best"):
        Decoding.from_settings(s, beam_size=2, n_best=3)
    with pytest.raises(ModelError):
        Decoding(repetition_penalty=0.5)
