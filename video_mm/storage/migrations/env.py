"""Alembic environment for the catalog.

The catalog runs these migrations itself when it opens (``Catalog(url)``), passing its connection
in ``config.attributes["connection"]``. To write a new revision after changing
``video_mm/storage/models.py``::

    .venv/bin/python -c "from video_mm.storage.catalog import alembic_config; \
from alembic import command; \
command.revision(alembic_config('sqlite:///rev.db'), autogenerate=True, message='what changed')"

(run ``command.upgrade(alembic_config('sqlite:///rev.db'), 'head')`` first so autogenerate diffs
against the current schema), then review the file it writes under ``versions/``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from video_mm.storage.models import Base, UTCDateTime, include_object


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        include_object=include_object,
        render_item=render_item,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        **kwargs,
    )


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    if context.is_offline_mode():
        _configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
