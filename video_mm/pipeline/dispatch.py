"""Send a job to where it runs: workers when asked (or when a broker is configured), else this
process.

The steps and their queues are :data:`video_mm.pipeline.runner.STEPS`; workers of each queue
scale on their own. Only the first step is sent here: each step hands the job to the next one, in
the same task when its worker also consumes the next step's queue, else as a message on that
queue. Sending is the workers' business: the installed ``workers`` package offers its sender
through the ``video_mm.senders`` entry point, so the library never imports a surface.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from video_mm.errors import ConfigError, NotFound
from video_mm.settings import Settings

if TYPE_CHECKING:
    from video_mm.pipeline.runner import Step

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


def enqueue(job_id: str, settings: Settings, *, queue: bool | None = None) -> str:
    """Run the job in-process (returns its final state) or send it to the workers (returns
    ``"queued"``). ``queue=None`` decides by :func:`uses_workers`; ``queue=True`` with no broker
    configured uses the embedded SQLite broker, which ``vmm worker`` also reads."""
    if queue is None:
        queue = uses_workers(settings)
    if not queue:
        from video_mm.pipeline.runner import run_job

        return run_job(job_id, settings)
    from video_mm.pipeline.runner import STEPS

    sender()(settings, STEPS[0], job_id)
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
    (``path``, ``video_id``, ``job_id``, ``state``, ``error``, ``warning``: what of a damaged
    file was lost), with a progress bar."""
    from tqdm.auto import tqdm

    from video_mm.pipeline.runner import context
    from video_mm.pipeline.submit import submit_video

    files = expand_paths(paths)
    queue = uses_workers(settings) if queue is None else queue
    catalog = context(settings).catalog
    rows = []
    bar = tqdm(files, desc="queue" if queue else "index", unit="video", disable=not progress)
    for f in bar:
        bar.set_postfix_str(f.name[-40:])
        sub = submit_video(f, settings=settings)
        state = catalog.get_job(sub.job_id).state
        # A new job runs; an old one only if it never finished here (queued jobs already sent to
        # workers are theirs). Done and failed jobs are results: submitting again changes nothing.
        if sub.created or (not queue and state in ("queued", "running")):
            state = enqueue(sub.job_id, settings, queue=queue)
        job = catalog.get_job(sub.job_id)
        warning = (catalog.get_video(sub.video_id).info or {}).get("warning", "")
        rows.append(dict(path=str(f), video_id=sub.video_id, job_id=sub.job_id,
                         state=state if queue else job.state, error=job.error, warning=warning))
    return rows
