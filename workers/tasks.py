"""The Celery tasks: thin calls of the pipeline's three steps, chained per video.

What a worker adds to the in-process runner is only the error policy in Celery's terms: bad input
fails the job and stops the chain (never retried); transient errors retry with exponential backoff
and jitter; running out of retries or time fails the job with the reason. Models load once per
worker process (at process start for GPU workers, else on first use) and stay loaded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_process_init

from video_mm.errors import VideoMMError
from video_mm.pipeline import runner, stages
from video_mm.settings import Settings

log = logging.getLogger(__name__)


# The pipeline stages each step reports; a step that starts while its job is "running" in one
# of its own stages was interrupted before.
STEP_STAGES = {
    "prepare": ("probe", "segment", "thumbnails"),
    "analyse": ("features", "caption", "embed", "write"),
    "publish": ("index",),
}


class WorkerLost(VideoMMError):
    """The worker process died mid-task more often than retries allow."""

    code = "worker_lost"


class TimeLimit(VideoMMError):
    """A task ran past ``broker.task_soft_time_limit_s``: the video is too long for the limit."""

    code = "time_limit"


def _settings(task: Task) -> Settings:
    return Settings.model_validate_json(task.app.conf.vmm_settings)


def _run(task: Task, job_id: str, step: Any, *args: Any) -> Any:
    """Run a step for a job under the worker error policy."""
    settings = _settings(task)
    ctx = runner.context(settings)
    job = ctx.catalog.get_job(job_id)
    if job.state in ("done", "failed"):
        # A redelivered or duplicate message for a finished job: nothing to do, end the chain.
        log.info("job %s is already %s; %s skipped", job_id, job.state, task.name)
        raise Ignore()
    req = task.request
    # This step ran before for this job without finishing: its worker died (kill -9, OOM, the
    # hard time limit) and the broker redelivered the message.
    interrupted = (
        not req.retries and job.state == "running" and job.stage in STEP_STAGES[step.__name__]
    )
    if step is runner.prepare or req.retries or interrupted:
        job = ctx.catalog.update_job(job_id, add_attempt=True)
    if interrupted and job.attempts > settings.broker.max_retries + 1:
        # A video that kills its worker every time must not loop forever (reject_on_worker_lost
        # would requeue it again and again): give up with the reason.
        runner.fail(ctx, job_id, WorkerLost(
            f"{task.name}: the worker died {job.attempts - 1} times running this job"))
        raise Ignore()
    try:
        return step(ctx, job_id, *args)
    except SoftTimeLimitExceeded as exc:
        limit = settings.broker.task_soft_time_limit_s
        runner.fail(ctx, job_id, TimeLimit(f"{task.name} ran past the time limit of {limit} s"))
        raise Ignore() from exc
    except Exception as exc:
        if runner.is_transient(exc) and req.retries < settings.broker.max_retries:
            delay = runner.backoff(settings, req.retries)
            log.warning("job %s: transient error in %s, retry in %.1fs: %s",
                        job_id, task.name, delay, exc)
            raise task.retry(exc=exc, countdown=delay, max_retries=None) from exc
        runner.fail(ctx, job_id, exc)
        if isinstance(exc, VideoMMError) or runner.is_transient(exc):
            raise Ignore() from exc  # recorded in the job; the chain stops, the worker carries on
        raise  # an internal error: recorded in the job and in Celery's result store


def register(app: Celery) -> None:
    """Define the three tasks on ``app``; dispatch.enqueue routes each to its queue."""

    @app.task(bind=True, name="vmm.prepare", shared=False)
    def prepare(self: Task, job_id: str) -> str:
        _run(self, job_id, runner.prepare)
        return job_id

    @app.task(bind=True, name="vmm.analyse", shared=False)
    def analyse(self: Task, job_id: str) -> list:
        return [job_id, _run(self, job_id, runner.analyse)]

    @app.task(bind=True, name="vmm.publish", shared=False)
    def publish(self: Task, payload: list) -> str:
        job_id, vectors_key = payload
        _run(self, job_id, runner.publish, vectors_key)
        return job_id


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
