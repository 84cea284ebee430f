"""Training the re-ranker (matched vs mismatched pairs) and evaluating search with it.

Data: the clips' per-frame features, computed with the recipe of the retrieval model the
re-ranker will serve (so its feature cache is shared and the pipeline computes them once), or with
``grid_pool`` k > 1 the same backbone and sampling pooled to k x k cells (:func:`reranker_recipe`;
one decoding pass in the pipeline still serves both), and their captions. Each training row is
a clip with one of its captions (the matched pair) and up to four mismatched ones:

- ``in_batch``: the clip with another row's caption;
- ``hard``: the caption with a clip the dual encoder ranks high for it (its top ``hard_k``, clips
  that have this caption excluded): the candidates re-ranking has to push down;
- ``swapped``: the clip with its caption's events in the other order, or its objects swapped
  (:mod:`video_mm.rerank.negatives`), where the caption allows;
- ``reversed``: the caption with its own clip played backwards, where that makes it false (two
  events in order, an action with a direction in time): the same frames, so what the clip shows
  cannot tell them apart, only when it shows it.

The loss (``loss``) is ``binary``: cross-entropy of each pair on its own, positives and
negatives weighted equally; or ``listwise``: each matched pair against its own row's negatives,
a softmax over the group with the matched pair as the answer (the localised contrastive loss of
Gao et al. 2021 for cross-encoder re-rankers). Listwise asks what re-ranking asks (which of
these candidates is the one), and ``hard_per_row`` (several of the dual encoder's top clips a
row) gives each group the candidates re-ranking will meet. Search adds the dual encoder's logit
to the match logit; with ``train_prior`` > 0 training adds it too (times that weight), so the
re-ranker is trained as the correction it will be used as. With ``mlm_weight > 0`` the matched
pairs also go through with ``mask_prob`` of their words masked and the model predicts them
(VL-BERT's masked-word loss). Batches are drawn from a generator seeded by the epoch, so a
resumed run matches. The shared loop (:func:`video_mm.train.loop.fit`) trains; the epoch kept is
the best by validation t2v R@1 after re-ranking the dual encoder's top ``k`` by the re-ranker's
score (plus ``train_prior`` times the dual encoder's logit); then the weight of the dual
encoder's logit added to the match logit (one of ``prior_weights``) is chosen on the same
validation queries and saved with the model.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from video_mm.artifacts import (
    BackboneSpec,
    FeatureRecipe,
    load_recipe,
    model_name,
    warn_precision,
)
from video_mm.data.datasets import VideoRecord, by_split, load_dataset
from video_mm.data.features import extract_features
from video_mm.errors import ConfigError
from video_mm.rerank.model import Reranker, from_pretrained, load_config, pad_clips, save_pretrained
from video_mm.rerank.negatives import order_swapped, reversal_changes, swapped
from video_mm.retrieval.model import RetrievalModel
from video_mm.retrieval.model import from_pretrained as retrieval_from_pretrained
from video_mm.retrieval.training import (
    RECALLS,
    ClipSet,
    clip_set,
    shared_sentences,
    shared_t2v_metrics,
)
from video_mm.settings import CONFIG_DIR, FeatureSettings
from video_mm.train.loop import TrainConfig, TrainResult, fit

TRAIN_CONFIGS = CONFIG_DIR / "train"
NEGATIVES = ("in_batch", "hard", "swapped", "reversed")
LOSSES = ("binary", "listwise")


@dataclass
class RerankTrainConfig:
    """Everything one re-ranker training run depends on (``configs/train/reranker.toml``)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model config
    batch_size: int = 32
    pairs_per_clip: int = 2  # matched pairs per clip and epoch
    negatives: list[str] = field(default_factory=lambda: list(NEGATIVES))
    hard_k: int = 10  # hard negatives come from the dual encoder's top hard_k
    hard_per_row: int = 1  # hard negatives a row, drawn from those hard_k without repeats
    loss: str = "binary"  # binary | listwise (a softmax over each row's matched + negatives)
    # the first stage's logit times this is added to each pair's match logit in the loss, so the
    # re-ranker learns what the dual encoder gets wrong rather than what it already knows (0: off)
    train_prior: float = 0.0
    mlm_weight: float = 0.0  # masked-word loss weight; 0 turns it off
    mask_prob: float = 0.15
    rerank_k: int = 20  # validation: the dual encoder's top k are re-ranked
    val_max_queries: int = 150  # validation queries at most (the first captions of each clip)
    # weights of the retrieval model's logit added to the match logit; the best on validation is
    # kept with the model (0 alone: the re-ranker's score only)
    prior_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])
    train_split: str = "train"
    val_split: str = "val"
    select_metric: str = "rerank_t2v_R@1"

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> RerankTrainConfig:
        """Read a TOML file (default ``configs/train/reranker.toml``), then apply ``overrides``
        (``epochs``/``lr``/... go to ``[train]``)."""
        path = Path(path) if path else TRAIN_CONFIGS / "reranker.toml"
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
        train = dict(data.pop("train", {}))
        train_keys = {f.name for f in fields(TrainConfig)}
        for key, value in overrides.items():
            if value is not None:
                (train if key in train_keys else data)[key] = value
        known = {f.name for f in fields(cls)} - {"train"}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"{path}: unknown re-ranker settings {unknown}")
        run = cls(train=TrainConfig.from_dict(train), **data)
        if bad := sorted(set(run.negatives) - set(NEGATIVES)):
            raise ConfigError(f"{path}: unknown negatives {bad}; known: {list(NEGATIVES)}")
        if run.loss not in LOSSES:
            raise ConfigError(f"{path}: loss {run.loss!r}; known: {list(LOSSES)}")
        if run.hard_per_row < 1:
            raise ConfigError(f"{path}: hard_per_row must be at least 1, got {run.hard_per_row}")
        return run


