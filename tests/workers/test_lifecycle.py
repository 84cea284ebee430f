"""Every job ends, with real worker processes that really hang (native code, see
``hang/sitecustomize.py``) or are killed with SIGKILL: Celery's hard time limit fails the job
through the failure hook, and the reaper of a surviving worker finishes a killed worker's job."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from video_mm.pipeline import enqueue, submit_video
from video_mm.pipeline.runner import context
from video_mm.settings import Settings

pytestmark = pytest.mark.integration
WAIT_S = 240.0  # hang guard only


def _testsrc(path: Path, seconds: float = 3) -> Path:
    from video_mm.io.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=96x72:rate=5", "-t", str(seconds), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=120)
    return path


def _submit(settings: Settings, path: Path) -> str:
    sub = submit_video(path, settings=settings)
    assert enqueue(sub.job_id, settings, queue=True) == "queued"
    return sub.job_id


def _wait_for(predicate: Any, workers: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"{what}\n{workers.log_tail()}"
        time.sleep(0.1)


def _with_broker(settings: Settings, **broker: Any) -> Settings:
    return settings.model_copy(update={"broker": settings.broker.model_copy(update=broker)})


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_hard_time_limit_of_a_hanging_decode_fails_the_job_and_the_worker_lives(
    worker_settings: Settings, workers: Any, wait: Any, tmp_path: Path, fault_row: Any
) -> None:
    workers.settings = _with_broker(worker_settings, task_soft_time_limit_s=2,
                                    task_time_limit_s=4)
    hang = tmp_path / "stuck.mp4"
    hang.write_bytes(b"VMM-HANG" + bytes(range(256)) * 40)
    proc = workers.start(hang="probe")
    job_id = _submit(workers.settings, hang)
    states = wait(workers.settings, [job_id], workers)
    job = context(workers.settings).catalog.get_job(job_id)
    assert states[job_id] == "failed", workers.log_tail()
    assert job.error.startswith("time_limit: vmm.prepare was killed at the hard time limit of 4 s")
    assert job.attempts == 1
    assert context(workers.settings).catalog.get_video(job.video_id).state == "failed"
    assert workers.hang_flag.exists()  # it really hung, in native code, past the soft limit
    assert proc.poll() is None  # the pool replaced the killed process; the worker serves on
    fault_row("hard time limit hit by a hanging decode (redis)", workers.settings, [job_id])


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_isolated_decoding_ends_a_hanging_decode_without_the_hard_limit(
    worker_settings: Settings, workers: Any, wait: Any, tmp_path: Path, fault_row: Any
) -> None:
    workers.settings = worker_settings.model_copy(update={"io": worker_settings.io.model_copy(
        update={"isolate_probe": True, "isolate_decode": True, "decode_timeout_s": 2.0})})
    hang = tmp_path / "stuck.mp4"
    hang.write_bytes(b"VMM-HANG" + bytes(range(256)) * 40)
    proc = workers.start(hang="probe")
    job_id = _submit(workers.settings, hang)
    states = wait(workers.settings, [job_id], workers)
    job = context(workers.settings).catalog.get_job(job_id)
    assert states[job_id] == "failed", workers.log_tail()
    assert job.error.startswith("decode_timeout: stuck.mp4: took longer than 2 s"), job.error
    assert job.attempts == 1 and workers.hang_flag.exists()
    assert proc.poll() is None
    fault_row("hanging decode, io.isolate_decode (redis)", workers.settings, [job_id])


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
@pytest.mark.parametrize("step", ["prepare", "analyse", "publish"])
def test_kill_9_in_each_step_the_reaper_finishes_the_job_once(
    worker_settings: Settings, workers: Any, wait: Any, tmp_path: Path, step: str,
    tiny_models: dict, results_once: Any, fault_row: Any,
) -> None:
    video = _testsrc(tmp_path / "hang-me.mp4")
    doomed = workers.start(hang=step)
    job_id = _submit(worker_settings, video)
    _wait_for(workers.hang_flag.exists, workers, f"the worker never reached {step}")
    workers.kill(doomed, signal.SIGKILL)
    assert context(worker_settings).catalog.get_job(job_id).state == "running"
    workers.start()  # its reaper sends the silent job again
    states = wait(worker_settings, [job_id], workers)
    job = context(worker_settings).catalog.get_job(job_id)
    assert states[job_id] == "done", f"{job.error}\n{workers.log_tail()}"
    assert job.attempts >= 2
    results_once(worker_settings, [job_id], tiny_models)
    fault_row(f"kill -9 of the worker in {step} (redis)", worker_settings, [job_id])
