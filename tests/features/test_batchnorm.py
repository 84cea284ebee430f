"""Batch-norm statistics re-estimated on frames: each layer then normalises what it is shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from video_mm.errors import ConfigError
from video_mm.features.backbones import create_backbone
from video_mm.features.batchnorm import batchnorms, estimate_batchnorm


def coloured_frames(n: int = 24, size: int = 64, seed: int = 0) -> np.ndarray:
    """Dark noisy frames, each with a square of one bright colour somewhere."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    for f in frames:
        y, x = rng.integers(0, size - 20, 2)
        f[y : y + 20, x : x + 20] = rng.integers(0, 256, 3)
    return frames


def layer_outputs(backbone, frames: np.ndarray) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Every batch norm's output in eval mode (copied: ResNet's ReLUs work in place)."""
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.clone()))
             for m in batchnorms(backbone)]  # fmt: skip
    with torch.no_grad():
        backbone(backbone.preprocess(torch.from_numpy(frames)))
    for h in hooks:
        h.remove()
    return outs


def test_first_layer_statistics_are_those_of_the_frames() -> None:
    backbone = create_backbone("resnet18")
    frames = coloured_frames()
    conv_out: list[torch.Tensor] = []
    backbone.trunk[0].register_forward_hook(lambda _m, _i, o: conv_out.append(o.clone()))

    assert estimate_batchnorm(backbone, frames, batch_size=len(frames)) == len(frames)

    with torch.no_grad():
        backbone(backbone.preprocess(torch.from_numpy(frames)))
    x = conv_out[-1]  # what the first batch norm normalises
    bn = backbone.trunk[1]
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=1e-3, atol=5e-4)
    torch.testing.assert_close(bn.running_var, x.var((0, 2, 3)), rtol=1e-3, atol=5e-4)


def test_every_layer_normalises_its_input_after_and_not_before() -> None:
    backbone = create_backbone("resnet18")
    frames = coloured_frames()
    before = [o.var((0, 2, 3)).mean().item() for o in layer_outputs(backbone, frames)]
    # Random weights whose statistics were never estimated: layers shrink or grow the signal.
    assert min(before) < 0.5 and max(before) > 1.5, before

    estimate_batchnorm(backbone, frames, batch_size=len(frames))

    for out in layer_outputs(backbone, frames):  # 20 in ResNet-18; weight 1, bias 0 at init
        assert out.mean((0, 2, 3)).abs().max().item() < 0.01
        assert out.var((0, 2, 3)).mean().item() == pytest.approx(1.0, abs=0.02)


def test_only_the_statistics_change() -> None:
    backbone = create_backbone("resnet18")
    params = {k: v.clone() for k, v in backbone.named_parameters()}
    estimate_batchnorm(backbone, coloured_frames(n=10), batch_size=4)  # 3 batches, one short

    assert not backbone.training
    assert all(m.momentum == 0.1 and not m.training for m in batchnorms(backbone))
    for name, value in backbone.named_parameters():
        torch.testing.assert_close(value, params[name], rtol=0, atol=0)
    assert backbone.trunk[1].running_mean.abs().sum() > 0  # no longer the initial zeros


def test_an_encoder_without_batch_norm_is_refused(tiny_hf: dict[str, Path]) -> None:
    backbone = create_backbone(f"hf:{tiny_hf['dinov2']}")
    with pytest.raises(ConfigError, match="no batch norm"):
        estimate_batchnorm(backbone, coloured_frames(n=4))


def test_no_frames_is_refused() -> None:
    with pytest.raises(ConfigError, match="no frames"):
        estimate_batchnorm(create_backbone("resnet18"), np.zeros((0, 64, 64, 3), np.uint8))
