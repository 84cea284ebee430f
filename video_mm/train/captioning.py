"""Training and evaluating captioners on a dataset folder.

Recipe: per-frame CNN features are extracted once through the feature layer (and cached by video
hash), a vocabulary is built from the training captions, and the captioner is trained with teacher
forcing on every (video, caption) pair by the shared loop (:func:`video_mm.train.loop.fit`): label
smoothing, dropout (in the model config), scheduled sampling (two-pass: the model's own greedy words
replace gold input words with a probability that ramps up over the epochs), AdamW with warmup and
cosine decay, gradient clipping. The best epoch by validation CIDEr-D (greedy decoding) is kept.
Optionally self-critical sequence training (Rennie et al. 2017) follows: sampled captions are
rewarded by their CIDEr-D minus the mean reward of the other samples of the same video.

An end-to-end model (``end_to_end`` in its config: the LRCN whose CNN trains with it) reads
frames instead: each clip's sampled frames are decoded once (uint8, cached like features,
:mod:`video_mm.data.frames`) and preprocessed by the model's CNN per batch, which then holds whole
clips with all their captions, so each clip goes through the CNN once per step. Its CNN is the
recipe's ``backbone`` starting from ``weights``, at the recipe's frame ``size``.

``features.grid_pool`` > 1 pools the backbone's last feature map to ``k x k`` cells and
concatenates them, so per-frame features keep where things are (global pooling throws that away;
moving left and moving right then look the same).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from video_mm.artifacts import (
    BackboneSpec,
    FeatureRecipe,
    load_recipe,
    pad_features,
    warn_precision,
)
from video_mm.data.datasets import VideoRecord, by_split, describe_training_data, load_dataset
from video_mm.data.features import extract_features
from video_mm.data.frames import sample_dataset_frames
from video_mm.data.vocab import Vocabulary
from video_mm.errors import ConfigError
from video_mm.models.base import CaptionModel, caption_loss
from video_mm.models.decoding import Decoding, greedy
from video_mm.models.factory import (
    Captioner,
    create_model,
    from_pretrained,
    load_config,
    save_pretrained,
)
from video_mm.settings import CONFIG_DIR, FeatureSettings
from video_mm.train.loop import TrainConfig, TrainResult, fit
from video_mm.train.metrics import caption_scores, cider_per_video

TRAIN_CONFIGS = CONFIG_DIR / "train"
ARCH_CONFIGS = {
    "meanpool": "meanpool",
    "lrcn": "lrcn",
    "attention": "attention",
    "attention-spatial": "attention_spatial",
}


@dataclass
class CaptionTrainConfig:
    """Everything one captioner training run depends on (``configs/train/captioner.toml``)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureRecipe = field(default_factory=FeatureRecipe)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of configs/models/<arch>.json
    batch_size: int = 64
    max_len: int = 24  # tokens per caption with <bos>/<eos>; longer ones are cut
    min_count: int = 1  # words seen fewer times in training become <unk>
    label_smoothing: float = 0.1
    scheduled_sampling: float = 0.0  # final probability of feeding the model's own word
    eval_max_videos: int = 500  # validation videos decoded per epoch for CIDEr
    train_split: str = "train"  # "all" trains on every video in the dataset
    val_split: str = "val"
    scst_epochs: int = 0  # self-critical epochs after cross-entropy; 0 disables
    scst_lr: float = 5e-5
    scst_samples: int = 5
    scst_batch_size: int = 32
    cnn_lr_scale: float = 0.02  # end to end: the CNN's learning rate relative to [train] lr

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> CaptionTrainConfig:
        """Read a TOML file (default ``configs/train/captioner.toml``) then apply ``overrides``
        (``epochs``/``lr``/... go to ``train``, ``n_frames``/... to ``features``)."""
        path = Path(path) if path else TRAIN_CONFIGS / "captioner.toml"
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
        train = dict(data.pop("train", {}))
        feats = dict(data.pop("features", {}))
        train_keys = {f.name for f in fields(TrainConfig)}
        # precision is what training computes the features in (features.precision), not a choice
        feat_keys = {f.name for f in fields(FeatureRecipe)} - {"precision"}
        for key, value in overrides.items():
            if value is None:
                continue
            if key in train_keys:
                train[key] = value
            elif key in feat_keys:
                feats[key] = value
            else:
                data[key] = value
        known = {f.name for f in fields(cls)} - {"train", "features"}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"{path}: unknown captioner settings {unknown}")
        unknown_f = sorted(set(feats) - feat_keys)
        if unknown_f:
            raise ConfigError(f"{path}: unknown [features] settings {unknown_f}")
        return cls(train=TrainConfig.from_dict(train), features=FeatureRecipe(**feats), **data)


