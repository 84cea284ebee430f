"""Torchvision weights fetched from a real HTTP server on 127.0.0.1: download, cache hit,
hash failure, truncation, 404, server down, disk full, offline refusal."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from video_mm.errors import (
    UnknownWeights,
    WeightsCorrupt,
    WeightsDownloadFailed,
    WeightsNotFound,
)
from video_mm.features.backbones import Fetch, create_backbone
from video_mm.features.weights import resolve_weights_file


class WeightsServer:
    """Serves ``files`` (path -> bytes) and counts requests; ``truncate`` paths announce their
    full length but send half of it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in owner.truncate else body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1; these tests download from 127.0.0.1."""
    for name in ("HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    s = WeightsServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"weight": torch.arange(64, dtype=torch.float32).view(8, 8)}, buf)
    return buf.getvalue()


def named(data: bytes, arch: str = "tiny") -> str:
    """torchvision's file naming: ``<arch>-<first 8 hex of the sha256>.pth``."""
    return f"{arch}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def leftovers(home: Path) -> list[Path]:
    folder = home / "hub" / "checkpoints"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_download_then_cache_hit_without_a_request(server: WeightsServer, tmp_path: Path) -> None:
    data = state_dict_bytes()
    name = named(data)
    server.files[f"/models/{name}"] = data
    url = f"{server.base}/models/{name}"
    path = resolve_weights_file(url, torch_home=tmp_path, progress=False)
    assert path == tmp_path / "hub" / "checkpoints" / name
    assert path.read_bytes() == data
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weight"], torch.arange(64, dtype=torch.float32).view(8, 8))
    assert server.requests == [f"/models/{name}"]
    # second run: read from the cache, no request reaches the server
    assert resolve_weights_file(url, torch_home=tmp_path, progress=False) == path
    assert len(server.requests) == 1
    assert leftovers(tmp_path) == [path]  # no temporary file left beside it


def test_mirror_serves_the_same_file_name(server: WeightsServer, tmp_path: Path) -> None:
    data = state_dict_bytes()
    name = named(data)
    server.files[f"/mirror/torchvision/{name}"] = data
    official = f"https://download.pytorch.org/models/{name}"  # never contacted
    path = resolve_weights_file(
        official, torch_home=tmp_path, mirror=f"{server.base}/mirror/torchvision/", progress=False
    )
    assert path.read_bytes() == data and server.requests == [f"/mirror/torchvision/{name}"]


def test_hash_mismatch_is_refused_and_nothing_kept(server: WeightsServer, tmp_path: Path) -> None:
    data = state_dict_bytes()
    name = named(b"other bytes")
    server.files[f"/models/{name}"] = data
    with pytest.raises(WeightsCorrupt, match="sha256 does not start with"):
        resolve_weights_file(f"{server.base}/models/{name}", torch_home=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_refused(server: WeightsServer, tmp_path: Path) -> None:
    data = state_dict_bytes()
    name = named(data)
    server.files[f"/models/{name}"] = data
    server.truncate.add(f"/models/{name}")
    with pytest.raises(WeightsCorrupt, match=r"cut off|truncated"):
        resolve_weights_file(f"{server.base}/models/{name}", torch_home=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_404_and_server_down(server: WeightsServer, tmp_path: Path) -> None:
    with pytest.raises(WeightsDownloadFailed, match="HTTP 404") as err:
        resolve_weights_file(f"{server.base}/models/x-0123abcd.pth", torch_home=tmp_path,
                             progress=False)
    assert not err.value.transient and "\n" not in str(err.value)
    port = server.httpd.server_address[1]
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(WeightsDownloadFailed, match="unreachable") as err:
        resolve_weights_file(f"http://127.0.0.1:{port}/models/x-0123abcd.pth",
                             torch_home=tmp_path, progress=False, timeout_s=5)
    assert err.value.transient  # a retry can help
    assert leftovers(tmp_path) == []


def test_offline_never_touches_the_network(
    server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = state_dict_bytes()
    name = named(data)
    server.files[f"/models/{name}"] = data
    url = f"{server.base}/models/{name}"
    with pytest.raises(WeightsNotFound) as err:
        resolve_weights_file(url, torch_home=tmp_path, offline=True)
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value) and name in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound):
        resolve_weights_file(url, torch_home=tmp_path)
    assert server.requests == []


def test_disk_full_leaves_nothing(server: WeightsServer, tmp_path: Path) -> None:
    """ENOSPC simulated honestly: the download runs in a child whose file-size limit (RLIMIT_FSIZE)
    is smaller than the file, so its write fails with EFBIG as on a full disk."""
    data = state_dict_bytes() + bytes(200_000)
    name = named(data)
    server.files[f"/models/{name}"] = data
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
        "from video_mm.features.weights import resolve_weights_file\n"
        "from video_mm.errors import WeightsDownloadFailed\n"
        "try:\n"
        f"    resolve_weights_file({server.base + '/models/' + name!r}, "
        f"torch_home={str(tmp_path)!r}, progress=False)\n"
        "except WeightsDownloadFailed as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 3, out.stderr
    assert "no space left" in out.stdout
    assert leftovers(tmp_path) == []


def test_backbone_weights_name_goes_through_the_mirror(
    server: WeightsServer, tmp_path: Path
) -> None:
    """``create_backbone`` asks the mirror for torchvision's own file name; bytes that do not hash
    to the name's prefix are refused and not cached."""
    server.files["/tv/resnet18-f37072fd.pth"] = state_dict_bytes()
    fetch = Fetch(torch_home=tmp_path, mirror=f"{server.base}/tv", progress=False)
    with pytest.raises(WeightsCorrupt):
        create_backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1", fetch=fetch)
    assert server.requests == ["/tv/resnet18-f37072fd.pth"] and leftovers(tmp_path) == []
    with pytest.raises(WeightsNotFound, match=r"resnet18-f37072fd\.pth"):
        create_backbone("resnet18", "DEFAULT", fetch=Fetch(torch_home=tmp_path, offline=True))


def test_unknown_weights_name() -> None:
    with pytest.raises(UnknownWeights, match="IMAGENET1K_V1"):
        create_backbone("resnet18", "IMAGENET9K_V7")
    with pytest.raises(UnknownWeights, match="ResNet18_Weights"):
        create_backbone("resnet18", "ResNet50_Weights.IMAGENET1K_V2")
