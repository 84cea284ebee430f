"""The catalog: one SQL database of videos, clips, captions, embeddings and jobs.

``Catalog(url)`` is the one door to it for the pipeline, the workers, the CLI and the API. It opens
SQLite (the default; WAL, foreign keys on, writers serialised with ``BEGIN IMMEDIATE``) or
PostgreSQL (at scale), and brings the schema to the newest Alembic revision when it opens. Methods
take and return plain values (records and frozen row dataclasses), never sessions, so callers
cannot hold a transaction open by accident.

The catalog holds several ideas, one module each, composed here into the one :class:`Catalog`:
``database`` (engine, migrations, sessions), ``rows`` (the frozen rows handed out), ``media``
(videos, clips, captions, embeddings, attached blobs; ``mark_ready``), ``jobs`` (job state),
``text_search`` (what search reads: index ids, clip details, full-text search over captions) and
``deletion`` (the delete cascade).
"""

from __future__ import annotations

from video_mm.records import clip_id
from video_mm.settings import Settings
from video_mm.storage.database import alembic_config, normalize_url
from video_mm.storage.deletion import DeleteCascade, DeletedVideo
from video_mm.storage.jobs import JobStore
from video_mm.storage.media import MediaCatalog, NotReady
from video_mm.storage.rows import CaptionRow, ClipDetail, ClipRow, EmbeddingRow, JobRow, VideoRow
from video_mm.storage.text_search import SearchReads


class Catalog(MediaCatalog, JobStore, SearchReads, DeleteCascade):
    """Videos, clips, captions, embeddings and jobs in one SQL database: the one facade callers
    use, composed of the catalog's parts."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(
            settings.catalog_url,
            busy_timeout_s=settings.catalog.busy_timeout_s,
            pool_size=settings.catalog.pool_size,
        )


__all__ = [
    "CaptionRow",
    "Catalog",
    "ClipDetail",
    "ClipRow",
    "DeletedVideo",
    "EmbeddingRow",
    "JobRow",
    "NotReady",
    "VideoRow",
    "alembic_config",
    "clip_id",
    "normalize_url",
]
