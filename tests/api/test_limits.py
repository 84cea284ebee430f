"""Safe by default: read tokens open a private archive for reading only; uploads and searches
are rate-limited per client (429 with Retry-After); preview conversions run a bounded number at
once (503 with Retry-After past it); uploads get 507 below the free-disk floor; `vmm serve`
refuses to listen beyond loopback with no token unless told --insecure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

READER = "reader-token-0123456789"


def _post(client: httpx.Client, path: Path, **headers: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post("/v1/videos", files={"file": (path.name, f, "video/x-msvideo")},
                           headers=headers)


def test_read_tokens_read_a_private_archive_and_never_write(
    make_server: Any, tmp_path: Path, avi_clip: Path, token: str
) -> None:
    with make_server(tmp_path, public_reads=False, read_tokens=[READER]) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.get("/v1/jobs").status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {READER}"}).status_code == 200
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        refused = _post(c, avi_clip, Authorization=f"Bearer {READER}")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert _post(c, avi_clip, Authorization=f"Bearer {token}").status_code == 202


def test_uploads_and_searches_are_rate_limited_per_client(
    make_server: Any, tmp_path: Path, avi_clip: Path, gif_clip: Path, token: str
) -> None:
    with make_server(tmp_path, upload_per_minute=1.0, search_per_minute=1.0,
                     rate_burst=2) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        auth = {"Authorization": f"Bearer {token}"}
        assert _post(c, avi_clip, **auth).status_code == 202
        assert _post(c, gif_clip, **auth).status_code == 202
        third = _post(c, avi_clip, **auth)
        assert third.status_code == 429, third.text
        assert third.json()["error"]["code"] == "rate_limited"
        assert int(third.headers["retry-after"]) >= 1
        for _ in range(2):
            assert c.get("/v1/search", params={"q": "a dog"}).status_code != 429
        limited = c.get("/v1/search", params={"q": "a dog"})
        assert limited.status_code == 429 and "search_per_minute" in limited.json()["error"][
            "message"]


def test_uploads_are_refused_below_the_free_disk_floor(
    make_server: Any, tmp_path: Path, avi_clip: Path, token: str
) -> None:
    with make_server(tmp_path, min_free_disk_bytes=2**62) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as c:
        r = _post(c, avi_clip, Authorization=f"Bearer {token}")
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        assert "min_free_disk_bytes" in r.json()["error"]["message"]


def test_preview_conversions_are_bounded(
    make_server: Any, tmp_path: Path, avi_clip: Path, token: str
) -> None:
    with make_server(tmp_path, preview_max_concurrent=1, preview_wait_s=0.0) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as c:
        video = _post(c, avi_clip, Authorization=f"Bearer {token}").json()["video_id"]
        url = f"/v1/videos/{video}/preview.mp4"
        with srv.app.state.limits.previews.place():  # the one place is taken
            busy = c.get(url)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy"
        assert int(busy.headers["retry-after"]) >= 1
        ok = c.get(url)
        assert ok.status_code == 200 and ok.headers["content-type"] == "video/mp4"


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMM_")}
    env["VMM_DATA_DIR"] = str(tmp_path / "vmm")
    run = subprocess.run([sys.executable, "-m", "video_mm", "serve", "--host", "0.0.0.0",
                          "--port", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "refusing to listen on 0.0.0.0 with no API token" in run.stderr
    assert "--insecure" in run.stderr and "Traceback" not in run.stderr
