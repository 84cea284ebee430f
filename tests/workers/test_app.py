"""The Celery app is built from Settings with the reliability settings the workers rely on."""

from __future__ import annotations

from video_mm.pipeline.dispatch import sender
from video_mm.pipeline.runner import QUEUES, STEPS, next_step, stages_from
from video_mm.pipeline.stages import STAGES
from video_mm.settings import Settings
from workers import app as workers_app
from workers.app import make_app


def test_app_reliability_settings(settings: Settings) -> None:
    s = settings.model_copy(update={"broker": settings.broker.model_copy(
        update={"url": "redis://127.0.0.1:6379/0", "queue_prefix": "x-",
                "task_soft_time_limit_s": 10, "task_time_limit_s": 20}
    )})
    conf = make_app(s).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (10, 20)
    assert conf.result_expires == s.broker.result_expires_s
    assert conf.worker_max_tasks_per_child == s.broker.max_tasks_per_child
    assert conf.worker_max_memory_per_child == s.broker.max_memory_per_child_mb * 1024
    assert conf.worker_proc_alive_timeout == s.broker.process_start_timeout_s
    assert [q.name for q in conf.task_queues] == ["x-cpu", "x-gpu", "x-index"]
    assert conf.broker_transport_options["visibility_timeout"] == s.broker.visibility_timeout_s
    assert conf.result_backend == f"db+{s.catalog_url}"
    assert {"vmm.prepare", "vmm.analyse", "vmm.publish"} <= set(make_app(s).tasks)


def test_embedded_broker_needs_no_server(settings: Settings) -> None:
    conf = make_app(settings).conf
    assert conf.broker_url == f"sqla+sqlite:///{(settings.data_dir / 'broker.db').resolve()}"
    assert "visibility_timeout" not in conf.broker_transport_options  # not a create_engine arg


def test_one_table_of_steps_drives_the_tasks(settings: Settings) -> None:
    """Every stage belongs to one step, in order; the app has a task per step; the library sends
    through the workers' sender, found by its entry point (the library never imports workers)."""
    assert [stage for s in STEPS for stage in s.stages] == list(STAGES)
    assert QUEUES == ("cpu", "gpu", "index") and next_step(STEPS[-1]) is None
    assert stages_from(STEPS[1]) == {"features", "caption", "embed", "write", "index"}
    assert [s.handed("key") for s in STEPS] == [(), ("key",), ()]  # analyse hands its vectors on
    assert {s.name for s in STEPS} <= set(make_app(settings).tasks)
    assert sender() is workers_app.send
