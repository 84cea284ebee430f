"""Job state: one row per run of the pipeline over a video (queued, running, done, failed), with
its stage, progress, attempts and error; idempotency keys make a resubmission find its job.
The lifecycle rides on it: running steps touch their job (heartbeat), the reaper claims stale
jobs only if nobody changed them since it looked, and ``sent_at`` is the outbox mark.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from video_mm.errors import NotFound
from video_mm.storage.database import Database
from video_mm.storage.models import JOB_STATES, Jobs, Videos, utcnow
from video_mm.storage.rows import JobRow, aware, check_state, to_row


class JobStore(Database):
    """The jobs table, and the job lifecycle: heartbeats, the reaper's claims, the outbox."""

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
                return to_row(JobRow, s.get_one(Jobs, job_id)), True
            existing = s.scalars(select(Jobs).where(Jobs.idempotency_key == idempotency_key)).one()
            return to_row(JobRow, existing), False

    def get_job(self, job_id: str) -> JobRow:
        with self._read() as s:
            obj = s.get(Jobs, job_id)
            if obj is None:
                raise NotFound(f"no job {job_id!r}")
            return to_row(JobRow, obj)

    def find_job(self, idempotency_key: str) -> JobRow | None:
        with self._read() as s:
            obj = s.scalars(select(Jobs).where(Jobs.idempotency_key == idempotency_key)).first()
            return None if obj is None else to_row(JobRow, obj)

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
            check_state(state, JOB_STATES)
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
            row = _updated(s, Jobs.id == job_id, values)
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return row

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
            check_state(state, JOB_STATES)
            q = q.where(Jobs.state == state)
        if video_id is not None:
            q = q.where(Jobs.video_id == video_id)
        q = q.order_by(Jobs.created_at.desc(), Jobs.id).limit(limit).offset(offset)
        with self._read() as s:
            return [to_row(JobRow, j) for j in s.scalars(q)]

    def job_counts(self) -> dict[str, int]:
        """Jobs per state, every state present (for metrics)."""
        with self._read() as s:
            counts = dict(s.execute(select(Jobs.state, func.count()).group_by(Jobs.state)).all())
        return {st: int(counts.get(st, 0)) for st in JOB_STATES}

    def touch_job(self, job_id: str) -> bool:
        """A running step's heartbeat: its job's ``updated_at`` is now (False once it ended)."""
        with self._write() as s:
            stmt = update(Jobs).where(Jobs.id == job_id, Jobs.state == "running")
            return s.execute(stmt.values(updated_at=utcnow())).rowcount > 0

    def stale_jobs(self, state: str, before: datetime, *, limit: int = 100) -> list[JobRow]:
        """Jobs in ``state`` not updated since ``before`` (oldest first): the reaper's work."""
        check_state(state, JOB_STATES)
        q = (select(Jobs).where(Jobs.state == state, Jobs.updated_at < aware(before))
             .order_by(Jobs.updated_at).limit(limit))
        with self._read() as s:
            return [to_row(JobRow, j) for j in s.scalars(q)]

    def unsent_jobs(self, before: datetime, *, limit: int = 100) -> list[JobRow]:
        """Queued jobs whose message never reached the broker, untouched since ``before``."""
        q = (select(Jobs).where(Jobs.state == "queued", Jobs.sent_at.is_(None),
                                Jobs.updated_at < aware(before))
             .order_by(Jobs.created_at).limit(limit))
        with self._read() as s:
            return [to_row(JobRow, j) for j in s.scalars(q)]

    def claim_job(self, job: JobRow, **values: Any) -> JobRow | None:
        """Change ``job`` only if nobody changed it since it was read (its state and
        ``updated_at`` are still those of ``job``); None when another process got there first.
        Values: ``state``, ``stage``, ``error``, ``sent_at`` (None marks it unsent) and
        ``add_attempt``."""
        changes: dict[str, Any] = {"updated_at": utcnow()}
        if values.pop("add_attempt", False):
            changes["attempts"] = Jobs.attempts + 1
        if "state" in values:
            check_state(values["state"], JOB_STATES)
        changes.update(values)
        with self._write() as s:
            return _updated(
                s,
                (Jobs.id == job.id) & (Jobs.state == job.state)
                & (Jobs.updated_at == job.updated_at),
                changes,
            )

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


def _updated(session: Session, where: Any, values: dict[str, Any]) -> JobRow | None:
    """Update the job rows matching ``where`` and read the row back in the same statement
    (``UPDATE ... RETURNING``: a progress write is one statement, not an update and a select);
    None when no row matched."""
    table = Jobs.__table__
    stmt = update(table).where(where).values(**values).returning(*table.c)
    found = session.execute(stmt).first()
    return None if found is None else to_row(JobRow, found)
