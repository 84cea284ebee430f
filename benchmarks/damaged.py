"""Damaged videos: how many frames we decode against ``ffmpeg -i FILE -f null -``, and our warning.

Builds a corpus of damaged files from three sound 4 s, 100-frame clips (an H.264 MP4 with its
moov first, an MPEG-2 and an H.264 transport stream, and a fragmented MP4): cut at several points,
bytes flipped in the middle, broken NAL lengths, transport streams cut inside and between packets,
a fragmented MP4 with a fragment or its init segment lost. For each file it counts the video
frames ffmpeg decodes (the ``-progress`` report of ``ffmpeg -i FILE -map 0:v:0 -f null -``) and
the frames our reader decodes when asked for every frame, and prints the warning we record (or
the typed error), and the warning a job that samples only 4 frames records.
tests/io/test_damaged.py builds the same corpus.

    .venv/bin/python benchmarks/damaged.py [--workdir /tmp/vmm-bench-damaged]
"""

from __future__ import annotations

import argparse
import random
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from video_mm.errors import VideoError
from video_mm.io import open_video, sample_frames
from video_mm.io.ffmpeg import ffmpeg_exe, run_ffmpeg

SRC = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
SOUND = {
    "good.mp4": [*SRC, *X264, "-movflags", "+faststart"],
    "good_mpeg2.ts": [*SRC, "-c:v", "mpeg2video", "-q:v", "4", "-g", "12", "-f", "mpegts"],
    "good_h264.ts": [*SRC, *X264, "-f", "mpegts"],
    "good_frag.mp4": [*SRC, *X264, "-movflags", "+frag_keyframe+empty_moov+default_base_moof"],
}


@dataclass(frozen=True)
class Damaged:
    name: str
    what: str
    readable: bool  # ffmpeg decodes frames from it (else we must fail with a typed error)


def _cut(data: bytes, share: float, odd: int = 101) -> bytes:
    return data[: int(len(data) * share) + odd]


