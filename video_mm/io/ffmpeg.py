"""Which ffmpeg binary to run: the system one when present, else the one imageio-ffmpeg ships.

So ``pip install`` alone is enough on a fresh machine. ``ffprobe`` is never assumed: probing goes
through PyAV (:mod:`video_mm.io.probe`).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=1)
def ffmpeg_encoders() -> frozenset[str]:
    """Names of the video encoders this ffmpeg was built with (``libx264``, ``libaom-av1``, ...)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].startswith("V"):
            names.add(parts[1])
    return frozenset(names)


def run_ffmpeg(args: list[str], *, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg quietly with ``args``; a failure raises ``CalledProcessError`` with stderr."""
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
