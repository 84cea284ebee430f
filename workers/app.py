"""The Celery app, built from :class:`~video_mm.settings.Settings`.

Tasks here are long (a GPU task can caption an hour of video), run on expensive machines, and may
die with their machine; every setting below is chosen for that and says why.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue

from video_mm.pipeline.dispatch import queue_name
from video_mm.pipeline.runner import QUEUES, Step
from video_mm.settings import Settings, get_settings

log = logging.getLogger(__name__)


def result_backend(settings: Settings) -> str:
    """Celery's result store: the configured one, else the catalog's own database (SQLAlchemy),
    so no extra service is needed and every worker that can reach the catalog can reach it."""
    return settings.broker.result_backend or f"db+{settings.catalog_url}"


def is_amqp(settings: Settings) -> bool:
    return settings.broker_url.startswith(("amqp", "pyamqp"))


def queue_arguments(settings: Settings) -> dict | None:
    """RabbitMQ closes the channel of a message unacknowledged for ``consumer_timeout`` (30 min
    by default since 3.8.15) and requeues it: a late-acknowledged task longer than that would run
    twice, forever. Our queues carry their own, above the hard time limit (RabbitMQ >= 3.12 reads
    it; :func:`check_broker` warns on older brokers)."""
    if not is_amqp(settings):
        return None
    return {"x-consumer-timeout": settings.broker.consumer_timeout_s * 1000}


# RabbitMQ's consumer_timeout when rabbitmq.conf does not set it (3.8.15 and later).
RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S = 1800


def check_broker(settings: Settings) -> None:
    """At worker start: a RabbitMQ older than 3.12 ignores the queues' ``x-consumer-timeout``;
    say so when the hard limit passes its default ``consumer_timeout``, naming the setting to
    change. The broker being down is not an error here (the worker waits for it)."""
    if not is_amqp(settings):
        return
    import kombu

    try:
        with kombu.Connection(settings.broker_url, connect_timeout=5) as conn:
            conn.connect()
            version = conn.connection.server_properties.get("version", "")
    except Exception as exc:
        log.warning("broker not reachable at start (%s); the worker waits for it", exc)
        return
    if isinstance(version, bytes):
        version = version.decode()
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    limit = settings.broker.task_time_limit_s
    if parts and parts < (3, 12) and limit >= RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S:
        log.warning(
            "RabbitMQ %s ignores x-consumer-timeout: set consumer_timeout = %d (ms) or more in "
            "rabbitmq.conf, else tasks longer than its default 30 min (broker.task_time_limit_s "
            "is %d s) are requeued while they run", version, (limit + 60) * 1000, limit,
        )


def _config(settings: Settings) -> dict:
    b = settings.broker
    if settings.broker_url.startswith("sqla+"):
        # The embedded broker (kombu's SQLAlchemy transport) hands these to create_engine: wait
        # for SQLite's write lock instead of failing when several workers poll at once. It has no
        # visibility timeout: a task whose worker was killed stays taken. Use Redis or RabbitMQ
        # where workers may die mid-task.
        transport_options: dict = {"connect_args": {"timeout": 30}}
    else:
        transport_options = {
            # Redis hands an unacknowledged task to another worker after this long (how a task of
            # a killed worker comes back). Keep it above the hard time limit, or a slow task also
            # starts elsewhere (harmless, stages are idempotent, but wasted work).
            "visibility_timeout": b.visibility_timeout_s,
        }
    return {
        "broker_url": settings.broker_url,
        "result_backend": result_backend(settings),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # Survive a broker restart: keep retrying the connection instead of exiting.
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Queues split by resource so CPU (probe/decode), GPU (features/caption/embed) and index
        # workers scale separately; durable queues and persistent messages survive a broker restart.
        "task_queues": [
            Queue(name, routing_key=name, durable=True, queue_arguments=queue_arguments(settings))
            for name in (queue_name(settings, q) for q in QUEUES)
        ],
        "task_default_queue": queue_name(settings, "cpu"),
        "task_default_delivery_mode": "persistent",
        # Acknowledge after the task finished, not when it arrived: a worker that dies mid-task
        # leaves the message unacknowledged and the broker redelivers it (stages are idempotent).
        "task_acks_late": True,
        # ... also when the worker process was killed (OOM, kill -9): requeue instead of dropping.
        "task_reject_on_worker_lost": True,
        # One task at a time per process: a long GPU task must not hold more jobs hostage in its
        # prefetch buffer while other workers sit idle.
        "worker_prefetch_multiplier": 1,
        # Soft limit raises SoftTimeLimitExceeded in the task (the job fails with a reason); the
        # hard limit kills a process stuck in native code (decoder, CUDA) that ignores it.
        "task_soft_time_limit": b.task_soft_time_limit_s,
        "task_time_limit": b.task_time_limit_s,
        # The catalog holds the jobs' state; Celery results only matter for failures, and expire.
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": True,
        "result_expires": b.result_expires_s,
        # Recycle worker processes: native decoders and CUDA allocators leak or fragment over many
        # tasks; a fresh process (models reload once) bounds that.
        "worker_max_tasks_per_child": b.max_tasks_per_child,
        "worker_max_memory_per_child": b.max_memory_per_child_mb * 1024,  # Celery counts KiB
        "worker_concurrency": b.concurrency,
        # A replacement pool process loads the models before it reports up (GPU workers): give it
        # the time, or on a loaded machine Celery kills and replaces it for ever.
        "worker_proc_alive_timeout": b.process_start_timeout_s,
        # Tasks report "started" so `celery inspect` shows what runs; the catalog has the detail.
        "task_track_started": True,
        # Never hijack the root logger of the process that embeds the app (tests, the API).
        "worker_hijack_root_logger": False,
    }


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app for these settings (one per distinct settings in a process)."""
    settings = settings or get_settings()
    return _make_app(settings.model_dump_json())


@lru_cache(maxsize=4)
def _make_app(settings_json: str) -> Celery:
    settings = Settings.model_validate_json(settings_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("video_mm", set_as_current=False)
    app.conf.update(_config(settings))
    app.conf.vmm_settings = settings_json
    from workers import tasks

    tasks.register(app)
    return app


def send(settings: Settings, step: Step, job_id: str, *handed: Any) -> None:
    """Put a job's ``step`` on its queue (the library's sender: entry point ``video_mm.senders``,
    used by ``pipeline.dispatch.enqueue``)."""
    from workers.tasks import send_with

    send_with(make_app(settings), settings, step, job_id, *handed)


def __getattr__(name: str) -> Celery:
    """``workers.app.app``, built on first use: `celery -A workers.app worker -Q cpu` works as well
    as `vmm worker`, and importing this module has no side effects."""
    if name == "app":
        return make_app()
    raise AttributeError(name)
