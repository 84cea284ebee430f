"""The catalog's database: the engine (SQLite: WAL, foreign keys, writers ``BEGIN IMMEDIATE``;
PostgreSQL via psycopg 3), the Alembic migrations run when it opens, and read and write sessions
that turn an unreachable database into a transient ``StorageError``. Every part of the catalog
builds on :class:`Database`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from video_mm.errors import ConfigError, StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x766D6D  # advisory lock id: one process migrates at a time


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


class Database:
    """One SQL database with the catalog's schema: connections, migrations, sessions."""

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

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
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
