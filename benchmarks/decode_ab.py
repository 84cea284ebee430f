"""The reader's cost on sound files, this checkout against an earlier revision, interleaved.

On a shared, loaded machine two runs of benchmarks/decode.py minutes apart differ by more than
any change in the reader; here both revisions run in alternation (a child process each, rounds
``--rounds``), each case timed best of ``--repeats`` inside the child, as wall time and as the
process's CPU time (user + system over all its threads: less sensitive to other people's load).
The earlier revision is exported with ``git archive`` into a temporary folder. ``--real FOLDER``
adds each clip there as the peers table of ``decode.py --peers`` reads it: ``sample_frames(path,
n=16)``, 16 uniform frames at the native size, backend auto.

    .venv/bin/python benchmarks/decode_ab.py --before REV [--rounds 3] [--repeats 3] [--real DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (clip, backend, sampler, n or fps)
    ("clip_360p.mp4", "decord", "uniform", 16),
    ("clip_360p.mp4", "pyav", "uniform", 16),
    ("clip_360p.mp4", "decord", "fps", 1.0),
    ("clip_360p.mp4", "pyav", "fps", 1.0),
    ("clip_720p.mp4", "decord", "keyframes", 0),
    ("clip_720p.mp4", "pyav", "keyframes", 0),
    ("clip_720p.ts", "probe", "", 0),  # the 720p clip remuxed to a transport stream: probe only
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cases(real: Path | None) -> list[tuple[str, str, str, float]]:
    """CASES, then each clip in ``real`` (a path, read as the peers table reads it)."""
    clips = sorted(real.iterdir()) if real else []
    return CASES + [(str(p), "native", "uniform", 16) for p in clips]


def child(workdir: Path, repeats: int, real: Path | None) -> None:
    """Time every case in this process (the revision on PYTHONPATH); print JSON."""
    from video_mm.io import open_video, probe, sample_frames

    out = []
    for clip, backend, sampler, arg in cases(real):
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), _cpu()
            if backend in ("probe", "native"):
                if backend == "probe":
                    probe(workdir / clip, isolate=False)
                else:  # an absolute path: workdir / clip is clip
                    sample_frames(workdir / clip, n=int(arg))
                best_wall = min(best_wall, time.perf_counter() - wall)
                best_cpu = min(best_cpu, _cpu() - cpu)
                continue
            with open_video(workdir / clip, size=224, backend=backend) as reader:
                if sampler == "uniform":
                    sample_frames(reader, sampler="uniform", n=int(arg))
                elif sampler == "fps":
                    sample_frames(reader, sampler="fps", fps=float(arg))
                else:
                    sample_frames(reader, sampler="keyframes")
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, _cpu() - cpu)
        out.append({"wall": best_wall, "cpu": best_cpu})
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision (the baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    default_dir = Path(tempfile.gettempdir()) / "vmm-bench-decode"  # shared with decode.py
    parser.add_argument("--workdir", type=Path, default=default_dir)
    parser.add_argument("--real", type=Path, default=None, help="a folder of real clips too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workdir, args.repeats, args.real)
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from decode import CLIPS, make_clip  # the same two clips as benchmarks/decode.py

    from video_mm.io.ffmpeg import run_ffmpeg

    args.workdir.mkdir(parents=True, exist_ok=True)
    for name, size, rate, seconds, gop in CLIPS.values():
        make_clip(args.workdir / name, size, rate, seconds, gop)
    if not (args.workdir / "clip_720p.ts").exists():
        run_ffmpeg(["-y", "-i", str(args.workdir / "clip_720p.mp4"), "-c", "copy", "-f", "mpegts",
                    str(args.workdir / "clip_720p.ts")])  # fmt: skip
    with tempfile.TemporaryDirectory() as before:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", before], input=archive, check=True)
        trees = {"before": before, "after": str(ROOT)}
        best: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for label, tree in trees.items():
                run = subprocess.run(
                    [sys.executable, __file__, "--before", args.before, "--child",
                     "--repeats", str(args.repeats), "--workdir", str(args.workdir),
                     *(["--real", str(args.real.resolve())] if args.real else [])],
                    capture_output=True, text=True, check=True, timeout=900,
                    env={**os.environ, "PYTHONPATH": tree},
                )  # fmt: skip
                times = json.loads(run.stdout.splitlines()[-1])
                seen = best.get(label, times)
                best[label] = [
                    {k: min(a[k], b[k]) for k in a} for a, b in zip(seen, times, strict=True)
                ]
    print("| clip | reader | before wall s | after wall s | after/before | "
          "before CPU s | after CPU s | after/before |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = zip(cases(args.real), best["before"], best["after"], strict=True)
    for (clip, backend, sampler, arg), b, a in rows:
        what = f"{backend} {sampler}".strip() + (f" {arg:g}" if arg else "")
        print(f"| {Path(clip).name} | {what} | {b['wall']:.3f} | {a['wall']:.3f}"
              f" | {a['wall'] / b['wall']:.2f}"
              f" | {b['cpu']:.3f} | {a['cpu']:.3f} | {a['cpu'] / b['cpu']:.2f} |")


if __name__ == "__main__":
    main()
