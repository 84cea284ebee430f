"""Real worker processes on real brokers, for the reliability tests.

Each test gets its own data folder and its own queue names (``broker.queue_prefix``), so tests and
other users of the same Redis or RabbitMQ never see each other's jobs. Workers are `vmm worker`
processes in their own process group; teardown kills the whole group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from video_mm.index.base import open_index
from video_mm.pipeline.runner import context
from video_mm.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HANG = Path(__file__).resolve().parent / "hang"


BROKERS = {
    "redis": ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", ("127.0.0.1", 5672)),
}
JOB_DEADLINE_S = 300.0  # a hang guard, not a speed assertion


def broker_up(name: str) -> bool:
    try:
        socket.create_connection(BROKERS[name][1], timeout=2).close()
        return True
    except OSError:
        return False


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build exactly these settings."""
    env = {"VMM_DATA_DIR": str(settings.data_dir)}
    for section, values in settings.model_dump(mode="json").items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            name = f"VMM_{section.upper()}__{key.upper()}"
            env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


class Workers:
    """Start and kill `vmm worker` processes for one settings object."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self.hang_flag = logs / "hanging"

    def start(
        self, queues: str = "cpu,gpu,index", concurrency: int = 1, *, hang: str | None = None
    ) -> subprocess.Popen:
        """A `vmm worker`; ``hang`` (``probe``, ``prepare``, ``analyse``, ``publish``) makes it
        block for ever in native code there (``hang/sitecustomize.py``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMM_")}
        env.update(settings_env(self.settings))
        if hang:
            env["VMM_TEST_HANG"] = hang
            env["VMM_TEST_HANG_FLAG"] = str(self.hang_flag)
            env["PYTHONPATH"] = os.pathsep.join([str(HANG), str(REPO)])
        log = (self.logs / f"worker{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "video_mm", "worker", "-Q", queues, "-c", str(concurrency),
             "-l", "info", "-n", f"w{len(self.procs)}-{uuid.uuid4().hex[:6]}@%h"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Kill the worker and its pool processes at once (kill -9 of the machine's worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(proc)
            else:
                # Pool children of a worker whose main process died may linger: end the group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, n: int = 4000) -> str:
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(p.read_text(errors="replace")[-n:] for p in logs)


def wait_jobs(settings: Settings, job_ids: list[str], workers: Workers) -> dict[str, str]:
    """Poll the catalog until every job is done or failed; job id -> state."""
    from video_mm.pipeline.runner import context

    cat = context(settings).catalog
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        states = {j: cat.get_job(j).state for j in job_ids}
        if all(s in ("done", "failed") for s in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"jobs unfinished after {JOB_DEADLINE_S}s: {states}\n{workers.log_tail()}")
        time.sleep(0.25)


def assert_results_once(settings: Settings, job_ids: list[str], tiny_models: dict) -> None:
    """Every done job's video: ready, one caption per clip per captioner, one embedding and one
    index entry per clip; the index holds nothing else."""
    cat = context(settings).catalog
    n_captioners = len(tiny_models["captioners"])
    total_clips = 0
    index = open_index(settings)
    try:
        for job_id in job_ids:
            job = cat.get_job(job_id)
            if job.state != "done":
                continue
            assert cat.get_video(job.video_id).state == "ready"
            clips = cat.get_clips(job.video_id)
            ids = [c.id for c in clips]
            assert clips and len(set(ids)) == len(ids)
            captions = cat.get_captions(video_id=job.video_id)
            assert sorted((c.clip_id, c.model) for c in captions) == sorted(
                {(c.clip_id, c.model) for c in captions}
            )
            assert len(captions) == len(clips) * n_captioners
            assert len(cat.get_embeddings(video_id=job.video_id)) == len(clips)
            assert all(i in index for i in ids)
            total_clips += len(clips)
        assert len(index) == total_clips
    finally:
        index.close()


def tally(settings: Settings, job_ids: list[str]) -> dict[str, int]:
    """The fault suite's figures for a set of jobs: done exactly once (ready, one caption per clip
    and captioner, one embedding and one index entry per clip), failed with a reason, lost (no end
    state), and duplicates (extra caption, embedding or index rows)."""
    cat = context(settings).catalog
    out = {"jobs": len(job_ids), "done_once": 0, "failed_with_reason": 0, "lost": 0,
           "duplicates": 0}
    index = open_index(settings)
    try:
        expected_entries = 0
        for job_id in job_ids:
            job = cat.get_job(job_id)
            if job.state == "failed":
                out["failed_with_reason"] += bool(job.error)
                out["lost"] += not job.error
                continue
            if job.state != "done":
                out["lost"] += 1
                continue
            clips = cat.get_clips(job.video_id)
            ids = [c.id for c in clips]
            expected_entries += len(ids)
            captions = cat.get_captions(video_id=job.video_id)
            keys = [(c.clip_id, c.model) for c in captions]
            embeddings = cat.get_embeddings(video_id=job.video_id)
            dups = (len(keys) - len(set(keys))) + max(0, len(embeddings) - len(ids))
            out["duplicates"] += dups
            whole = (cat.get_video(job.video_id).state == "ready" and ids
                     and len(set(keys)) == len(ids) * len(set(m for _, m in keys))
                     and all(i in index for i in ids))
            out["done_once"] += bool(whole) and not dups
        out["duplicates"] += max(0, len(index) - expected_entries)
    finally:
        index.close()
    return out


FIGURES = os.environ.get("VMM_FAULT_FIGURES")  # a JSON-lines file the suite's rows append to


def record(row: str, settings: Settings, job_ids: list[str], *, runs: int = 1) -> dict:
    """Tally a fault row and append it to ``$VMM_FAULT_FIGURES`` (RELIABILITY.md's table)."""
    figures = {"row": row, "runs": runs, **tally(settings, job_ids)}
    if FIGURES:
        with open(FIGURES, "a") as f:
            f.write(json.dumps(figures) + "\n")
    return figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own on a free port, which the test may stop and start without
    touching the shared one; ``appendonly`` keeps its data across restarts, as in production."""

    def __init__(self, folder: Path, *, appendonly: bool = False) -> None:
        self.folder, self.port, self.appendonly = folder, free_port(), appendonly
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[object]:
    """``make_redis(appendonly=False) -> PrivateRedis``, started; stopped at teardown."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    made: list[PrivateRedis] = []

    def make(appendonly: bool = False) -> PrivateRedis:
        redis = PrivateRedis(tmp_path / f"redis{len(made)}", appendonly=appendonly)
        made.append(redis)
        redis.start()
        return redis

    yield make
    for redis in made:
        redis.stop()


@pytest.fixture
def private_redis(make_redis: Any) -> PrivateRedis:
    return make_redis()


@pytest.fixture
def fault_row() -> object:
    """``fault_row(row, settings, job_ids, runs=1) -> figures``: see :func:`record`."""
    return record


@pytest.fixture
def results_once() -> object:
    """``results_once(settings, job_ids, tiny_models)``: each done job's results exactly once."""
    return assert_results_once


@pytest.fixture
def worker_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pipeline_settings  # type: ignore[no-untyped-def]
) -> Settings:
    """Fast settings on the broker the test names (``redis``, ``rabbitmq``, ``embedded``);
    videos over 200 s are refused (the too-long case)."""
    name = request.param if hasattr(request, "param") else "redis"
    if name != "embedded" and not broker_up(name):
        pytest.skip(f"{name} is not running at {BROKERS[name][1]}")
    url = "" if name == "embedded" else BROKERS[name][0]
    return pipeline_settings(
        tmp_path / "vmm",
        io={"max_duration_s": 200.0},
        broker={"url": url, "queue_prefix": f"vmmtest-{uuid.uuid4().hex[:8]}-",
                "visibility_timeout_s": 500, "retry_backoff_s": 0.5,
                # Hang guards only: an all-queue worker runs a whole video in one task, and a
                # loaded machine must not turn slowness into failed jobs.
                "task_soft_time_limit_s": 400, "task_time_limit_s": 450},
        # A killed worker's job is found by the reaper within seconds (in production minutes).
        reaper={"heartbeat_s": 0.5, "stale_after_s": 10.0, "interval_s": 1.0,
                "unsent_after_s": 2.0},
    )


@pytest.fixture
def wait() -> object:
    """``wait(settings, job_ids, workers) -> {job id: state}``."""
    return wait_jobs


@pytest.fixture
def workers(worker_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    w = Workers(worker_settings, logs)
    yield w
    w.stop_all()
