"""The reaper on a real catalog (SQLite): stale running jobs are sent again within the retry
budget or failed with a reason, unsent queued jobs are relayed, two reapers never both act, and
the heartbeat keeps a running job fresh. Worker processes that really die: tests/workers."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from video_mm.errors import ConfigError
from video_mm.pipeline.dispatch import check_broker_settings
from video_mm.pipeline.lifecycle import Reaper, heartbeat, step_for
from video_mm.settings import Settings
from video_mm.storage.catalog import Catalog

STALE_S = 0.3


class Sent:
    """A send target that records what the reaper put on the queues (the broker's side is tested
    with real brokers in tests/workers); ``down`` makes it refuse like a stopped broker."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.down = False

    def __call__(self, job_id: str, step: str) -> None:
        if self.down:
            raise ConnectionRefusedError("broker down")
        self.messages.append((job_id, step))


@pytest.fixture
def reaper_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "reaper": settings.reaper.model_copy(update={
            "heartbeat_s": 0.05, "stale_after_s": STALE_S, "interval_s": 0.1,
            "unsent_after_s": STALE_S}),
        "broker": settings.broker.model_copy(update={"max_retries": 1}),
    })


@pytest.fixture
def catalog(reaper_settings: Settings) -> Iterator[Catalog]:
    reaper_settings.data_dir.mkdir(parents=True)
    with Catalog.from_settings(reaper_settings) as cat:
        yield cat


def _job(catalog: Catalog, name: str, *, state: str, stage: str = "", attempts: int = 0,
         sent: bool = True) -> str:
    catalog.add_video(name, blob_key=name, filename=f"{name}.mp4")
    job, _ = catalog.create_job(name, idempotency_key=name)
    for _ in range(attempts):
        catalog.update_job(job.id, add_attempt=True)
    catalog.update_job(job.id, state=state, stage=stage)
    catalog.mark_sent(job.id, sent)
    return job.id


def test_stale_running_jobs_are_sent_again_then_failed_when_out_of_runs(
    reaper_settings: Settings, catalog: Catalog
) -> None:
    again = _job(catalog, "again", state="running", stage="features", attempts=1)
    spent = _job(catalog, "spent", state="running", stage="probe", attempts=2)
    live = _job(catalog, "live", state="running", stage="caption", attempts=1)
    time.sleep(STALE_S + 0.1)
    catalog.touch_job(live)  # its heartbeat: alive
    sent = Sent()
    done = Reaper(reaper_settings, catalog, sent).reap()
    assert (done.resent, done.failed) == (1, 1)
    assert sent.messages == [(again, "vmm.analyse")]
    job = catalog.get_job(again)
    assert job.state == "queued" and catalog.is_sent(again)
    failed = catalog.get_job(spent)
    assert failed.state == "failed" and failed.error.startswith("worker_lost:")
    assert "probe stage stopped reporting" in failed.error
    assert catalog.get_video("spent").state == "failed"
    assert catalog.get_job(live).state == "running"


def test_unsent_jobs_are_relayed_when_the_broker_is_back(
    reaper_settings: Settings, catalog: Catalog
) -> None:
    job_id = _job(catalog, "unsent", state="queued", sent=False)
    sent_before = _job(catalog, "sent", state="queued", sent=True)
    time.sleep(STALE_S + 0.1)
    sent = Sent()
    sent.down = True
    reaper = Reaper(reaper_settings, catalog, sent)
    assert reaper.reap().relayed == 0
    assert not catalog.is_sent(job_id)
    sent.down = False
    time.sleep(STALE_S + 0.1)  # the failed try touched it: it waits its turn again
    assert reaper.reap().relayed == 1
    assert sent.messages == [(job_id, "vmm.prepare")]
    assert catalog.is_sent(job_id) and catalog.get_job(sent_before).state == "queued"


def test_two_reapers_never_both_act(reaper_settings: Settings, catalog: Catalog) -> None:
    ids = [_job(catalog, f"v{i}", state="running", stage="segment") for i in range(20)]
    time.sleep(STALE_S + 0.1)
    sent = Sent()
    reapers = [Reaper(reaper_settings, catalog, sent) for _ in range(2)]
    threads = [threading.Thread(target=r.reap) for r in reapers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent.messages) == sorted((j, "vmm.prepare") for j in ids)


def test_heartbeat_keeps_a_running_job_from_the_reaper(
    reaper_settings: Settings, catalog: Catalog
) -> None:
    job_id = _job(catalog, "beating", state="running", stage="features")
    sent = Sent()
    reaper = Reaper(reaper_settings, catalog, sent)
    with heartbeat(catalog, job_id, reaper_settings.reaper.heartbeat_s):
        time.sleep(STALE_S * 3)
        assert reaper.reap().resent == 0
    time.sleep(STALE_S + 0.1)
    assert reaper.reap().resent == 1


def test_reaper_thread_runs_its_passes(reaper_settings: Settings, catalog: Catalog) -> None:
    job_id = _job(catalog, "threaded", state="running", stage="index")
    sent = Sent()
    reaper = Reaper(reaper_settings, catalog, sent).start()
    try:
        deadline = time.monotonic() + 30
        while not sent.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reaper.stop()
    assert sent.messages == [(job_id, "vmm.analyse")]  # publish needs analyse's vectors


def test_step_for_each_stage() -> None:
    assert [step_for(s) for s in ("", "probe", "segment", "features", "write", "index")] == [
        "vmm.prepare", "vmm.prepare", "vmm.prepare", "vmm.analyse", "vmm.analyse", "vmm.analyse"]


@pytest.mark.parametrize(("broker", "message"), [
    ({"task_soft_time_limit_s": 50, "task_time_limit_s": 40}, "must be below"),
    ({"url": "redis://h:6379/0", "visibility_timeout_s": 100, "task_time_limit_s": 200},
     "visibility_timeout_s (100) must exceed"),
    ({"url": "amqp://h//", "consumer_timeout_s": 100, "task_time_limit_s": 200},
     "consumer_timeout_s (100) must exceed"),
])
def test_broker_settings_are_checked_with_the_reason(
    settings: Settings, broker: dict, message: str
) -> None:
    bad = settings.model_copy(update={"broker": settings.broker.model_copy(update={
        "task_soft_time_limit_s": 10, **broker})})
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_broker_settings(bad)
    check_broker_settings(settings)  # the defaults pass