# -- mining -------------------------------------------------------------------------------------


def caption_index(clips: ClipSet) -> tuple[list[str], np.ndarray]:
    """Every caption of ``clips`` and the clip each belongs to."""
    texts = [c for caps in clips.captions for c in caps]
    return texts, np.repeat(np.arange(len(clips)), [len(c) for c in clips.captions])


def mine_hard(dual: RetrievalModel, clips: ClipSet, k: int) -> list[list[np.ndarray]]:
    """Per clip and caption, the clips the dual encoder ranks highest for that caption (at most
    ``k``), clips that have the same caption left out."""
    texts, owner = caption_index(clips)
    sim = dual.embed_texts(texts) @ dual.embed_videos(clips.features).T
    holders = shared_sentences(texts, clips.captions)
    out: list[list[np.ndarray]] = [[] for _ in range(len(clips))]
    for q, row in enumerate(sim):
        top = [j for j in np.argsort(-row)[: k + int(holders[q].sum())] if not holders[q, j]][:k]
        out[owner[q]].append(np.asarray(top, np.int64))
    return out


# -- batches ------------------------------------------------------------------------------------


class WordCache:
    """MiniLM states per caption text: with the text encoder frozen they never change, so each
    caption is encoded once for the whole run instead of once a batch."""

    def __init__(self, model: Reranker) -> None:
        self.model, self.states = model, {}

    def __call__(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        todo = list(dict.fromkeys(t for t in texts if t not in self.states))
        text = self.model.text
        if todo:
            tokens = text.tokenize(todo)
            with torch.no_grad():
                words = text.words(**{k: v.to(self.model.device) for k, v in tokens.items()})
            for i, t in enumerate(todo):
                n = int(tokens["attention_mask"][i].sum())
                self.states[t] = words[i, :n].cpu()
        L = max(len(self.states[t]) for t in texts)
        out = torch.zeros(len(texts), L, text.width)
        mask = torch.zeros(len(texts), L, dtype=torch.long)
        for i, t in enumerate(texts):
            out[i, : len(self.states[t])], mask[i, : len(self.states[t])] = self.states[t], 1
        return out, mask


class FirstStage:
    """The dual encoder's logits for training pairs (caption, clip, played backwards), on the
    features it reads: what search adds to the re-ranker's score (``train_prior``)."""

    def __init__(self, dual: RetrievalModel, clips: ClipSet) -> None:
        self.dual, self.scale = dual, dual_logit_scale(dual)
        backwards = [f[::-1].copy() for f in clips.features]
        self.videos = {False: dual.embed_videos(clips.features), True: dual.embed_videos(backwards)}
        self.texts: dict[str, np.ndarray] = {}

    def __call__(self, pairs: Sequence[tuple[str, int, float, bool]]) -> Tensor:
        todo = list(dict.fromkeys(t for t, *_ in pairs if t not in self.texts))
        if todo:
            self.texts.update(zip(todo, self.dual.embed_texts(todo), strict=True))
        return torch.tensor([self.scale * float(self.texts[t] @ self.videos[back][i])
                             for t, i, _, back in pairs])  # fmt: skip


class Epoch:
    """The batches of one epoch, built lazily (``len()`` for the progress bar and scheduler)."""

    def __init__(
        self, model: Reranker, clips: ClipSet, opts: RerankTrainConfig, epoch: int,
        hard: list[list[np.ndarray]] | None, words: WordCache | None, seed: int = 0,
        first_stage: FirstStage | None = None,
    ) -> None:  # fmt: skip
        self.model, self.clips, self.opts, self.hard, self.words = model, clips, opts, hard, words
        self.first_stage = first_stage
        self.rng = np.random.default_rng([seed, epoch])
        self.order = np.concatenate(
            [self.rng.permutation(len(clips)) for _ in range(opts.pairs_per_clip)]
        )
        self.own = [set(c) for c in clips.captions]

    def __len__(self) -> int:
        return -(-len(self.order) // self.opts.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        bs = self.opts.batch_size
        for start in range(0, len(self.order), bs):
            yield self._batch(list(dict.fromkeys(self.order[start : start + bs].tolist())))

    def _read(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if self.words is not None:
            return self.words(texts)
        tokens = self.model.text.tokenize(texts)
        with torch.no_grad():
            return self.model.text.words(**tokens), tokens["attention_mask"]

    def _batch(self, rows: list[int]) -> dict[str, Any]:
        negs = set(self.opts.negatives)
        picks = [int(self.rng.integers(len(self.clips.captions[i]))) for i in rows]
        captions = [self.clips.captions[i][p] for i, p in zip(rows, picks, strict=True)]
        pairs: list[tuple[str, int, float, bool]] = []  # (text, clip, label, played backwards)
        for r, (i, caption) in enumerate(zip(rows, captions, strict=True)):
            pairs.append((caption, i, 1.0, False))  # a row's matched pair first, then its negatives
            if "in_batch" in negs and len(rows) > 1:
                other = captions[(r + 1 + int(self.rng.integers(len(rows) - 1))) % len(rows)]
                if other not in self.own[i]:
                    pairs.append((other, i, 0.0, False))
            if "hard" in negs and self.hard is not None:
                top = self.hard[i][picks[r]]
                n = min(self.opts.hard_per_row, len(top))
                pairs.extend((caption, int(j), 0.0, False)
                             for j in self.rng.choice(top, size=n, replace=False))  # fmt: skip
            if "swapped" in negs:
                text = swapped(caption, self.rng)
                if text and text not in self.own[i]:
                    pairs.append((text, i, 0.0, False))
            if "reversed" in negs and reversal_changes(caption):
                pairs.append((caption, i, 0.0, True))
        words, word_mask = self._read([t for t, _, _, _ in pairs])
        clips = [np.ascontiguousarray(self.clips.features[i][::-1]) if back
                 else self.clips.features[i]
                 for _, i, _, back in pairs]  # fmt: skip
        feats, times, frame_mask = pad_clips(clips)
        batch: dict[str, Any] = {
            "words": words, "word_mask": word_mask, "feats": feats, "times": times,
            "frame_mask": frame_mask, "labels": torch.tensor([y for _, _, y, _ in pairs]),
        }  # fmt: skip
        if self.first_stage is not None:
            batch["prior"] = self.opts.train_prior * self.first_stage(pairs)
        if self.opts.mlm_weight > 0:
            batch["mlm"] = self._masked(captions, rows)
        return batch

    def _masked(self, captions: list[str], rows: list[int]) -> dict[str, Tensor]:
        """The matched captions with ``mask_prob`` of their word pieces masked (at least one)."""
        text = self.model.text
        tokens = text.tokenize(captions)
        ids, mask = tokens["input_ids"].clone(), tokens["attention_mask"]
        tok = text.tokenizer
        real = mask.bool() & (ids != tok.cls_token_id) & (ids != tok.sep_token_id)
        draw = torch.from_numpy(self.rng.random(ids.shape)) < self.opts.mask_prob
        for r in range(len(ids)):  # at least one masked word a caption
            if not (draw[r] & real[r]).any():
                choices = real[r].nonzero().flatten()
                draw[r, choices[int(self.rng.integers(len(choices)))]] = True
        chosen = draw & real
        targets = torch.where(chosen, ids, torch.full_like(ids, -100))
        ids[chosen] = tok.mask_token_id
        with torch.no_grad():
            words = text.words(ids, mask)
        feats, times, frame_mask = pad_clips([self.clips.features[i] for i in rows])
        return {"words": words, "word_mask": mask, "feats": feats, "times": times,
                "frame_mask": frame_mask, "targets": targets}  # fmt: skip


def listwise_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean over rows of -log softmax(row)[matched]: pairs come row by row, each row's matched
    pair (label 1) first, then its negatives."""
    groups = torch.cumsum(labels > 0.5, 0) - 1
    n = int(groups[-1]) + 1
    first = torch.searchsorted(groups, torch.arange(n, device=groups.device))
    place = torch.arange(len(groups), device=groups.device) - first[groups]
    table = logits.new_full((n, int(place.max()) + 1), float("-inf"))
    table[groups, place] = logits
    return F.cross_entropy(table, torch.zeros(n, dtype=torch.long, device=logits.device))


def loss_fn(
    model: Reranker, batch: dict[str, Any], mlm_weight: float = 0.0, loss: str = "binary"
) -> Tensor:
    """Balanced binary cross-entropy of matched vs mismatched, or the listwise softmax over each
    row's group (+ the masked-word loss), of the match logits plus the batch's ``prior`` (the
    first stage's weighted logits) when it has one."""
    match = model(batch["words"], batch["word_mask"], batch["feats"], batch["times"],
                  batch["frame_mask"])  # fmt: skip
    logits = match.logits
    if "prior" in batch:
        logits = logits + batch["prior"].to(logits)
    y = batch["labels"].to(logits.device)
    if loss == "listwise":
        total = listwise_loss(logits, y)
    else:
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        pos, neg = y > 0.5, y < 0.5
        total = bce[pos].mean() + (bce[neg].mean() if neg.any() else bce.new_zeros(()))
    if "mlm" in batch and mlm_weight > 0:
        m = batch["mlm"]
        out = model(m["words"], m["word_mask"], m["feats"], m["times"], m["frame_mask"])
        chosen = m["targets"] >= 0  # score the vocabulary at the masked places only
        logits = model.masked_word_logits(out.text_states[chosen])
        total = total + mlm_weight * F.cross_entropy(logits, m["targets"][chosen])
    return total


# -- evaluation ---------------------------------------------------------------------------------


def t2v_metrics(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}t2v_R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALLS}
    out[f"{prefix}t2v_MedR"] = float(np.median(ranks))
    out[f"{prefix}t2v_MeanR"] = float(np.mean(ranks))
    return out


def rerank_order(scores: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """The first-stage ``order`` (clip indices, best first) with its top ``k`` re-sorted by
    ``scores`` (one per top-k clip); the rest keep their places. Ties keep the first order."""
    top = order[:k]
    return np.concatenate([top[np.argsort(-scores, kind="stable")], order[k:]])


@torch.no_grad()
def score_pairs(
    model: Reranker, pairs: Sequence[tuple[str, int]], clips: ClipSet,
    words: WordCache | None = None, batch_size: int = 512,
) -> np.ndarray:  # fmt: skip
    """Matching logits of many (caption, clip index) pairs, ``batch_size`` pairs a forward; each
    distinct caption's MiniLM states are computed once (``words``, when the encoder is frozen)."""
    words = words or WordCache(model)
    out = [np.zeros(0, np.float32)]
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        w, w_mask = words([t for t, _ in chunk])
        feats, times, mask = pad_clips([clips.features[j] for _, j in chunk])
        dev = model.device
        match = model(w.to(dev), w_mask.to(dev), feats.to(dev), times.to(dev), mask.to(dev))
        out.append(match.logits.float().cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def evaluate_rerank(
    reranker: Reranker, clips: ClipSet, sim: np.ndarray, k: int, *, order_pairs: bool = False,
    dual_scores: Any = None, words: WordCache | None = None, prior_weights: Sequence[float] = (),
) -> dict[str, float]:  # fmt: skip
    """t2v metrics of the first stage (``sim`` ``[captions, clips]``) and after re-ranking its
    top ``k`` with ``reranker``. ``order_pairs``: also the share of order-swapped caption pairs
    the re-ranker (and the dual encoder, through ``dual_scores(texts, clip) -> scores``) scores
    the right way round on their clip. ``sim`` holds the first stage's logits; re-ranked scores
    add ``reranker.prior_weight`` times them, or with ``prior_weights`` the weight among them that
    gives the best R@1 (the smallest of equals), reported as ``prior_weight``."""
    reranker.eval()
    words = words or WordCache(reranker)
    texts, owner = caption_index(clips)
    orders = np.argsort(-sim, axis=1, kind="stable")
    k = min(k, len(clips))
    pairs = [(t, int(j)) for t, order in zip(texts, orders, strict=True) for j in order[:k]]
    logits = score_pairs(reranker, pairs, clips, words).reshape(len(texts), k)
    prior = np.take_along_axis(sim, orders[:, :k], 1)

    def reranked(scores: np.ndarray) -> list[np.ndarray]:
        return [rerank_order(scores[q], orders[q], k) for q in range(len(texts))]

    def ranks(rows: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([int(np.nonzero(row == own)[0][0]) + 1
                         for row, own in zip(rows, owner, strict=True)])  # fmt: skip

    def shared_ranks(rows: Sequence[np.ndarray]) -> np.ndarray:  # the first clip with the sentence
        return np.array([int(np.argmax(owners[q, row])) + 1 for q, row in enumerate(rows)])

    weight = reranker.prior_weight
    if prior_weights:
        recall = {w: float(np.mean(ranks(reranked(logits + w * prior)) <= 1))
                  for w in sorted(prior_weights)}  # fmt: skip
        weight = max(recall, key=lambda w: (recall[w], -w))
    owners = shared_sentences(texts, clips.captions)
    final = reranked(logits + weight * prior)
    out = {**t2v_metrics(ranks(orders), "dual_"), **t2v_metrics(ranks(final), "rerank_"),
           **shared_t2v_metrics(shared_ranks(orders), owners, "dual_"),
           **shared_t2v_metrics(shared_ranks(final), owners, "rerank_"),
           "prior_weight": weight}  # fmt: skip
    if order_pairs:
        swaps = [(t, order_swapped(t), int(own)) for t, own in zip(texts, owner, strict=True)]
        swaps = [(t, o, own) for t, o, own in swaps if o and o not in clips.captions[own]]
        s = score_pairs(reranker, [(x, own) for t, o, own in swaps for x in (t, o)], clips, words)
        out["order_pairs"] = float(len(swaps))
        # both captions of a pair are scored on the same clip: the prior differs by their cosines
        if dual_scores is not None and swaps:
            d = np.array([dual_scores([t, o], own) for t, o, own in swaps])
            s = s + weight * d.reshape(-1)
            out["order_right_dual"] = 100.0 * float(np.mean(d[:, 0] > d[:, 1]))
        out["order_right_rerank"] = 100.0 * float(np.mean(s[0::2] > s[1::2])) if swaps else 0.0
    return out


def dual_similarity(dual: RetrievalModel, clips: ClipSet) -> np.ndarray:
    """The dual encoder's ``[captions, clips]`` logits: cosine x its learned scale."""
    texts, _ = caption_index(clips)
    return dual_logit_scale(dual) * (dual.embed_texts(texts) @ dual.embed_videos(clips.features).T)


def dual_logit_scale(dual: RetrievalModel) -> float:
    return float(dual.logit_scale.detach().exp())


# -- training -----------------------------------------------------------------------------------


def train_reranker(
    config: Any,
    train: ClipSet,
    val: ClipSet,
    dual: RetrievalModel | None,
    *,
    out_dir: Path,
    run: RerankTrainConfig | None = None,
    recipe: FeatureRecipe | None = None,
    backbone: BackboneSpec | None = None,
    retrieval_name: str = "",
    trained_on: str = "",
    resume: bool = True,
    first_stage: tuple[ClipSet, ClipSet] | None = None,
) -> tuple[Reranker, TrainResult]:
    """Train with the shared loop; ``out_dir/best`` is a saved re-ranker, loaded and returned.
    Without a ``dual`` encoder there are no hard negatives nor first-stage logits
    (``train_prior``), and validation re-ranks every clip.
    ``first_stage``: the ``dual`` encoder's inputs for the same training and validation clips
    when the re-ranker reads other features (cells); default ``train`` and ``val``."""
    run = run or RerankTrainConfig()
    if len(train) < 2 or len(val) < 2:
        raise ConfigError("the re-ranker needs at least two training and two validation clips")
    dual_train, dual_val = first_stage or (train, val)
    if dual_train.ids != train.ids or dual_val.ids != val.ids:
        raise ConfigError("the first stage's clips must be the re-ranker's, in the same order")
    torch.manual_seed(run.train.seed)
    cfg = load_config(config)
    if cfg.frames == "retrieval" and dual is None:
        raise ConfigError("frames = 'retrieval' needs the retrieval model it re-ranks")
    tower = dual.video.cfg if cfg.frames == "retrieval" and dual is not None else None
    model = Reranker(cfg, train.features[0].shape[1], tower)
    if model.frames is not None and dual is not None:
        model.frames.copy_from(dual.video)
    model.backbone, model.retrieval, model.trained_on = backbone, retrieval_name, trained_on
    model.fit_feature_stats(train.features)
    hard = mine_hard(dual, dual_train, run.hard_k) if dual and "hard" in run.negatives else None
    first = FirstStage(dual, dual_train) if run.train_prior and dual is not None else None
    if first is not None:
        model.prior_weight = run.train_prior  # epochs are chosen on the score trained for
    per_clip = max(1, run.val_max_queries // len(val))
    val = ClipSet(val.ids, val.features, [c[:per_clip] for c in val.captions])
    if dual is not None:
        val_sim = dual_similarity(dual, ClipSet(val.ids, dual_val.features, val.captions))
        k = run.rerank_k
    else:
        val_sim, k = np.zeros((len(caption_index(val)[0]), len(val)), np.float32), len(val)
    words = WordCache(model) if model.text.frozen else None
    val_words = WordCache(model)

    def save_best(m: torch.nn.Module, directory: Path) -> None:
        notes = (f"Negatives: {run.negatives} (hard: {run.hard_per_row} a row from the dual "
                 f"encoder's top {run.hard_k}); {run.loss} loss; first-stage logit weight in "
                 f"training {run.train_prior}; masked-word loss weight "
                 f"{run.mlm_weight}.")  # fmt: skip
        save_pretrained(directory, m, recipe=recipe, notes=notes)  # type: ignore[arg-type]

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        # Epochs are chosen on the re-ranker's own score; the first stage's weight after.
        scores = evaluate_rerank(m, val, val_sim, k,  # type: ignore[arg-type]
                                 words=val_words if words is not None else None)
        m.scores = {f"val_{k}": round(v, 4) for k, v in scores.items()}  # type: ignore[assignment]
        return scores

    result = fit(
        model,
        train_batches=lambda epoch: Epoch(model, train, run, epoch, hard, words, run.train.seed,
                                          first),
        loss_fn=lambda m, batch: loss_fn(m, batch, run.mlm_weight, run.loss),  # type: ignore[arg-type]
        evaluate=evaluate,
        select_metric=run.select_metric,
        out_dir=out_dir,
        config=run.train,
        resume=resume,
        save_best=save_best,
    )
    best = from_pretrained(result.best_dir, device=run.train.device)
    if dual is not None and run.prior_weights:
        scores = evaluate_rerank(best, val, val_sim, k, prior_weights=run.prior_weights)
        best.prior_weight = scores["prior_weight"]
        best.scores.update({f"val_fused_{k}": round(v, 4) for k, v in scores.items()
                            if k.startswith("rerank_") or k == "prior_weight"})  # fmt: skip
        save_best(best, result.best_dir)
    return best, result


# -- whole runs on a dataset folder (what the CLI calls) ----------------------------------------


def _clips(
    records: Sequence[VideoRecord], recipe: Any, feature_settings: FeatureSettings | None,
    cache_dir: Path | None, progress: bool,
) -> ClipSet:  # fmt: skip
    feats = extract_features(records, recipe, settings=feature_settings, cache_dir=cache_dir,
                             progress=progress)  # fmt: skip
    return clip_set(records, {k: recipe.apply(v) for k, v in feats.items()})


def reranker_recipe(
    retrieval: FeatureRecipe, grid_pool: int, precision: str = "float32"
) -> FeatureRecipe:
    """The features a re-ranker with ``grid_pool`` reads, computed in ``precision``: the retrieval
    model's recipe (one token a frame), or its backbone and sampling pooled to k x k cells, not
    standardised by the recipe (the re-ranker standardises its input with its training set's
    statistics)."""
    if grid_pool == 1:
        return replace(retrieval, precision=precision)
    return FeatureRecipe(backbone=retrieval.backbone, weights=retrieval.weights,
                         n_frames=retrieval.n_frames, size=retrieval.size, grid_pool=grid_pool,
                         normalize=False, precision=precision)  # fmt: skip


def train_on_dataset(
    data: Path | str,
    retrieval: Path | str,
    out: Path | str,
    run: RerankTrainConfig | None = None,
    *,
    model_config: str | Path | dict[str, Any] | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    resume: bool = True,
) -> tuple[Reranker, TrainResult]:
    """Train a re-ranker for the retrieval model saved in ``retrieval`` on the dataset folder
    ``data``, with that model's features; the best lands in ``out/best``."""
    run = run or RerankTrainConfig.load()
    config = {**load_config(model_config or "reranker").to_dict(), **run.model}
    cfg = load_config(config)  # a bad config fails now, not after the features are computed
    dual = retrieval_from_pretrained(retrieval, device=run.train.device)
    recipe = dual.recipe or load_recipe(retrieval)
    records = load_dataset(data)
    train_recs = by_split(records, run.train_split)
    val_recs = by_split(records, run.val_split) or train_recs
    if not train_recs:
        raise ConfigError(f"{data}: no videos in split {run.train_split!r}")
    progress = run.train.progress
    precision = (feature_settings or FeatureSettings()).precision
    warn_precision(retrieval, recipe, feature_settings)  # its first stage
    first = tuple(_clips(recs, recipe, feature_settings, cache_dir, progress)
                  for recs in (train_recs, val_recs))  # fmt: skip
    own = reranker_recipe(recipe, cfg.grid_pool, precision)
    train, val = first if cfg.grid_pool == 1 else (
        _clips(recs, own, feature_settings, cache_dir, progress) for recs in (train_recs, val_recs)
    )  # fmt: skip
    spec = dual.backbone or BackboneSpec(recipe.backbone, recipe.weights,
                                         dim=first[0].features[0].shape[1])  # fmt: skip
    spec = replace(spec, dim=train.features[0].shape[1])  # cells: C x k x k
    name = model_name(retrieval)  # the run's name for a run folder or its best/
    return train_reranker(
        config, train, val, dual, out_dir=Path(out), run=run, recipe=own, backbone=spec,
        retrieval_name=name, trained_on=f"{Path(data).name} ({run.train_split})", resume=resume,
        first_stage=(first[0], first[1]),
    )  # fmt: skip


def evaluate_on_dataset(
    retrieval: Path | str,
    reranker: Path | str,
    data: Path | str,
    split: str = "test",
    *,
    k: int = 20,
    queries: Path | str | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """t2v R@1/5/10 and median rank of the retrieval model alone and with its top ``k``
    re-ranked, and the share of order-swapped caption pairs each gets right."""
    dual = retrieval_from_pretrained(retrieval, device=device)
    model = from_pretrained(reranker, device=device)
    recipe = dual.recipe or load_recipe(retrieval)
    records = by_split(load_dataset(data), split)
    if queries is not None:
        held = {r.video_id: r.captions for r in load_dataset(Path(queries).parent,
                                                             annotation=queries)}  # fmt: skip
        records = [replace(r, captions=held[r.video_id]) for r in records if r.video_id in held]
    if not records:
        raise ConfigError(f"{data}: no videos in split {split!r}")
    warn_precision(retrieval, recipe, feature_settings)
    warn_precision(reranker, model.recipe, feature_settings)
    clips = _clips(records, recipe, feature_settings, cache_dir, progress)
    if len(clips) < 2:
        raise ConfigError("evaluation needs at least two clips")
    own = model.recipe or recipe  # the re-ranker's features: cells, or the retrieval model's
    same = replace(own, precision=recipe.precision) == recipe  # both served alike
    cells = clips if same else _clips(records, own, feature_settings, cache_dir, progress)
    video = dual.embed_videos(clips.features)
    scale = dual_logit_scale(dual)

    def dual_scores(texts: list[str], clip: int) -> np.ndarray:
        return scale * (dual.embed_texts(texts) @ video[clip])

    texts, _ = caption_index(clips)
    sim = scale * (dual.embed_texts(texts) @ video.T)
    scores = evaluate_rerank(model, cells, sim, k, order_pairs=True, dual_scores=dual_scores)
    return {**scores, "k": float(k), "n_clips": float(len(clips)), "n_queries": float(len(texts))}


def summary_json(scores: dict[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in scores.items()})
