"""A tiny feature-level set where order matters: what a clip shows is in its frame features.

Each clip shows one object acting, or two acting one after the other ("a red circle rises and
then a blue square falls"): an object is a (colour, shape) pair whose directions are added to
the frames of its half of the clip, an action a direction whose weight changes over that half.
Averaging the frames cannot tell "A then B" from "B then A"; reading them in time order can.
Held-out clips are fresh draws (new noise, new length) of new combinations.

The cell version (:func:`make_cell_clips`) lays each frame out as 2 x 2 cells, the way
``grid_pool = 2`` features are (``[C, k, k]`` flattened): each event is in a cell of its own and
the other cells are background, so one cell token stands for one object.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from video_mm.retrieval.training import ClipSet

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
ACTIONS = {"rises": np.linspace(0, 1, 64), "falls": np.linspace(1, 0, 64),
           "bounces": np.sin(np.linspace(0, np.pi, 64))}  # fmt: skip
FEAT_DIM = 32
_BASIS = np.random.default_rng(1234).standard_normal((12, FEAT_DIM)).astype(np.float32)


def _half(colour: str, shape: str, action: str, n: int) -> np.ndarray:
    obj = _BASIS[COLOURS.index(colour)] + _BASIS[4 + SHAPES.index(shape)]
    profile = np.interp(np.linspace(0, 63, n), np.arange(64), ACTIONS[action])[:, None]
    return obj + 2.0 * profile * _BASIS[8 + list(ACTIONS).index(action)]


def make_clips(n: int, seed: int) -> ClipSet:
    """``n`` clips, two thirds of them two events in order."""
    rng = np.random.default_rng(seed)
    objects = list(itertools.product(COLOURS, SHAPES))
    ids, feats, caps = [], [], []
    for i in range(n):
        T = int(rng.integers(8, 13))
        a, b = (objects[j] for j in rng.choice(len(objects), 2, replace=False))
        act_a, act_b = (str(x) for x in rng.choice(list(ACTIONS), 2))
        if i % 3:
            x = np.concatenate([_half(*a, act_a, T // 2), _half(*b, act_b, T - T // 2)])
            first, second = f"a {a[0]} {a[1]} {act_a}", f"a {b[0]} {b[1]} {act_b}"
            captions = [f"{first} and then {second}", f"first {first} then {second}"]
        else:
            x = _half(*a, act_a, T)
            captions = [f"a {a[0]} {a[1]} {act_a}", f"the {a[0]} {a[1]} {act_a}"]
        x = x + 0.5 * rng.standard_normal(x.shape)
        ids.append(f"clip{seed}-{i}")
        feats.append(np.abs(x).astype(np.float32))
        caps.append(captions)
    return ClipSet(ids, feats, caps)


def make_cell_clips(n: int, seed: int, k: int = 2) -> ClipSet:
    """:func:`make_clips` with each event in a cell of its own of a k x k grid a frame (two
    events: two different cells), the other cells background noise; ``[T, FEAT_DIM * k * k]``
    laid out channel-major like :func:`video_mm.artifacts.pool_grid`."""
    base, rng = make_clips(n, seed), np.random.default_rng([seed, k])
    feats = []
    for x in base.features:
        T, half = len(x), len(x) // 2
        cells = np.abs(0.1 * rng.standard_normal((T, FEAT_DIM, k * k))).astype(np.float32)
        a, b = rng.choice(k * k, 2, replace=False)
        cells[:half, :, a] = x[:half]
        cells[half:, :, b] = x[half:]
        feats.append(cells.reshape(T, FEAT_DIM * k * k))
    return ClipSet(base.ids, feats, base.captions)


@pytest.fixture(scope="session")
def tiny_train() -> ClipSet:
    return make_clips(90, seed=0)


@pytest.fixture(scope="session")
def tiny_val() -> ClipSet:
    return make_clips(12, seed=1)


@pytest.fixture(scope="session")
def tiny_test() -> ClipSet:
    return make_clips(30, seed=2)


TINY = {"hidden": 64, "layers": 1, "heads": 2, "intermediate": 128}


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_train: ClipSet, tiny_val: ClipSet
) -> tuple[Any, Any]:
    """A two-stream re-ranker trained for a few epochs (no dual encoder: no hard negatives)."""
    out = tmp_path_factory.mktemp("reranker")
    return _train({"name": "tiny", **TINY}, tiny_train, tiny_val, out)


def _train(
    config: dict, train: ClipSet, val: ClipSet, out: Path, **run_opts: Any
) -> tuple[Any, Any]:
    from video_mm.rerank.training import RerankTrainConfig, train_reranker
    from video_mm.train.loop import TrainConfig

    torch.manual_seed(0)
    run = RerankTrainConfig(
        train=TrainConfig(epochs=8, lr=2e-3, warmup_steps=10, progress=False, device="cpu"),
        negatives=["in_batch", "swapped"], batch_size=32, pairs_per_clip=4, **run_opts,
    )  # fmt: skip
    return train_reranker(config, train, val, None, out_dir=out, run=run)


def held_out_accuracy(model: Any, clips: ClipSet) -> float:
    """Share of right calls on each clip with its own caption and the next clip's (chance 0.5)."""
    right = []
    for i in range(len(clips)):
        pos = model.score(clips.captions[i][0], [clips.features[i]])[0]
        neg = model.score(clips.captions[(i + 1) % len(clips)][0], [clips.features[i]])[0]
        right += [pos > 0, neg < 0]
    return float(np.mean(right))


@pytest.fixture(scope="session")
def cells_test() -> ClipSet:
    return make_cell_clips(30, seed=2)


@pytest.fixture(scope="session")
def trained_cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A two-stream re-ranker over 2 x 2 cells a frame, trained like :func:`trained`."""
    config = {"name": "tiny-cells", **TINY, "grid_pool": 2, "motion": "delta"}
    return _train(config, make_cell_clips(90, seed=0), make_cell_clips(12, seed=1),
                  tmp_path_factory.mktemp("reranker_cells"))  # fmt: skip
