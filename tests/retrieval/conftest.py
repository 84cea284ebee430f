"""A tiny feature-level set for retrieval tests: what a clip shows is in its frame features.

Each clip is a (colour, shape, motion) combination. Colour and shape add fixed directions to every
frame; the motion is a direction whose weight changes over time (rising, falling, constant, or a
bump), so pooling must look at more than one frame to know it. Captions name the three with
synonyms. Held-out clips are fresh draws (new noise, new length) of every combination.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from video_mm.retrieval.training import ClipSet

COLOURS = {"red": ["red", "crimson"], "green": ["green", "lime"], "blue": ["blue", "navy"],
           "yellow": ["yellow", "golden"]}  # fmt: skip
SHAPES = {"circle": ["circle", "ball"], "square": ["square", "box"], "triangle": ["triangle"]}
MOTIONS = {
    "rise": ["moves up", "rises", "goes up"],
    "fall": ["moves down", "falls", "drops"],
    "still": ["stays still", "does not move"],
    "bounce": ["bounces", "hops"],
}
FEAT_DIM = 48


def _profile(motion: str, t: np.ndarray) -> np.ndarray:
    return {"rise": t, "fall": 1 - t, "still": np.full_like(t, 0.5),
            "bounce": np.sin(np.pi * t)}[motion]  # fmt: skip


def make_clips(n_per_combo: int, seed: int) -> ClipSet:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).standard_normal((20, FEAT_DIM)).astype(np.float32)
    names = [*COLOURS, *SHAPES]
    ids, feats, caps = [], [], []
    for (colour, shape, motion), rep in itertools.product(
        itertools.product(COLOURS, SHAPES, MOTIONS), range(n_per_combo)
    ):
        T = int(rng.integers(6, 11))
        t = np.linspace(0, 1, T)[:, None]
        x = basis[names.index(colour)] + basis[names.index(shape)]
        x = x + 2.0 * _profile(motion, t) * basis[10] + 0.7 * rng.standard_normal((T, FEAT_DIM))
        ids.append(f"{colour}-{shape}-{motion}-{seed}-{rep}")
        feats.append(np.abs(x).astype(np.float32))  # CNN features are non-negative
        caps.append([
            f"a {c} {s} {m}"
            for c in COLOURS[colour] for s in SHAPES[shape] for m in MOTIONS[motion]
        ])  # fmt: skip
    return ClipSet(ids, feats, caps)


@pytest.fixture(scope="session")
def tiny_train() -> ClipSet:
    return make_clips(4, seed=0)


@pytest.fixture(scope="session")
def tiny_test() -> ClipSet:
    return make_clips(1, seed=1)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is fastest, and spares the CPU shared with other tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
