"""Send a job to where it runs: workers when asked (or when a broker is configured), else this
process.

The steps and their queues are :data:`video_mm.pipeline.runner.STEPS`; workers of each queue
scale on their own. Only the first step is sent here: each step hands the job to the next one, in
the same task when its worker also consumes the next step's queue, else as a message on that
queue. Sending is the workers' business: the installed ``workers`` package offers its sender
through the ``video_mm.senders`` entry point, so the library never imports a surface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from video_mm.errors import ConfigError, NotFound
from video_mm.settings import Settings

if TYPE_CHECKING:
    from video_mm.pipeline.runner import Step

log = logging.getLogger(__name__)
SENDERS = "video_mm.senders"  # entry point group: send(settings, step, job_id, *handed)


class Sender(Protocol):
    def __call__(self, settings: Settings, step: Step, job_id: str, *handed: Any) -> None: ...


def sender() -> Sender:
    """The installed way to put a step on its queue (the ``workers`` package's Celery sender)."""
    found = sorted(entry_points(group=SENDERS), key=lambda ep: ep.name)
    if not found:
        raise ConfigError(
            f"no job sender installed (entry point group {SENDERS!r}, offered by the workers "
            "package): install video-mm, or run jobs in this process"
        )
    return found[0].load()


def queue_name(settings: Settings, queue: str) -> str:
    """The broker-side name of a queue: ``broker.queue_prefix`` keeps systems sharing a broker
    apart."""
    return f"{settings.broker.queue_prefix}{queue}"


def uses_workers(settings: Settings) -> bool:
    """True when a broker is configured: jobs then go to workers unless told otherwise."""
    return bool(settings.broker.url)


def check_broker_settings(settings: Settings) -> None:
    """Refuse time limits that defeat each other, with the reason (``vmm worker`` and ``vmm
    serve`` call this at start): the soft limit must come before the hard one (the job fails with a
    reason before its process is killed), and the broker must not hand a running task to another
    worker (Redis ``visibility_timeout``) or close its channel (RabbitMQ ``consumer_timeout``)
    before the hard limit."""
    b, r = settings.broker, settings.reaper
    problems = []
    if not b.task_soft_time_limit_s < b.task_time_limit_s:
        problems.append(f"broker.task_soft_time_limit_s ({b.task_soft_time_limit_s}) must be "
                        f"below broker.task_time_limit_s ({b.task_time_limit_s})")
    url = settings.broker_url
    if url.startswith(("redis", "rediss", "sentinel")) and not (
        b.visibility_timeout_s > b.task_time_limit_s
    ):
        problems.append(f"broker.visibility_timeout_s ({b.visibility_timeout_s}) must exceed "
                        f"broker.task_time_limit_s ({b.task_time_limit_s}): Redis would hand a "
                        "running task to a second worker")
    if url.startswith(("amqp", "pyamqp")) and not b.consumer_timeout_s > b.task_time_limit_s:
        problems.append(f"broker.consumer_timeout_s ({b.consumer_timeout_s}) must exceed "
                        f"broker.task_time_limit_s ({b.task_time_limit_s}): RabbitMQ would close "
                        "the channel of a running task")
    if not r.heartbeat_s * 2 <= r.stale_after_s:
        problems.append(f"reaper.stale_after_s ({r.stale_after_s:g}) must be at least twice "
                        f"reaper.heartbeat_s ({r.heartbeat_s:g}): live jobs would be reaped")
    if problems:
        raise ConfigError("; ".join(problems))


def send_step(job_id: str, settings: Settings, step: str = "vmm.prepare") -> None:
    """Put step ``step`` (a task name, not publish: it needs what analyse hands on) of job
    ``job_id`` on its queue; raises when the broker is away."""
    from video_mm.pipeline.runner import step as find_step

    sender()(settings, find_step(step), job_id)


def enqueue(job_id: str, settings: Settings, *, queue: bool | None = None) -> str:
    """Run the job in-process (returns its final state) or send it to the workers (returns
    ``"queued"``). ``queue=None`` decides by :func:`uses_workers`; ``queue=True`` with no broker
    configured uses the embedded SQLite broker, which ``vmm worker`` also reads.

    A message the broker did not take is not an error for the caller: the job stays ``queued``
    and unsent in the catalog (its own outbox entry), and the reaper of any worker or server sends
    it once the broker is back (or a new upload of the same video does)."""
    if queue is None:
        queue = uses_workers(settings)
    if not queue:
        from video_mm.pipeline.runner import run_job

        return run_job(job_id, settings)
    from video_mm.pipeline.runner import context

    catalog = context(settings).catalog
    try:
        send_step(job_id, settings)
    except ConfigError:
        raise  # no sender installed: nothing will ever send it
    except Exception as exc:  # kombu's OperationalError, a refused connection, a timeout
        log.warning("job %s: the broker did not take it (%s); it stays queued and is sent "
                    "again when the broker is back", job_id, exc)
        return "queued"
    catalog.mark_sent(job_id)
    return "queued"


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders give their files (sorted, hidden ones skipped), recursively."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.exists():
            files.append(p)
        else:
            raise NotFound(f"no such file or folder: {p}")
    return files


def index_paths(
    paths: list[Path], settings: Settings, *, queue: bool | None = None, progress: bool = True
) -> list[dict]:
    """Submit every video and run its job here or send it to workers; one summary per file
    (``path``, ``video_id``, ``job_id``, ``state``, ``error``, ``notes``: what the job could not
    do for lack of a model; ``warning``: what of a damaged file was lost), with a progress bar."""
    from tqdm.auto import tqdm

    from video_mm.pipeline.runner import context, run_jobs
    from video_mm.pipeline.submit import submit_video

    files = expand_paths(paths)
    queue = uses_workers(settings) if queue is None else queue
    catalog = context(settings).catalog
    bar = tqdm(total=len(files), desc="queue" if queue else "index", unit="video",
               disable=not progress)
    submitted: list[tuple[Path, Any, str]] = []  # file, submission, state when queued

    def to_run() -> Iterator[str]:
        """Submit each file; the jobs to run in this process (the rest are queued here)."""
        for f in files:
            bar.set_postfix_str(f.name[-40:])
            sub = submit_video(f, settings=settings)
            state = catalog.get_job(sub.job_id).state
            # A new job runs; an old one only if it never finished here, or if its message never
            # reached the broker (queued jobs already sent to workers are theirs). Done and
            # failed jobs are results: submitting again changes nothing.
            unsent = queue and state == "queued" and not catalog.is_sent(sub.job_id)
            runs = sub.created or unsent or (not queue and state in ("queued", "running"))
            submitted.append((f, sub, state))
            if runs and queue:
                submitted[-1] = (f, sub, enqueue(sub.job_id, settings, queue=True))
            elif runs:
                yield sub.job_id
                continue
            bar.update()

    if queue:
        for _ in to_run():
            pass
    else:  # in order, the next video prepared and decoding while one is analysed
        for _ in run_jobs(to_run(), settings):
            bar.update()
    bar.close()
    rows = []
    for f, sub, state in submitted:
        job = catalog.get_job(sub.job_id)
        warning = (catalog.get_video(sub.video_id).info or {}).get("warning", "")
        rows.append(dict(path=str(f), video_id=sub.video_id, job_id=sub.job_id,
                         state=state if queue else job.state, error=job.error, warning=warning,
                         notes=job.notes.split("; ") if job.notes else []))
    return rows
