"""Every job ends, with real worker processes that really hang (native code, see
``hang/sitecustomize.py``) or are killed with SIGKILL: Celery's hard time limit fails the job
through the failure hook, the reaper of a surviving worker finishes a killed worker's job, and
the reaper of `vmm serve` fails the job of a killed worker that has no runs left, with the
reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.workers.conftest import REPO, free_port, settings_env
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


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_the_reaper_of_vmm_serve_fails_a_killed_workers_job_with_the_reason(
    worker_settings: Settings, workers: Any, tmp_path: Path
) -> None:
    workers.settings = _with_broker(worker_settings, max_retries=0)  # one run: then it fails
    doomed = workers.start(hang="prepare")
    port, token = free_port(), "reaper-token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMM_")}
    env |= settings_env(workers.settings) | {"VMM_API_TOKEN": token}
    log = (workers.logs / "serve.log").open("wb")  # in workers.log_tail() with the worker's
    serve = subprocess.Popen([sys.executable, "-m", "video_mm", "serve", "--port", str(port)],
                             cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            def answers() -> bool:
                assert serve.poll() is None, workers.log_tail()
                try:
                    return c.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            _wait_for(answers, workers, "vmm serve did not answer /healthz")
            video = _testsrc(tmp_path / "hang-me.mp4")
            r = c.post("/v1/videos", files={"file": (video.name, video.read_bytes())},
                       headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 202, r.text
            job_url, video_url = r.json()["job_url"], r.json()["video_url"]
            _wait_for(workers.hang_flag.exists, workers, "the worker never reached prepare")
            assert c.get(job_url).json()["state"] == "running"
            workers.kill(doomed, signal.SIGKILL)  # no worker is left: only the server's reaper

            _wait_for(lambda: c.get(job_url).json()["state"] != "running", workers,
                      "the server's reaper never ended the job")
            job = c.get(job_url).json()
            assert job["state"] == "failed", job
            assert job["error"].startswith("worker_lost: the ")
            assert "stopped reporting" in job["error"]
            assert "its worker died or was killed, 1 run(s) of 1 allowed" in job["error"]
            assert c.get(video_url).json()["state"] == "failed"  # the video says so too
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        log.close()
    assert f"job {job['id']} failed: worker_lost" in workers.log_tail(20_000)
