"""Training and evaluating the joint embedding on a caption dataset.

Data: every clip's per-frame features (computed once through the feature cache) and its captions.
An epoch visits each training clip ``pairs_per_clip`` times in shuffled batches of distinct clips,
each time with one of its captions drawn at random, so the other rows of a batch are negatives.
With ``hard_negatives`` each row also carries a caption of its most similar other clip (by mean
frame feature, captions differing) and that clip's features: the negatives the loss must beat.
Everything random is drawn from a generator seeded by the epoch, so a resumed run matches.

Evaluation ranks every caption against every clip of a split (text->video) and every clip against
every caption (video->text, a clip's rank is that of its best-ranked own caption): R@1/5/10,
median and mean rank, and ``rsum`` (the six recalls summed) to select checkpoints on.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from video_mm.artifacts import (
    BackboneSpec,
    FeatureRecipe,
    load_recipe,
    pad_features,
    warn_precision,
)
from video_mm.data.datasets import VideoRecord, by_split, describe_training_data, load_dataset
from video_mm.data.features import extract_features
from video_mm.data.vocab import Vocabulary
from video_mm.errors import ConfigError
from video_mm.retrieval.model import (
    RetrievalConfig,
    RetrievalModel,
    from_pretrained,
    load_config,
    save_pretrained,
)
from video_mm.settings import CONFIG_DIR, FeatureSettings
from video_mm.train.loop import TrainConfig, TrainResult, fit

TRAIN_CONFIGS = CONFIG_DIR / "train"
MODEL_CONFIGS = {"learned": "retrieval", "minilm": "retrieval_minilm"}
RECALLS = (1, 5, 10)


@dataclass
class RetrievalTrainConfig:
    """Everything one retrieval training run depends on (``configs/train/retrieval.toml``)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureRecipe = field(default_factory=FeatureRecipe)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model config
    batch_size: int = 64
    pairs_per_clip: int = 4  # (clip, random caption) pairs per clip and epoch
    hard_negatives: bool = False
    train_split: str = "train"  # "all": every video of the dataset
    val_split: str = "val"
    select_metric: str = "rsum"

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> RetrievalTrainConfig:
        """Read a TOML file (default ``configs/train/retrieval.toml``), then apply ``overrides``
        (``epochs``/``lr``/... go to ``[train]``, ``n_frames``/... to ``[features]``)."""
        path = Path(path) if path else TRAIN_CONFIGS / "retrieval.toml"
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
        train, feats = dict(data.pop("train", {})), dict(data.pop("features", {}))
        train_keys = {f.name for f in fields(TrainConfig)}
        # precision is what training computes the features in (features.precision), not a choice
        feat_keys = {f.name for f in fields(FeatureRecipe)} - {"precision"}
        for key, value in overrides.items():
            if value is None:
                continue
            target = train if key in train_keys else feats if key in feat_keys else data
            target[key] = value
        known = {f.name for f in fields(cls)} - {"train", "features"}
        if unknown := sorted(set(data) - known) + sorted(set(feats) - feat_keys):
            raise ConfigError(f"{path}: unknown retrieval settings {unknown}")
        return cls(train=TrainConfig.from_dict(train), features=FeatureRecipe(**feats), **data)


@dataclass
class ClipSet:
    """Clips with their features and captions, ready to batch."""

    ids: list[str]
    features: list[np.ndarray]  # [T, D] each
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)


# -- data -------------------------------------------------------------------------------------


def clip_set(records: Sequence[VideoRecord], features: dict[str, np.ndarray]) -> ClipSet:
    """The records that have features and captions, in order."""
    keep = [r for r in records if r.video_id in features and r.captions]
    return ClipSet(
        [r.video_id for r in keep], [features[r.video_id] for r in keep], [r.captions for r in keep]
    )


# -- batches ----------------------------------------------------------------------------------


