"""Image encoders from ``transformers`` as frame backbones: ``features.backbone = "hf:<ref>"``.

``<ref>`` is a local folder or a hub repo id (resolved through the Hugging Face cache, see
``hub.py``). The model is loaded with ``AutoModel``; what a frame's vector is depends on the family:

- CLIP and SigLIP (dual encoders): the image embedding, ``get_image_features`` (CLIP's projected
  pooled token, SigLIP's attention-pooled head), so a text tower of the same model scores it;
- ViT and DINOv2: the final [CLS] token (after the last layer norm);
- ConvNeXt and ResNet: the model's own pooled output (global average, ConvNeXt's norm included).

The grid for spatial attention is the last layer's patch tokens (or feature map) as
``[N, C, h, w]``. Preprocessing follows the model's own image-processor config
(``preprocessor_config.json``): resize, centre crop or squash, mean and std.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import InterpolationMode

from video_mm.errors import ConfigError, ModelError
from video_mm.features.backbones import Backbone, Preprocess
from video_mm.features.hub import read_hf_config, resolve, source_id

DUAL = ("clip", "siglip", "siglip2")
TOKENS = ("vit", "dinov2", "deit")
CONV = ("convnext", "convnextv2", "resnet")
FAMILIES = DUAL + TOKENS + CONV
# The files a frame encoder needs (no tokenizer, no framework duplicates).
ENCODER_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR,
             3: InterpolationMode.BICUBIC}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess_from_processor(processor: Any | None, image_size: int) -> Preprocess:
    """The image processor's eval transform as a :class:`Preprocess` (square output, so frames
    of different videos batch together). Without a processor config: resize and crop to the
    model's ``image_size`` with ImageNet statistics."""
    if processor is None:
        return Preprocess(image_size, image_size, IMAGENET_MEAN, IMAGENET_STD)
    size, crop = processor.size, getattr(processor, "crop_size", None)
    interp = _RESAMPLE.get(int(getattr(processor, "resample", 2) or 2), InterpolationMode.BILINEAR)
    mean = tuple(float(v) for v in processor.image_mean)
    std = tuple(float(v) for v in processor.image_std)
    crop_pct = getattr(processor, "crop_pct", None)
    edge = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
    if edge:
        if crop_pct is not None:  # ConvNeXt's rule: crop below 384 px, squash at and above it
            if edge < 384:
                return Preprocess(int(edge / crop_pct), edge, mean, std, interp)
            return Preprocess(edge, edge, mean, std, interp, squash=True)
        side = crop["height"] if crop and getattr(processor, "do_center_crop", False) else edge
        return Preprocess(edge, int(side), mean, std, interp)
    height = size.get("height") if hasattr(size, "get") else size.height
    return Preprocess(int(height), int(height), mean, std, interp, squash=True)


class HFBackbone(Backbone):
    """A transformers image encoder behind the :class:`Backbone` interface."""

    def __init__(self, name: str, model: nn.Module, preprocess: Preprocess, weights_id: str,
                 *, grid: bool = False) -> None:
        kind = model.config.model_type
        if kind not in FAMILIES:
            raise ConfigError(f"{name}: model type {kind!r} is not a supported image encoder "
                              f"({', '.join(FAMILIES)})")
        self.kind = kind
        super().__init__(name, model, nn.Identity(), _feature_dim(model), preprocess, weights_id,
                         grid=grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        m = self.trunk
        if self.kind in DUAL:
            out = m.get_image_features(pixel_values=x)
            pooled = out if isinstance(out, torch.Tensor) else out.pooler_output
            hidden = None if isinstance(out, torch.Tensor) else out.last_hidden_state
            if self.grid and hidden is None:
                hidden = m.vision_model(pixel_values=x).last_hidden_state
            tokens = hidden[:, 1:] if self.kind == "clip" and hidden is not None else hidden
        elif self.kind in TOKENS:
            hidden = m(pixel_values=x).last_hidden_state
            pooled, tokens = hidden[:, 0], hidden[:, 1:]
        else:
            out = m(pixel_values=x)
            pooled, tokens = out.pooler_output.flatten(1), None
            grid_map = out.last_hidden_state
        if not self.grid:
            return pooled
        if tokens is not None:
            n, length, c = tokens.shape
            side = math.isqrt(length)
            tokens = tokens[:, length - side * side:]  # registers/extra tokens come first
            grid_map = tokens.transpose(1, 2).reshape(n, c, side, side)
        return pooled, grid_map

    def for_inference(self) -> nn.Module:
        """Frozen, in eval mode; there is no batch norm to fold in most of these models."""
        return self.eval().requires_grad_(False)


def _feature_dim(model: nn.Module) -> int:
    cfg = model.config
    if cfg.model_type == "clip":
        return int(cfg.projection_dim)
    if cfg.model_type in ("siglip", "siglip2"):
        return int(cfg.vision_config.hidden_size)
    if cfg.model_type in CONV:
        return int(cfg.hidden_sizes[-1])
    return int(cfg.hidden_size)


def load_image_processor(folder: Path) -> Any | None:
    from transformers import AutoImageProcessor

    if not (folder / "preprocessor_config.json").is_file():
        return None
    try:
        return AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}/preprocessor_config.json cannot be read: {exc}") from exc


def image_size(config: Any) -> int:
    """The input size a transformers config declares (its vision config's, for dual encoders)."""
    vision = getattr(config, "vision_config", None) or config
    return int(getattr(vision, "image_size", 224) or 224)


def create_hf_backbone(
    name: str, weights: str = "none", *, grid: bool = False, trainable: bool = False,
    offline: bool = False,
) -> HFBackbone:
    """``hf:<folder or repo id>``; ``weights`` is the hub revision for a repo id (``none`` or
    ``main``: the default branch)."""
    ref = name.removeprefix("hf:")
    if not ref:
        raise ConfigError("backbone 'hf:' needs a folder or a repo id, e.g. "
                          "hf:openai/clip-vit-base-patch32")
    revision = None if weights in ("", "none", "main", "default") else weights
    source = resolve(ref, revision=revision, offline=offline, allow_patterns=ENCODER_FILES,
                     what="backbone")
    from transformers import AutoModel

    config = read_hf_config(source.folder)
    if config.model_type not in FAMILIES:
        raise ConfigError(f"{name}: model type {config.model_type!r} is not a supported image "
                          f"encoder ({', '.join(FAMILIES)})")
    try:
        model = AutoModel.from_pretrained(source.folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{source.folder}: cannot load the model ({exc})") from exc
    if config.model_type in DUAL and hasattr(model, "text_model"):
        model.text_model = None  # frames never go through the text tower: free its memory
    processor = load_image_processor(source.folder)
    preprocess = preprocess_from_processor(processor, image_size(model.config))
    backbone = HFBackbone(name, model, preprocess, source_id(source.folder), grid=grid)
    return backbone.fine_tune(trainable)  # type: ignore[return-value]
