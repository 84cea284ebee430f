"""Test-only: makes a worker process hang for real, in native code, where a test says.

Put this folder on ``PYTHONPATH`` of a worker process (never of the test process): Python imports
``sitecustomize`` at start, in the worker, its pool processes and the decode processes they fork.

- ``VMM_TEST_HANG=probe``: probing a file that starts with ``VMM-HANG`` blocks for ever;
- ``VMM_TEST_HANG=prepare|analyse|publish``: that step blocks for ever for videos whose
  filename contains ``hang``;
- ``VMM_TEST_HANG_FLAG``: a file each hanging process appends its pid to, as it starts hanging.

The block is a second lock of a non-recursive pthread mutex, through ctypes: native code that no
signal interrupts and that never returns to the interpreter, so Celery's soft time limit cannot
end it (only killing the process can), while other threads (the job's heartbeat) keep running,
as with a decoder stuck inside FFmpeg.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os

MARKER = b"VMM-HANG"


def hang_forever() -> None:
    flag = os.environ.get("VMM_TEST_HANG_FLAG")
    if flag:  # tell the test this process is stuck now
        with open(flag, "a") as f:
            f.write(f"{os.getpid()}\n")
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # PTHREAD_MUTEX_INITIALIZER is all zeros (glibc)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


def _patch(where: str) -> None:
    if where == "probe":
        module = importlib.import_module("video_mm.io.probe")  # video_mm.io.probe: a function

        original = module.open_container

        @functools.wraps(original)
        def open_container(checked, limits):  # type: ignore[no-untyped-def]
            if isinstance(checked, os.PathLike) and os.path.isfile(checked):
                with open(checked, "rb") as f:
                    if f.read(len(MARKER)) == MARKER:
                        hang_forever()  # in the process that really opens it (maybe a child)
            return original(checked, limits)

        module.open_container = open_container
        return
    import dataclasses

    from video_mm.pipeline import runner

    def hanging(original_step):  # type: ignore[no-untyped-def]
        @functools.wraps(original_step)
        def step(ctx, job_id, *args):  # type: ignore[no-untyped-def]
            video = ctx.catalog.get_video(ctx.catalog.get_job(job_id).video_id)
            if "hang" in (video.filename or ""):
                hang_forever()
            return original_step(ctx, job_id, *args)

        return step

    runner.STEPS = tuple(
        dataclasses.replace(s, run=hanging(s.run)) if s.name == f"vmm.{where}" else s
        for s in runner.STEPS
    )


if os.environ.get("VMM_TEST_HANG"):
    _patch(os.environ["VMM_TEST_HANG"])
