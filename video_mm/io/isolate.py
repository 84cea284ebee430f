"""Run risky calls (probing and decoding an untrusted upload) in a child process that is killed at
the limit.

The in-process limits (ffmpeg's I/O interrupt callback, deadlines between packets and frames)
cannot stop a single decoder call that never returns; a child process can always be killed. The
child comes from a fork server (one clean process started once, with the decoders imported), so
each call costs a fork, not an interpreter start. Typed errors raised in the child are raised
again, unchanged, in the parent.

- :func:`run_isolated`: one call (``io.isolate_probe``: probing);
- :class:`IsolatedReader`: a frame reader whose decoder lives in its own child process for as long
  as the reader is open (``io.isolate_decode``: one decode process per opened file); every call is
  answered within ``io.decode_timeout_s`` or the process is killed and the call raises
  :class:`~video_mm.errors.DecodeTimeout`. Frames come back through a pipe, a copy per frame
  (benchmarks/pipeline.py measures what that costs).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import AuthenticationString
from pathlib import Path
from typing import Any

import numpy as np

from video_mm import errors
from video_mm.errors import DecodeTimeout, VideoError, VideoMMError
from video_mm.io.decode import Reader
from video_mm.settings import IOSettings


def _context() -> mp.context.BaseContext:
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["video_mm.io.probe", "video_mm.io.decode"])
    return ctx


@contextlib.contextmanager
def _may_have_children() -> Iterator[None]:
    """Let a daemonic process (a Celery pool process is one) start the decode process.

    multiprocessing refuses children to daemonic processes because they are ended without being
    joined; ours are killed and joined by the caller (never left behind), and come from the fork
    server, not from this process, so lifting the refusal for the start is safe."""
    config = mp.current_process()._config  # type: ignore[attr-defined]
    daemon = config.pop("daemon", None)
    # billiard (Celery's pool) puts its own AuthenticationString here, which the standard
    # library's spawning code refuses to pickle: hand it the same key in the standard type.
    authkey = config.get("authkey")
    if authkey is not None and type(authkey) is not AuthenticationString:
        config["authkey"] = AuthenticationString(bytes(authkey))
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon
        if authkey is not None:
            config["authkey"] = authkey


def _answer(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Send ``fn``'s result, or its error in a form the parent raises again (no pickled objects)."""
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except VideoError as exc:
        conn.send(("video_error", (type(exc).__name__, exc.source, exc.reason)))
    except VideoMMError as exc:
        conn.send(("error", (type(exc).__name__, str(exc))))
    except IndexError as exc:  # a caller's mistake (frame out of range), raised as such
        conn.send(("index_error", str(exc)))
    except Exception as exc:  # anything else: report its type and text, not a pickled object
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))


def _child(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        _answer(conn, fn, args, kwargs)
    finally:
        conn.close()


def _raise_or_return(kind: str, payload: Any, source: str, what: str) -> Any:
    if kind == "ok":
        return payload
    if kind == "video_error":
        name, src, reason = payload
        raise getattr(errors, name)(src, reason)
    if kind == "error":
        name, message = payload
        raise getattr(errors, name, VideoMMError)(message)
    if kind == "index_error":
        raise IndexError(payload)
    raise errors.CorruptVideo(source, f"{what} failed: {payload}")


def run_isolated(
    fn: Callable[..., Any], *args: Any, timeout: float, source: str, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)`` in a child process; :class:`DecodeTimeout` naming ``source`` if it
    runs past ``timeout`` seconds (the child is killed)."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    with _may_have_children():
        process = ctx.Process(target=_child, args=(child, fn, args, kwargs), daemon=True)
        process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise DecodeTimeout(
                source,
                f"took longer than {timeout:g} s (io.decode_timeout_s); the probe was killed",
            )
        try:
            kind, payload = parent.recv()
        except EOFError:
            raise errors.CorruptVideo(
                source, f"the decoder process died (exit code {process.exitcode})"
            ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        parent.close()
    return _raise_or_return(kind, payload, source, "probing")


def _serve_reader(conn: Connection, source: str, size: int | None, limits: IOSettings,
                  backend: str) -> None:
    """The decode process: open the video, then answer ``(method, args)`` calls until ``close``
    (or until the parent goes away)."""
    from video_mm.io.decode import open_video

    reader = None

    def opened() -> dict:
        nonlocal reader
        reader = open_video(Path(source), size=size, limits=limits, backend=backend)  # type: ignore[arg-type]
        return {"info": reader.info, "backend": reader.backend, "size": reader.size,
                "out_width": reader.out_width, "out_height": reader.out_height,
                "times": reader.frame_times()}

    def call(method: str, *args: Any) -> Any:
        value = getattr(reader, method)
        return value(*args) if callable(value) else value

    try:
        _answer(conn, opened, (), {})
        while True:
            try:
                method, args = conn.recv()
            except EOFError:
                return
            if method == "close":
                return
            _answer(conn, call, (method, *args), {})
    finally:
        if reader is not None:
            reader.close()
        conn.close()


class IsolatedReader(Reader):
    """A :class:`~video_mm.io.decode.Reader` whose decoding runs in a child process, killed when a
    call does not return within ``limits.decode_timeout_s`` (then :class:`DecodeTimeout`)."""

    def __init__(self, path: Path, *, size: int | None, limits: IOSettings,
                 backend: str = "auto") -> None:
        self.limits, self._source = limits, str(path)
        # The child reads the file directly: no second isolation (or grandchild) inside it.
        inner = limits.model_copy(update={"isolate_decode": False, "isolate_probe": False})
        ctx = _context()
        self._conn, child = ctx.Pipe(duplex=True)
        with _may_have_children():
            self._process = ctx.Process(target=_serve_reader, daemon=True,
                                        args=(child, self._source, size, inner, backend))
            self._process.start()
        child.close()
        try:
            meta = self._answer("opening")
        except BaseException:
            self.close()
            raise
        self.info, self.backend, self.size = meta["info"], meta["backend"], meta["size"]
        self.out_width, self.out_height = meta["out_width"], meta["out_height"]
        self._times = meta["times"]

    def _answer(self, what: str) -> Any:
        timeout = self.limits.decode_timeout_s
        if not self._conn.poll(timeout):
            self._kill()
            raise DecodeTimeout(
                self._source,
                f"{what} took longer than {timeout:g} s (io.decode_timeout_s); "
                "the decoder process was killed",
            )
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            code = self._process.exitcode
            self._kill()
            raise errors.CorruptVideo(
                self._source, f"the decoder process died (exit code {code})"
            ) from None
        return _raise_or_return(kind, payload, self._source, what)

    def _call(self, method: str, *args: Any) -> Any:
        if not self._process.is_alive():
            raise errors.CorruptVideo(self._source, "the decoder process is gone")
        self._conn.send((method, args))
        return self._answer(f"decoding ({method})")

    def frame_times(self) -> np.ndarray:
        return self._times

    def keyframe_indices(self) -> np.ndarray:
        return self._call("keyframe_indices")

    def get_frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        return self._call("get_frames", np.asarray(indices, dtype=np.int64))

    @property
    def warning(self) -> str:
        return self._call("warning") if self._process.is_alive() else ""

    def lost_frames(self) -> set[int]:
        return self._call("lost_frames")

    def __len__(self) -> int:
        return len(self._times)

    def _kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._conn.close()

    def close(self) -> None:
        if self._process.is_alive() and not self._conn.closed:
            with contextlib.suppress(OSError):
                self._conn.send(("close", ()))
            self._process.join(timeout=5)
        if not self._conn.closed:
            self._kill()
