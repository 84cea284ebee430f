"""The catalog: one SQL database of videos, clips, captions, embeddings and jobs.

``Catalog(url)`` is the one door to it for the pipeline, the workers, the CLI and the API. It opens
SQLite (the default; WAL, foreign keys on, writers serialised with ``BEGIN IMMEDIATE``) or
PostgreSQL (at scale), and brings the schema to the newest Alembic revision when it opens. Methods
take and return plain values (records and frozen row dataclasses), never sessions, so callers
cannot hold a transaction open by accident.

Consistency rules kept here: stage outputs are upserts keyed by (clip, model), so re-running a
stage never duplicates; a video is searchable only in state ``ready``, which :meth:`mark_ready`
grants only when every clip has all its captions and its embedding; :meth:`delete_video` hides the
video first, then removes index entries, blobs and rows, and can be re-run after a crash.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Engine,
    Float,
    Integer,
    create_engine,
    delete,
    event,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from video_mm.errors import ConfigError, NotFound, StorageError, VideoMMError
from video_mm.records import Caption, Clip, VideoInfo, clip_id
from video_mm.settings import Settings
from video_mm.storage.models import (
    JOB_STATES,
    VIDEO_STATES,
    Captions,
    Clips,
    Embeddings,
    Jobs,
    VideoBlobs,
    Videos,
    utcnow,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_VIDEO_ID = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
_WORD = re.compile(r"\w+", re.UNICODE)
_IN_CHUNK = 500  # ids per IN (...) clause: well under every backend's parameter limit
_PG_MIGRATION_LOCK = 0x766D6D  # advisory lock id: one process migrates at a time


class NotReady(VideoMMError):
    """A video cannot be marked ready: some of its results are missing."""

    code = "not_ready"


# -- rows handed out ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoRow:
    id: str
    filename: str
    blob_key: str
    state: str
    error: str | None
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None
    info: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClipRow:
    id: str
    video_id: str
    index: int
    start: float
    end: float
    thumbnail_key: str | None


@dataclass(frozen=True)
class CaptionRow:
    clip_id: str
    model: str
    text: str
    score: float
    attention: list[list[float]] | None
    alternatives: list[dict[str, Any]] | None  # the next best captions (n-best), best first


@dataclass(frozen=True)
class EmbeddingRow:
    clip_id: str
    model: str
    index_id: str


@dataclass(frozen=True)
class JobRow:
    id: str
    video_id: str
    state: str
    stage: str
    progress: float
    attempts: int
    error: str | None
    notes: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClipDetail:
    """A clip joined with its video and caption: what a search hit shows."""

    clip_id: str
    video_id: str
    index: int
    start: float
    end: float
    thumbnail_key: str | None
    caption: str
    caption_model: str | None
    filename: str
    created_at: datetime


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


R = TypeVar("R")


def _row(cls: type[R], obj: Any) -> R:
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _utc(when: datetime | None) -> datetime | None:
    if when is not None and when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone")
    return when


# -- engine and migrations ------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver installed with video-mm)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


@cache
def _head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def create_catalog_engine(url: str, *, busy_timeout_s: float = 30.0, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return create_engine(url, pool_size=pool_size, pool_pre_ping=True)
    if backend != "sqlite":
        raise ConfigError(f"catalog URL {url!r}: only sqlite and postgresql are supported")
    memory = parsed.database in (None, "", ":memory:")
    if memory:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        if not memory:
            _enable_wal(cur, busy_timeout_s)  # readers never block the one writer
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and then writes
        # fails at once ("database is locked") when another process wrote in between.
        immediate = conn.get_execution_options().get("vmm_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _enable_wal(cur: Any, busy_timeout_s: float) -> None:
    """Switch a file database to WAL, waiting out rivals that are doing the same.

    WAL is persistent, so later openers only read the mode. The switch needs an exclusive lock and
    SQLite answers "database is locked" at once, without its busy handler, when processes race to
    make it on a fresh file: retry with backoff until the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


