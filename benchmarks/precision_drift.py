"""How far a cheaper CPU precision moves the features a saved model reads, on a dataset's split.

The model's recipe (``features.json``: sampling, grid pooling, the training set's standardisation)
says which features; they are computed in float32 and in ``--precision`` through the same path
``vmm eval`` takes (the feature cache keeps the two apart, so a cache warmed by ``vmm eval`` is
reused). Reported per frame: the cosine of the cheaper features to the float32 ones, raw and as
the model reads them (standardised: small raw errors in low-variance dimensions grow there); and
clip agreement, the share of clips whose mean cheaper feature is nearest its own float32 clip;
and for scale, the raw cosine of each float32 clip's mean feature to its nearest other clip's.
With ``--retrieval`` (the model is a retrieval model) also what search sees: the cosine of each
clip's video embedding to its float32 one, and per caption query the text->video rank of its own
clip on both, paired (how many queries gain or lose their top-1, how many change rank at all).

    VMM_DATA_DIR=... .venv/bin/python benchmarks/precision_drift.py MODEL --data DIR \
        [--split test] [--precision int8] [--retrieval]

Scores of a model on those features: ``VMM_FEATURES__PRECISION=int8 vmm eval captioner|retrieval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from video_mm.artifacts import load_recipe
from video_mm.data.datasets import by_split, load_dataset
from video_mm.data.features import extract_features
from video_mm.settings import get_settings


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``a`` and ``b`` ``[N, D]``."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved model (or run) folder: its recipe")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--precision", default="int8", choices=["bfloat16", "int8"])
    parser.add_argument("--retrieval", action="store_true", help="MODEL is a retrieval model")
    args = parser.parse_args()

    settings = get_settings()
    cache = Path(settings.features.cache_url or settings.data_dir / "features")
    recipe = load_recipe(args.model)
    records = by_split(load_dataset(args.data), args.split)
    feats = {
        p: extract_features(records, recipe, cache_dir=cache, progress=False,
                            settings=settings.features.model_copy(update={"precision": p}))
        for p in ("float32", args.precision)
    }
    ids = [r.video_id for r in records if all(r.video_id in f for f in feats.values())]
    ref, low = ([f[v] for v in ids] for f in feats.values())
    raw = cosines(np.concatenate(low), np.concatenate(ref))
    read = cosines(np.concatenate([recipe.apply(x) for x in low]),
                   np.concatenate([recipe.apply(x) for x in ref]))
    means_ref = np.stack([recipe.apply(x).mean(0) for x in ref])
    means_low = np.stack([recipe.apply(x).mean(0) for x in low])
    nearest = np.argmax(_normed(means_low) @ _normed(means_ref).T, axis=1)
    between = _normed(np.stack([x.mean(0) for x in ref]))
    between = between @ between.T
    np.fill_diagonal(between, -1.0)
    out = {
        "model": str(args.model), "split": args.split, "precision": args.precision,
        "clips": len(ids), "frames": len(raw), "dim": int(ref[0].shape[1]),
        "cos_raw_mean": round(float(raw.mean()), 5), "cos_raw_min": round(float(raw.min()), 5),
        "cos_read_mean": round(float(read.mean()), 5), "cos_read_min": round(float(read.min()), 5),
        "clip_agreement": round(float((nearest == np.arange(len(ids))).mean()), 4),
        "cos_nearest_other_clip_mean": round(float(between.max(1).mean()), 5),
    }
    if args.retrieval:
        captions = {r.video_id: r.captions for r in records}
        out |= search_drift(args.model, [captions[v] for v in ids], ref, low)
    print(json.dumps(out))


def search_drift(model_dir: Path, captions: list[list[str]], ref: list[np.ndarray],
                 low: list[np.ndarray]) -> dict[str, float]:
    """Video embeddings' cosine and paired text->video ranks of a retrieval model, float32 vs
    the cheaper features (as ``vmm eval retrieval`` ranks: ties count against the model)."""
    from video_mm.retrieval.model import from_pretrained

    model = from_pretrained(model_dir, device="cpu")
    texts = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    text = model.embed_texts(texts)
    video_ref, video_low = model.embed_videos(ref), model.embed_videos(low)
    cos = cosines(video_low, video_ref)

    def ranks(video: np.ndarray) -> np.ndarray:
        sim = text @ video.T
        return (sim >= sim[np.arange(len(texts)), owner][:, None]).sum(1)

    a, b = ranks(video_ref), ranks(video_low)
    return {
        "queries": len(texts),
        "video_emb_cos_mean": round(float(cos.mean()), 5),
        "video_emb_cos_min": round(float(cos.min()), 5),
        "t2v_top1_lost": int(((a == 1) & (b > 1)).sum()),
        "t2v_top1_gained": int(((a > 1) & (b == 1)).sum()),
        "t2v_rank_changed": int((a != b).sum()),
    }


def _normed(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


if __name__ == "__main__":
    main()
