"""The real app served by uvicorn on a free loopback port, with the tiny models (tests/conftest.py).

Every test talks HTTP to it (httpx), so routing, streaming uploads, range requests, auth and error
bodies are exercised as a client sees them. The embedded worker runs the real pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from video_mm.settings import Settings

TOKEN = "test-token-0123456789"
JOB_DEADLINE_S = 300.0  # a hang guard, not a speed assertion


@pytest.fixture(scope="session")
def api_settings(pipeline_settings):  # type: ignore[no-untyped-def]
    """``api_settings(data_dir, **api) -> Settings``: the tiny models, a token, a 50 MiB limit."""

    def make(data_dir: Path, **api: object) -> Settings:
        return pipeline_settings(
            data_dir, api={"tokens": [TOKEN], "max_upload_bytes": 50 * 2**20, **api}
        )

    return make


@pytest.fixture(scope="module")
def server(  # type: ignore[no-untyped-def]
    tmp_path_factory: pytest.TempPathFactory, api_settings, api_server
) -> Iterator:
    """One server per test module (jobs it ran stay in its catalog for the module's tests)."""
    with api_server(api_settings(tmp_path_factory.mktemp("api") / "vmm")) as srv:
        yield srv


@pytest.fixture
def make_server(api_settings, api_server):  # type: ignore[no-untyped-def]
    """A server for a test that needs other [api] settings: ``make_server(dir, **api)``."""

    def make(tmp: Path, **api: object):  # type: ignore[no-untyped-def]
        return api_server(api_settings(tmp / "vmm", **api))

    return make


@pytest.fixture(scope="module")
def make_module_server(api_settings, api_server):  # type: ignore[no-untyped-def]
    """Like ``make_server``, for module-scoped fixtures."""

    def make(tmp: Path, **api: object):  # type: ignore[no-untyped-def]
        return api_server(api_settings(tmp / "vmm", **api))

    return make


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
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
