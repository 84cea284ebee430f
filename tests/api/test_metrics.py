"""Stage durations sampled from a real catalog, with the clock given explicitly."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram

from video_mm.api.metrics import StageWatcher
from video_mm.storage.catalog import Catalog


def _count_and_sum(registry: CollectorRegistry, stage: str) -> tuple[float, float]:
    count = registry.get_sample_value("vmm_stage_duration_seconds_count", {"stage": stage})
    total = registry.get_sample_value("vmm_stage_duration_seconds_sum", {"stage": stage})
    return count or 0.0, total or 0.0


def test_stage_watcher_times_each_stage_of_running_jobs(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog.add_video("a" * 64, blob_key="a" * 64, filename="a.mp4")
    job, _ = catalog.create_job("a" * 64)
    registry = CollectorRegistry()
    histogram = Histogram("vmm_stage_duration_seconds", "", ["stage"], registry=registry)
    watcher = StageWatcher(lambda: catalog, histogram)

    watcher.tick(now=0.0)  # queued: not watched
    catalog.update_job(job.id, state="running", stage="probe")
    watcher.tick(now=1.0)
    watcher.tick(now=2.0)
    catalog.update_job(job.id, stage="features")
    watcher.tick(now=3.5)  # probe lasted from 1.0 until this tick saw it gone
    assert _count_and_sum(registry, "probe") == (1.0, 2.5)
    watcher.tick(now=10.0)
    catalog.update_job(job.id, state="done", stage="index")
    watcher.tick(now=11.0)  # the job ended: its last stage is observed
    assert _count_and_sum(registry, "features") == (1.0, 7.5)
    watcher.tick(now=20.0)
    assert _count_and_sum(registry, "features") == (1.0, 7.5)  # observed once
    assert _count_and_sum(registry, "index") == (0.0, 0.0)  # never seen running in that stage
