"""Run a risky call (probing an untrusted upload) in a child process that is killed at the limit.

The in-process limits (ffmpeg's I/O interrupt callback, deadlines between packets and frames)
cannot stop a single decoder call that never returns; a child process can always be killed. The
child comes from a fork server (one clean process started once), so each call costs a fork, not an
interpreter start. Typed errors raised in the child are raised again, unchanged, in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from video_mm import errors
from video_mm.errors import DecodeTimeout, VideoError, VideoMMError


def _context() -> mp.context.BaseContext:
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["video_mm.io.probe"])
    return ctx


def _child(conn: Connection, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except VideoError as exc:
        conn.send(("video_error", (type(exc).__name__, exc.source, exc.reason)))
    except VideoMMError as exc:
        conn.send(("error", (type(exc).__name__, str(exc))))
    except Exception as exc:  # anything else: report its type and text, not a pickled object
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(
    fn: Callable[..., Any], *args: Any, timeout: float, source: str, **kwargs: Any
) -> Any:
    """``fn(*args, **kwargs)`` in a child process; :class:`DecodeTimeout` naming ``source`` if it
    runs past ``timeout`` seconds (the child is killed)."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
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
    if kind == "ok":
        return payload
    if kind == "video_error":
        name, src, reason = payload
        raise getattr(errors, name)(src, reason)
    if kind == "error":
        name, message = payload
        raise getattr(errors, name, VideoMMError)(message)
    raise errors.CorruptVideo(source, f"probing failed: {payload}")
