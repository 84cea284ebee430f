"""Feature extraction throughput: the naive loop against video_mm's extractor, and against peak.

For each backbone, on real msvd14 clips decoded at 224 px (short side):
- naive: decode a clip, then one frame at a time (batch 1, NCHW, ``torch.no_grad``), no overlap;
- ours: ``extract_videos`` (frames of several clips packed into batches, batch norm folded,
  channels_last, ``inference_mode``, the next clip decoded in a producer thread meanwhile);
- ours, model only: the same batched forward on already-preprocessed frames (no decode);
and ours as a fraction of the measured SGEMM rate (FLOPs per frame x frames/s / SGEMM FLOP/s).
"busy" is ours / model-only: the share of the time the device spends in the backbone while the
pipeline runs (decode overlapped well means close to 100%).

    .venv/bin/python benchmarks/features.py [--seconds 6] [--threads N] [--device cpu|cuda]

Each measurement runs until ``--seconds`` have passed (whole clips or batches), after a warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from argparse import Namespace
from pathlib import Path

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


def extractor(name: str, args: Namespace) -> FeatureExtractor:
    settings = FeatureSettings(backbone=name, batch_size=args.batch_size, compile=args.compile)
    return FeatureExtractor(settings, device=args.device)


def ours(name: str, clips: list[Path], sampling: SamplingSettings, args: Namespace) -> float:
    """One continuous stream over the clips, so decode overlaps inference throughout."""
    stream = extract_videos(itertools.cycle(clips), sampling, extractor(name, args))
    next(stream)  # warm-up: the first full batch
    frames, start = 0, time.perf_counter()
    for _, feats in stream:
        frames += len(feats.times)
        if (elapsed := time.perf_counter() - start) >= args.seconds:
            break
    stream.close()
    return frames / elapsed


def model_only(name: str, clips: list[Path], args: Namespace) -> float:
    ex = extractor(name, args)
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
    head = (f"{'backbone':<20}{'GFLOP/frame':>12}{'SGEMM GF/s':>11}{'naive f/s':>10}"
            f"{'ours f/s':>10}{'speedup':>9}{'% peak':>8}{'model-only f/s':>16}{'% peak':>8}"
            f"{'busy':>6}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        fl = flops_per_frame(name)
        before = sgemm_peak(device, min(args.seconds, 2.0))
        n = naive(name, clips, sampling, args)
        o = ours(name, clips, sampling, args)
        m = model_only(name, clips, args)
        peak = max(before, sgemm_peak(device, min(args.seconds, 2.0)))
        print(f"{name:<20}{fl / 1e9:>12.2f}{peak / 1e9:>11.1f}{n:>10.1f}{o:>10.1f}{o / n:>8.2f}x"
              f"{100 * fl * o / peak:>7.0f}%{m:>16.1f}{100 * fl * m / peak:>7.0f}%"
              f"{100 * o / m:>5.0f}%", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
