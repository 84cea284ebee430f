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
torchcodec with exact and approximate seek when it is installed and loads: it needs the system's
FFmpeg shared libraries) next to ours (``sample_frames(path, n=16)``: probe, guard, limits,
rotation, damaged-input handling included), on the two clips above and on every clip in
``--real``. Every method reads the same frames (those ``sample_frames`` picks, first and last
included), and its frames are checked against a plain PyAV decode of every frame: one that returns
other frames is marked and not counted. ``ours / best`` (over the right ones) is the parity column,
in wall-clock time and in CPU time (all threads: the less noisy one on a shared machine). The last
column is ours with FFmpeg's frame threads on every clip, as the same two ratios: the default
(``io.frame_threads_min_pixels``) decodes frames under 640x360 on one thread. ``PyAV bare`` is not
a peer (not in best): the same frames through PyAV with nothing of ours (:func:`pyav_bare`), so
``ours / bare`` is what the reader costs over PyAV itself and ``bare / best`` what is left to
PyAV's FFmpeg build against the best peer's (both in wall-clock / CPU time).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from video_mm.io import open_video, sample_frames
from video_mm.io.ffmpeg import ffmpeg_exe, run_ffmpeg
from video_mm.io.probe import GIF_PROBE_BYTES
from video_mm.settings import IOSettings

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


# A frame further than this from the reference (mean absolute difference, 0-255) is another frame;
# the same frame converted to RGB by another FFmpeg differs by about 1.
WRONG_DIFF = 3.0


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
    """The frames ``sample_frames(path, n=n)`` picks (first and last included): every method reads
    the same frames."""
    return np.linspace(0, total - 1, n).round().astype(int).tolist()


def decord_alone(path: Path) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(path), num_threads=0)
    return vr.get_batch(uniform(len(vr))).asnumpy()


