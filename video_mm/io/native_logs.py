"""The native libraries' own log lines never reach the terminal: they go to the ``video_mm.native``
logger at debug level, and the lines Decord's decoder writes are counted, as signs of damage.

A damaged file makes FFmpeg's decoders talk ("[h264 @ 0x...] error while decoding MB 4 4").

- PyAV keeps FFmpeg silent by default, and it stays so: a Python log callback called from FFmpeg's
  frame threads deadlocks when a codec context is freed while the main thread holds the GIL
  (PyAV issues #751, #909; it hung a decode benchmark of ours at interpreter exit). The lines PyAV
  does hand to Python logging (while a file is opened, where :mod:`video_mm.io.probe` sets a level
  and captures them) go to ``video_mm.native`` at debug level, never to a root handler. PyAV
  reports damage per frame instead (``frame.is_corrupt``, packets that fail to decode).
- Decord links its own copy of FFmpeg, whose default log callback writes to C's ``stderr``
  stream, and Decord's own messages ("[00:37:17] .../video_reader.cc:86: ERROR opening: ...")
  go there too, through C++'s ``std::cerr``. Both are filtered by level in C, so when the first
  Decord reader is made (:func:`route_decord_logs`) C's ``stderr`` stream (not file descriptor 2:
  Python's own ``sys.stderr`` is untouched) is pointed at a pipe read by a daemon thread, which
  logs each line to ``video_mm.native`` at debug level. The FFmpeg level is set to errors, so a
  sound file makes no line at all and costs nothing; :func:`native_errors` counts the FFmpeg and
  Decord lines seen, which the Decord reader compares across each batch (``io/decode.py``).

The count is the process's: a reader takes it before and after its own Decord calls (after the
previous reader's decoder threads are joined, when it was closed), so only readers decoding in
several threads at the same moment can be blamed for each other's lines; the file blamed is then
read by PyAV, which finds it sound (a little slower, no warning). The pipe's write end does not
block: if nobody reads it (after the thread is gone at interpreter exit), lines are dropped rather
than stalling a decoder thread. In a forked child the capture is made again with a pipe of its own.
The redirect needs glibc (it sets the descriptor of the ``stderr`` FILE, checked against
``fileno``); elsewhere Decord's FFmpeg is set to quiet and Decord reads are not checked for
concealed damage. One cost: a "Fatal Python error" message, which CPython writes to C's ``stderr``,
goes to the pipe and is lost with the dying process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import re
import select
import sys
import threading
from types import ModuleType

log = logging.getLogger("video_mm.native")

# Where glibc keeps the descriptor in its FILE (``offsetof(struct _IO_FILE, _fileno)``, 64-bit);
# read back through ``fileno`` before it is changed.
_GLIBC_FILENO_OFFSET = 112
# "[h264 @ 0x55d1c0a1b2c0] error while decoding MB 4 4", and Decord's (dmlc's) own messages,
# "[00:37:17] /project/src/video/video_reader.cc:86: ERROR opening: ...".
_FFMPEG_LINE = re.compile(rb"\[[^\]@]+ @ 0x[0-9a-f]+\] ")
_DECORD_LINE = re.compile(rb"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


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


class _StderrCapture:
    """C's ``stderr`` stream pointed at a pipe; a daemon thread logs what arrives."""

    def __init__(self, libc: ctypes.CDLL, stream: int) -> None:
        self._libc, self._stream = libc, stream
        self.count = 0  # FFmpeg and Decord lines seen
        self._start()
        os.register_at_fork(after_in_child=self._restart)

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._read_fd, self._write_fd, self._partial = read_fd, write_fd, b""
        self._lock = threading.Lock()
        self._libc.flockfile(self._stream)
        try:
            ctypes.c_int.from_address(self._stream + _GLIBC_FILENO_OFFSET).value = write_fd
        finally:
            self._libc.funlockfile(self._stream)
        threading.Thread(target=self._pump, args=(read_fd,), name="vmm-native-logs",
                         daemon=True).start()  # fmt: skip

    def _restart(self) -> None:
        """In a forked child: the parent's thread is gone, and its pipe is the parent's."""
        os.close(self._read_fd)
        os.close(self._write_fd)
        self._start()

    def _pump(self, read_fd: int) -> None:
        while read_fd == self._read_fd:
            select.select([read_fd], [], [])
            self.drain()

    def drain(self) -> int:
        """Log every complete line waiting in the pipe; the count of FFmpeg and Decord lines."""
        with self._lock:
            while True:
                try:
                    chunk = os.read(self._read_fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not chunk:
                    break
                *lines, self._partial = (self._partial + chunk).split(b"\n")
                for line in lines:
                    self._route(line)
            return self.count

    def _route(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if not text:
            return
        if _FFMPEG_LINE.match(line) or _DECORD_LINE.match(line):
            self.count += 1
        log.debug("%s", text)


_capture: _StderrCapture | None = None
_capture_lock = threading.Lock()


def _capture_stderr() -> _StderrCapture | None:
    """Point C's ``stderr`` at our pipe (once per process); None where that cannot be done."""
    global _capture
    with _capture_lock:
        if _capture is not None or not sys.platform.startswith("linux"):
            return _capture
        if platform.libc_ver()[0] != "glibc":
            return None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.fileno.argtypes = [ctypes.c_void_p]
        libc.flockfile.argtypes = libc.funlockfile.argtypes = [ctypes.c_void_p]
        libc.fflush.argtypes = [ctypes.c_void_p]
        stream = ctypes.c_void_p.in_dll(libc, "stderr").value
        if not stream:
            return None
        at = ctypes.c_int.from_address(stream + _GLIBC_FILENO_OFFSET)
        if at.value != libc.fileno(stream):  # not the layout we know: leave it alone
            return None
        libc.fflush(stream)
        _capture = _StderrCapture(libc, stream)
        return _capture


def route_decord_logs(decord: ModuleType) -> None:
    """Send Decord's log lines (its FFmpeg's errors and its own messages) to ``video_mm.native``
    at debug level, counted by :func:`native_errors`; where C's ``stderr`` cannot be captured,
    keep Decord's FFmpeg quiet instead."""
    if _capture_stderr() is not None:
        decord.logging.set_level(decord.logging.ERROR)
    else:
        decord.logging.set_level(decord.logging.QUIET)


def native_errors() -> int:
    """How many FFmpeg and Decord log lines this process has seen so far (after reading what
    is waiting in the pipe); 0 where they are not captured. A decoder writes them only on errors,
    so a count that grows across a decode means the data decoded was damaged."""
    return _capture.drain() if _capture is not None else 0
