"""Backbones: registry shapes, offline weights, preprocessing from metadata, fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from video_mm.errors import ConfigError, ModelError, WeightsNotFound
from video_mm.features.backbones import Backbone, Fetch, create_backbone, list_backbones


def frames(n: int, h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_registry_names_the_issue_families() -> None:
    names = set(list_backbones())
    wanted = {f"resnet{d}" for d in (18, 34, 50, 101, 152)}
    wanted |= {"mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny", "regnet_y_400mf"}
    wanted |= {f"efficientnet_b{i}" for i in range(4)}
    assert wanted <= names


@pytest.mark.parametrize(
    ("name", "dim"),
    [("resnet18", 512), ("mobilenet_v3_small", 576), ("regnet_y_400mf", 440)],
)
def test_pooled_and_grid_shapes(name: str, dim: int) -> None:
    b = create_backbone(name, grid=True)
    x = b.preprocess(frames(2))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with torch.inference_mode():
        pooled, grid = b(x)
    assert b.dim == dim and pooled.shape == (2, dim)
    assert grid.shape == (2, dim, 7, 7)
    # the pooled vector is the spatial mean of the grid (no extra head for these families)
    torch.testing.assert_close(pooled, grid.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'vgg16'"):
        create_backbone("vgg16")


def test_random_weights_are_reproducible() -> None:
    a, b = create_backbone("resnet18"), create_backbone("resnet18")
    assert a.weights_id == b.weights_id and a.weights_id.startswith("none:")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_preprocessing_comes_from_the_weights_metadata() -> None:
    # ResNet50's default (V2) weights evaluate at resize 232 / crop 224, EfficientNet-B1 at 255/240.
    assert create_backbone("resnet50").preprocess.resize == 232
    p = create_backbone("efficientnet_b1").preprocess
    assert (p.resize, p.crop) == (255, 240)
    assert p.mean == tuple(tvm.EfficientNet_B1_Weights.DEFAULT.transforms().mean)


def test_local_weights_round_trip(tmp_path: Path) -> None:
    """Save a random backbone's state dict with other values, load it by path: same features."""
    src = create_backbone("resnet18")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # differ from the seeded default
    path = tmp_path / "mine.pth"
    torch.save(src.state_dict(), path)
    loaded = create_backbone("resnet18", str(path))
    x = src.preprocess(frames(3))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), src(x), rtol=0, atol=0)
        assert not torch.allclose(create_backbone("resnet18")(x), src(x))
    assert loaded.weights_id.startswith("sha256:")


def test_torchvision_classifier_state_dict_loads_by_path(tmp_path: Path) -> None:
    """A full torchvision classifier checkpoint (with its head) loads into the backbone."""
    torch.manual_seed(1)
    clf = tvm.mobilenet_v3_small()
    path = tmp_path / "clf.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(path))
    b = create_backbone("mobilenet_v3_small", str(path))
    clf.eval()
    x = b.preprocess(frames(2))
    with torch.inference_mode():
        expected = clf.avgpool(clf.features(x)).flatten(1)
        torch.testing.assert_close(b(x), expected)


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(WeightsNotFound) as err:
        create_backbone("resnet18", str(missing))
    assert str(missing) in str(err.value) and err.value.path == str(missing)


def test_weights_name_is_read_offline_from_torch_home(tmp_path: Path) -> None:
    offline = Fetch(offline=True)
    with pytest.raises(WeightsNotFound) as err:
        create_backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1", torch_home=tmp_path,
                        fetch=offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert err.value.path == str(expected)
    assert "TORCH_HOME" in str(err.value)  # says how to fill it
    # a file of that name whose bytes do not match the hash in its name is refused
    expected.parent.mkdir(parents=True)
    torch.save(create_backbone("resnet18").state_dict(), expected)
    with pytest.raises(ModelError, match="corrupt"):
        create_backbone("resnet18", "IMAGENET1K_V1", torch_home=tmp_path, fetch=offline)


def test_weights_of_another_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="ResNet18_Weights"):
        create_backbone("resnet18", "ResNet50_Weights.IMAGENET1K_V2")


def test_mismatched_state_dict_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(create_backbone("mobilenet_v3_small").state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        create_backbone("resnet18", str(path))


def test_fine_tune_trains_the_cnn_with_frozen_batchnorm() -> None:
    """LRCN trains CNN and LSTM jointly: gradients reach the trunk and a step lowers the loss."""
    b: Backbone = create_backbone("resnet18", trainable=True)
    assert all(p.requires_grad for p in b.parameters()) and b.training
    bn = next(m for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    x = torch.randn(2, 2, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    target = torch.randn(2, 2, b.dim)
    opt = torch.optim.Adam(b.parameters(), lr=1e-4)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(b.forward_clips(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(bn.running_mean, stats)  # batch-norm statistics stayed frozen
    b.for_inference()  # the extractor's folded copy leaves the trained module as it was
    assert b.training and all(p.requires_grad for p in b.parameters())
    frozen = create_backbone("resnet18")
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_inference_copy_folds_batchnorm_without_changing_features(name: str) -> None:
    b = create_backbone(name, grid=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial statistics, as trained weights have
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    fast = b.for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = b.preprocess(frames(2, seed=5))
    with torch.inference_mode():
        (p1, g1), (p2, g2) = b(x), fast(x)
    scale = g1.abs().max().item()  # float32 rounding, relative to the activations' size
    torch.testing.assert_close(p2, p1, rtol=1e-4, atol=3e-5 * scale)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=3e-5 * scale)
