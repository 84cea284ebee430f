"""Nothing is lost between the catalog and the broker: uploads while the broker is down are kept
as queued, unsent jobs; uploading the same video again sends it once the broker is back, and a
worker's reaper sends the rest. A private redis-server is stopped and started (never the shared
one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from video_mm.pipeline.dispatch import index_paths
from video_mm.pipeline.runner import context
from video_mm.settings import Settings

pytestmark = pytest.mark.integration


def _upload(url: str, path: Path) -> dict:
    with path.open("rb") as f:
        r = httpx.post(f"{url}/v1/videos", files={"file": (path.name, f, "video/x-msvideo")},
                       timeout=120)
    assert r.status_code == 202, r.text
    return r.json()


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_jobs_uploaded_while_the_broker_is_down_are_sent_when_it_is_back(
    worker_settings: Settings, workers: Any, wait: Any, private_redis: Any,
    msvd14_videos: list[Path], tiny_models: dict, results_once: Any, api_server: Any,
    fault_row: Any,
) -> None:
    settings = worker_settings.model_copy(update={
        "broker": worker_settings.broker.model_copy(update={"url": private_redis.url}),
        # The server's reaper stays out of it: this test shows the upload path sending again.
        "reaper": worker_settings.reaper.model_copy(update={"enabled": False}),
    })
    catalog = context(settings).catalog
    private_redis.stop()
    # The broker is down: uploads through the API and `vmm index --queue` are accepted, and kept.
    with api_server(settings) as server:
        api_jobs = [_upload(server.url, p)["job_id"] for p in msvd14_videos[:2]]
        rows = index_paths(msvd14_videos[2:4], settings, queue=True, progress=False)
        cli_jobs = [r["job_id"] for r in rows]
        assert [r["state"] for r in rows] == ["queued", "queued"]
        for job_id in api_jobs + cli_jobs:
            assert catalog.get_job(job_id).state == "queued" and not catalog.is_sent(job_id)
        again = _upload(server.url, msvd14_videos[0])  # still down: still unsent, still queued
        assert again["job_id"] == api_jobs[0] and not again["created"]
        assert not catalog.is_sent(api_jobs[0])
        private_redis.start()
        # Back: the same upload again sends the stuck job at once (no worker needed for that).
        assert _upload(server.url, msvd14_videos[0])["job_id"] == api_jobs[0]
        assert catalog.is_sent(api_jobs[0])
        assert not any(catalog.is_sent(j) for j in api_jobs[1:] + cli_jobs)
    # A worker's reaper sends the others; every job runs once.
    workers.settings = settings.model_copy(update={"reaper": worker_settings.reaper})
    workers.start()
    jobs = api_jobs + cli_jobs
    states = wait(settings, jobs, workers)
    assert set(states.values()) == {"done"}, workers.log_tail()
    assert all(catalog.is_sent(j) for j in jobs)
    assert all(catalog.get_job(j).attempts == 1 for j in jobs)
    results_once(settings, jobs, tiny_models)
    fault_row("broker (redis) down during uploads: API and CLI", settings, jobs)
