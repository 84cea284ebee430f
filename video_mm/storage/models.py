"""The catalog's tables as SQLAlchemy 2 models: what was uploaded, cut, captioned, embedded, run.

Every row a stage writes is keyed by what produced it (clip and model), so re-running a stage
updates rows instead of adding them. Child rows cascade from their video, so deleting a video
deletes everything derived from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VIDEO_STATES = ("pending", "processing", "ready", "failed", "deleting")
JOB_STATES = ("queued", "running", "done", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware on every backend (SQLite has no tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Videos(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the bytes
    filename: Mapped[str] = mapped_column(String(1024), default="")
    blob_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint(_in("state", VIDEO_STATES), name="state"),
        Index("ix_videos_state_created_at", "state", "created_at"),
    )


class Clips(Base):
    __tablename__ = "clips"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # "<video_id>:<index>"
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    thumbnail_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("video_id", "index"),)


class Captions(Base):
    __tablename__ = "captions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    clip_id: Mapped[str] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    attention: Mapped[list[list[float]] | None] = mapped_column(JSON)
    # the decoder's next best captions of the clip, best first: [{"text", "score"}, ...]
    alternatives: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("clip_id", "model"),
        # PostgreSQL full-text search over captions; SQLite uses an FTS5 table (see migrations).
        Index(
            "ix_captions_text_tsv",
            func.to_tsvector(literal_column("'english'"), literal_column("text")),
            postgresql_using="gin",
        ).ddl_if(dialect="postgresql"),
    )


class Embeddings(Base):
    __tablename__ = "embeddings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    clip_id: Mapped[str] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(255))
    index_id: Mapped[str] = mapped_column(String(255), index=True)  # the id in the vector index

    __table_args__ = (UniqueConstraint("clip_id", "model"),)


class VideoBlobs(Base):
    """Blobs derived from a video besides its upload and thumbnails (features, caption files)."""

    __tablename__ = "video_blobs"

    video_id: Mapped[str] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))


class Jobs(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # What a finished job could not do, "; "-joined (e.g. "no captioner configured")
    notes: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # When the job's message reached the broker; NULL while it has not (the broker was down):
    # the job row is its own outbox entry, written in the same transaction as the job.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_in("state", JOB_STATES), name="state"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_jobs_state", "state"),
    )


# Objects the migrations own outside the models: SQLite's FTS5 table (with the shadow tables FTS5
# creates) and PostgreSQL's expression index for full-text search.
UNMODELLED = ("captions_fts", "ix_captions_text_tsv")


def include_object(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
    """Alembic's filter: compare the models with the database, leaving the FTS objects out."""
    return not (name and name.startswith(UNMODELLED))