def _cut_on_packet(data: bytes, share: float, packet: int = 188) -> bytes:
    """Cut a transport stream between two of its packets: nothing in the container says so."""
    return data[: int(len(data) * share) // packet * packet]


def _flip(data: bytes, count: int, span: int, seed: int = 0) -> bytes:
    out, rng = bytearray(data), random.Random(seed)
    for _ in range(count):
        out[len(out) // 2 + rng.randrange(-span, span)] ^= 0xFF
    return bytes(out)


def _break_nal_lengths(path: Path, frames: range) -> bytes:
    """Overwrite the NAL length prefix of some frames' packets: their packets do not decode."""
    out = bytearray(path.read_bytes())
    with av.open(str(path)) as c:
        packets = [p.pos for p in c.demux(c.streams.video[0]) if p.size]
    for i in frames:
        out[packets[i] : packets[i] + 4] = struct.pack(">I", 0x7FFF0000)
    return bytes(out)


def _boxes(data: bytes) -> list[tuple[int, int, bytes]]:
    at, boxes = 0, []
    while at + 8 <= len(data):
        (size,) = struct.unpack(">I", data[at : at + 4])
        boxes.append((at, size, data[at + 4 : at + 8]))
        at += size
    return boxes


def _lose_fragment(data: bytes, which: int) -> bytes:
    boxes = _boxes(data)
    moofs = [i for i, b in enumerate(boxes) if b[2] == b"moof"]
    start = boxes[moofs[which]][0]
    end = boxes[moofs[which] + 1][0] + boxes[moofs[which] + 1][1]  # its mdat
    return data[:start] + data[end:]


def _lose_init(data: bytes) -> bytes:
    return data[next(at for at, _, kind in _boxes(data) if kind == b"moof") :]


def make_corpus(workdir: Path) -> list[Damaged]:
    """Write the sound clips and the damaged corpus under ``workdir``; the damaged cases."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, args in SOUND.items():
        if not (workdir / name).exists():
            run_ffmpeg(["-y", *args, str(workdir / name)])
    mp4 = (workdir / "good.mp4").read_bytes()
    mpeg2 = (workdir / "good_mpeg2.ts").read_bytes()
    h264ts = (workdir / "good_h264.ts").read_bytes()
    frag = (workdir / "good_frag.mp4").read_bytes()
    cases = {
        Damaged("cut_25.mp4", "MP4 (moov first) cut at 25% of its bytes", True): _cut(mp4, 0.25),
        Damaged("cut_50.mp4", "MP4 cut at 50%", True): _cut(mp4, 0.5),
        Damaged("cut_75.mp4", "MP4 cut at 75%", True): _cut(mp4, 0.75),
        Damaged("cut_95.mp4", "MP4 cut at 95%", True): _cut(mp4, 0.95),
        Damaged("flip_middle.mp4", "MP4, 40 bytes flipped in the middle", True): _flip(
            mp4, 40, 2000
        ),
        Damaged("broken_nal.mp4", "MP4, 3 frames' NAL lengths broken", True): _break_nal_lengths(
            workdir / "good.mp4", range(45, 48)
        ),
        Damaged("flip_mpeg2.ts", "MPEG-2 TS, 60 bytes flipped in the middle", True): _flip(
            mpeg2, 60, 5000
        ),
        Damaged("cut_mpeg2.ts", "MPEG-2 TS cut at 60%", True): _cut(mpeg2, 0.6),
        Damaged("cut_h264.ts", "H.264 TS cut at 55%", True): _cut(h264ts, 0.55),
        Damaged("cut_packet_mpeg2.ts", "MPEG-2 TS cut at 60% between 188-byte packets", True): (
            _cut_on_packet(mpeg2, 0.6)
        ),
        Damaged("cut_packet_h264.ts", "H.264 TS cut at 55% between 188-byte packets", True): (
            _cut_on_packet(h264ts, 0.55)
        ),
        Damaged("cut_frag.mp4", "fragmented MP4 cut at 60%", True): _cut(frag, 0.6),
        Damaged("lost_fragment.mp4", "fragmented MP4, its 2nd fragment lost", True): (
            _lose_fragment(frag, 1)
        ),
        Damaged("lost_init.mp4", "fragmented MP4, its init segment (moov) lost", False): (
            _lose_init(frag)
        ),
    }
    for case, data in cases.items():
        (workdir / case.name).write_bytes(data)
    return list(cases)


def ffmpeg_frames(path: Path) -> int:
    """Video frames ``ffmpeg -i FILE -map 0:v:0 -f null -`` decodes (0 when it cannot open the
    file). Only the video is mapped: flipped bytes in a transport stream can make a bogus audio
    stream appear that fails ffmpeg's whole run."""
    args = ["-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"]
    run = subprocess.run(
        [ffmpeg_exe(), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    counts = [int(line[6:]) for line in run.stdout.splitlines() if line.startswith("frame=")]
    return counts[-1] if counts else 0


def ours(path: Path) -> tuple[int, str]:
    """Frames our reader decodes when asked for every frame, and its warning (or the error)."""
    try:
        with open_video(path, size=64) as reader:
            reader.get_frames(np.arange(len(reader)))
            return len(reader) - len(reader.lost_frames()), reader.warning
    except VideoError as exc:
        return 0, f"{type(exc).__name__}: {exc.reason}"


def sampled(path: Path, n: int = 4) -> str:
    """The warning when only ``n`` frames are sampled (uniform), as a job's decoding does."""
    try:
        return sample_frames(path, n=n, size=64).warning
    except VideoError as exc:
        return f"{type(exc).__name__}: {exc.reason}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vmm-bench-damaged-"))
    print("| file | damage | ffmpeg frames | ours | ours / ffmpeg | warning or error "
          "| with 4 frames sampled |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---|")
    for case in make_corpus(workdir):
        path = workdir / case.name
        theirs = ffmpeg_frames(path)
        got, warning = ours(path)
        few = sampled(path)
        ratio = f"{got / theirs:.0%}" if theirs else "-"
        few = "same" if few == warning else few or "-"
        print(f"| {case.name} | {case.what} | {theirs} | {got} | {ratio} | {warning or '-'} "
              f"| {few} |")  # fmt: skip


if __name__ == "__main__":
    main()
