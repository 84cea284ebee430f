"""Feature extraction throughput: the naive loop against video_mm's extractor, and against peak.

For each backbone, on real msvd14 clips decoded at 224 px (short side):
- naive: decode a clip, then one frame at a time (batch 1, NCHW, ``torch.no_grad``), no overlap;
- ours: ``extract_videos`` (frames of several clips packed into batches, batch norm folded,
  channels_last, ``inference_mode``, the next clip decoded in a producer thread meanwhile);
- ours, model only: the same batched forward on already-preprocessed frames (no decode);
and ours as a fraction of the measured SGEMM rate (FLOPs per frame x frames/s / SGEMM FLOP/s).
"busy" is ours / model-only: the share of the time the device spends in the backbone while the
pipeline runs (decode overlapped well means close to 100%).

``--precisions`` adds a row per precision (CPU: ``int8``, ``bfloat16``; CUDA: ``bfloat16``,
``float16`` autocast), each with its drift against float32 on the same frames: the cosine of each
frame's features to its float32 features (mean and minimum), and clip agreement, the share of clips
whose mean feature is nearest (cosine) to its own float32 clip among all clips (a search proxy).
% peak always counts float32 FLOPs against the float32 SGEMM rate, so int8 can pass 100%.

    .venv/bin/python benchmarks/features.py [--seconds 6] [--threads N] [--device cpu|cuda]
    .venv/bin/python benchmarks/features.py --models resnet18 --precisions float32 int8 bfloat16
    .venv/bin/python benchmarks/features.py --device cuda --models resnet50 --batch-size 256 \
        --precisions float32 bfloat16 float16                       # a lent GPU

Each measurement runs until ``--seconds`` have passed (whole clips or batches), after a warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from video_mm.features.backbones import create_backbone
from video_mm.features.extract import FeatureExtractor, extract_videos
from video_mm.io.sampling import sample_frames
from video_mm.settings import FeatureSettings, SamplingSettings

DATA = Path(os.environ.get("VMM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def sgemm_peak(device: torch.device, seconds: float, n: int = 2048) -> float:
    """Best observed float32 matrix-multiply rate (FLOP/s) on ``device``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def flops_per_frame(name: str) -> float:
    b = create_backbone(name)
    x = torch.zeros(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        b(x)
    return float(counter.get_total_flops())


def timed(step, seconds: float) -> float:
    """Frames/s of ``step() -> frames done``, after one warm-up call."""
    step()
    frames, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        frames += step()
    return frames / elapsed


def naive(name: str, clips: list[Path], sampling: SamplingSettings, args: Namespace) -> float:
    device = torch.device(args.device)
    model = create_backbone(name).to(device)

    def frames():  # decode a clip, then hand its frames out one by one
        for clip in itertools.cycle(clips):
            yield from sample_frames(clip, n=sampling.n_frames, size=sampling.size).frames

    it = frames()

    def step() -> int:
        with torch.no_grad():
            x = model.preprocess(next(it)[None]).contiguous().to(device)  # NCHW, batch 1
            model(x).cpu()
        return 1

    return timed(step, args.seconds)


def extractor(name: str, args: Namespace, precision: str = "float32") -> FeatureExtractor:
    """CPU: ``features.precision``; CUDA: float32 is AMP off, the others AMP in that dtype."""
    settings = FeatureSettings(backbone=name, batch_size=args.batch_size, compile=args.compile)
    if torch.device(args.device).type == "cuda":
        amp = precision != "float32"
        settings = settings.model_copy(
            update={"amp": amp, "amp_dtype": precision if amp else "bfloat16"}
        )
    else:
        settings = settings.model_copy(update={"precision": precision})
    return FeatureExtractor(settings, device=args.device)


def drift(name: str, clips: list[Path], args: Namespace, precision: str) -> tuple[float, ...]:
    """(mean cosine, min cosine, clip agreement) of ``precision`` against float32."""
    frames = [sample_frames(c, n=8, size=224).frames for c in clips]
    ref = [extractor(name, args).extract_frames(f) for f in frames]
    ex = extractor(name, args, precision)
    out = [ex.extract_frames(f) for f in frames]
    a, b = np.concatenate(out), np.concatenate(ref)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    ca = np.stack([o.mean(0) for o in out])
    cb = np.stack([r.mean(0) for r in ref])
    ca /= np.linalg.norm(ca, axis=1, keepdims=True)
    cb /= np.linalg.norm(cb, axis=1, keepdims=True)
    agree = float((np.argmax(ca @ cb.T, axis=1) == np.arange(len(clips))).mean())
    return float(cos.mean()), float(cos.min()), agree


def ours(
    name: str, clips: list[Path], sampling: SamplingSettings, args: Namespace,
    precision: str = "float32",
) -> float:
    """One continuous stream over the clips, so decode overlaps inference throughout."""
    stream = extract_videos(itertools.cycle(clips), sampling, extractor(name, args, precision))
    next(stream)  # warm-up: the first full batch
    frames, start = 0, time.perf_counter()
    for _, feats in stream:
        frames += len(feats.times)
        if (elapsed := time.perf_counter() - start) >= args.seconds:
            break
    stream.close()
    return frames / elapsed


def model_only(name: str, clips: list[Path], args: Namespace, precision: str = "float32") -> float:
    ex = extractor(name, args, precision)
    frames = sample_frames(clips[0], n=args.batch_size, size=224).frames
    x = ex.backbone.preprocess(frames).to(ex.device)

    def step() -> int:
        ex.forward(x)
        if ex.cuda:
            torch.cuda.synchronize()
        return args.batch_size

    return timed(step, args.seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v3_large"])
    ap.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="torch.compile the extractor's model")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--precisions", nargs="+", default=["float32"],
                    help="float32 first (the baseline); CPU: int8 bfloat16; CUDA: bfloat16 float16")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clips = sorted((DATA / "msvd14" / "videos").glob("*.avi"))
    sampling = SamplingSettings(n_frames=16, size=224)

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, compile {args.compile}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("SGEMM peak: 2048x2048 float32, the higher of two measurements taken just before and "
          "just after each backbone's runs\n(on a shared machine this compares like with like)\n")
    print("| backbone | precision | GFLOP/frame | SGEMM GF/s | naive f/s | ours f/s | speedup "
          "| % peak | model-only f/s | % peak | busy | cos mean | cos min | clip agreement |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        fl = flops_per_frame(name)
        before = sgemm_peak(device, min(args.seconds, 2.0))
        n = naive(name, clips, sampling, args)
        rows = []
        for precision in args.precisions:
            o = ours(name, clips, sampling, args, precision)
            m = model_only(name, clips, args, precision)
            d = drift(name, clips, args, precision) if precision != "float32" else (1, 1, 1)
            rows.append((precision, o, m, d))
        peak = max(before, sgemm_peak(device, min(args.seconds, 2.0)))
        for precision, o, m, (cos, cos_min, agree) in rows:
            print(f"| {name} | {precision} | {fl / 1e9:.2f} | {peak / 1e9:.1f} | {n:.1f} | {o:.1f} "
                  f"| {o / n:.2f}x | {100 * fl * o / peak:.0f}% | {m:.1f} | "
                  f"{100 * fl * m / peak:.0f}% | {100 * o / m:.0f}% | {cos:.4f} | {cos_min:.4f} | "
                  f"{100 * agree:.0f}% |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
