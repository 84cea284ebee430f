"""Does a re-ranker read its clips in time order? Two measures on a dataset split.

    VMM_DATA_DIR=/tmp/rr/.vmm .venv/bin/python benchmarks/rerank_order.py RERANKER [RERANKER ...] \
        --data /tmp/rr/synth --split test

For each clip and its first caption: how much the match logit changes when the clip is played
backwards (the same frames, the other order; 0 for a model blind to time), and how much the
words' attention over the frames differs between words (the mean L1 distance of each word's row of
``co_attention`` from the mean row; 0 when every word attends to the same frames). Features are
each re-ranker's own recipe (its ``features.json``: the retrieval model's, or its cells).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from video_mm.artifacts import load_recipe
from video_mm.data.datasets import by_split, load_dataset
from video_mm.data.features import extract_features
from video_mm.rerank.model import from_pretrained
from video_mm.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rerankers", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=Path("/tmp/rr/synth"))
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = get_settings()
    records = by_split(load_dataset(args.data), args.split)
    print("| re-ranker | clips | mean abs(logit - logit played backwards) | word-dependence of "
          "attention |\n|---|---:|---:|---:|")
    for folder in args.rerankers:
        model = from_pretrained(folder, device="cpu")
        recipe = model.recipe or load_recipe(folder)
        feats = extract_features(records, recipe, settings=settings.features,
                                 cache_dir=settings.data_dir / "features", progress=False)
        flips, spread = [], []
        for r in records:
            clip = recipe.apply(feats[r.video_id])
            query = r.captions[0]
            forward, backward = model.score(query, [clip, np.ascontiguousarray(clip[::-1])])
            flips.append(abs(float(forward - backward)))
            _, grid, _ = model.co_attention(query, clip)
            spread.append(float(np.abs(grid - grid.mean(0)).sum(1).mean()))
        print(f"| {folder} | {len(records)} | {np.mean(flips):.3f} | {np.mean(spread):.3f} |")


if __name__ == "__main__":
    main()
