"""Cheaper CPU inference where the user allows it: int8 backbones (``features.precision``).

Post-training static quantization with PyTorch's FX graph mode and its x86 engine (VNNI int8
kernels): batch norms fold into the convolutions, weights are quantized per channel, activations
per tensor with ranges observed on calibration frames. ResNet-18 runs ~4x faster than float32 on
one AVX-512 core with features at cosine ~0.999 to float32 (BENCHMARKS.md, benchmarks/features.py).

Calibration frames are the user's videos (``features.calibration``, a file or a folder) or, by
default, built-in synthetic images: smooth random fields with edges and colour, deterministic, so
the same settings always give the same int8 model (feature caches rely on that).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from video_mm.errors import ConfigError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v", ".mpg", ".mpeg")


def synthetic_frames(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images ``[n, size, size, 3]`` with natural-image-like statistics: coarse random
    colour fields upsampled (smooth regions), a few hard-edged shapes, mild noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 7, 7, generator=g)
    x = nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        for _ in range(3):
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            x[i, :, mask] = torch.rand(3, 1, generator=g)
    x = x + 0.03 * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def video_frames(path: str | Path, n: int, size: int = 224) -> np.ndarray:
    """Up to ``n`` frames spread over the videos at ``path`` (a file or a folder of videos)."""
    from video_mm.io.sampling import sample_frames

    root = Path(path).expanduser()
    files = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if root.is_dir()
        else [root]
    )
    if not files or not files[0].exists():
        raise ConfigError(f"features.calibration {str(path)!r}: no videos there")
    per = max(1, -(-n // len(files)))
    frames = [sample_frames(f, n=per, size=size).frames for f in files[:n]]
    return np.concatenate(frames)[:n]


def calibration_frames(source: str, n: int, size: int = 224) -> np.ndarray:
    return video_frames(source, n, size) if source else synthetic_frames(n, size)


def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch: int = 16) -> nn.Module:
    """An int8 copy of ``model`` (frozen, eval), its activation ranges observed on the
    preprocessed ``calibration`` frames ``[N, 3, H, W]``."""
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise ConfigError("features.precision int8 needs PyTorch's x86 quantized engine")
    torch.backends.quantized.engine = "x86"
    example = (calibration[:1].contiguous(memory_format=torch.channels_last),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization's deprecation notices
        try:
            prepared = quantize_fx.prepare_fx(
                copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), example
            )
        except Exception as exc:  # FX tracing failures have no common type
            raise ConfigError(
                f"features.precision int8: cannot trace {type(model).__name__} ({exc}); "
                "use float32 or bfloat16 for this backbone"
            ) from exc
        with torch.inference_mode():
            for start in range(0, len(calibration), batch):
                chunk = calibration[start : start + batch]
                prepared(chunk.contiguous(memory_format=torch.channels_last))
        quantized = quantize_fx.convert_fx(prepared).requires_grad_(False)
        with torch.inference_mode():
            out = quantized(example[0].contiguous(memory_format=torch.channels_last))
        pooled = out[0] if isinstance(out, tuple) else out
        if not torch.isfinite(pooled).all():  # seen with some families' random weights
            raise ConfigError(
                f"features.precision int8: the quantized {getattr(model, 'name', 'backbone')} "
                "gives non-finite features; use float32 or bfloat16 for it"
            )
        return quantized
