"""The fault suite: services restarted and broken under running jobs, on real services started by
the tests themselves (a private redis-server, a private PostgreSQL cluster, a tmpfs blob store),
and 200 jobs with a worker killed mid-way. Every row ends with every job done exactly once or
failed with a reason: none lost, no duplicates. Figures: RELIABILITY.md (``VMM_FAULT_FIGURES``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workers.jobs import submit_all
from video_mm.errors import StorageError
from video_mm.pipeline.runner import context
from video_mm.settings import Settings

pytestmark = pytest.mark.integration
WAIT_S = 300.0  # hang guard only
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _until(predicate: Any, workers: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        with contextlib.suppress(StorageError):  # the catalog itself may be restarting
            if predicate():
                return
        assert time.monotonic() < deadline, f"{what}\n{workers.log_tail()}"
        time.sleep(0.1)


def _ended(settings: Settings, job_ids: list[str]) -> bool:
    cat = context(settings).catalog
    return all(cat.get_job(j).state in ("done", "failed") for j in job_ids)


def _some(settings: Settings, job_ids: list[str], state: str) -> bool:
    cat = context(settings).catalog
    return any(cat.get_job(j).state == state for j in job_ids)


def _with(settings: Settings, **sections: dict) -> Settings:
    return settings.model_copy(update={
        name: getattr(settings, name).model_copy(update=values) for name, values in sections.items()
    })


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_redis_restart_with_jobs_queued_and_in_flight(
    worker_settings: Settings, workers: Any, make_redis: Any, msvd14_videos: list[Path],
    tiny_models: dict, results_once: Any, fault_row: Any,
) -> None:
    redis = make_redis(appendonly=True)
    try:
        settings = _with(worker_settings, broker={"url": redis.url})
        workers.settings = settings
        job_ids = submit_all(settings, msvd14_videos[:6])
        redis.stop()  # queued: the messages are in the append-only file
        redis.start()
        workers.start()
        _until(lambda: _some(settings, job_ids, "done"), workers, "no job finished")
        redis.stop()  # in flight: the worker reconnects, running tasks finish and ack
        time.sleep(1)
        redis.start()
        _until(lambda: _ended(settings, job_ids), workers, "jobs unfinished")
        states = {j: context(settings).catalog.get_job(j).state for j in job_ids}
        assert set(states.values()) == {"done"}, workers.log_tail()
        results_once(settings, job_ids, tiny_models)
        fault_row("Redis restart (private, append-only) with jobs queued and in flight",
                  settings, job_ids)
    finally:
        workers.stop_all()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb, pg_ctl) on a free port, run by the
    ``postgres`` user when the tests run as root."""

    def __init__(self, port: int) -> None:
        self.bin = PG_BIN[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="vmm-pg-"))
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # Never pipes: the server pg_ctl leaves running would hold them open.
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-m",
                  "fast", "-w", "restart")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not PG_BIN or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pg = PrivatePostgres(port)
    pg.init()
    yield pg
    pg.destroy()


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_postgresql_restart_mid_job(
    worker_settings: Settings, workers: Any, private_postgres: PrivatePostgres,
    msvd14_videos: list[Path], tiny_models: dict, results_once: Any, fault_row: Any,
) -> None:
    settings = _with(worker_settings, catalog={"url": private_postgres.url},
                     broker={"max_retries": 6, "retry_backoff_s": 1.0})
    workers.settings = settings
    job_ids = submit_all(settings, msvd14_videos[:4])
    workers.start()
    _until(lambda: _some(settings, job_ids, "running"), workers, "no job started")
    private_postgres.restart()
    _until(lambda: _ended(settings, job_ids), workers, "jobs unfinished")
    states = {j: context(settings).catalog.get_job(j).state for j in job_ids}
    assert set(states.values()) == {"done"}, f"{states}\n{workers.log_tail()}"
    results_once(settings, job_ids, tiny_models)
    fault_row("PostgreSQL restart mid-job (private cluster)", settings, job_ids)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "blobs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    ).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_blob_store_write_failure_fails_jobs_with_the_reason(
    worker_settings: Settings, workers: Any, small_tmpfs: Path, msvd14_videos: list[Path],
    fault_row: Any,
) -> None:
    settings = _with(worker_settings, storage={"url": str(small_tmpfs)},
                     broker={"max_retries": 2, "retry_backoff_s": 0.2})
    workers.settings = settings
    job_ids = submit_all(settings, msvd14_videos[:3])  # the uploads are stored...
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)  # ... then no more
    proc = workers.start()
    _until(lambda: _ended(settings, job_ids), workers, "jobs unfinished")
    cat = context(settings).catalog
    for job_id in job_ids:
        job = cat.get_job(job_id)
        assert job.state == "failed" and job.error.startswith("storage_error:"), job.error
        assert "Read-only file system" in job.error
        assert job.attempts == 3  # the first run and max_retries retries
    assert proc.poll() is None
    fault_row("blob store write failure (read-only tmpfs)", settings, job_ids)


def _small_videos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 2-second videos, cut from one ffmpeg run."""
    from video_mm.io.ffmpeg import ffmpeg_exe

    folder.mkdir()
    # Temporal noise: no two segments are the same bytes (the same bytes would be the same job).
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=5,noise=alls=40:allf=t+u",
                    "-t", str(2 * n), "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p",
                    "-f", "segment", "-segment_time", "2", "-reset_timestamps", "1",
                    str(folder / "v%03d.mp4")], check=True, timeout=300)
    return sorted(folder.glob("v*.mp4"))[:n]


@pytest.mark.slow
@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_200_jobs_on_2_workers_with_one_killed_midway(
    worker_settings: Settings, workers: Any, tmp_path: Path, tiny_models: dict,
    results_once: Any, fault_row: Any,
) -> None:
    videos = _small_videos(tmp_path / "small", 200)
    assert len({p.read_bytes() for p in videos}) == 200
    first, _second = workers.start(), workers.start()
    job_ids = submit_all(worker_settings, videos)
    cat = context(worker_settings).catalog
    _until(lambda: sum(cat.get_job(j).state == "done" for j in job_ids) >= 50, workers,
           "50 jobs never finished")
    workers.kill(first, signal.SIGKILL)
    _until(lambda: _ended(worker_settings, job_ids), workers, "jobs unfinished")
    states = [cat.get_job(j).state for j in job_ids]
    assert states.count("done") == 200, workers.log_tail()
    results_once(worker_settings, job_ids, tiny_models)
    fault_row("200 small jobs on 2 workers, one killed (kill -9) mid-way (redis)",
              worker_settings, job_ids)
