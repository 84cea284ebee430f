"""A tiny synthetic benchmark shared by the training tests (small frames, few clips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.data.synth import SynthConfig, generate


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_synth")
    generate(out, 30, seed=1, config=SynthConfig(size=64, frames=8, fps=4), progress=False)
    return out


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded machine two threads that
    wait on each other at every op can slow a test by orders of magnitude."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
