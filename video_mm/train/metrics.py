"""Caption metrics exactly as the coco-caption toolkit computes them (``pycocoevalcap``).

``caption_scores`` tokenises with the toolkit's PTB tokenizer (Stanford CoreNLP, Java) and reports
BLEU-1..4, METEOR 1.5 (Java), ROUGE-L and CIDEr-D (``pycocoevalcap.cider`` is the CIDEr-D variant:
Gaussian length penalty, clipped counts, idf from the references of the evaluated set).

Training selects checkpoints on validation CIDEr every epoch; ``fast=True`` skips the two Java
processes there (plain lower-case/punctuation tokenisation, no METEOR) so an epoch's evaluation
costs milliseconds. Reported numbers always come from the full path.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping, Sequence

from video_mm.errors import ConfigError

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_PUNCT = re.compile(r"[^\w\s']")


def simple_tokenize(text: str) -> str:
    """Lower-case, drop punctuation: what PTB tokenisation amounts to for plain captions."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _check(refs: Mapping[str, Sequence[str]], preds: Mapping[str, str]) -> list[str]:
    missing = sorted(set(preds) - set(refs))
    if missing:
        raise ConfigError(f"predictions for videos without references: {missing[:5]}")
    if not preds:
        raise ConfigError("no predictions to score")
    empty = [k for k in preds if not refs[k]]
    if empty:
        raise ConfigError(f"videos without reference captions: {empty[:5]}")
    return sorted(preds)


def caption_scores(
    refs: Mapping[str, Sequence[str]],
    preds: Mapping[str, str],
    *,
    fast: bool = False,
    per_video: dict[str, dict[str, float]] | None = None,
) -> dict[str, float]:
    """Corpus-level scores of ``preds`` (one caption per video) against ``refs``.

    Only videos in ``preds`` are scored. With ``per_video`` given, it is filled with each video's
    sentence-level scores.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = _check(refs, preds)
    if fast:
        gts = {k: [simple_tokenize(c) for c in refs[k]] for k in ids}
        res = {k: [simple_tokenize(preds[k])] for k in ids}
    else:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in refs[k]] for k in ids})
        res = tokenizer.tokenize({k: [{"caption": preds[k]}] for k in ids})
    # An empty hypothesis breaks METEOR's protocol and BLEU's length ratio; score it as one token.
    res = {k: [v[0] or "<empty>"] for k, v in res.items()}

    scorers: list[tuple[object, Sequence[str]]] = [(Bleu(4), METRICS[:4])]
    if not fast:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append((Meteor(), ("METEOR",)))
    scorers += [(Rouge(), ("ROUGE_L",)), (Cider(), ("CIDEr",))]

    out: dict[str, float] = {}
    for scorer, names in scorers:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its counts
                score, scores = scorer.compute_score(gts, res)  # type: ignore[attr-defined]
        finally:
            if hasattr(scorer, "meteor_p"):  # the Java process would outlive the call
                scorer.meteor_p.kill()  # type: ignore[attr-defined]
                scorer.meteor_p.wait()  # type: ignore[attr-defined]
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, s, per in zip(names, score, scores, strict=True):
            out[name] = float(s)
            if per_video is not None:
                for k, v in zip(gts, per, strict=True):
                    per_video.setdefault(k, {})[name] = float(v)
    return out


def cider_per_video(
    refs: Mapping[str, Sequence[str]], preds: Mapping[str, Sequence[str]]
) -> dict[str, list[float]]:
    """CIDEr-D of several candidate captions per video (the SCST reward), idf from ``refs``."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    scorer = CiderScorer(n=4, sigma=6.0)
    keys: list[str] = []
    for k, cands in preds.items():
        gt = [simple_tokenize(c) for c in refs[k]]
        for cand in cands:
            scorer += (simple_tokenize(cand) or "<empty>", gt)
            keys.append(k)
    _, scores = scorer.compute_score()
    out: dict[str, list[float]] = {}
    for k, s in zip(keys, scores, strict=True):
        out.setdefault(k, []).append(float(s))
    return out
