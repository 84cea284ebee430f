"""Torchvision image classifiers cut at their last spatial map: per-frame features for video.

A :class:`Backbone` is the classifier without its classification head: ``trunk`` maps images to
the last spatial grid ``[N, C, h, w]``; global average pooling (plus ConvNeXt's own norm) gives the
pooled vector ``[N, D]``. Weights are resolved offline, the torchvision way:

- ``"none"``: random initialisation from a fixed seed, so tests and caches are reproducible;
- a local file: a state dict (``.pth``/``.pt`` or ``.safetensors``) of the torchvision classifier
  or of a :class:`Backbone` (a ``.safetensors`` file's ``resize``/``crop`` metadata, written when
  an end-to-end model's CNN is exported, is the frame size it was trained at);
- a torchvision weights name (``"ResNet50_Weights.IMAGENET1K_V2"``, ``"IMAGENET1K_V1"``,
  ``"DEFAULT"``): read from torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), else
  downloaded there the torchvision way (``weights.py``: mirror, offline mode, hash check);
- a backbone *named* ``hf:<repo id or folder>``: a transformers image encoder (``hf.py``; its
  ``weights`` is the hub revision).

Preprocessing (resize, centre crop, normalisation) comes from the weights' metadata; random and
local weights use the metadata of the family's default torchvision weights.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.fx.experimental.optimization import fuse
from torchvision import models as tvm
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from video_mm.errors import ConfigError, ModelError, UnknownWeights, WeightsNotFound
from video_mm.features.cache import file_sha256
from video_mm.features.weights import checkpoints_dir, resolve_weights_file
from video_mm.settings import FeatureSettings

RANDOM_SEED = 0


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, scale to [0, 1], normalise: ImageNet eval transforms.
    ``squash``: resize straight to ``crop`` x ``crop`` instead (ViT and SigLIP processors)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    squash: bool = False

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` (numpy or tensor, any device) -> float32 ``[N, 3, crop, crop]``
        in channels_last memory."""
        x = frames
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)  # a channels_last view: no copy
        if self.squash:
            if tuple(x.shape[-2:]) != (self.crop, self.crop):
                x = TF.resize(x, [self.crop, self.crop], interpolation=self.interpolation,
                              antialias=True)
        elif min(x.shape[-2:]) != self.resize:
            x = TF.resize(x, [self.resize], interpolation=self.interpolation, antialias=True)
        x = TF.center_crop(x, [self.crop, self.crop])
        x = x.float().div_(255.0)
        return TF.normalize(x, list(self.mean), list(self.std), inplace=True)

    @classmethod
    def from_weights(cls, weights: tvm.WeightsEnum) -> Preprocess:
        t = weights.transforms()
        return cls(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation,
        )


class Backbone(nn.Module):
    """A classifier's feature trunk: ``forward(x) -> pooled [N, D]``, or ``(pooled, grid)`` with
    ``grid=True`` (the last spatial map ``[N, C, h, w]``, for spatial attention).

    Built frozen (``requires_grad=False``, eval mode) for extraction; ``trainable=True`` in
    :func:`create_backbone` (or :meth:`fine_tune`) makes it a normal module for end-to-end training.
    """

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        head_norm: nn.Module,
        dim: int,
        preprocess: Preprocess,
        weights_id: str,
        *,
        grid: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.head_norm = head_norm  # ConvNeXt's LayerNorm before its classifier; else Identity
        self.dim = dim
        self.preprocess = preprocess
        self.weights_id = weights_id
        self.grid = grid
        self.frozen_batchnorm = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        grid = self.trunk(x)
        pooled = self.head_norm(grid.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return (pooled, grid) if self.grid else pooled

    def forward_clips(self, frames: torch.Tensor) -> torch.Tensor:
        """Preprocessed clips ``[B, T, 3, H, W]`` -> pooled ``[B, T, D]`` (LRCN's CNN half)."""
        b, t = frames.shape[:2]
        out = self(frames.flatten(0, 1))
        pooled = out[0] if isinstance(out, tuple) else out
        return pooled.view(b, t, -1)

    def fine_tune(self, enabled: bool = True, *, freeze_batchnorm: bool = True) -> Backbone:
        """Enable gradients for end-to-end training. Batch-norm statistics stay frozen by default:
        video batches are a few highly correlated clips, which would corrupt the running stats."""
        self.requires_grad_(enabled)
        self.frozen_batchnorm = enabled and freeze_batchnorm
        return self.train(enabled) if enabled else self.eval()

    def for_inference(self) -> nn.Module:
        """A frozen copy with each batch norm folded into the convolution before it: the same
        function up to rounding, one memory pass fewer per layer (the extractor runs this)."""
        return fuse(copy.deepcopy(self).eval(), inplace=True).requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode and self.frozen_batchnorm:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


# --- the registry: how each torchvision family splits into trunk and head -----------------------

Split = Callable[[nn.Module], tuple[nn.Module, nn.Module, int]]


def _split_resnet(m: nn.Module) -> tuple[nn.Module, nn.Module, int]:
    trunk = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)
    return trunk, nn.Identity(), m.fc.in_features


def _split_features_classifier(m: nn.Module) -> tuple[nn.Module, nn.Module, int]:
    """MobileNetV3 and EfficientNet: ``features`` then pool then an MLP/linear classifier."""
    linear = next(c for c in m.classifier if isinstance(c, nn.Linear))
    return m.features, nn.Identity(), linear.in_features


def _split_convnext(m: nn.Module) -> tuple[nn.Module, nn.Module, int]:
    norm = m.classifier[0]
    return m.features, norm, norm.normalized_shape[0]


