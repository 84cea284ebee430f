"""Does a temporal-attention captioner look at the first half of an order clip for the first event?

    VMM_DATA_DIR=/tmp/vmmdata .venv/bin/python benchmarks/attention_order.py \
        /tmp/bench_runs/attention/best /tmp/bench_runs/attention-spatial/best --data /tmp/bench

Captions the test split's order clips (greedy) and, for each caption that says "then" or "after",
averages the attention mass its words put on the first half of the frames, before and after that
word. A word-independent weighting gives the same number twice; a model that describes the first
event from the first half and the second from the second gives a larger "before" than "after".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from video_mm.artifacts import load_recipe
from video_mm.data.datasets import load_dataset
from video_mm.data.features import extract_features
from video_mm.models.factory import from_pretrained
from video_mm.settings import get_settings
from video_mm.train.captioning import subset

HINGES = ("then", "after")


def first_half_mass(model_dir: Path, data: Path) -> tuple[int, int, float, float]:
    """(order captions, clips, first-half mass before the hinge word, after it)."""
    settings = get_settings()
    captioner = from_pretrained(model_dir)
    recipe = load_recipe(model_dir)
    records = subset([r for r in load_dataset(data) if r.split == "test"], "order")
    feats = extract_features(records, recipe, settings=settings.features,
                             cache_dir=settings.data_dir / "features", progress=False)
    ids = [r.video_id for r in records if r.video_id in feats]
    captions = captioner.caption([recipe.apply(feats[v]) for v in ids], beam_size=1)
    before, after = [], []
    for c in captions:
        words, weights = c.text.split(), np.asarray(c.attention)
        hinge = next((words.index(h) for h in HINGES if h in words), None)
        if hinge is None:
            continue
        half = weights[:, : weights.shape[1] // 2].sum(1)
        before.append(half[:hinge].mean())
        after.append(half[hinge + 1 :].mean())
    return len(before), len(captions), float(np.mean(before)), float(np.mean(after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench"))
    args = parser.parse_args()
    print("| model | order captions / clips | first-half mass before | after |")
    print("|---|---:|---:|---:|")
    for model in args.models:
        n, total, before, after = first_half_mass(model, args.data)
        print(f"| {model} | {n} / {total} | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
