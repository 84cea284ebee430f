"""The media catalog: videos, their clips, captions, embeddings and attached blobs.

Stage outputs are upserts keyed by (clip, model), so re-running a stage never duplicates; a
video becomes searchable (``ready``) only through :meth:`MediaCatalog.mark_ready`, which checks
that every clip has all its captions and its embedding.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from video_mm.errors import NotFound, VideoMMError
from video_mm.records import Caption, Clip, VideoInfo, clip_id
from video_mm.storage.database import Database
from video_mm.storage.models import (
    VIDEO_STATES,
    Captions,
    Clips,
    Embeddings,
    VideoBlobs,
    Videos,
    utcnow,
)
from video_mm.storage.rows import (
    CaptionRow,
    ClipRow,
    EmbeddingRow,
    VideoRow,
    check_state,
    date_filters,
    to_row,
)

_VIDEO_ID = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")


class NotReady(VideoMMError):
    """A video cannot be marked ready: some of its results are missing."""

    code = "not_ready"


def video_blob_keys(s: Session, video_id: str) -> set[str]:
    """Every blob key a video refers to: its upload, its thumbnails, attached blobs."""
    keys = set(s.scalars(select(Videos.blob_key).where(Videos.id == video_id)))
    keys |= set(
        s.scalars(
            select(Clips.thumbnail_key).where(
                Clips.video_id == video_id, Clips.thumbnail_key.is_not(None)
            )
        )
    )
    keys |= set(s.scalars(select(VideoBlobs.key).where(VideoBlobs.video_id == video_id)))
    return keys


class MediaCatalog(Database):
    """Videos, clips, captions, embeddings and the blobs attached to videos."""

    def add_video(
        self, video_id: str, *, blob_key: str, filename: str = "", state: str = "pending"
    ) -> tuple[VideoRow, bool]:
        """Add a video once; adding it again returns the existing row and ``created=False``."""
        if not _VIDEO_ID.match(video_id):
            raise ValueError(f"bad video id {video_id!r}")
        check_state(state, VIDEO_STATES)
        now = utcnow()
        row = dict(
            id=video_id,
            blob_key=blob_key,
            filename=filename,
            state=state,
            created_at=now,
            updated_at=now,
        )
        with self._write() as s:
            stmt = self._insert(Videos).values(row).on_conflict_do_nothing(index_elements=["id"])
            created = s.execute(stmt.returning(Videos.id)).first() is not None
            return to_row(VideoRow, s.get_one(Videos, video_id)), created

    def get_video(self, video_id: str) -> VideoRow:
        with self._read() as s:
            obj = s.get(Videos, video_id)
            if obj is None:
                raise NotFound(f"no video {video_id!r}")
            return to_row(VideoRow, obj)

    def list_videos(
        self,
        *,
        state: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[VideoRow]:
        """Newest first."""
        q = select(Videos)
        if state is not None:
            check_state(state, VIDEO_STATES)
            q = q.where(Videos.state == state)
        q = q.where(*date_filters(since, until))
        q = q.order_by(Videos.created_at.desc(), Videos.id).limit(limit).offset(offset)
        with self._read() as s:
            return [to_row(VideoRow, v) for v in s.scalars(q)]

    def set_video_info(self, video_id: str, info: VideoInfo) -> None:
        values = dict(
            duration=info.duration,
            width=info.width,
            height=info.height,
            fps=info.fps,
            info=dataclasses.asdict(info),
        )
        self._update_video(video_id, values)

    def set_video_state(self, video_id: str, state: str, *, error: str | None = None) -> None:
        check_state(state, VIDEO_STATES)
        if state == "ready":
            raise ValueError("use mark_ready(), which checks that every result is written")
        self._update_video(video_id, dict(state=state, error=error))

    def set_video_warning(self, video_id: str, warning: str) -> None:
        """Record what of a damaged video was lost (``info["warning"]``; read by the surfaces)."""
        with self._write() as s:
            video = s.get(Videos, video_id)
            if video is None:
                raise NotFound(f"no video {video_id!r}")
            video.info = {**(video.info or {}), "warning": warning}
            video.updated_at = utcnow()

    def _update_video(self, video_id: str, values: dict[str, Any]) -> None:
        with self._write() as s:
            n = s.execute(
                update(Videos).where(Videos.id == video_id).values(**values, updated_at=utcnow())
            ).rowcount
            if n == 0:
                raise NotFound(f"no video {video_id!r}")

    def mark_ready(
        self, video_id: str, *, captioners: Sequence[str] = (), embedding_model: str | None = None
    ) -> None:
        """Make a video searchable, once each clip has a caption per captioner and an embedding.

        Raises :class:`NotReady` naming what is missing; the video's state is left as it was.
        """
        with self._write() as s:
            video = s.get(Videos, video_id)
            if video is None:
                raise NotFound(f"no video {video_id!r}")
            if video.state == "deleting":
                raise NotReady(f"video {video_id} is being deleted")
            clip_ids = set(s.scalars(select(Clips.id).where(Clips.video_id == video_id)))
            missing: list[str] = []
            needs = [(Captions, m) for m in captioners]
            if embedding_model is not None:
                needs.append((Embeddings, embedding_model))
            for table, model in needs:
                have = set(
                    s.scalars(
                        select(table.clip_id)
                        .join(Clips, Clips.id == table.clip_id)
                        .where(Clips.video_id == video_id, table.model == model)
                    )
                )
                if lacking := clip_ids - have:
                    kind = table.__tablename__[:-1]
                    missing.append(f"{len(lacking)} clip(s) without {kind} {model!r}")
            if missing:
                raise NotReady(f"video {video_id} not ready: " + "; ".join(missing))
            video.state, video.error, video.updated_at = "ready", None, utcnow()

    def upsert_clips(
        self, video_id: str, clips: Sequence[Clip], *, thumbnails: Mapping[int, str] | None = None
    ) -> list[str]:
        """Make the video's clips exactly ``clips`` (by index); returns their ids.

        Re-running with the same clips changes nothing; clips no longer produced are removed with
        their captions and embeddings. A thumbnail already stored is kept unless a new one is given.
        """
        thumbnails = thumbnails or {}
        rows = []
        for c in clips:
            if c.video_id != video_id:
                raise ValueError(f"clip of video {c.video_id} given for video {video_id}")
            if not c.end > c.start >= 0:
                raise ValueError(f"clip {c.index} of {video_id}: bad span {c.start}..{c.end}")
            rows.append(
                dict(
                    id=clip_id(video_id, c.index),
                    video_id=video_id,
                    index=c.index,
                    start=c.start,
                    end=c.end,
                    thumbnail_key=thumbnails.get(c.index),
                )
            )
        ids = [r["id"] for r in rows]
        with self._write() as s:
            if s.get(Videos, video_id) is None:
                raise NotFound(f"no video {video_id!r}")
            stale = delete(Clips).where(Clips.video_id == video_id)
            if ids:
                stale = stale.where(Clips.id.not_in(ids))
            s.execute(stale)
            if rows:
                stmt = self._insert(Clips)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_=dict(
                        start=stmt.excluded.start,
                        end=stmt.excluded.end,
                        thumbnail_key=func.coalesce(
                            stmt.excluded.thumbnail_key, Clips.__table__.c.thumbnail_key
                        ),
                    ),
                )
                s.execute(stmt, rows)
        return ids

    def set_thumbnails(self, thumbnails: Mapping[str, str]) -> None:
        """Thumbnail blob keys by clip id."""
        with self._write() as s:
            for cid, key in thumbnails.items():
                s.execute(update(Clips).where(Clips.id == cid).values(thumbnail_key=key))

    def get_clips(self, video_id: str) -> list[ClipRow]:
        with self._read() as s:
            q = select(Clips).where(Clips.video_id == video_id).order_by(Clips.index)
            return [to_row(ClipRow, c) for c in s.scalars(q)]

    def upsert_captions(self, captions: Iterable[tuple[str, Caption]]) -> None:
        """Captions keyed by (clip id, caption model): a re-run replaces, never duplicates."""
        rows = [
            dict(clip_id=cid, model=c.model, text=c.text, score=c.score, attention=c.attention,
                 alternatives=list(c.alternatives))
            for cid, c in captions
        ]
        if not rows:
            return
        stmt = self._insert(Captions)
        stmt = stmt.on_conflict_do_update(
            index_elements=["clip_id", "model"],
            set_=dict(
                text=stmt.excluded.text,
                score=stmt.excluded.score,
                attention=stmt.excluded.attention,
                alternatives=stmt.excluded.alternatives,
            ),
        )
        with self._write() as s:
            s.execute(stmt, rows)

    def get_captions(
        self,
        *,
        video_id: str | None = None,
        clip_ids: Sequence[str] | None = None,
        model: str | None = None,
    ) -> list[CaptionRow]:
        q = select(Captions).join(Clips, Clips.id == Captions.clip_id)
        if video_id is not None:
            q = q.where(Clips.video_id == video_id)
        if clip_ids is not None:
            q = q.where(Captions.clip_id.in_(clip_ids))
        if model is not None:
            q = q.where(Captions.model == model)
        q = q.order_by(Clips.video_id, Clips.index, Captions.model)
        with self._read() as s:
            return [to_row(CaptionRow, c) for c in s.scalars(q)]

    def upsert_embeddings(self, model: str, index_ids: Mapping[str, str]) -> None:
        """Which index entry holds each clip's embedding under ``model`` (clip id -> index id)."""
        rows = [dict(clip_id=cid, model=model, index_id=iid) for cid, iid in index_ids.items()]
        if not rows:
            return
        stmt = self._insert(Embeddings)
        stmt = stmt.on_conflict_do_update(
            index_elements=["clip_id", "model"], set_=dict(index_id=stmt.excluded.index_id)
        )
        with self._write() as s:
            s.execute(stmt, rows)

    def get_embeddings(
        self, *, video_id: str | None = None, model: str | None = None
    ) -> list[EmbeddingRow]:
        q = select(Embeddings).join(Clips, Clips.id == Embeddings.clip_id)
        if video_id is not None:
            q = q.where(Clips.video_id == video_id)
        if model is not None:
            q = q.where(Embeddings.model == model)
        with self._read() as s:
            return [to_row(EmbeddingRow, e) for e in s.scalars(q.order_by(Embeddings.clip_id))]

    def attach_blob(self, video_id: str, key: str, kind: str) -> None:
        """Record a blob derived from a video (features, caption files) so deletion finds it."""
        self.attach_blobs(video_id, [key], kind)

    def attach_blobs(self, video_id: str, keys: Iterable[str], kind: str) -> None:
        """:meth:`attach_blob` for several blobs of one kind, in one transaction."""
        rows = [dict(video_id=video_id, key=key, kind=kind) for key in dict.fromkeys(keys)]
        if not rows:
            return
        stmt = self._insert(VideoBlobs).on_conflict_do_nothing(index_elements=["video_id", "key"])
        with self._write() as s:
            s.execute(stmt, rows)

    def attached(self, video_id: str, kind: str) -> list[str]:
        """The keys of a video's attached blobs of one kind (e.g. its ``preview``)."""
        q = select(VideoBlobs.key).where(VideoBlobs.video_id == video_id, VideoBlobs.kind == kind)
        with self._read() as s:
            return sorted(s.scalars(q))

    def blob_keys(self, video_id: str) -> set[str]:
        """Every blob a video refers to: its upload, its thumbnails, attached blobs."""
        with self._read() as s:
            return video_blob_keys(s, video_id)

    def video_counts(self) -> dict[str, int]:
        with self._read() as s:
            counts = dict(
                s.execute(select(Videos.state, func.count()).group_by(Videos.state)).all()
            )
        return {st: int(counts.get(st, 0)) for st in VIDEO_STATES}
