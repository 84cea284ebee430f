"""Re-ranking a candidate list (search's second stage) with a trained re-ranker."""

from __future__ import annotations

import numpy as np

from video_mm.search import rerank


def _lookup(features: dict, missing: str):  # type: ignore[no-untyped-def]
    return lambda cids: {c: features[c] for c in cids if c != missing}


def test_rerank_reorders_the_candidates_and_loses_none(trained, tiny_test) -> None:
    model, _ = trained
    ids = [f"v{i}:0" for i in range(len(tiny_test))]
    features = {cid: (f, np.linspace(0.05, 0.95, len(f), dtype=np.float32), f)
                for cid, f in zip(ids, tiny_test.features, strict=True)}  # fmt: skip
    first_ranks, new_ranks = [], []
    for q in range(len(tiny_test)):
        query = tiny_test.captions[q][0]
        # a first stage that put the right clip last of 10 candidates, then more candidates
        others = [c for c in ids if c != ids[q]]
        candidates = [*others[:9], ids[q], *others[9:]]
        ranking = [(c, 1.0 - 0.01 * r) for r, c in enumerate(candidates)]
        missing = candidates[3]  # a candidate with no stored features keeps its place after
        new, scores = rerank(query, ranking, 10, model, _lookup(features, missing))
        assert sorted(c for c, _ in new) == sorted(candidates)  # nothing lost or added
        assert [c for c, _ in new[10:]] == candidates[10:]  # beyond k: untouched
        assert new[9][0] == missing and missing not in scores and len(scores) == 9
        assert [s for _, s in new[:9]] == sorted(scores.values(), reverse=True)
        first_ranks.append(candidates.index(ids[q]))
        new_ranks.append([c for c, _ in new].index(ids[q]))
    assert np.mean(new_ranks) < np.mean(first_ranks) - 3  # the right clip moves up


def test_a_heavy_first_stage_prior_keeps_its_order(trained, tiny_test) -> None:  # type: ignore[no-untyped-def]
    model, _ = trained
    ids = [f"v{i}:0" for i in range(10)]
    features = {cid: (f, np.linspace(0.05, 0.95, len(f), dtype=np.float32), f)
                for cid, f in zip(ids, tiny_test.features[:10], strict=True)}  # fmt: skip
    ranking = [(c, 1.0) for c in ids]
    model.prior_weight = 1000.0  # the retrieval model's logit dominates the match logit
    try:
        new, _ = rerank(tiny_test.captions[0][0], ranking, 10, model,
                        _lookup(features, ""), prior=lambda feats: -np.arange(len(feats)))
    finally:
        model.prior_weight = 0.0
    assert [c for c, _ in new] == ids