def _split_regnet(m: nn.Module) -> tuple[nn.Module, nn.Module, int]:
    return nn.Sequential(m.stem, m.trunk_output), nn.Identity(), m.fc.in_features


_FAMILIES: dict[str, Split] = {
    "resnet": _split_resnet,
    "mobilenet_v3_": _split_features_classifier,
    "efficientnet_b": _split_features_classifier,
    "convnext_": _split_convnext,
    "regnet_y_": _split_regnet,
}


def _family(name: str) -> Split | None:
    return next((s for prefix, s in _FAMILIES.items() if name.startswith(prefix)), None)


def list_backbones() -> list[str]:
    """Every torchvision classifier this module knows how to cut into a backbone."""
    return sorted(n for n in tvm.list_models(module=tvm) if _family(n) is not None)


# --- weights -------------------------------------------------------------------------------------

def hub_checkpoints_dir(torch_home: str | Path | None = None) -> Path:
    """Where torchvision keeps downloaded weights: ``<torch_home or torch hub dir>/checkpoints``."""
    return checkpoints_dir(torch_home)


def _is_path(weights: str) -> bool:
    return (
        os.sep in weights
        or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))
        or Path(weights).is_file()
    )


def _weights_enum(name: str, weights: str) -> tvm.WeightsEnum | None:
    """This backbone's torchvision weights named in full (``ResNet50_Weights.X``) or short."""
    enum = tvm.get_model_weights(name)
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    if "." in weights and not weights.startswith(enum.__name__ + "."):
        if weights.split(".", 1)[0].endswith("_Weights"):
            raise UnknownWeights(
                f"weights {weights!r} are not {enum.__name__} of backbone {name!r}")
        return None
    if member == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[member]
    except KeyError:
        return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsNotFound(
            path, "Give an existing state-dict file (.pth, .pt or .safetensors), 'none' for random "
            "weights, or a torchvision weights name such as ResNet50_Weights.IMAGENET1K_V2."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _trained_size(path: Path, preprocess: Preprocess) -> Preprocess:
    """``preprocess`` at the size a fine-tuned CNN file says it was trained at, if it says."""
    if path.suffix != ".safetensors":
        return preprocess
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "resize" not in meta or "crop" not in meta:
        return preprocess
    return replace(preprocess, resize=int(meta["resize"]), crop=int(meta["crop"]))


def save_backbone(backbone: Backbone, path: str | Path) -> Path:
    """Write ``backbone``'s state as a weights file :func:`create_backbone` loads by path, with
    the frame size it reads (``_trained_size``) in the file's metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pre = backbone.preprocess
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path),
              metadata={"resize": str(pre.resize), "crop": str(pre.crop)})
    return path


@dataclass(frozen=True)
class Fetch:
    """How torchvision weight names are fetched when they are not cached (``FeatureSettings``)."""

    torch_home: str | Path | None = None
    mirror: str = ""
    offline: bool = False
    timeout_s: float = 60.0
    progress: bool = True


def fetch_settings(settings: FeatureSettings) -> Fetch:
    """The :class:`Fetch` the feature settings ask for."""
    return Fetch(settings.torch_home or None, settings.weights_mirror, settings.offline,
                 settings.download_timeout_s)


def create_backbone(
    name: str,
    weights: str = "none",
    *,
    grid: bool = False,
    trainable: bool = False,
    torch_home: str | Path | None = None,
    fetch: Fetch | None = None,
) -> Backbone:
    """Build backbone ``name`` with ``weights`` (see the module docstring), frozen unless
    ``trainable``. ``torch_home`` overrides where torchvision weight names are looked up;
    ``fetch`` says how they are downloaded when missing (mirror, offline, timeout)."""
    if name.startswith("hf:"):
        from video_mm.features.hf import create_hf_backbone

        return create_hf_backbone(name, weights, grid=grid, trainable=trainable,
                                  offline=bool(fetch and fetch.offline))
    fetch = fetch or Fetch()
    split = _family(name)
    if split is None or name not in tvm.list_models(module=tvm):
        known = ", ".join(list_backbones())
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {known}")
    default = tvm.get_model_weights(name).DEFAULT
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        classifier = tvm.get_model(name, weights=None)
    trunk, head_norm, dim = split(classifier)

    preprocess = Preprocess.from_weights(default)
    state: dict[str, torch.Tensor] | None = None
    if weights == "none":
        weights_id = f"none:seed{RANDOM_SEED}:torchvision{torchvision.__version__.split('+')[0]}"
    elif _is_path(weights):
        path = Path(weights).expanduser()
        state = _read_state_dict(path)
        preprocess = _trained_size(path, preprocess)
        weights_id = f"sha256:{file_sha256(path)}"
    elif (enum := _weights_enum(name, weights)) is not None:
        path = resolve_weights_file(
            enum.url, torch_home=torch_home or fetch.torch_home, mirror=fetch.mirror,
            offline=fetch.offline, timeout_s=fetch.timeout_s, progress=fetch.progress,
        )
        state = _read_state_dict(path)
        preprocess = Preprocess.from_weights(enum)
        weights_id = f"sha256:{file_sha256(path)}"
    else:
        raise UnknownWeights(
            f"weights {weights!r}: neither a file nor a weights name of {name} (known: "
            f"{', '.join(str(w) for w in tvm.get_model_weights(name))}, DEFAULT, none)"
        )

    backbone = Backbone(name, trunk, head_norm, dim, preprocess, weights_id, grid=grid)
    if state is not None:
        # Our own format (trunk.*) or the full torchvision classifier's, whose modules we share.
        target = backbone if any(k.startswith("trunk.") for k in state) else classifier
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"weights {weights} do not fit backbone {name}: {exc}") from exc
    return backbone.fine_tune(trainable)
