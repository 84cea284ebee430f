"""Frame-encoder throughput: each transformers family at its real size next to ResNet-18, one run.

Every encoder is built from its published architecture's config with random weights (no network;
speed does not depend on the weights) and wrapped exactly as ``features.backbone = "hf:..."``
wraps a downloaded one (:class:`video_mm.features.hf.HFBackbone`); ResNet-18 is the torchvision
backbone as the extractor runs it (batch norm folded, channels_last). Frames are preprocessed
once; the figure is the batched forward pass, frames per second at the model's native input size,
and its ratio to ResNet-18 measured in the same run.

    .venv/bin/python benchmarks/encoders.py [--seconds 5] [--batch 16] [--threads N]
        [--device cpu|cuda]

On CUDA the forward runs under bf16 autocast, as the extractor does. Real-quality figures (what
the features are worth) need the real weights: ``vmm models zero-shot
hf:openai/clip-vit-base-patch32`` / ``features.backbone = "hf:facebook/dinov2-small"`` on a
machine with network.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from video_mm.features.backbones import Preprocess, create_backbone
from video_mm.features.hf import HFBackbone

CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
HALF = (0.5, 0.5, 0.5)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def hf_families() -> dict[str, tuple[Callable[[], nn.Module], Preprocess]]:
    """name (the published model it mirrors) -> (random model of that config, its preprocessing)."""
    import transformers as tf

    return {
        "CLIP ViT-B/32 (openai/clip-vit-base-patch32)": (
            lambda: tf.CLIPModel(tf.CLIPConfig()), Preprocess(224, 224, CLIP_MEAN, CLIP_STD)),
        "SigLIP B/16 (google/siglip-base-patch16-224)": (
            lambda: tf.SiglipModel(tf.SiglipConfig()),
            Preprocess(224, 224, HALF, HALF, squash=True)),
        "DINOv2-S/14 (facebook/dinov2-small)": (
            lambda: tf.Dinov2Model(tf.Dinov2Config(hidden_size=384, num_attention_heads=6,
                                                   image_size=224)),
            Preprocess(256, 224, *IMAGENET)),
        "ViT-B/16 (google/vit-base-patch16-224)": (
            lambda: tf.ViTModel(tf.ViTConfig(), add_pooling_layer=False),
            Preprocess(224, 224, HALF, HALF, squash=True)),
        "ConvNeXt-T (facebook/convnext-tiny-224)": (
            lambda: tf.ConvNextModel(tf.ConvNextConfig()), Preprocess(256, 224, *IMAGENET)),
        "ResNet-50 (microsoft/resnet-50)": (
            lambda: tf.ResNetModel(tf.ResNetConfig()), Preprocess(256, 224, *IMAGENET)),
    }


def timed(model: nn.Module, x: torch.Tensor, seconds: float, amp: bool) -> float:
    """Frames/s of batched forward passes over ``seconds``, after one warm-up pass."""
    cuda = x.device.type == "cuda"

    def step() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=amp):
            model(x)
        if cuda:
            torch.cuda.synchronize()

    step()
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        frames += len(x)
    return frames / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda"
    frames = torch.randint(0, 256, (args.batch, 256, 320, 3), dtype=torch.uint8)

    rows: list[tuple[str, int, int, float]] = []
    base = create_backbone("resnet18")
    model = base.for_inference().to(device, memory_format=torch.channels_last)
    x = base.preprocess(frames).to(device).contiguous(memory_format=torch.channels_last)
    rows.append(("ResNet-18 (torchvision, baseline)", base.dim, x.shape[-1],
                 timed(model, x, args.seconds, amp)))
    for name, (build, pre) in hf_families().items():
        torch.manual_seed(0)
        backbone = HFBackbone(f"hf:{name}", build(), pre, "random").fine_tune(False)
        if hasattr(backbone.trunk, "text_model"):
            backbone.trunk.text_model = None
        model = backbone.for_inference().to(device)
        x = pre(frames).to(device)
        rows.append((name, backbone.dim, x.shape[-1], timed(model, x, args.seconds, amp)))
        del model, backbone

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"\nframe encoders, {device} (threads {threads}), batch {args.batch}"
          + (", bf16 autocast" if amp else ", float32") + ", random weights\n")
    print("| encoder | dim | input px | frames/s | vs ResNet-18 |")
    print("|---|---:|---:|---:|---:|")
    ref = rows[0][3]
    for name, dim, px, fps in rows:
        print(f"| {name} | {dim} | {px} | {fps:.1f} | {fps / ref:.2f}x |")


if __name__ == "__main__":
    main()
