"""A copy of a video that every browser plays: H.264 + AAC in MP4, moov atom first.

Archives hold AVI, GIF, MKV with HEVC and more; a ``<video>`` element plays almost none of them.
The copy is a preview, so it is capped in height (and so in bitrate) and encoded fast; the
original stays what analysis reads.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from video_mm.errors import CorruptVideo, DecodeTimeout
from video_mm.io.ffmpeg import ffmpeg_exe
from video_mm.io.guard import check_source
from video_mm.settings import IOSettings

# Containers and video codecs a current Chromium, Firefox and Safari all play as they are.
PLAYABLE = {("mp4", "h264"), ("mov", "h264")}


def browser_playable(container: str, codec: str) -> bool:
    """Whether a file with this container (PyAV's name, e.g. ``mov,mp4,m4a``) and video codec
    plays in every major browser without a copy."""
    names = {c.strip() for c in container.split(",")}
    return any((name, codec) in PLAYABLE for name in names)


def to_browser_mp4(src: Path | str, dst: Path | str, limits: IOSettings, *,
                   max_height: int = 480, timeout_s: float = 300.0) -> Path:
    """Write the preview of ``src`` to ``dst``: :class:`CorruptVideo` with ffmpeg's reason when
    the source cannot be converted, :class:`DecodeTimeout` past ``timeout_s``. The source passes
    the guard decoding uses (no playlists, no protocols); ffmpeg may open local files only."""
    src, dst = check_source(src, limits), Path(dst)
    # Even dimensions (yuv420p needs them), never upscaled, at most max_height lines.
    scale = f"scale=-2:'min({max_height},trunc(ih/2)*2)'"
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-protocol_whitelist", "file", "-i", str(src),
        "-map", "0:v:0", "-map", "0:a:0?", "-vf", scale,
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", "-f", "mp4", str(dst),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        dst.unlink(missing_ok=True)
        raise DecodeTimeout(src, f"the browser copy took longer than {timeout_s:g} s") from exc
    except subprocess.CalledProcessError as exc:
        dst.unlink(missing_ok=True)
        reason = (exc.stderr or "").strip().splitlines()[-1:] or ["ffmpeg failed"]
        raise CorruptVideo(src, f"no browser copy: {reason[0]}") from exc
    return dst
