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

import contextlib
import logging
from functools import lru_cache
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_ready, worker_shutdown

from video_mm.errors import VideoMMError
from video_mm.pipeline import lifecycle, runner, stages
from video_mm.pipeline.dispatch import queue_name
from video_mm.settings import Settings

log = logging.getLogger(__name__)


class TimeLimit(VideoMMError):
    """A task ran past ``broker.task_soft_time_limit_s`` (or was killed at the hard limit): the
    video is too long for the limit, or its decoding hung."""

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


def _begin(task: Task, ctx: runner.Context, current: runner.Step, job_id: str) -> None:
    """Decide whether this delivery runs the job, and count the run.

    - a finished job: a duplicate or late message, nothing to do;
    - ``running`` with a fresh heartbeat: another worker runs it right now (a message delivered
      twice): leave it to that one;
    - ``running`` and silent: its worker died (kill -9, OOM, the hard time limit) and the broker
      redelivered the message: take it over (one taker wins, see ``Catalog.claim_job``), one
      more run;
    - ``queued``: a new job, a step handed on, a retry, or a step the reaper sent again (its stage
      lies in this step or a later one): it turns ``running`` at once; the first step, retries and
      resends count one more run.
    A video that kills its worker every time ends ``failed`` once the runs pass the retry budget.
    """
    settings, req = ctx.settings, task.request
    job = ctx.catalog.get_job(job_id)
    if job.state in ("done", "failed"):
        log.info("job %s is already %s; %s skipped", job_id, job.state, task.name)
        raise Ignore()
    if job.state == "running" and not req.retries:
        silent = lifecycle.age_s(job.updated_at)
        if silent < settings.reaper.stale_after_s:
            log.warning("job %s is running elsewhere (heartbeat %.1f s ago); %s skipped",
                        job_id, silent, task.name)
            raise Ignore()
        taken = ctx.catalog.claim_job(job, add_attempt=True)
        if taken is None:
            raise Ignore()  # the reaper or another delivery took it first
        job = taken
    else:  # running from now on: a worker killed before its step's first report is found too
        rerun = (current is runner.STEPS[0] or req.retries
                 or job.stage in runner.stages_from(current))
        job = ctx.catalog.update_job(job_id, state="running", add_attempt=bool(rerun))
    if job.attempts > settings.broker.max_retries + 1:
        runner.fail(ctx, job_id, lifecycle.WorkerLost(
            f"{task.name}: the worker died {job.attempts - 1} times running this job"))
        raise Ignore()


def _run(task: Task, job_id: str, *args: Any) -> None:
    """Run the task's step for a job under the worker error policy, then hand the job on: the next
    step runs in this task while this worker consumes its queue (a queue hop costs a broker round
    trip, a pool dispatch and an ack, a few ms each on a busy machine), else it is sent there.

    The message is acknowledged only when the task returns (late ack), so a worker that dies in
    any step of the task has the whole task redelivered; every step is idempotent."""
    settings = _settings(task)
    ctx = runner.context(settings)
    req = task.request
    current = runner.step(task.name)
    _begin(task, ctx, current, job_id)
    name = task.name
    try:
        while True:
            with lifecycle.heartbeat(ctx.catalog, job_id, settings.reaper.heartbeat_s):
                out = current.run(ctx, job_id, *args)
            following = runner.next_step(current)
            if following is None:
                return
            args, current, name = current.handed(out), following, following.name
            if not _consumed_here(task, queue_name(settings, current.queue)):
                # Waiting in the next queue is "queued" (not a silent running step the reaper
                # would take), and unsent until the broker has the message.
                ctx.catalog.mark_sent(job_id, False)
                ctx.catalog.update_job(job_id, state="queued")
                send_with(task.app, settings, current, job_id, *args)
                ctx.catalog.mark_sent(job_id)
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
            with contextlib.suppress(Exception):  # waiting for its retry is not a silent step
                ctx.catalog.update_job(job_id, state="queued")
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
reaper: lifecycle.Reaper | None = None  # the worker's reaper (its main process runs it)


def _job_id(args: Any) -> str | None:
    """The job a vmm task message is about: its first argument."""
    return str(args[0]) if args else None


@task_failure.connect
def _on_failure(sender: Task | None = None, exception: BaseException | None = None,
                args: Any = None, **_: Any) -> None:
    """What Celery saw kill a task ends its job with the reason: the hard time limit, which kills
    the pool process (a decoder stuck in native code) so the task itself never can, and a pool
    process lost without a requeue. This
    runs in the worker's main process for a hard limit (a short-lived catalog connection: the pool
    forks from this process, and must not inherit open ones) and in the pool process otherwise,
    where the task has usually failed the job already."""
    name = getattr(sender, "name", "")
    job_id = _job_id(args)
    if not name.startswith("vmm.") or job_id is None or sender is None:
        return
    from video_mm.storage.catalog import Catalog

    settings = _settings(sender)
    if isinstance(exception, TimeLimitExceeded):
        why: BaseException = TimeLimit(
            f"{name} was killed at the hard time limit of {settings.broker.task_time_limit_s} s "
            "(broker.task_time_limit_s): a step hung (a decoder stuck in native code?)"
        )
    elif isinstance(exception, WorkerLostError):
        why = lifecycle.WorkerLost(f"{name}: the worker process died ({exception})")
    else:
        # The task body has recorded what it decided (failed, or sent for a retry); an error
        # around it (the result store briefly away while a retry is recorded) must not end a job
        # whose retry is already queued: the reaper ends it if nothing runs it.
        return
    try:
        with Catalog(settings.catalog_url, busy_timeout_s=settings.catalog.busy_timeout_s,
                     pool_size=1, migrate=False) as catalog:
            if catalog.get_job(job_id).state in ("done", "failed"):
                return
            runner.fail(runner.Context(settings, catalog, None), job_id, why)
    except Exception:  # the reaper ends it later; a failure hook must never raise
        log.exception("job %s: could not record the failure of %s", job_id, name)


@worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    """The worker's reaper starts once its pool is up, in the main process only."""
    if reaper is not None:
        reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    if reaper is not None:
        reaper.stop()


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    """Share the cores among the pool's processes (N processes each using every core would thrash)
    and load the models when a GPU worker process starts, so its first task does not pay for it.
    A loading failure is logged, not raised: the task that needs the models reports it to its job.
    The reaper's catalog connections belong to the main process: the child drops its copies
    without closing them (closing would end the parent's sessions on the shared sockets).
    """
    if reaper is not None:
        reaper.catalog.engine.dispose(close=False)
    if threads_per_process:
        import torch

        torch.set_num_threads(threads_per_process)
    if preload_settings is None:
        return
    try:
        stages.load_models(preload_settings)
    except Exception:
        log.exception("could not load models at worker start")