# --- features ------------------------------------------------------------------------------------


# --- batches -------------------------------------------------------------------------------------


Batch = tuple[Tensor, ...]  # (feats, mask, tokens) or, clips with their captions, + clip_index


class CaptionBatches:
    """Every (video, caption) pair, shuffled per epoch from ``seed + epoch``. With ``prepare``
    (frames: the model's CNN preprocessing, run per batch) a batch is ``batch_size`` clips with
    all their captions: ``(frames, mask, tokens, clip_index)``."""

    def __init__(
        self,
        feats: Mapping[str, np.ndarray],
        records: Sequence[VideoRecord],
        vocab: Vocabulary,
        batch_size: int,
        max_len: int,
        seed: int,
        *,
        prepare: Callable[[np.ndarray], Tensor] | None = None,
    ) -> None:
        self.feats, self.vocab, self.prepare = feats, vocab, prepare
        self.pairs = [(r.video_id, c) for r in records if r.video_id in feats for c in r.captions]
        if not self.pairs:
            raise ConfigError("no training pairs: no video with both features and captions")
        self.captions: dict[str, list[str]] = {}
        for v, c in self.pairs:
            self.captions.setdefault(v, []).append(c)
        self.units: list[Any] = list(self.captions) if prepare is not None else self.pairs
        self.batch_size, self.max_len, self.seed = batch_size, max_len, seed

    def __len__(self) -> int:
        return -(-len(self.units) // self.batch_size)

    def __call__(self, epoch: int) -> Sequence[Batch]:
        """The epoch's batches, built as they are read (frames are large)."""
        order = np.random.default_rng(self.seed + epoch).permutation(len(self.units))
        chunks = [[self.units[j] for j in order[i : i + self.batch_size]]
                  for i in range(0, len(order), self.batch_size)]
        return _Lazy(chunks, self._pairs if self.prepare is None else self._clips)

    def _pairs(self, chunk: list[tuple[str, str]]) -> Batch:
        feats, mask = pad_features([self.feats[v] for v, _ in chunk])
        tokens = torch.from_numpy(self.vocab.encode_batch([c for _, c in chunk], self.max_len))
        return feats, mask, tokens

    def _clips(self, chunk: list[str]) -> Batch:
        assert self.prepare is not None
        frames, mask = pad_features([self.prepare(self.feats[v]) for v in chunk])
        caps = [(k, c) for k, v in enumerate(chunk) for c in self.captions[v]]
        tokens = torch.from_numpy(self.vocab.encode_batch([c for _, c in caps], self.max_len))
        return frames, mask, tokens, torch.tensor([k for k, _ in caps])


class _Lazy(Sequence[Batch]):
    """Batches made from their chunks when read: a length for the loop, memory for one batch."""

    def __init__(self, chunks: list[Any], make: Callable[[Any], Batch]) -> None:
        self.chunks, self.make = chunks, make

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        return self.make(self.chunks[i])


def run_model(model: CaptionModel, batch: Batch, tokens: Tensor | None = None) -> Any:
    """Teacher-forced output on a batch (its own tokens unless given), clip_index passed on."""
    feats, mask, gold, *rest = batch
    extra = {"clip_index": rest[0]} if rest else {}
    return model(feats, mask, gold if tokens is None else tokens, **extra)


# --- objectives ----------------------------------------------------------------------------------


def scheduled_tokens(model: CaptionModel, batch: Batch, prob: float) -> Tensor:
    """Gold tokens with each input word (after ``<bos>``) swapped, with probability ``prob``, for
    the word the model itself predicts there from a teacher-forced pass (two-pass scheduled
    sampling, Mihaylova & Martins 2019)."""
    tokens = batch[2]
    with torch.no_grad():
        predicted = run_model(model, batch).logits.argmax(-1)  # [B, L-1] guesses of tokens[:, 1:]
    swap = torch.rand(predicted.shape, device=tokens.device) < prob
    swap &= tokens[:, 1:] != 0  # never put words where the caption has ended
    mixed = tokens.clone()
    mixed[:, 1:] = torch.where(swap, predicted, tokens[:, 1:])
    return mixed


def xe_loss(label_smoothing: float, sampling_prob: Any) -> Any:
    """Teacher-forcing cross-entropy; ``sampling_prob()`` gives the current scheduled-sampling
    probability."""

    def loss_fn(model: CaptionModel, batch: Batch) -> Tensor:
        tokens = batch[2]
        prob = sampling_prob()
        inputs = scheduled_tokens(model, batch, prob) if prob > 0 else tokens
        return caption_loss(run_model(model, batch, inputs), tokens,
                            label_smoothing=label_smoothing)

    return loss_fn


def sample_captions(
    model: CaptionModel, feats: Tensor, mask: Tensor, max_len: int, eos_id: int = 2
) -> tuple[Tensor, Tensor]:
    """Captions drawn word by word from the model: ``(tokens [B, t], summed log-prob [B])``."""
    state = model.init_state(feats, mask)
    prev = torch.full((feats.shape[0],), 1, dtype=torch.long, device=feats.device)
    done = torch.zeros_like(prev, dtype=torch.bool)
    total = torch.zeros(feats.shape[0], device=feats.device)
    words = []
    for _ in range(max_len):
        logprobs, state, _ = model.step(prev, state, feats, mask)
        probs = logprobs.detach().exp()
        probs[:, :2] = 0.0  # never <pad> or <bos>
        word = torch.multinomial(probs, 1).squeeze(1)
        total = total + logprobs.gather(1, word[:, None]).squeeze(1).masked_fill(done, 0.0)
        word = word.masked_fill(done, 0)
        words.append(word)
        done = done | (word == eos_id)
        prev = word
        if bool(done.all()):
            break
    return torch.stack(words, 1), total


def scst_loss(
    vocab: Vocabulary, refs: Mapping[str, Sequence[str]], samples: int, max_len: int
) -> Any:
    """Self-critical loss: -(CIDEr-D(sample) - mean CIDEr-D of the other samples) * log p."""

    def loss_fn(model: CaptionModel, batch: tuple[Tensor, Tensor, list[str]]) -> Tensor:
        feats, mask, ids = batch
        feats_k = feats.repeat_interleave(samples, 0)
        mask_k = mask.repeat_interleave(samples, 0)
        tokens, logprob = sample_captions(model, feats_k, mask_k, max_len)
        texts = [vocab.decode(t) for t in tokens.tolist()]
        cands = {v: texts[i * samples : (i + 1) * samples] for i, v in enumerate(ids)}
        rewards = cider_per_video({v: refs[v] for v in ids}, cands)
        r = torch.tensor([rewards[v] for v in ids], device=feats.device)  # [B, K]
        baseline = (r.sum(1, keepdim=True) - r) / max(1, samples - 1)
        advantage = (r - baseline).view(-1)
        return -(advantage * logprob).mean()

    return loss_fn


# --- evaluation ----------------------------------------------------------------------------------


def decode_all(
    model: CaptionModel,
    vocab: Vocabulary,
    feats: Mapping[str, np.ndarray],
    ids: Sequence[str],
    max_len: int,
    batch_size: int = 128,
    prepare: Callable[[np.ndarray], Any] | None = None,
) -> dict[str, str]:
    """Greedy captions of ``ids`` (the fast per-epoch decode); ``prepare``: see CaptionBatches."""
    device = next(model.parameters()).device
    out = {}
    for i in range(0, len(ids), batch_size):
        chunk = list(ids[i : i + batch_size])
        f, m = pad_features([prepare(feats[v]) if prepare else feats[v] for v in chunk])
        hyps = greedy(model, f.to(device), m.to(device), max_len=max_len)
        out.update({v: vocab.decode(h.tokens) for v, h in zip(chunk, hyps, strict=True)})
    return out


def validation(
    model: CaptionModel,
    vocab: Vocabulary,
    feats: Mapping[str, np.ndarray],
    records: Sequence[VideoRecord],
    config: CaptionTrainConfig,
    prepare: Callable[[np.ndarray], Tensor] | None = None,
) -> Any:
    """Per-epoch validation: teacher-forced loss and greedy CIDEr-D (fast tokenisation)."""
    recs = [r for r in records if r.video_id in feats and r.captions][: config.eval_max_videos]
    refs = {r.video_id: r.captions for r in recs}
    batches = CaptionBatches(feats, recs, vocab, config.batch_size, config.max_len, 0,
                             prepare=prepare)

    def evaluate(m: CaptionModel) -> dict[str, float]:
        device = next(m.parameters()).device
        total, count = 0.0, 0
        for batch in batches(0):
            batch = tuple(t.to(device) for t in batch)
            tokens = batch[2]
            n = int((tokens[:, 1:] != 0).sum())
            total += float(caption_loss(run_model(m, batch), tokens)) * n
            count += n
        preds = decode_all(m, vocab, feats, list(refs), config.max_len, prepare=prepare)
        scores = caption_scores(refs, preds, fast=True)
        return {
            "val_loss": total / max(count, 1),
            "CIDEr": scores["CIDEr"],
            "Bleu_4": scores["Bleu_4"],
        }

    return evaluate


def subset(records: Sequence[VideoRecord], name: str | None) -> list[VideoRecord]:
    """Records of a named subset: ``order`` (synthetic clips whose captions describe order)."""
    if not name:
        return list(records)
    if name == "order":
        return [r for r in records if r.extra.get("synth", {}).get("kind") == "order"]
    raise ConfigError(f"unknown subset {name!r}; known: order")


# --- the whole run -------------------------------------------------------------------------------


def _check_end_to_end(model_cfg: dict[str, Any], recipe: FeatureRecipe) -> None:
    """Fit an end-to-end model's config to the recipe (its CNN is the recipe's backbone, from the
    recipe's weights, at the recipe's frame size), refusing what cannot work before any decoding."""
    if recipe.grid_pool != 1:
        raise ConfigError(
            f"an end-to-end model pools each frame itself: features.grid_pool must be 1 "
            f"(--grid-pool 1), got {recipe.grid_pool}")
    if recipe.backbone.startswith("hf:"):
        raise ConfigError(
            f"end-to-end training takes a torchvision backbone, got {recipe.backbone!r}")
    model_cfg.update(backbone=recipe.backbone, backbone_weights=recipe.weights,
                     frame_size=recipe.size)


def _fit_feature_stats(model: CaptionModel, frames: list[np.ndarray], recipe: FeatureRecipe,
                       max_clips: int = 64) -> None:
    """Standardise the CNN's outputs with their statistics over (up to ``max_clips``) training
    clips, as a frozen backbone's features are; the recipe itself keeps none (it reads frames)."""
    cnn = model.cnn
    with torch.no_grad():
        pooled = [cnn(cnn.preprocess(f)) for f in frames[:max_clips]]
    stats = replace(recipe)
    stats.fit_normalization([p[0].numpy() if isinstance(p, tuple) else p.numpy() for p in pooled])
    assert stats.mean is not None and stats.std is not None
    model.set_feature_stats(torch.tensor(stats.mean), torch.tensor(stats.std))


def train_captioner(
    data: Path | str,
    arch: str,
    out: Path | str,
    config: CaptionTrainConfig | None = None,
    *,
    model_config: str | dict[str, Any] | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train a captioner on the dataset folder ``data``; the best model lands in ``out/best``.
    A dataset with no videos in the validation split trains without validation, saying so (the
    result's ``unvalidated``): ``best/`` is then the last epoch."""
    config = config or CaptionTrainConfig.load()
    out = Path(out)
    records = load_dataset(data)
    train_recs = by_split(records, config.train_split)
    val_recs = by_split(records, config.val_split)
    if not train_recs:
        raise ConfigError(f"{data}: no videos in split {config.train_split!r}")
    if not val_recs and config.scst_epochs > 0:
        raise ConfigError(
            f"{data}: no videos in the validation split {config.val_split!r}, and self-critical "
            "training keeps its model only if validation CIDEr-D improves: pass --val-split "
            "(e.g. all) or --scst-epochs 0")
    model_cfg = {**load_config(model_config or ARCH_CONFIGS.get(arch, arch)), **config.model}
    takes_frames = bool(model_cfg.get("end_to_end"))
    if takes_frames:
        _check_end_to_end(model_cfg, config.features)
    if model_cfg.get("spatial"):  # attend over the k x k cells the features are made of
        if config.features.grid_pool < 2:
            raise ConfigError(
                "spatial attention needs cells to attend over: features.grid_pool >= 2"
            )
        model_cfg["cells"] = config.features.grid_pool
    out.mkdir(parents=True, exist_ok=True)
    # end to end, the model's own CNN reads the frames in float32
    config.features.precision = ("float32" if takes_frames
                                 else (feature_settings or FeatureSettings()).precision)
    if takes_frames:
        feats = sample_dataset_frames([*train_recs, *val_recs], config.features,
                                      cache_dir=cache_dir, progress=config.train.progress)
    else:
        feats = extract_features(
            [*train_recs, *val_recs],
            config.features,
            settings=feature_settings,
            cache_dir=cache_dir,
            progress=config.train.progress,
        )
        config.features.fit_normalization(
            [feats[r.video_id] for r in train_recs if r.video_id in feats]
        )
        feats = {k: config.features.apply(v) for k, v in feats.items()}
    if not feats:
        raise ConfigError(f"{data}: no video could be read")
    vocab = Vocabulary.build([c for r in train_recs for c in r.captions], config.min_count)
    feat_dim = 0 if takes_frames else next(iter(feats.values())).shape[1]  # e2e: the CNN's
    torch.manual_seed(config.train.seed)
    model = create_model(model_cfg, len(vocab), feat_dim)
    spec = BackboneSpec(config.features.backbone, config.features.weights, dim=feat_dim)
    prepare = None
    if takes_frames:
        prepare = model.cnn.preprocess
        spec = BackboneSpec(config.features.backbone, config.features.weights,
                            model.cnn.weights_id, model.feat_dim, input="frames")
        if config.features.normalize:
            _fit_feature_stats(model, [feats[r.video_id] for r in train_recs
                                       if r.video_id in feats], config.features)
    trained_on = describe_training_data(data, config.train_split)

    def save_best(m: CaptionModel, best_dir: Path) -> None:
        save_pretrained(best_dir, m, vocab, spec, trained_on=trained_on, recipe=config.features)

    batches = CaptionBatches(feats, train_recs, vocab, config.batch_size, config.max_len,
                             config.train.seed, prepare=prepare)
    progress = {"step": 0}
    total_steps = len(batches) * config.train.epochs

    def sampling_prob() -> float:  # ramps linearly from 0 to the configured value
        progress["step"] += 1
        return config.scheduled_sampling * min(1.0, progress["step"] / max(1, total_steps))

    val_recs = [r for r in val_recs if r.video_id in feats and r.captions]
    evaluate = validation(model, vocab, feats, val_recs, config, prepare) if val_recs else None
    unvalidated = "" if val_recs else (
        f"{data} has no videos with captions in the validation split {config.val_split!r}; "
        "training without validation, best/ is the last epoch (to pick the best epoch: "
        "--val-split all, or a dataset with that split)")
    (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    result = fit(
        model,
        train_batches=batches,
        loss_fn=xe_loss(config.label_smoothing, sampling_prob),
        evaluate=evaluate,
        select_metric="CIDEr",
        out_dir=out,
        config=config.train,
        resume=resume,
        save_best=save_best,
        unvalidated=unvalidated,
        lr_scales={"cnn.": config.cnn_lr_scale},
    )
    if config.scst_epochs > 0:
        result = _self_critical(
            out, result, feats, train_recs, val_recs, vocab, config, evaluate, save_best, resume,
            prepare,
        )
    return result


def _self_critical(
    out: Path,
    xe: TrainResult,
    feats: Mapping[str, np.ndarray],
    train_recs: list[VideoRecord],
    val_recs: list[VideoRecord],
    vocab: Vocabulary,
    config: CaptionTrainConfig,
    evaluate: Any,
    save_best: Any,
    resume: bool,
    prepare: Callable[[np.ndarray], Tensor] | None,
) -> TrainResult:
    """SCST from the best cross-entropy model; its best replaces ``out/best`` if it is better."""
    model = from_pretrained(out / "best", device=config.train.device).model
    refs = {r.video_id: r.captions for r in train_recs}
    ids = [r.video_id for r in train_recs if r.video_id in feats and r.captions]

    def batches(epoch: int) -> list[tuple[Tensor, Tensor, list[str]]]:
        order = np.random.default_rng(config.train.seed + 1000 + epoch).permutation(len(ids))
        out_b = []
        for i in range(0, len(order), config.scst_batch_size):
            chunk = [ids[j] for j in order[i : i + config.scst_batch_size]]
            f, m = pad_features([prepare(feats[v]) if prepare else feats[v] for v in chunk])
            out_b.append((f, m, chunk))
        return out_b

    scst_config = replace(
        config.train,
        epochs=config.scst_epochs,
        lr=config.scst_lr,
        warmup_steps=0,
        schedule="constant",
        amp=False,
    )
    scst = fit(
        model,
        train_batches=batches,
        loss_fn=scst_loss(vocab, refs, config.scst_samples, config.max_len),
        evaluate=evaluate,
        select_metric="CIDEr",
        out_dir=out / "scst",
        config=scst_config,
        resume=resume,
        save_best=save_best,
        lr_scales={"cnn.": config.cnn_lr_scale},
    )
    if (
        scst.best_metric is not None
        and xe.best_metric is not None
        and (scst.best_metric > xe.best_metric)
    ):
        shutil.rmtree(out / "best", ignore_errors=True)
        shutil.copytree(out / "scst" / "best", out / "best")
        return scst
    return xe


def evaluate_captioner(
    model_dir: Path | str,
    data: Path | str,
    split: str = "test",
    *,
    decoding: Decoding | None = None,
    subset_name: str | None = None,
    references: Path | str | None = None,
    predictions_out: Path | None = None,
    feature_settings: FeatureSettings | None = None,
    cache_dir: Path | None = None,
    fast: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Caption every video of ``split`` (``all`` for every one), decoded as ``decoding`` says
    (default: :class:`Decoding`'s defaults, which are the shipped settings), and score against its
    references (or those of another annotation file, e.g. msvd14's held-out captions)."""
    captioner: Captioner = from_pretrained(model_dir, device=device)
    records = subset(by_split(load_dataset(data), split), subset_name)
    if references is not None:
        held = {
            r.video_id: r.captions
            for r in load_dataset(Path(references).parent, annotation=references)
        }
        records = [replace(r, captions=held[r.video_id]) for r in records if r.video_id in held]
    if not records:
        raise ConfigError(
            f"{data}: no videos in split {split!r}"
            + (f" subset {subset_name!r}" if subset_name else "")
        )
    recipe = captioner.recipe or load_recipe(model_dir)
    if captioner.model.takes_frames:
        feats = sample_dataset_frames(records, recipe, cache_dir=cache_dir, progress=progress)
    else:
        warn_precision(model_dir, recipe, feature_settings)
        feats = extract_features(
            records, recipe, settings=feature_settings, cache_dir=cache_dir, progress=progress
        )
        feats = {k: recipe.apply(v) for k, v in feats.items()}
    ids = [r.video_id for r in records if r.video_id in feats]
    captions = captioner.caption([feats[v] for v in ids], decoding)
    preds = {v: c.text for v, c in zip(ids, captions, strict=True)}
    refs = {r.video_id: r.captions for r in records}
    per_video: dict[str, dict[str, float]] = {}
    scores = caption_scores(refs, preds, fast=fast, per_video=per_video)
    scores["n_videos"] = float(len(preds))
    if predictions_out is not None:
        predictions_out.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "video_id": v,
                "caption": preds[v],
                "references": refs[v][:5],
                "scores": per_video.get(v, {}),
            }
            for v in ids
        ]
        predictions_out.write_text(json.dumps({"scores": scores, "predictions": rows}, indent=1))
    return scores


__all__ = [
    "CaptionTrainConfig",
    "evaluate_captioner",
    "train_captioner",
]
