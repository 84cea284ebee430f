"""`vmm serve` as a person runs it: one command, a working system (embedded worker, no broker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 120.0  # hang guards, not speed assertions
JOB_DEADLINE_S = 300.0

pytestmark = pytest.mark.integration


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vmm_serve_runs_jobs_by_itself(tmp_path: Path, tiny_models: dict, avi_clip: Path) -> None:
    port = _free_port()
    token = "serve-token"
    env = {
        **os.environ,
        "VMM_DATA_DIR": str(tmp_path / "vmm"),
        "VMM_API_TOKEN": token,
        "VMM_MODELS__CAPTIONERS": json.dumps([str(p) for p in tiny_models["captioners"]]),
        "VMM_MODELS__RETRIEVAL": str(tiny_models["retrieval"]),
        "VMM_SAMPLING__N_FRAMES": "4",
        "VMM_SAMPLING__SIZE": "112",
        "VMM_SEGMENT__WINDOW_S": "4",
        "VMM_SEGMENT__STRIDE_S": "4",
    }
    env.pop("VMM_BROKER__URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "video_mm", "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + START_DEADLINE_S
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "vmm serve did not answer /healthz"
                time.sleep(0.2)
            r = c.post("/v1/videos", files={"file": (avi_clip.name, avi_clip.read_bytes())},
                       headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 202, r.text
            job_url = r.json()["job_url"]
            deadline = time.monotonic() + JOB_DEADLINE_S
            while (job := c.get(job_url).json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, f"job still {job['state']}"
                time.sleep(0.2)
            assert job["state"] == "done", job["error"]
            assert c.get("/readyz").json()["checks"]["worker"] == "embedded"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"video-mm on http://127.0.0.1:{port}/ · embedded worker" in out
