"""What the features of the synthetic benchmark's order clips say about order: linear probes.

    VMM_DATA_DIR=/tmp/vmmdata .venv/bin/python benchmarks/order_probe.py --data /tmp/bench
    # the features the retrieval model and its re-ranker read (globally pooled frames)
    .venv/bin/python benchmarks/order_probe.py --data /tmp/bench \
        --config configs/train/retrieval.toml

For every "A and then B" clip, a logistic regression (fit on the train split, scored on the rest)
predicts the first actor's side, its colour and its action from three summaries of the clip's
per-frame features (the ``[features]`` recipe of ``--config``, default
``configs/train/synth.toml``): the mean over all frames (what mean-pooling keeps), the means
of the two halves, and the per-half sums of ``|v_i - v_{i-1}|`` (the motion the
temporal-attention captioner sees). The majority class, measured on the same clips, is the
baseline. It tells a model's failure apart from the information not being there. It also says
how much of the (standardised) features' variance is change within a clip rather than what the
clip is.

A control on the one-object ("single") clips, from the mean over frames alone: whether the
frames carry an object's colour, shape and action at all, apart from when it acts. Colour
found there but not as the first actor's colour above means the frames see colour and lose
which object acted when.
"""

from __future__ import annotations

import argparse
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from video_mm.artifacts import FeatureRecipe
from video_mm.data.datasets import load_dataset
from video_mm.data.features import extract_features
from video_mm.settings import get_settings

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "synth.toml"
TARGETS = {
    "first actor's side": lambda s: "right" if s["objects"][0]["x"] > 0.5 else "left",
    "first actor's colour": lambda s: s["objects"][0]["colour"],
    "first action": lambda s: s["events"][0]["action"],
}
CONTROL = {
    "colour": lambda s: s["objects"][0]["colour"],
    "shape": lambda s: s["objects"][0]["shape"],
    "action": lambda s: s["events"][0]["action"],
}


def summaries(frames: np.ndarray) -> dict[str, np.ndarray]:
    """The three views of one clip's ``[T, D]`` standardised features."""
    h = len(frames) // 2
    change = np.abs(np.diff(frames, axis=0))
    return {
        "mean": frames.mean(0),
        "half means": np.concatenate([frames[:h].mean(0), frames[h:].mean(0)]),
        "half motion": np.concatenate([change[: h - 1].sum(0), change[h:].sum(0)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench"))
    parser.add_argument("--config", type=Path, default=CONFIG,
                        help="training TOML whose [features] recipe is probed")  # fmt: skip
    args = parser.parse_args()
    settings = get_settings()
    recipe = FeatureRecipe(**tomllib.loads(args.config.read_text())["features"])
    kinds = ("order", "single")
    records = [r for r in load_dataset(args.data) if r.extra["synth"]["kind"] in kinds]
    feats = extract_features(records, recipe, settings=settings.features,
                             cache_dir=settings.data_dir / "features", progress=False)
    order = [r for r in records if r.extra["synth"]["kind"] == "order"]
    train = [r for r in order if r.split == "train"]
    held = [r for r in order if r.split != "train"]
    stacked = np.concatenate([feats[r.video_id] for r in train])
    mu, sd = stacked.mean(0), stacked.std(0) + 1e-6
    views = {r.video_id: summaries((feats[r.video_id] - mu) / sd) for r in records}
    clips = np.stack([(feats[r.video_id] - mu) / sd for r in train])  # [N, T, D]
    within = clips.var(axis=1).mean(0) / clips.reshape(-1, clips.shape[-1]).var(0)
    print(f"standardised frames: the changes within a clip are {100 * within.mean():.1f}% of each "
          f"dimension's variance (median {100 * np.median(within):.1f}%)")

    names = list(views[order[0].video_id])
    print(f"order clips: {len(train)} train, {len(held)} held out; accuracy on the held out")
    probe_table(TARGETS, train, held, views, names)
    single = [r for r in records if r.extra["synth"]["kind"] == "single"]
    s_train = [r for r in single if r.split == "train"]
    s_held = [r for r in single if r.split != "train"]
    print(f"\ncontrol, one-object clips: {len(s_train)} train, {len(s_held)} held out")
    probe_table(CONTROL, s_train, s_held, views, ["mean"])


def probe_table(targets: dict, train: list, held: list, views: dict, names: list[str]) -> None:
    """One logistic-regression probe per target and view, fit on ``train``, scored on ``held``."""
    print("| target | majority | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for target, label in targets.items():
        y_train = [label(r.extra["synth"]) for r in train]
        y_held = [label(r.extra["synth"]) for r in held]
        cells = [f"{Counter(y_held).most_common(1)[0][1] / len(y_held):.2f}"]
        for name in names:
            probe = LogisticRegression(C=0.05, max_iter=3000)
            probe.fit([views[r.video_id][name] for r in train], y_train)
            cells.append(f"{probe.score([views[r.video_id][name] for r in held], y_held):.2f}")
        print(f"| {target} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
