"""Prometheus metrics: request counts and latencies measured here, job and video states read from
the catalog at scrape time (so every API replica reports the same truth), and whatever the
library registers in prometheus_client's default registry. Stage durations are sampled from the
catalog by :class:`StageWatcher`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

STAGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class CatalogCollector(Collector):
    """Jobs by state, videos by state and the queue depth, counted in the catalog per scrape."""

    def __init__(self, catalog: Callable[[], Any], waiting: Callable[[], int]) -> None:
        self._catalog = catalog
        self._waiting = waiting

    def collect(self) -> Iterator[Any]:
        cat = self._catalog()
        jobs = GaugeMetricFamily("vmm_jobs", "Jobs in the catalog by state", labels=["state"])
        job_counts = cat.job_counts()
        for state, n in job_counts.items():
            jobs.add_metric([state], n)
        yield jobs
        videos = GaugeMetricFamily("vmm_videos", "Videos in the catalog by state", labels=["state"])
        for state, n in cat.video_counts().items():
            videos.add_metric([state], n)
        yield videos
        yield GaugeMetricFamily(
            "vmm_queue_depth", "Jobs queued and not yet started", value=job_counts.get("queued", 0)
        )
        yield GaugeMetricFamily(
            "vmm_embedded_worker_waiting",
            "Jobs waiting in this process's embedded worker",
            value=self._waiting(),
        )


class StageWatcher:
    """Stage durations of every running job, wherever it runs (embedded worker or Celery).

    Each :meth:`tick` reads the running jobs from the catalog; the time a job shows one ``stage``
    is summed across ticks and observed once the job moves on or ends. The resolution is the tick
    interval (``api.metrics_poll_s``): a stage shorter than that is counted with its neighbour.
    """

    def __init__(self, catalog: Callable[[], Any], histogram: Histogram) -> None:
        self._catalog = catalog
        self._histogram = histogram
        self._seen: dict[str, tuple[str, float, float]] = {}  # job -> (stage, seconds, last tick)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        running = {j.id: j.stage for j in self._catalog().list_jobs(state="running", limit=10_000)}
        for job_id, (stage, spent, last) in list(self._seen.items()):
            spent += now - last
            if running.get(job_id) == stage:
                self._seen[job_id] = (stage, spent, now)
                continue
            if stage:
                self._histogram.labels(stage).observe(spent)
            del self._seen[job_id]
        for job_id, stage in running.items():
            self._seen.setdefault(job_id, (stage, 0.0, now))


class Metrics:
    """The registry /metrics serves and the instruments the app updates."""

    def __init__(self, catalog: Callable[[], Any], waiting: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vmm_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vmm_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "vmm_stage_duration_seconds", "Time running jobs spent in each pipeline stage",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry,
        )
        self.registry.register(CatalogCollector(catalog, waiting))

    def exposition(self) -> bytes:
        """This app's metrics, then the process-wide default registry's (library metrics)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class MetricsMiddleware:
    """Counts requests and times them per route template (not per URL, to bound cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(
                time.perf_counter() - started
            )


