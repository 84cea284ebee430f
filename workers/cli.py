"""`vmm worker`: the workers' command, plugged into the `vmm` CLI through the ``video_mm.cli``
entry point (the library's CLI never imports this package)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from video_mm.pipeline.dispatch import queue_name
from video_mm.pipeline.runner import QUEUES
from video_mm.settings import get_settings


def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated: cpu, gpu, index.")
    ] = "cpu,gpu,index",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Processes (broker.concurrency).")
    ] = None,
    loglevel: Annotated[
        str, typer.Option("--loglevel", "-l", help="debug | info | warning | error.")
    ] = "info",
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name (celery@HOST).")
    ] = None,
) -> None:
    """Run a Celery worker for the given queues (the broker is broker.url, else embedded SQLite)."""
    from video_mm.pipeline.dispatch import check_broker_settings, send_step
    from video_mm.pipeline.lifecycle import Reaper
    from video_mm.storage.catalog import Catalog
    from workers import tasks
    from workers.app import check_broker, make_app

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    if bad := [q for q in wanted if q not in QUEUES]:
        raise typer.BadParameter(f"unknown queue(s) {bad}; choose from {QUEUES}", param_hint="-Q")
    settings = get_settings()
    check_broker_settings(settings)
    check_broker(settings)
    from video_mm.pipeline.stages import gap_messages

    for message in gap_messages(settings):
        print(f"note: {message}", file=sys.stderr)
    if settings.reaper.enabled:  # its own catalog: the pool's processes must not share it
        tasks.reaper = Reaper(settings, Catalog.from_settings(settings),
                              lambda job_id, step: send_step(job_id, settings, step))
    processes = concurrency or settings.broker.concurrency
    tasks.threads_per_process = max(1, (os.cpu_count() or 1) // processes)
    if "gpu" in wanted:
        # CUDA starts in each pool process (models load there, after the fork): a check in this
        # process must not create a CUDA context the forked children would inherit unusable.
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        tasks.preload_settings = settings
    argv = ["worker", "-Q", ",".join(queue_name(settings, q) for q in wanted), "-l", loglevel,
            "--pool", "prefork", "-c", str(processes)]
    if hostname:
        argv += ["-n", hostname]
    make_app(settings).worker_main(argv)


def register(app: typer.Typer) -> None:
    app.command()(worker)
