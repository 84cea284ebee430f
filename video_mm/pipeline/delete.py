"""Deleting a video everywhere it lives: index entries, blobs and catalog rows (the catalog's
cascade, ``Catalog.delete_video``, given this settings' index and blob store). ``vmm delete`` and
``DELETE /v1/videos/{id}`` both call :func:`delete_video`."""

from __future__ import annotations

from video_mm.pipeline.runner import context
from video_mm.settings import Settings
from video_mm.storage.catalog import DeletedVideo


def delete_video(video_id: str, settings: Settings) -> DeletedVideo:
    """Delete the video and what was derived from it; ``NotFound`` before anything is touched
    (or the index opened) when there is no such video. Re-runnable after a crash midway."""
    from video_mm.index.base import open_index

    ctx = context(settings)
    ctx.catalog.get_video(video_id)
    index = open_index(settings)
    try:
        return ctx.catalog.delete_video(video_id, blobs=ctx.blobs, index=index)
    finally:
        index.close()
