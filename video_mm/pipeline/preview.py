"""A copy of a video every browser plays: AVI, GIF, MKV/HEVC and the like do not play in a
``<video>``. The first request converts the upload (H.264 MP4, ``api.preview_max_height``,
``api.preview_timeout_s``) and stores the copy as a ``preview`` blob attached to the video, so later
requests find it and deleting the video removes it."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from video_mm.io.transcode import to_browser_mp4
from video_mm.pipeline.runner import context
from video_mm.settings import Settings

# Striped locks: one conversion per video at a time, in bounded memory however many videos.
_LOCKS = tuple(threading.Lock() for _ in range(64))


def preview_key(
    video_id: str, settings: Settings, *,
    slot: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> str:
    """The blob key of the video's browser copy, converting once per video even under concurrent
    requests (``NotFound`` for an unknown video). A conversion runs inside ``slot()`` (the API's
    bound on concurrent conversions, which refuses past it); a copy already made needs none."""
    ctx = context(settings)
    with _LOCKS[int(video_id[:8], 16) % len(_LOCKS)]:
        if keys := ctx.catalog.attached(video_id, "preview"):
            return keys[0]
        with slot():
            return _convert(ctx, settings, video_id)


def _convert(ctx: Any, settings: Settings, video_id: str) -> str:
    """Convert the upload to an H.264 MP4 and keep it as a blob attached to the video."""
    video = ctx.catalog.get_video(video_id)
    spool = Path(settings.data_dir) / "uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with ctx.blobs.local_path(video.blob_key) as src, tempfile.TemporaryDirectory(
        dir=spool
    ) as tmp:
        out = to_browser_mp4(
            src, Path(tmp) / "preview.mp4", settings.io,
            max_height=settings.api.preview_max_height,
            timeout_s=settings.api.preview_timeout_s,
        )
        key = ctx.blobs.put(out)
    ctx.catalog.attach_blob(video_id, key, "preview")
    return key