# -- the facade -----------------------------------------------------------------------------------
class Catalog:
    """Videos, clips, captions, embeddings and jobs in one SQL database."""

    def __init__(
        self, url: str, *, busy_timeout_s: float = 30.0, pool_size: int = 5, migrate: bool = True
    ) -> None:
        self.url = normalize_url(url)
        self.engine = create_catalog_engine(
            self.url, busy_timeout_s=busy_timeout_s, pool_size=pool_size
        )
        self.dialect = self.engine.dialect.name
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self.engine.execution_options(vmm_write=True), expire_on_commit=False
        )
        if migrate:
            with self._unavailable():
                self.migrate()

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(
            settings.catalog_url,
            busy_timeout_s=settings.catalog.busy_timeout_s,
            pool_size=settings.catalog.pool_size,
        )

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Bring the schema to the newest revision; concurrent openers wait for one another."""
        with self.engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == _head_revision():
                conn.rollback()
                return
            conn.rollback()
            conn.execution_options(vmm_write=True)
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            else:
                conn.execute(text("SELECT 1"))  # begins the IMMEDIATE transaction
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._unavailable(), self._reads() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._unavailable(), self._writes() as session, session.begin():
            yield session

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A database that is down or locked past the busy timeout is a transient StorageError
        (workers retry it); integrity and programming errors stay what they are."""
        try:
            yield
        except OperationalError as exc:
            raise StorageError(f"catalog {self!r} unavailable: {exc.orig}") from exc

    def _insert(self, model: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(
            model.__table__
        )

    # -- videos ----------------------------------------------------------------------------------
    def add_video(
        self, video_id: str, *, blob_key: str, filename: str = "", state: str = "pending"
    ) -> tuple[VideoRow, bool]:
        """Add a video once; adding it again returns the existing row and ``created=False``."""
        if not _VIDEO_ID.match(video_id):
            raise ValueError(f"bad video id {video_id!r}")
        _check_state(state, VIDEO_STATES)
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
            return _row(VideoRow, s.get_one(Videos, video_id)), created

    def get_video(self, video_id: str) -> VideoRow:
        with self._read() as s:
            obj = s.get(Videos, video_id)
            if obj is None:
                raise NotFound(f"no video {video_id!r}")
            return _row(VideoRow, obj)

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
            _check_state(state, VIDEO_STATES)
            q = q.where(Videos.state == state)
        q = q.where(*_date_filters(since, until))
        q = q.order_by(Videos.created_at.desc(), Videos.id).limit(limit).offset(offset)
        with self._read() as s:
            return [_row(VideoRow, v) for v in s.scalars(q)]

    def set_video_info(self, video_id: str, info: VideoInfo) -> None:
        values = dict(
            duration=info.duration,
            width=info.width,
            height=info.height,
            fps=info.fps,
            info=dataclasses.asdict(info),
        )
        self._update_video(video_id, values)

    def set_video_warning(self, video_id: str, warning: str) -> None:
        """Record what of a damaged video was lost (``info["warning"]``; read by the surfaces)."""
        with self._write() as s:
            video = s.get(Videos, video_id)
            if video is None:
                raise NotFound(f"no video {video_id!r}")
            video.info = {**(video.info or {}), "warning": warning}
            video.updated_at = utcnow()

    def set_video_state(self, video_id: str, state: str, *, error: str | None = None) -> None:
        _check_state(state, VIDEO_STATES)
        if state == "ready":
            raise ValueError("use mark_ready(), which checks that every result is written")
        self._update_video(video_id, dict(state=state, error=error))

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

    # -- clips, captions, embeddings -------------------------------------------------------------
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
            return [_row(ClipRow, c) for c in s.scalars(q)]

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
            return [_row(CaptionRow, c) for c in s.scalars(q)]

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
            return [_row(EmbeddingRow, e) for e in s.scalars(q.order_by(Embeddings.clip_id))]

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
            return _blob_keys(s, video_id)

    # -- jobs ------------------------------------------------------------------------------------
    def create_job(
        self, video_id: str, *, idempotency_key: str | None = None, stage: str = ""
    ) -> tuple[JobRow, bool]:
        """A new queued job; for an idempotency key already used, that job and ``created=False``."""
        job_id = str(uuid.uuid4())
        now = utcnow()
        row = dict(
            id=job_id,
            video_id=video_id,
            state="queued",
            stage=stage,
            progress=0.0,
            attempts=0,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        with self._write() as s:
            if s.get(Videos, video_id) is None:
                raise NotFound(f"no video {video_id!r}")
            stmt = self._insert(Jobs).values(row)
            stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
            created = s.execute(stmt.returning(Jobs.id)).first() is not None
            if created:
                return _row(JobRow, s.get_one(Jobs, job_id)), True
            existing = s.scalars(select(Jobs).where(Jobs.idempotency_key == idempotency_key)).one()
            return _row(JobRow, existing), False

    def get_job(self, job_id: str) -> JobRow:
        with self._read() as s:
            obj = s.get(Jobs, job_id)
            if obj is None:
                raise NotFound(f"no job {job_id!r}")
            return _row(JobRow, obj)

    def find_job(self, idempotency_key: str) -> JobRow | None:
        with self._read() as s:
            obj = s.scalars(select(Jobs).where(Jobs.idempotency_key == idempotency_key)).first()
            return None if obj is None else _row(JobRow, obj)

    _UNSET: Any = object()

    def update_job(
        self,
        job_id: str,
        *,
        state: str | None = None,
        stage: str | None = None,
        progress: float | None = None,
        error: str | None = _UNSET,
        add_attempt: bool = False,
        notes: str | None = _UNSET,
    ) -> JobRow:
        """Change what is given; ``add_attempt`` counts one more run of the job; ``notes``: what
        the job could not do (e.g. ``no captioner configured``)."""
        values: dict[str, Any] = {"updated_at": utcnow()}
        if state is not None:
            _check_state(state, JOB_STATES)
            values["state"] = state
        if stage is not None:
            values["stage"] = stage
        if progress is not None:
            if not 0.0 <= progress <= 1.0:
                raise ValueError(f"progress must be within 0..1, got {progress}")
            values["progress"] = progress
        if error is not self._UNSET:
            values["error"] = error
        if notes is not self._UNSET:
            values["notes"] = notes
        if add_attempt:
            values["attempts"] = Jobs.attempts + 1
        with self._write() as s:
            if s.execute(update(Jobs).where(Jobs.id == job_id).values(**values)).rowcount == 0:
                raise NotFound(f"no job {job_id!r}")
            return _row(JobRow, s.get_one(Jobs, job_id, populate_existing=True))

    def list_jobs(
        self,
        *,
        state: str | None = None,
        video_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRow]:
        """Newest first."""
        q = select(Jobs)
        if state is not None:
            _check_state(state, JOB_STATES)
            q = q.where(Jobs.state == state)
        if video_id is not None:
            q = q.where(Jobs.video_id == video_id)
        q = q.order_by(Jobs.created_at.desc(), Jobs.id).limit(limit).offset(offset)
        with self._read() as s:
            return [_row(JobRow, j) for j in s.scalars(q)]

    def job_counts(self) -> dict[str, int]:
        """Jobs per state, every state present (for metrics)."""
        with self._read() as s:
            counts = dict(s.execute(select(Jobs.state, func.count()).group_by(Jobs.state)).all())
        return {st: int(counts.get(st, 0)) for st in JOB_STATES}

    # -- job lifecycle: heartbeats, the reaper's claims, the outbox ------------------------------
    def touch_job(self, job_id: str) -> bool:
        """A running step's heartbeat: its job's ``updated_at`` is now (False once it ended)."""
        with self._write() as s:
            stmt = update(Jobs).where(Jobs.id == job_id, Jobs.state == "running")
            return s.execute(stmt.values(updated_at=utcnow())).rowcount > 0

    def stale_jobs(self, state: str, before: datetime, *, limit: int = 100) -> list[JobRow]:
        """Jobs in ``state`` not updated since ``before`` (oldest first): the reaper's work."""
        _check_state(state, JOB_STATES)
        q = (select(Jobs).where(Jobs.state == state, Jobs.updated_at < _utc(before))
             .order_by(Jobs.updated_at).limit(limit))
        with self._read() as s:
            return [_row(JobRow, j) for j in s.scalars(q)]

    def unsent_jobs(self, before: datetime, *, limit: int = 100) -> list[JobRow]:
        """Queued jobs whose message never reached the broker, untouched since ``before``."""
        q = (select(Jobs).where(Jobs.state == "queued", Jobs.sent_at.is_(None),
                                Jobs.updated_at < _utc(before))
             .order_by(Jobs.created_at).limit(limit))
        with self._read() as s:
            return [_row(JobRow, j) for j in s.scalars(q)]

    def claim_job(self, job: JobRow, **values: Any) -> JobRow | None:
        """Change ``job`` only if nobody changed it since it was read (its state and
        ``updated_at`` are still those of ``job``); None when another process got there first.
        Values: ``state``, ``stage``, ``error``, ``sent_at`` (None marks it unsent) and
        ``add_attempt``."""
        changes: dict[str, Any] = {"updated_at": utcnow()}
        if values.pop("add_attempt", False):
            changes["attempts"] = Jobs.attempts + 1
        if "state" in values:
            _check_state(values["state"], JOB_STATES)
        changes.update(values)
        with self._write() as s:
            stmt = update(Jobs).where(
                Jobs.id == job.id, Jobs.state == job.state, Jobs.updated_at == job.updated_at
            ).values(**changes)
            if s.execute(stmt).rowcount == 0:
                return None
            return _row(JobRow, s.get_one(Jobs, job.id, populate_existing=True))

    def mark_sent(self, job_id: str, sent: bool = True) -> None:
        """Record that the job's message reached the broker (or, ``sent=False``, that it must be
        sent again); ``updated_at`` is left alone."""
        with self._write() as s:
            stmt = update(Jobs).where(Jobs.id == job_id)
            s.execute(stmt.values(sent_at=utcnow() if sent else None,
                                  updated_at=Jobs.updated_at))

    def is_sent(self, job_id: str) -> bool:
        with self._read() as s:
            return s.scalar(select(Jobs.sent_at).where(Jobs.id == job_id)) is not None

    def video_counts(self) -> dict[str, int]:
        with self._read() as s:
            counts = dict(
                s.execute(select(Videos.state, func.count()).group_by(Videos.state)).all()
            )
        return {st: int(counts.get(st, 0)) for st in VIDEO_STATES}

    # -- what search reads -----------------------------------------------------------------------
    def resolve_index_ids(
        self,
        index_ids: Sequence[str],
        *,
        model: str | None = None,
        video_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, str]:
        """Index id -> clip id, for searchable (ready) videos passing the filters only."""
        out: dict[str, str] = {}
        with self._read() as s:
            for chunk in _chunks(list(index_ids)):
                q = (
                    select(Embeddings.index_id, Embeddings.clip_id)
                    .join(Clips, Clips.id == Embeddings.clip_id)
                    .join(Videos, Videos.id == Clips.video_id)
                    .where(Embeddings.index_id.in_(chunk), *_visible(video_id, since, until))
                )
                if model is not None:
                    q = q.where(Embeddings.model == model)
                out.update(dict(s.execute(q).tuples().all()))
        return out

    def clip_details(
        self, clip_ids: Sequence[str], *, caption_model: str | None = None
    ) -> dict[str, ClipDetail]:
        """Clips of searchable videos with their caption: ``caption_model``'s, else the best."""
        out: dict[str, ClipDetail] = {}
        with self._read() as s:
            for chunk in _chunks(list(clip_ids)):
                q = (
                    select(Clips, Videos.filename, Videos.created_at)
                    .join(Videos, Videos.id == Clips.video_id)
                    .where(Clips.id.in_(chunk), Videos.state == "ready")
                )
                clips = s.execute(q).all()
                caps: dict[str, Captions] = {}
                cq = select(Captions).where(Captions.clip_id.in_(chunk))
                for c in s.scalars(cq.order_by(Captions.score.desc(), Captions.model)):
                    preferred = caption_model is not None and c.model == caption_model
                    if c.clip_id not in caps or preferred:
                        caps[c.clip_id] = c
                for clip, filename, created_at in clips:
                    cap = caps.get(clip.id)
                    out[clip.id] = ClipDetail(
                        clip_id=clip.id,
                        video_id=clip.video_id,
                        index=clip.index,
                        start=clip.start,
                        end=clip.end,
                        thumbnail_key=clip.thumbnail_key,
                        caption=cap.text if cap else "",
                        caption_model=cap.model if cap else None,
                        filename=filename,
                        created_at=created_at,
                    )
        return out

    def text_search(
        self,
        query: str,
        *,
        limit: int,
        caption_model: str | None = None,
        video_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[str, float]]:
        """Clips whose captions match the query's words, best first, as (clip id, score).

        SQLite ranks with FTS5's BM25; PostgreSQL with ``ts_rank_cd`` over its GIN index. Any word
        may match (OR): the ranking, not the match, decides.
        """
        words = _WORD.findall(query.lower())
        if not words:
            return []
        if self.dialect == "postgresql":
            tsquery = func.to_tsquery(literal_column("'english'"), " | ".join(words))
            tsvector = func.to_tsvector(literal_column("'english'"), Captions.text)
            score = func.max(func.ts_rank_cd(tsvector, tsquery))
            match = tsvector.op("@@")(tsquery)
            q = select(Captions.clip_id, score.label("score")).where(match)
        else:
            fts = (
                text(
                    "SELECT rowid AS id, bm25(captions_fts) AS rank FROM captions_fts "
                    "WHERE captions_fts MATCH :q"
                )
                .bindparams(q=" OR ".join(f'"{w}"' for w in words))
                .columns(id=Integer, rank=Float)
                .cte("fts")
                .prefix_with("MATERIALIZED")  # bm25() only works where FTS5 runs the match
            )
            score = func.max(-fts.c.rank)  # bm25() is smaller for better matches
            q = select(Captions.clip_id, score.label("score")).join(fts, fts.c.id == Captions.id)
        q = q.join(Clips, Clips.id == Captions.clip_id).join(Videos, Videos.id == Clips.video_id)
        q = q.where(*_visible(video_id, since, until))
        if caption_model is not None:
            q = q.where(Captions.model == caption_model)
        q = q.group_by(Captions.clip_id).order_by(score.desc(), Captions.clip_id).limit(limit)
        with self._read() as s:
            return [(cid, float(sc)) for cid, sc in s.execute(q).tuples()]

    # -- deletion --------------------------------------------------------------------------------
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
            keys = _blob_keys(s, video_id)
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


def _check_state(state: str, allowed: tuple[str, ...]) -> None:
    if state not in allowed:
        raise ValueError(f"state {state!r} is not one of {', '.join(allowed)}")


def _date_filters(since: datetime | None, until: datetime | None) -> list[Any]:
    filters = []
    if (since := _utc(since)) is not None:
        filters.append(Videos.created_at >= since)
    if (until := _utc(until)) is not None:
        filters.append(Videos.created_at < until)
    return filters


def _visible(video_id: str | None, since: datetime | None, until: datetime | None) -> list[Any]:
    """Search sees ready videos only, narrowed by the filters given."""
    filters = [Videos.state == "ready", *_date_filters(since, until)]
    if video_id is not None:
        filters.append(Videos.id == video_id)
    return filters


def _blob_keys(s: Session, video_id: str) -> set[str]:
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


def _shared_blob_keys(s: Session, video_id: str, keys: set[str]) -> set[str]:
    """Those of ``keys`` that some other video refers to too (the same thumbnail, say)."""
    shared: set[str] = set()
    for chunk in _chunks(sorted(keys)):
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