def nearest_other_clips(clips: ClipSet) -> np.ndarray:
    """For each clip, the most similar other clip (cosine of mean features) whose captions differ
    from its own: where hard negatives come from."""
    means = np.stack([f.mean(0) for f in clips.features])
    means = means - means.mean(0)
    means /= np.linalg.norm(means, axis=1, keepdims=True).clip(1e-8)
    sim = means @ means.T
    np.fill_diagonal(sim, -np.inf)
    caption_sets = [set(c) for c in clips.captions]
    nearest = np.empty(len(clips), np.int64)
    for i, order in enumerate(np.argsort(-sim, axis=1)):
        nearest[i] = next((j for j in order if not caption_sets[i] & caption_sets[j]), order[0])
    return nearest


class Epoch:
    """The batches of one epoch, built lazily (a ``len()`` for the progress bar and scheduler)."""

    def __init__(
        self, model: RetrievalModel, clips: ClipSet, opts: RetrievalTrainConfig, epoch: int,
        nearest: np.ndarray | None, seed: int = 0,
    ) -> None:  # fmt: skip
        self.model, self.clips, self.opts, self.nearest = model, clips, opts, nearest
        self.rng = np.random.default_rng([seed, epoch])
        self.order = np.concatenate(
            [self.rng.permutation(len(clips)) for _ in range(opts.pairs_per_clip)]
        )

    def __len__(self) -> int:
        return -(-len(self.order) // self.opts.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        bs = self.opts.batch_size
        for start in range(0, len(self.order), bs):
            # distinct clips per batch: a clip twice would be its own negative
            rows = list(dict.fromkeys(self.order[start : start + bs].tolist()))
            yield self._batch(rows)

    def _caption(self, i: int) -> str:
        captions = self.clips.captions[i]
        return captions[int(self.rng.integers(len(captions)))]

    def _batch(self, rows: list[int]) -> dict[str, Any]:
        tower = self.model.text
        feats, mask = pad_features([self.clips.features[i] for i in rows])
        batch: dict[str, Any] = {
            "feats": feats,
            "mask": mask,
            "text": tower.tokenize([self._caption(i) for i in rows]),
        }
        if self.nearest is not None:
            hard = [int(self.nearest[i]) for i in rows]
            batch["hard_text"] = tower.tokenize([self._caption(j) for j in hard])
            batch["hard_feats"], batch["hard_mask"] = pad_features(
                [self.clips.features[j] for j in hard]
            )
        return batch


# -- evaluation -------------------------------------------------------------------------------


def shared_sentences(texts: Sequence[str], captions: Sequence[Sequence[str]]) -> np.ndarray:
    """``[n_texts, n_clips]``: which clips have each query sentence among their own captions.
    One sentence is often written for several clips ("a man is cooking"; on the synthetic
    benchmark's compositional split, most one-event captions): ranking any of them first
    answers the query, and which of them is the query's own clip the sentence cannot tell."""
    holders: dict[str, list[int]] = {}
    for j, caps in enumerate(captions):
        for caption in set(caps):
            holders.setdefault(caption, []).append(j)
    out = np.zeros((len(texts), len(captions)), bool)
    for i, text in enumerate(texts):
        out[i, holders.get(text, [])] = True
    return out


def shared_t2v_metrics(ranks: np.ndarray, owners: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Text->video metrics where a hit is any clip the query's sentence was written for
    (``ranks``: the first such clip's rank), and ``R@1_ceiling``: the R@1 of a model that ranks
    exactly those clips first, in random order (the most the one-owner R@1 can credit)."""
    out = {f"{prefix}t2v_shared_R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALLS}
    out[f"{prefix}t2v_shared_MedR"] = float(np.median(ranks))
    out[f"{prefix}t2v_R@1_ceiling"] = float(100.0 * np.mean(1.0 / owners.sum(1)))
    return out


def rank_metrics(
    sim: np.ndarray, text_clip: np.ndarray, owners: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of a ``[n_texts, n_clips]`` similarity matrix where text ``t`` belongs to clip
    ``text_clip[t]``. Ranks are 1-based; ties count against the model (pessimistic). With
    ``owners`` (:func:`shared_sentences`) also the shared-sentence text->video metrics."""
    n_texts, n_clips = sim.shape
    own = sim[np.arange(n_texts), text_clip]
    t2v = (sim > own[:, None]).sum(1) + (sim == own[:, None]).sum(1)  # [n_texts]
    # video->text: rank of each text among all texts for its clip, best own text counts
    by_clip = sim.T  # [n_clips, n_texts]
    own_v = by_clip[text_clip, np.arange(n_texts)]  # score of each text with its own clip
    rank_t = (by_clip[text_clip] > own_v[:, None]).sum(1) + (
        by_clip[text_clip] == own_v[:, None]
    ).sum(1)
    v2t = np.full(n_clips, np.iinfo(np.int64).max)
    np.minimum.at(v2t, text_clip, rank_t)
    v2t = v2t[v2t < np.iinfo(np.int64).max]
    out: dict[str, float] = {}
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        for k in RECALLS:
            out[f"{name}_R@{k}"] = float(100.0 * np.mean(ranks <= k))
        out[f"{name}_MedR"] = float(np.median(ranks))
        out[f"{name}_MeanR"] = float(np.mean(ranks))
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in RECALLS)
    if owners is not None:
        best = np.where(owners, sim, -np.inf).max(1)
        out |= shared_t2v_metrics(1 + ((sim >= best[:, None]) & ~owners).sum(1), owners)
    return out


def evaluate(model: RetrievalModel, clips: ClipSet, batch_size: int = 128) -> dict[str, float]:
    """Retrieval metrics of ``model`` over every caption and clip of ``clips``."""
    if len(clips) < 2:
        raise ConfigError("retrieval evaluation needs at least two clips")
    video = model.embed_videos(clips.features, batch_size)
    texts = [c for caps in clips.captions for c in caps]
    text_clip = np.repeat(np.arange(len(clips)), [len(c) for c in clips.captions])
    text = model.embed_texts(texts, batch_size)
    return rank_metrics(text @ video.T, text_clip, shared_sentences(texts, clips.captions))


# -- training ---------------------------------------------------------------------------------


def build_model(config: RetrievalConfig, train: ClipSet, feat_dim: int) -> RetrievalModel:
    """A fresh model; the learned text tower's vocabulary comes from the training captions."""
    vocab = None
    if config.text_tower == "learned":
        min_count = config.text_config().min_count  # type: ignore[union-attr]
        vocab = Vocabulary.build((c for caps in train.captions for c in caps), min_count)
    return RetrievalModel(config, feat_dim, vocab)


def train_retrieval(
    config: RetrievalConfig,
    train: ClipSet,
    val: ClipSet,
    *,
    out_dir: Path,
    run: RetrievalTrainConfig | None = None,
    backbone: BackboneSpec | None = None,
    trained_on: str = "",
    resume: bool = True,
) -> tuple[RetrievalModel, TrainResult]:
    """Train with the shared loop; ``out_dir/best`` is a saved model (see ``save_pretrained``),
    loaded and returned with its validation scores."""
    run = run or RetrievalTrainConfig()
    if len(train) < 2:
        raise ConfigError(f"need at least two training clips with features, got {len(train)}")
    unvalidated = "" if len(val) >= 2 else (
        f"the validation split has {len(val)} clip(s) with features and captions and ranking "
        "needs at least 2; training without validation, best/ is the last epoch (to pick the "
        "best epoch: --val-split all, or a dataset with a larger validation split)")
    torch.manual_seed(run.train.seed)
    model = build_model(config, train, train.features[0].shape[1])
    model.backbone, model.trained_on = backbone, trained_on
    nearest = nearest_other_clips(train) if run.hard_negatives else None

    def save_best(m: torch.nn.Module, directory: Path) -> None:
        notes = f"Features: {asdict(run.features)}. Hard negatives: {run.hard_negatives}."
        save_pretrained(directory, m, notes=notes, recipe=run.features)  # type: ignore[arg-type]

    def evaluate_and_record(m: torch.nn.Module) -> dict[str, float]:
        scores = evaluate(m, val)  # type: ignore[arg-type]
        m.scores = {f"val_{k}": round(v, 4) for k, v in scores.items()}  # type: ignore[assignment]
        return scores

    result = fit(
        model,
        train_batches=lambda epoch: Epoch(model, train, run, epoch, nearest, run.train.seed),
        loss_fn=lambda m, batch: m.loss(batch),
        evaluate=evaluate_and_record if not unvalidated else None,
        select_metric=run.select_metric,
        out_dir=out_dir,
        config=run.train,
        resume=resume,
        save_best=save_best,
        unvalidated=unvalidated,
    )
    return from_pretrained(result.best_dir, device=run.train.device), result


# -- whole runs on a dataset folder (what the CLI calls) ---------------------------------------


def train_on_dataset(
    data: Path | str,
    text_tower: str,
    out: Path | str,
    run: RetrievalTrainConfig | None = None,
    *,
    model_config: str | Path | dict[str, Any] | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    resume: bool = True,
    init: str | None = None,
) -> tuple[RetrievalModel, TrainResult]:
    """Train on the dataset folder ``data``; the best model lands in ``out/best``. ``init``
    (``hf:<repo id or folder>``): start from that CLIP/SigLIP's zero-shot space, training a
    projection on each side (from the identity) and the video pooling on its image embeddings."""
    run = run or RetrievalTrainConfig.load()
    if init is not None:
        from video_mm.retrieval.zeroshot import init_config

        pooling = run.model.get("video", {}).get("pooling", "mean")
        tune = run.model.get("text", {}).get("tune_layers", 0)
        model_config, run.features = init_config(
            init, n_frames=run.features.n_frames, pooling=pooling, tune_layers=tune,
            offline=bool(feature_settings and feature_settings.offline),
        )
        text_tower = "hf"
    elif text_tower not in MODEL_CONFIGS:
        raise ConfigError(f"text tower must be one of {sorted(MODEL_CONFIGS)} (or --init "
                          f"hf:<CLIP or SigLIP>), got {text_tower!r}")
    records = load_dataset(data)
    train_recs = by_split(records, run.train_split)
    val_recs = by_split(records, run.val_split)
    if not train_recs:
        raise ConfigError(f"{data}: no videos in split {run.train_split!r}")
    run.features.precision = (feature_settings or FeatureSettings()).precision
    feats = extract_features(
        [*train_recs, *val_recs], run.features, settings=feature_settings, cache_dir=cache_dir,
        progress=run.train.progress,
    )  # fmt: skip
    train, val = clip_set(train_recs, feats), clip_set(val_recs, feats)
    base = load_config(model_config or MODEL_CONFIGS[text_tower]).to_dict()
    if init is not None:
        base["name"] = Path(out).name or base["name"]
    for key, value in run.model.items():  # one level deep: [model] video = {pooling = "mean"}
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    config = load_config({**base, "text_tower": text_tower})
    spec = BackboneSpec(run.features.backbone, run.features.weights, dim=train.features[0].shape[1])
    trained_on = describe_training_data(data, run.train_split)
    return train_retrieval(
        config, train, val, out_dir=Path(out), run=run, backbone=spec, trained_on=trained_on,
        resume=resume,
    )  # fmt: skip


def evaluate_on_dataset(
    model_dir: Path | str,
    data: Path | str,
    split: str = "test",
    *,
    queries: Path | str | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Retrieval metrics of a saved model on a split (``all``: every video). ``queries``: take
    the captions from this annotation file instead (e.g. msvd14's held-out captions)."""
    model = from_pretrained(model_dir, device=device)
    records = by_split(load_dataset(data), split)
    if queries is not None:
        held = {r.video_id: r.captions for r in load_dataset(Path(queries).parent,
                                                             annotation=queries)}  # fmt: skip
        records = [replace(r, captions=held[r.video_id]) for r in records if r.video_id in held]
    if not records:
        raise ConfigError(f"{data}: no videos in split {split!r}")
    recipe = model.recipe or load_recipe(model_dir)
    warn_precision(model_dir, recipe, feature_settings)
    feats = extract_features(
        records, recipe, settings=feature_settings, cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
    clips = clip_set(records, feats)
    scores = evaluate(model, clips)
    n_queries = sum(len(c) for c in clips.captions)
    return {**scores, "n_clips": float(len(clips)), "n_queries": float(n_queries)}
