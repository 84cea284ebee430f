"""Every job ends: heartbeats from running steps, and the reaper that reconciles the rest.

Celery tells a worker about the failures it sees (a hard time limit, an exception), and the worker
fails the job then. What nobody sees is a process that dies outright (kill -9, the OOM killer, an
evicted pod, a machine gone) and a message that never reached the broker. So:

- a running step touches its job every ``reaper.heartbeat_s`` (:func:`heartbeat`);
- the :class:`Reaper` (in every worker and in ``vmm serve``) finds ``running`` jobs silent for
  longer than ``reaper.stale_after_s`` and sends their step again while the retry budget
  (``broker.max_retries``) lasts, else fails them with the reason; and it sends again the
  ``queued`` jobs whose message never reached the broker (the job row is its own outbox entry).

Several reapers may look at once: each change is a compare-and-set on the job's state and
``updated_at`` (:meth:`Catalog.claim_job`), so one of them acts and the others see it done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from video_mm.errors import VideoMMError
from video_mm.settings import Settings

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]  # (job id, step name): put the step's message on its queue


class WorkerLost(VideoMMError):
    """The process running the job's step died (or stopped reporting) more often than retries
    allow."""

    code = "worker_lost"


def step_for(stage: str) -> str:
    """The step (task name) that runs a job again from ``stage``: its own step, except that a step
    needing what the one before handed on (publish: analyse's vectors) goes back to that one; no
    stage yet: the first step."""
    from video_mm.pipeline.runner import STEPS

    for i, s in enumerate(STEPS):
        if stage in s.stages:
            return STEPS[i - 1].name if i and STEPS[i - 1].hands_on else s.name
    return STEPS[0].name


def now() -> datetime:
    return datetime.now(UTC)


def age_s(updated_at: datetime) -> float:
    """Seconds since ``updated_at`` (a job's last write or heartbeat)."""
    return (now() - updated_at).total_seconds()


@contextmanager
def heartbeat(catalog: Any, job_id: str, every_s: float) -> Iterator[None]:
    """Touch the running job every ``every_s`` seconds while the block runs, from a thread (a step
    stuck in native code that releases the GIL keeps beating; the hard time limit ends that one).
    A catalog that is briefly away costs a beat, not the step."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if not catalog.touch_job(job_id):
                    return  # the job ended (or was taken over): nothing to keep alive
            except Exception as exc:
                log.warning("job %s: heartbeat failed: %s", job_id, exc)

    thread = threading.Thread(target=beat, name=f"vmm-heartbeat-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class Reaped:
    """What one pass of the reaper did."""

    resent: int = 0  # stale running jobs sent again (within the retry budget)
    failed: int = 0  # stale running jobs out of retries, failed with the reason
    relayed: int = 0  # queued jobs whose message had not reached the broker, sent now


class Reaper:
    """Reconciles the jobs of one catalog; :meth:`start` runs :meth:`reap` every
    ``reaper.interval_s`` in a daemon thread (the first pass after one interval, so a worker
    that just started gets the redelivered messages first)."""

    def __init__(self, settings: Settings, catalog: Any, send: Send | None) -> None:
        self.settings, self.catalog, self.send = settings, catalog, send
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reap(self) -> Reaped:
        r, out = self.settings.reaper, Reaped()
        budget = self.settings.broker.max_retries + 1  # runs a job may take
        for job in self.catalog.stale_jobs("running", now() - timedelta(seconds=r.stale_after_s)):
            silent = age_s(job.updated_at)
            if job.attempts >= budget or self.send is None:
                why = WorkerLost(
                    f"the {job.stage or 'first'} stage stopped reporting ({silent:.0f} s without "
                    f"a heartbeat; reaper.stale_after_s={r.stale_after_s:g}): its worker died "
                    f"or was killed, {job.attempts} run(s) of {budget} allowed"
                )
                if self._fail(job, why):
                    out.failed += 1
                continue
            step = step_for(job.stage)
            if self.catalog.claim_job(job, state="queued", sent_at=None) is None:
                continue  # another reaper or a redelivered task took it
            log.warning("job %s: %s stage silent for %.0f s, sending %s again",
                        job.id, job.stage, silent, step)
            if self._send(job.id, step):
                out.resent += 1
        if self.send is not None:
            for job in self.catalog.unsent_jobs(now() - timedelta(seconds=r.unsent_after_s)):
                claimed = self.catalog.claim_job(job)  # touch: one reaper sends it
                if claimed is not None and self._send(job.id, step_for(job.stage)):
                    out.relayed += 1
        return out

    def _send(self, job_id: str, step: str) -> bool:
        assert self.send is not None
        try:
            self.send(job_id, step)
        except Exception as exc:  # the broker is still away: the next pass tries again
            log.warning("job %s: could not send %s: %s", job_id, step, exc)
            return False
        self.catalog.mark_sent(job_id)
        return True

    def _fail(self, job: Any, why: VideoMMError) -> bool:
        reason = f"{why.code}: {why}"
        if self.catalog.claim_job(job, state="failed", error=reason) is None:
            return False
        log.error("job %s failed: %s", job.id, reason)
        video = self.catalog.get_video(job.video_id)
        if video.state != "ready":
            self.catalog.set_video_state(job.video_id, "failed", error=reason)
        return True

    def start(self) -> Reaper:
        if self._thread is None and self.settings.reaper.enabled:
            self._thread = threading.Thread(target=self._loop, name="vmm-reaper", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reaper.interval_s):
            try:
                done = self.reap()
                if done.resent or done.failed or done.relayed:
                    log.info("reaper: %s", done)
            except Exception as exc:  # the catalog may be away; the next pass tries again
                log.warning("reaper pass failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
