"""The native libraries' own log lines go to our logger at debug level, never to the terminal.

A damaged file makes FFmpeg's decoders talk ("[h264 @ 0x...] error while decoding MB 4 4").

- PyAV keeps FFmpeg silent by default, and it stays so: a Python log callback called from FFmpeg's
  frame threads deadlocks when a codec context is freed while the main thread holds the GIL
  (PyAV issues #751, #909; it hung our decode benchmark at interpreter exit). The lines PyAV does
  hand to Python logging (while a file is opened, where :mod:`video_mm.io.probe` sets a level and
  captures them) go to the ``video_mm.native`` logger at debug level, never to a root handler.
- Decord links its own copy of FFmpeg, which prints to the terminal from its decoding threads.
  Its log callback is replaced (through ctypes, whose foreign calls release the GIL) by one that
  forwards to ``video_mm.native`` and counts the errors, so a reader can tell that Decord met
  damaged data; at exit FFmpeg's own callback is put back, silenced. Where that copy of FFmpeg
  cannot be found (another Decord build), its logging is only silenced.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import platform
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger("video_mm.native")

AV_LOG_ERROR = 16
AV_LOG_WARNING = 24
_LINE_BYTES = 1024

_lock = threading.Lock()
_decord_errors = 0  # error lines Decord's FFmpeg logged in this process
_callback: object = None  # the ctypes callback, kept alive while FFmpeg may call it
_LogCallback = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
)


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


def decord_errors() -> int:
    """How many error lines Decord's FFmpeg has logged so far (it grows when Decord decodes
    damaged data; compare before and after a call)."""
    return _decord_errors


def route_decord_logs(decord: ModuleType) -> None:
    """Forward the log lines of Decord's own FFmpeg to ``video_mm.native`` (once a process)."""
    global _callback
    with _lock:
        if _callback is not None:
            return
        libs = sorted((Path(decord.__file__).parent.parent / "decord2.libs").glob("libavutil-*"))
        if platform.machine() not in ("x86_64", "AMD64") or not libs:
            decord.logging.set_level(decord.logging.QUIET)  # no way in: at least keep it quiet
            _callback = False
            return
        avutil = ctypes.CDLL(str(libs[0]))
        avutil.av_log_format_line2.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
            ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
        ]  # fmt: skip

        def forward(ptr: int | None, level: int, fmt: bytes | None, args: int | None) -> None:
            global _decord_errors
            if level > AV_LOG_WARNING or fmt is None:
                return
            line = ctypes.create_string_buffer(_LINE_BYTES)
            prefix = ctypes.c_int(1)
            avutil.av_log_format_line2(ptr, level, fmt, args, line, _LINE_BYTES, prefix)
            if level <= AV_LOG_ERROR:
                _decord_errors += 1
            log.debug("decord: %s", line.value.decode("utf-8", "replace").strip())

        _callback = _LogCallback(forward)
        avutil.av_log_set_callback(_callback)
        decord.logging.set_level(decord.logging.WARNING)

        def restore() -> None:  # no Python callback while the interpreter shuts down
            avutil.av_log_set_level(decord.logging.QUIET)
            avutil.av_log_set_callback(avutil.av_log_default_callback)

        atexit.register(restore)
