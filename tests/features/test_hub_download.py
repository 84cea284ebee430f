"""Hub repo ids downloaded for real: a minimal Hugging Face hub on 127.0.0.1 (repo info, file tree,
``resolve`` with HEAD and GET) set as ``HF_ENDPOINT``; huggingface_hub's own client fetches into a
temporary ``HF_HOME``, then the same cache serves with the network off."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class FakeHub:
    """Serves ``repos`` (repo id -> (folder, commit)) the way the hub's HTTP API does, and logs
    every request."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[dict[str, bytes], str]] = {}
        self.log: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                path = self.path.split("?")[0]
                hub.log.append(f"{self.command} {path}")
                for repo, (files, commit) in hub.repos.items():
                    as_json = {"Content-Type": "application/json"}
                    if path == f"/api/models/{repo}/revision/main":
                        body = {"id": repo, "sha": commit,
                                "siblings": [{"rfilename": f} for f in files]}
                        return self._reply(200, json.dumps(body).encode(), as_json, head)
                    if path == f"/api/models/{repo}/tree/{commit}":
                        body = [{"type": "file", "path": f, "size": len(b),
                                 "oid": hashlib.sha1(b).hexdigest()} for f, b in files.items()]
                        return self._reply(200, json.dumps(body).encode(), as_json, head)
                    prefix = f"/{repo}/resolve/{commit}/"
                    if path.startswith(prefix) and path[len(prefix):] in files:
                        data = files[path[len(prefix):]]
                        etag = f'"{hashlib.sha256(data).hexdigest()}"'
                        return self._reply(200, data, {"X-Repo-Commit": commit, "ETag": etag},
                                           head)
                self._reply(404, b'{"error": "Repository not found"}',
                            {"X-Error-Code": "RepoNotFound"}, head)

            def do_GET(self) -> None:
                self._route(False)

            def do_HEAD(self) -> None:
                self._route(True)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def add(self, repo: str, folder: Path, commit: str) -> None:
        files = {p.relative_to(folder).as_posix(): p.read_bytes()
                 for p in folder.rglob("*") if p.is_file()}
        self.repos[repo] = (files, commit)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def downloads(self) -> list[str]:
        return [r for r in self.log if "/resolve/" in r]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    h = FakeHub()
    thread = threading.Thread(target=h.httpd.serve_forever, daemon=True)
    thread.start()
    yield h
    h.httpd.shutdown()
    h.httpd.server_close()


def python(code: str, env: dict[str, str]) -> str:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    if env.get("HF_HUB_OFFLINE") is None:
        full.pop("HF_HUB_OFFLINE", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


@pytest.mark.integration
def test_repo_ids_download_through_the_hub_client_then_serve_offline(
    hub: FakeHub, tiny_hf: dict[str, Path], tmp_path: Path
) -> None:
    encoder_commit, model_commit = "1" * 40, "2" * 40
    hub.add("tiny-org/tiny-clip", tiny_hf["clip"], encoder_commit)
    online = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
              "VMM_DATA_DIR": str(tmp_path / "vmm")}

    # 1. an hf: frame encoder and a zero-shot model made from it, both by repo id, downloaded
    out = python(
        "import json\n"
        "from video_mm.features.backbones import create_backbone\n"
        "from video_mm.retrieval.model import save_pretrained\n"
        "from video_mm.retrieval.zeroshot import zero_shot\n"
        "b = create_backbone('hf:tiny-org/tiny-clip')\n"
        f"save_pretrained({str(tmp_path / 'zs')!r}, zero_shot('hf:tiny-org/tiny-clip'))\n"
        "print(json.dumps({'id': b.weights_id, 'dim': b.dim}))\n", online)
    assert json.loads(out) == {"id": f"hf:tiny-org/tiny-clip@{encoder_commit}", "dim": 24}
    assert "GET /tiny-org/tiny-clip/resolve/" + encoder_commit + "/model.safetensors" in hub.log

    # 2. the zero-shot model published and pulled: `vmm models pull` over the same client
    hub.add("tiny-org/clip-zs", tmp_path / "zs", model_commit)
    pulled = subprocess.run(
        [sys.executable, "-m", "video_mm", "models", "pull", "tiny-org/clip-zs", "--json"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), **online}.items()
             if k != "HF_HUB_OFFLINE"},
    )
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    info = json.loads(pulled.stdout)
    assert info["revision"] == model_commit and info["frame_encoder"] == "hf:tiny-org/tiny-clip"

    # 3. network off: everything comes from the cache, and no request reaches the hub
    before = len(hub.log)
    offline = {**online, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    out = python(
        "from video_mm.retrieval.model import from_pretrained\n"
        "from video_mm.features.backbones import create_backbone\n"
        "m = from_pretrained('tiny-org/clip-zs')\n"
        "b = create_backbone(m.backbone.name)\n"
        "print(m.name, m.embed_texts(['a dog']).shape, b.weights_id)\n", offline)
    assert out.endswith(f"(1, 24) hf:tiny-org/tiny-clip@{encoder_commit}")
    assert len(hub.log) == before
