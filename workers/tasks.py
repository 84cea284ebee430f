"""The Celery tasks: one per step of the pipeline's table (``runner.STEPS``), handed on from step
to step.

What a worker adds to the in-process runner is the error policy in Celery's terms: bad input fails
the job and stops it (never retried); transient errors retry with exponential backoff and jitter;
running out of retries or time fails the job with the reason. And the hand-on: a worker that
consumes the next step's queue runs that step in the same task, so a worker of every queue runs a
video in one task (one message, one ack) while split workers (``-Q cpu`` / ``gpu`` / ``index``)
pass each step through its queue. Models load once per worker process (at process start for GPU
workers, else on first use) and stay loaded.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_process_init

from video_mm.errors import VideoMMError
from video_mm.pipeline import runner, stages
from video_mm.pipeline.dispatch import queue_name
from video_mm.settings import Settings

log = logging.getLogger(__name__)


class WorkerLost(VideoMMError):
    """The worker process died mid-task more often than retries allow."""

    code = "worker_lost"


class TimeLimit(VideoMMError):
    """A task ran past ``broker.task_soft_time_limit_s``: the video is too long for the limit."""

    code = "time_limit"


def _settings(task: Task) -> Settings:
    return _parse_settings(task.app.conf.vmm_settings)


@lru_cache(maxsize=4)
def _parse_settings(settings_json: str) -> Settings:
    """Parsed once per process: validating ``Settings`` reads the environment and the TOML file
    again (about 10 ms, most of a task's overhead when parsed per task)."""
    return Settings.model_validate_json(settings_json)


def _consumed_here(task: Task, queue: str) -> bool:
    """Whether this worker consumes ``queue`` (``-Q``; every queue when none was selected)."""
    return queue in task.app.amqp.queues.consume_from


def _run(task: Task, job_id: str, *args: Any) -> None:
    """Run the task's step for a job under the worker error policy, then hand the job on: the next
    step runs in this task while this worker consumes its queue (a queue hop costs a broker round
    trip, a pool dispatch and an ack, a few ms each on a busy machine), else it is sent there.

    The message is acknowledged only when the task returns (late ack), so a worker that dies in
    any step of the task has the whole task redelivered; every step is idempotent."""
    settings = _settings(task)
    ctx = runner.context(settings)
    job = ctx.catalog.get_job(job_id)
    if job.state in ("done", "failed"):
        # A redelivered or duplicate message for a finished job: nothing to do.
        log.info("job %s is already %s; %s skipped", job_id, job.state, task.name)
        raise Ignore()
    req = task.request
    current = runner.step(task.name)
    # This step (or a later one it ran in the same task) ran before for this job without
    # finishing: its worker died (kill -9, OOM, the hard time limit) and the broker redelivered it.
    interrupted = (
        not req.retries and job.state == "running" and job.stage in runner.stages_from(current)
    )
    if current is runner.STEPS[0] or req.retries or interrupted:
        job = ctx.catalog.update_job(job_id, add_attempt=True)
    if interrupted and job.attempts > settings.broker.max_retries + 1:
        # A video that kills its worker every time must not loop forever (reject_on_worker_lost
        # would requeue it again and again): give up with the reason.
        runner.fail(ctx, job_id, WorkerLost(
            f"{task.name}: the worker died {job.attempts - 1} times running this job"))
        raise Ignore()
    name = task.name
    try:
        while True:
            out = current.run(ctx, job_id, *args)
            following = runner.next_step(current)
            if following is None:
                return
            args, current, name = current.handed(out), following, following.name
            if not _consumed_here(task, queue_name(settings, current.queue)):
                send_with(task.app, settings, current, job_id, *args)
                return
    except SoftTimeLimitExceeded as exc:
        limit = settings.broker.task_soft_time_limit_s
        runner.fail(ctx, job_id, TimeLimit(f"{task.name} ran past the time limit of {limit} s"))
        raise Ignore() from exc
    except Exception as exc:
        if runner.is_transient(exc) and req.retries < settings.broker.max_retries:
            delay = runner.backoff(settings, req.retries)
            log.warning("job %s: transient error in %s, retry in %.1fs: %s",
                        job_id, name, delay, exc)
            raise task.retry(exc=exc, countdown=delay, max_retries=None) from exc
        runner.fail(ctx, job_id, exc)
        if isinstance(exc, VideoMMError) or runner.is_transient(exc):
            raise Ignore() from exc  # recorded in the job; the worker carries on
        raise  # an internal error: recorded in the job and in Celery's result store


def send_with(app: Celery, settings: Settings, step: runner.Step, job_id: str,
              *handed: Any) -> None:
    """Send ``step`` through ``app`` to its queue: the message is the job id and what the step
    before handed on."""
    app.send_task(step.name, args=(job_id, *handed), queue=queue_name(settings, step.queue))


def register(app: Celery) -> None:
    """Define a task per step of ``runner.STEPS`` on ``app`` (message: the job id, then what the
    step before handed on); dispatch.enqueue sends the first, each hands on."""
    for s in runner.STEPS:

        def run_step(self: Task, job_id: str, *handed: Any) -> None:
            _run(self, job_id, *handed)

        app.task(bind=True, name=s.name, shared=False)(run_step)


# Set by `vmm worker` before the pool starts; forked worker processes inherit them.
preload_settings: Settings | None = None  # serving the gpu queue: load models at process start
threads_per_process: int | None = None  # the cores shared out among the pool's processes


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    """Share the cores among the pool's processes (N processes each using every core would thrash)
    and load the models when a GPU worker process starts, so its first task does not pay for it.
    A loading failure is logged, not raised: the task that needs the models reports it to its job.
    """
    if threads_per_process:
        import torch

        torch.set_num_threads(threads_per_process)
    if preload_settings is None:
        return
    try:
        stages.load_models(preload_settings)
    except Exception:
        log.exception("could not load models at worker start")
