"""The native libraries' own log lines never reach the terminal; what reaches Python goes to our
logger at debug level.

A damaged file makes FFmpeg's decoders talk ("[h264 @ 0x...] error while decoding MB 4 4").

- PyAV keeps FFmpeg silent by default, and it stays so: a Python log callback called from FFmpeg's
  frame threads deadlocks when a codec context is freed while the main thread holds the GIL
  (PyAV issues #751, #909; it hung a decode benchmark of ours at interpreter exit). The lines PyAV
  does hand to Python logging (while a file is opened, where :mod:`video_mm.io.probe` sets a level
  and captures them) go to the ``video_mm.native`` logger at debug level, never to a root handler.
- Decord links its own copy of FFmpeg, which prints to the terminal from its decoding threads. It
  is set to quiet: FFmpeg filters by level in C, so this costs nothing, while any Python callback
  would be called for every trace line (about three a packet) and cost healthy files 8% more CPU.
  Decord's failures still arrive as exceptions, whose text is logged at debug level by the reader.
"""

from __future__ import annotations

import logging
from types import ModuleType

log = logging.getLogger("video_mm.native")


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


def route_ffmpeg_logs() -> None:
    """Send the FFmpeg lines PyAV hands to Python logging to ``video_mm.native`` at debug level
    (idempotent). PyAV's own level is left alone (None: FFmpeg silent)."""
    libav = logging.getLogger("libav")
    if not any(isinstance(h, _ToDebug) for h in libav.handlers):
        libav.addHandler(_ToDebug())
    libav.propagate = False
    libav.setLevel(logging.WARNING)


def silence_decord(decord: ModuleType) -> None:
    """Keep Decord's copy of FFmpeg from printing (it defaults to errors, on stderr)."""
    decord.logging.set_level(decord.logging.QUIET)
