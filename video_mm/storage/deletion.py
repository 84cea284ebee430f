"""Deleting a video and everything derived from it: the video is hidden first (``deleting``),
then its index entries, the blobs no other video shares, and its rows go; a crash midway leaves
it hidden and :meth:`DeleteCascade.delete_video` can run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from video_mm.errors import NotFound
from video_mm.storage.database import Database
from video_mm.storage.media import video_blob_keys
from video_mm.storage.models import Captions, Clips, Embeddings, Jobs, VideoBlobs, Videos, utcnow
from video_mm.storage.rows import in_chunks


@dataclass(frozen=True)
class DeletedVideo:
    video_id: str
    clips: int
    index_ids: list[str]
    blobs: list[str]  # the keys actually removed (shared or absent ones are not)


class Deletable(Protocol):
    """The part of ``video_mm.index.base.VectorIndex`` that deleting a video needs."""

    def delete(self, ids: list[str]) -> Any: ...


class BlobDeleter(Protocol):
    def delete(self, key: str) -> bool: ...


def _shared_blob_keys(s: Session, video_id: str, keys: set[str]) -> set[str]:
    """Those of ``keys`` that some other video refers to too (the same thumbnail, say)."""
    shared: set[str] = set()
    for chunk in in_chunks(sorted(keys)):
        shared |= set(
            s.scalars(
                select(Videos.blob_key).where(Videos.blob_key.in_(chunk), Videos.id != video_id)
            )
        )
        shared |= set(
            s.scalars(
                select(Clips.thumbnail_key).where(
                    Clips.thumbnail_key.in_(chunk), Clips.video_id != video_id
                )
            )
        )
        shared |= set(
            s.scalars(
                select(VideoBlobs.key).where(
                    VideoBlobs.key.in_(chunk), VideoBlobs.video_id != video_id
                )
            )
        )
    return shared


class DeleteCascade(Database):
    """The delete cascade."""

    def delete_video(
        self,
        video_id: str,
        *,
        blobs: BlobDeleter | None = None,
        index: Deletable | None = None,
    ) -> DeletedVideo:
        """Delete a video's index entries, blobs and rows, in an order that survives a crash.

        The video is first hidden from search (state ``deleting``); then its index entries and
        blobs (those no other video refers to) go; its rows go last, so a re-run after a crash
        still finds what is left to delete. Without ``blobs`` or ``index`` those are left alone.
        """
        with self._write() as s:
            video = s.get(Videos, video_id)
            if video is None:
                raise NotFound(f"no video {video_id!r}")
            video.state, video.updated_at = "deleting", utcnow()
            n_clips = s.scalar(
                select(func.count()).select_from(Clips).where(Clips.video_id == video_id)
            )
            index_ids = list(
                s.scalars(
                    select(Embeddings.index_id)
                    .join(Clips, Clips.id == Embeddings.clip_id)
                    .where(Clips.video_id == video_id)
                    .order_by(Embeddings.index_id)
                )
            )
            keys = video_blob_keys(s, video_id)
            keys -= _shared_blob_keys(s, video_id, keys)
        if index is not None and index_ids:
            index.delete(index_ids)
            if hasattr(index, "flush"):
                index.flush()
        deleted_blobs = [k for k in sorted(keys) if blobs.delete(k)] if blobs is not None else []
        with self._write() as s:
            # Children first: the database need not enforce the cascade for this to be complete.
            clips = select(Clips.id).where(Clips.video_id == video_id).scalar_subquery()
            s.execute(delete(Captions).where(Captions.clip_id.in_(clips)))
            s.execute(delete(Embeddings).where(Embeddings.clip_id.in_(clips)))
            for model in (Clips, Jobs, VideoBlobs):
                s.execute(delete(model).where(model.video_id == video_id))
            s.execute(delete(Videos).where(Videos.id == video_id))
        return DeletedVideo(
            video_id=video_id,
            clips=int(n_clips or 0),
            index_ids=index_ids,
            blobs=deleted_blobs,
        )
