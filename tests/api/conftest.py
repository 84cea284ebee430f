"""The real app served by uvicorn on a free loopback port, with the tiny models (tests/conftest.py).

Every test talks HTTP to it (httpx), so routing, streaming uploads, range requests, auth and error
bodies are exercised as a client sees them. The embedded worker runs the real pipeline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from video_mm.api.app import create_app
from video_mm.settings import Settings

TOKEN = "test-token-0123456789"
JOB_DEADLINE_S = 300.0  # a hang guard, not a speed assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread; ``url`` once it answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="session")
def api_settings(pipeline_settings):  # type: ignore[no-untyped-def]
    """``api_settings(data_dir, **api) -> Settings``: the tiny models, a token, a 50 MiB limit."""

    def make(data_dir: Path, **api: object) -> Settings:
        return pipeline_settings(
            data_dir, api={"tokens": [TOKEN], "max_upload_bytes": 50 * 2**20, **api}
        )

    return make


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, api_settings) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """One server per test module (jobs it ran stay in its catalog for the module's tests)."""
    with Server(api_settings(tmp_path_factory.mktemp("api") / "vmm")) as srv:
        yield srv


@pytest.fixture
def make_server(api_settings):  # type: ignore[no-untyped-def]
    """A server for a test that needs other [api] settings: ``make_server(dir, **api)``."""

    def make(tmp: Path, **api: object) -> Server:
        return Server(api_settings(tmp / "vmm", **api))

    return make


@pytest.fixture(scope="module")
def make_module_server(api_settings):  # type: ignore[no-untyped-def]
    """Like ``make_server``, for module-scoped fixtures."""

    def make(tmp: Path, **api: object) -> Server:
        return Server(api_settings(tmp / "vmm", **api))

    return make


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _wait_job(client: httpx.Client, job_id: str) -> dict:
    """Poll the job until it ends; fails (does not hang) past JOB_DEADLINE_S."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['state']} after {JOB_DEADLINE_S} s")
        time.sleep(0.2)


@pytest.fixture
def wait_job():  # type: ignore[no-untyped-def]
    return _wait_job


@pytest.fixture(scope="session")
def mp4_clip(shared_data: Path) -> Path:
    """A real MSR-VTT clip in h264 MP4, which browsers play."""
    return shared_data / "msrvtt" / "video8560" / "video8560.mp4"


@pytest.fixture(scope="session")
def avi_clip(msvd14_videos: list[Path]) -> Path:
    return next(p for p in msvd14_videos if p.suffix == ".avi")


@pytest.fixture(scope="session")
def gif_clip(msvd14_videos: list[Path]) -> Path:
    return next(p for p in msvd14_videos if p.suffix == ".gif")
