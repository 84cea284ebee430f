"""Decode and sampling speed: our reader's samplers against decoding everything.

Writes two clips with ffmpeg (a 60 s 720p h264 clip with a keyframe every 8 s, and a 30 s 360p
clip), then times, on each: uniform 16 and 32 frames, 1 fps, and keyframes-only with our reader
(both backends, frames resized on decode to a 224 px short side), against PyAV decoding every frame
and ``ffmpeg -f null`` (a full decode with nothing else: the floor for long-GOP sampling).
Each number is the best of ``--repeats`` runs, in one process, on this machine.

    .venv/bin/python benchmarks/decode.py [--repeats 2] [--workdir /tmp/vmm-bench-decode]
    .venv/bin/python benchmarks/decode.py --peers [--real ../shared/data/msvd14/videos]

``--peers`` prints instead the table of issue 17: 16 uniform frames at the native size, the best of
``--repeats``, by the decoders a user would pick instead (Decord alone, PyAV seeking to each frame,
torchcodec with exact and approximate seek when it is installed and loads) next to ours
(``sample_frames(path, n=16)``: probe, guard, limits, rotation, damaged-input handling included),
on the two clips above and on every clip in ``--real``; ``ours / best`` is the parity column.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from video_mm.io import open_video, sample_frames
from video_mm.io.ffmpeg import ffmpeg_exe, run_ffmpeg

CLIPS = {
    "60s 720p h264, keyframe every 8 s": (
        "clip_720p.mp4",
        "1280x720",
        30,
        60,
        ["-g", "240", "-keyint_min", "240", "-sc_threshold", "0"],
    ),
    "30s 360p h264, default GOP": ("clip_360p.mp4", "640x360", 30, 30, []),
}


def make_clip(path: Path, size: str, rate: int, seconds: int, gop: list[str]) -> None:
    if path.exists():
        return
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={rate}:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            *gop,
            str(path),
        ]
    )


def best(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    times, frames = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        times.append(time.perf_counter() - start)
    return min(times), frames


def pyav_all(path: Path) -> int:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        return sum(1 for _ in c.decode(stream))


def ffmpeg_null(path: Path) -> int:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"], check=True)
    return 0


def uniform(total: int, n: int = 16) -> list[int]:
    return [min(total - 1, int((i + 0.5) * total / n)) for i in range(n)]


def decord_alone(path: Path) -> int:
    import decord

    vr = decord.VideoReader(str(path), num_threads=0)
    return len(vr.get_batch(uniform(len(vr))).asnumpy())


def pyav_seek(path: Path) -> int:
    """PyAV the way a user writes it: seek to the keyframe before each target, decode up to it."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        total = stream.frames or sum(1 for _ in c.demux(stream) if _.pts is not None)
        rate = float(stream.average_rate)
        got = 0
        for index in uniform(total):
            target = index / rate
            c.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in c.decode(stream):
                if frame.time is not None and frame.time >= target - 0.5 / rate:
                    frame.to_ndarray(format="rgb24")
                    got += 1
                    break
        return got


def torchcodec_decoder(mode: str) -> Callable[[Path], int] | None:
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception:  # not installed, or no FFmpeg shared libraries for it to load
        return None

    def run(path: Path) -> int:
        d = VideoDecoder(str(path), seek_mode=mode)
        return len(d.get_frames_at(uniform(d.metadata.num_frames)).data)

    return run


def ours_uniform(path: Path) -> int:
    return len(sample_frames(path, n=16))


def attempt(fn: Callable[[Path], int], path: Path, repeats: int) -> float:
    """Best time of a peer, NaN where it cannot read the file (Decord and GIF, say)."""
    try:
        return best(lambda: fn(path), repeats)[0]
    except Exception:
        return float("nan")


def peers(paths: list[tuple[str, Path]], repeats: int) -> None:
    methods: list[tuple[str, Callable[[Path], int] | None]] = [
        ("decord2 alone", decord_alone),
        ("PyAV seek", pyav_seek),
        ("torchcodec exact", torchcodec_decoder("exact")),
        ("torchcodec approximate", torchcodec_decoder("approximate")),
    ]
    missing = [name for name, fn in methods if fn is None]
    live = [(name, fn) for name, fn in methods if fn is not None]
    print("| clip | " + " | ".join(name for name, _ in live) + " | ours | ours / best |")
    print("|---|" + "---:|" * (len(live) + 2))
    for label, path in paths:
        times = [attempt(fn, path, repeats) for _, fn in live]
        mine = best(lambda p=path: ours_uniform(p), repeats)[0]
        fastest = min((t for t in times if t == t), default=float("nan"))  # NaN: that peer failed
        print(f"| {label} | " + " | ".join("fails" if t != t else f"{t:.3f}" for t in times)
              + f" | {mine:.3f} | {mine / fastest:.2f}x |", flush=True)
    if missing:
        print(f"\nnot measured (not installed, or cannot load here): {', '.join(missing)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vmm-bench-decode"
    )
    parser.add_argument("--peers", action="store_true", help="the peer table (issue 17)")
    parser.add_argument("--real", type=Path, default=None, help="a folder of real clips too")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.peers:
        paths = []
        for label, (name, size, rate, seconds, gop) in CLIPS.items():
            make_clip(args.workdir / name, size, rate, seconds, gop)
            paths.append((label, args.workdir / name))
        if args.real:
            paths += [(p.name, p) for p in sorted(args.real.iterdir())]
        peers(paths, args.repeats)
        return
    rows = []
    for label, (name, size, rate, seconds, gop) in CLIPS.items():
        path = args.workdir / name
        make_clip(path, size, rate, seconds, gop)
        total = pyav_all(path)
        floor, _ = best(lambda p=path: ffmpeg_null(p), args.repeats)
        everything, _ = best(lambda p=path: pyav_all(p), args.repeats)
        results = [
            ("ffmpeg -f null (full decode)", floor, total),
            ("PyAV decode every frame", everything, total),
        ]
        for backend in ("decord", "pyav"):
            with open_video(path, backend=backend) as r:
                keys = len(r.keyframe_indices())
            for sampler, kwargs in (
                ("uniform 16", {"n": 16}),
                ("uniform 32", {"n": 32}),
                ("1 fps", {"sampler": "fps", "fps": 1.0}),
                (f"keyframes ({keys})", {"sampler": "keyframes"}),
            ):

                def run(p=path, b=backend, kw=kwargs) -> int:
                    with open_video(p, size=224, backend=b) as reader:
                        return len(sample_frames(reader, **kw))

                t, n = best(run, args.repeats)
                results.append((f"ours [{backend}] {sampler}", t, n))
        for method, t, n in results:
            rows.append((label, method, n, t, n / t, t / floor, t / everything))
    header = ("clip", "method", "frames", "time s", "frames/s", "x ffmpeg-null", "x PyAV-all")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, method, n, t, fps, r1, r2 in rows:
        print(f"| {label} | {method} | {n} | {t:.3f} | {fps:.1f} | {r1:.2f} | {r2:.2f} |")


if __name__ == "__main__":
    main()
