"""coco-caption metrics on examples whose values are published or follow by hand."""

from __future__ import annotations

import pytest

from video_mm.errors import ConfigError
from video_mm.train.metrics import caption_scores, cider_per_video

# Papineni et al. 2002 (BLEU), Example 1: candidate 1 matches 17 of its 18 words and 10 of its
# 17 bigrams against the three references; its length equals the closest reference's (BP = 1).
PAPINENI_REFS = [
    "It is a guide to action that ensures that the military will forever heed Party commands.",
    "It is the guiding principle which guarantees the military forces always being under the "
    "command of the Party.",
    "It is the practical guide for the army always to heed the directions of the party.",
]
PAPINENI_CANDIDATE = ("It is a guide to action which ensures that the military always obeys the "
                      "commands of the party.")


@pytest.fixture(scope="module")
def scored() -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    refs = {"papineni": PAPINENI_REFS, "cat": ["the cat is on the mat"],
            "guitar": ["a man is playing a guitar", "a man plays the guitar"]}
    preds = {"papineni": PAPINENI_CANDIDATE, "cat": "the cat sat on the mat",
             "guitar": "a man is playing a guitar"}
    per_video: dict[str, dict[str, float]] = {}
    return caption_scores(refs, preds, per_video=per_video), per_video


def test_bleu_matches_papineni(scored) -> None:
    _, per = scored
    assert per["papineni"]["Bleu_1"] == pytest.approx(17 / 18, abs=1e-6)
    assert per["papineni"]["Bleu_2"] == pytest.approx((17 / 18 * 10 / 17) ** 0.5, abs=1e-6)


def test_hand_computed_bleu_and_rouge(scored) -> None:
    _, per = scored
    # "the cat sat on the mat" vs "the cat is on the mat": n-gram precisions 5/6, 3/5, 1/4, 0/3
    assert per["cat"]["Bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert per["cat"]["Bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5, abs=1e-6)
    assert per["cat"]["Bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert per["cat"]["Bleu_4"] < 1e-3  # no 4-gram matches
    # ROUGE-L: LCS 5 of 6 words both ways -> F = 5/6 whatever beta
    assert per["cat"]["ROUGE_L"] == pytest.approx(5 / 6, abs=1e-6)


def test_exact_match_and_corpus_scores(scored) -> None:
    corpus, per = scored
    for key in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L"):
        assert per["guitar"][key] == pytest.approx(1.0, abs=1e-6)
    # the corpus BLEU pools the n-gram counts: 28 of 30 unigrams match over the three
    assert corpus["Bleu_1"] == pytest.approx(28 / 30, abs=1e-6)
    assert set(corpus) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert per["guitar"]["CIDEr"] > per["cat"]["CIDEr"] > per["papineni"]["CIDEr"] > 0


def test_cider_d_needs_more_than_one_video() -> None:
    """Known coco-caption behaviour: with one video every n-gram has idf log(1/1) = 0."""
    scores = caption_scores({"a": ["a dog runs"]}, {"a": "a dog runs"}, fast=True)
    assert scores["CIDEr"] == 0.0


def test_fast_path_and_scst_reward_agree() -> None:
    refs = {"a": ["a dog runs on the grass"], "b": ["a man is cooking"], "c": ["two cats sleep"]}
    preds = {"a": "a dog runs", "b": "a man is cooking", "c": "a cat"}
    fast: dict[str, dict[str, float]] = {}
    caption_scores(refs, preds, fast=True, per_video=fast)
    rewards = cider_per_video(refs, {k: [v, v] for k, v in preds.items()})
    for k in refs:
        assert rewards[k][0] == pytest.approx(fast[k]["CIDEr"], rel=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ConfigError):
        caption_scores({"a": ["x"]}, {"b": "x"})
    with pytest.raises(ConfigError):
        caption_scores({"a": []}, {"a": "x"})
