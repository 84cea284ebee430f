"""The embedded worker: with no broker configured, ``vmm serve`` runs jobs itself, one at a time, in
a background thread, so one command serves a working system. With a broker, jobs go to Celery
workers and this is not started.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """A FIFO of job ids drained by one daemon thread calling ``run(job_id)``."""

    def __init__(self, run: Callable[[str], object]) -> None:
        self._run = run
        self._jobs: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.busy = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="vmm-embedded-worker", daemon=True
            )
            self._thread.start()

    def submit(self, job_id: str) -> None:
        self._jobs.put(job_id)

    def pending(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return self._jobs.qsize()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running job, drop the waiting ones (they stay ``queued`` in the catalog and
        are picked up again at the next start), and end the thread."""
        if self._thread is None:
            return
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self._jobs.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while (job_id := self._jobs.get()) is not None:
            self.busy = True
            try:
                self._run(job_id)
            except Exception:  # the job's failure is in the catalog; keep serving the next one
                log.exception("embedded worker: job %s raised", job_id)
            finally:
                self.busy = False