def pyav_seek(path: Path) -> np.ndarray:
    """PyAV the way a user writes it: seek to the keyframe before each target, decode up to it."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        total = stream.frames or sum(1 for _ in c.demux(stream) if _.pts is not None)
        rate = float(stream.average_rate)
        got = []
        for index in uniform(total):
            target = index / rate
            c.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in c.decode(stream):
                if frame.time is not None and frame.time >= target - 0.5 / rate:
                    got.append(frame.to_ndarray(format="rgb24"))
                    break
        return np.stack(got)


def pyav_bare(path: Path) -> np.ndarray:
    """The floor of a reader on PyAV: no guard, probe, limits or damage handling. Opened as ours
    opens it (a GIF probed on its first bytes, an AVI without FFmpeg's rate analysis); packets
    demuxed into memory; each wanted frame decoded forward from the last keyframe at or before
    it (the decoder flushed there unless decoding already passed it); frames released as they
    go, the wanted ones converted to RGB with one scaler; threads as ours sets them. Wanted
    frames are found by timestamp (every packet of these clips has one)."""
    options = {".gif": {"probesize": str(GIF_PROBE_BYTES)}, ".avi": {"fpsprobesize": "0"}}
    with av.open(str(path), options=options.get(path.suffix, {})) as c:
        stream = c.streams.video[0]
        big = stream.width * stream.height >= IOSettings().frame_threads_min_pixels
        stream.codec_context.thread_type = "AUTO" if big else "NONE"
        packets = [p for p in c.demux(stream) if p.size]
        stamps = sorted(p.pts for p in packets)
        keys = [(p.pts, i) for i, p in enumerate(packets) if p.is_keyframe]
        scaler, got = VideoReformatter(), []
        frames: Iterator[av.VideoFrame] | None = None
        last = -1  # timestamp of the last frame decoded
        for target in [stamps[i] for i in uniform(len(stamps))]:
            key, at = max((k, i) for k, i in keys if k <= target)
            if frames is None or key > last:
                stream.codec_context.flush_buffers()
                frames = _released(stream, [*packets[at:], None])
            for frame in frames:
                last = frame.pts
                if last == target:
                    got.append(scaler.reformat(frame, format="rgb24", threads=1).to_ndarray())
                    break
                del frame  # not held while the next decodes (a GIF's decoder would copy it)
        return np.stack(got)


def _released(stream: av.video.stream.VideoStream, packets: list) -> Iterator[av.VideoFrame]:
    """Frames of ``packets``, each let go before the next packet is decoded."""
    for packet in packets:
        for frame in stream.decode(packet):
            yield frame
            del frame


def torchcodec_decoder(mode: str) -> Callable[[Path], np.ndarray] | None:
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception:  # not installed, or no FFmpeg shared libraries for it to load
        return None

    def run(path: Path) -> np.ndarray:
        d = VideoDecoder(str(path), seek_mode=mode)
        return d.get_frames_at(uniform(d.metadata.num_frames)).data.permute(0, 2, 3, 1).numpy()

    return run


def ours_uniform(path: Path) -> np.ndarray:
    return sample_frames(path, n=16).frames


def ours_frame_threads(path: Path) -> np.ndarray:
    """Ours with FFmpeg's frame threads on every clip (``io.frame_threads_min_pixels = 0``): the
    default puts frames under 640x360 on one thread; this column says what that choice costs or
    saves on this machine."""
    return sample_frames(path, n=16, limits=IOSettings(frame_threads_min_pixels=0)).frames


def reference(path: Path) -> np.ndarray:
    """The 16 frames from a plain PyAV decode of every frame, in order."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
    return np.stack([frames[i].to_ndarray(format="rgb24") for i in uniform(len(frames))])


def wrong(frames: np.ndarray, ref: np.ndarray) -> bool:
    """Other frames than the reference's (mean pixel difference over WRONG_DIFF)."""
    if frames.shape != ref.shape:
        return True
    return bool(np.abs(frames.astype(np.float32) - ref).mean(axis=(1, 2, 3)).max() > WRONG_DIFF)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (this process, every thread) of ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def attempt(
    fn: Callable[[Path], np.ndarray], path: Path, repeats: int, ref: np.ndarray
) -> tuple[str, float, float] | None:
    """``(cell, wall s, CPU s)`` of a method on a file; the cell is marked when its frames are
    wrong (then the times are NaN: not counted); None where it cannot read the file."""
    try:
        bad = wrong(fn(path), ref)
        wall, cpu = timed(lambda: fn(path), repeats)
    except Exception:
        return None
    if bad:
        return f"{wall:.3f}\u2020", float("nan"), float("nan")
    return f"{wall:.3f}", wall, cpu


def peers(paths: list[tuple[str, Path]], repeats: int) -> None:
    methods: list[tuple[str, Callable[[Path], np.ndarray] | None]] = [
        ("decord2 alone", decord_alone),
        ("PyAV seek", pyav_seek),
        ("torchcodec exact", torchcodec_decoder("exact")),
        ("torchcodec approximate", torchcodec_decoder("approximate")),
    ]
    missing = [name for name, fn in methods if fn is None]
    live = [(name, fn) for name, fn in methods if fn is not None]
    names = " | ".join(name for name, _ in live)
    print(f"| clip | {names} | ours | ours / best | CPU: ours / best | ours, frame threads "
          "| PyAV bare | ours / bare | bare / best |")  # fmt: skip
    print("|---|" + "---:|" * (len(live) + 7))
    for label, path in paths:
        ref = reference(path)
        results = [attempt(fn, path, repeats, ref) for _, fn in live]
        mine = attempt(ours_uniform, path, repeats, ref)
        threaded = attempt(ours_frame_threads, path, repeats, ref)
        bare = attempt(pyav_bare, path, repeats, ref)
        cells = [r[0] if r else "fails" for r in results]
        walls = [r[1] for r in results if r and r[1] == r[1]]  # timed, with the right frames
        cpus = [r[2] for r in results if r and r[2] == r[2]]
        if mine is None or not walls:
            ratios = "- | -"
        else:
            ratios = f"{mine[1] / min(walls):.2f}x | {mine[2] / min(cpus):.2f}x"
        ours = mine[0] if mine else "fails"
        if threaded and walls and threaded[1] == threaded[1]:  # its ratios to the best peer
            other = f"{threaded[1] / min(walls):.2f}x / {threaded[2] / min(cpus):.2f}x"
        else:
            other = threaded[0] if threaded else "fails"
        if bare and mine and walls and bare[1] == bare[1] and mine[1] == mine[1]:
            floor = (f"{bare[0]} | {mine[1] / bare[1]:.2f}x / {mine[2] / bare[2]:.2f}x"
                     f" | {bare[1] / min(walls):.2f}x / {bare[2] / min(cpus):.2f}x")  # fmt: skip
        else:
            floor = f"{bare[0] if bare else 'fails'} | - | -"
        print(f"| {label} | " + " | ".join(cells) + f" | {ours} | {ratios} | {other} | {floor} |",
              flush=True)  # fmt: skip
    print(f"\n\u2020 wrong frames (mean pixel difference from a full decode over {WRONG_DIFF:g}): "
          "not counted in best")
    if missing:
        print(f"not measured (not installed, or cannot load here): {', '.join(missing)}")


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
