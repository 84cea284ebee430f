"""The Docker deployment, checked without a Docker engine: `docker compose config` validates and
resolves compose.yaml (the client only, no daemon), and the images install the way the README does.

The compose client is Docker's `docker compose` plugin where installed, else Debian's
`docker-compose` (`apt-get install -y docker-compose`, which .ci/run does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE_CMD = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE_CMD is None,
    reason="no compose client: install Docker's compose plugin or `apt-get install docker-compose`",
)


def _config(*args: str, token: str | None = "t0ken") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VMM_API_TOKEN"}
    if token is not None:
        env["VMM_API_TOKEN"] = token
    assert COMPOSE_CMD is not None
    return subprocess.run(
        [*COMPOSE_CMD, "-f", str(COMPOSE), *args, "config"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )


@needs_compose
def test_compose_config_resolves() -> None:
    done = _config("--profile", "gpu")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) - {"models"} == {"api", "worker-cpu", "worker-gpu", "redis", "postgres",
                                          "minio", "minio-bucket"}
    # the `models` tool service (profile "tools") puts models in place: pull, zero-shot, list
    tool = _config("--profile", "tools")
    models = yaml.safe_load(tool.stdout)["services"]["models"]
    assert models["entrypoint"] == ["vmm", "models"] and models["profiles"] == ["tools"]
    assert any((v.get("target") if isinstance(v, dict) else v.split(":")[1]) == "/models"
               and not (v.get("read_only") if isinstance(v, dict) else v.endswith(":ro"))
               for v in models["volumes"])
    api = services["api"]
    env = api["environment"]
    assert env["VMM_API_TOKEN"] == "t0ken"
    assert env["VMM_CATALOG__URL"].startswith("postgresql+psycopg://vmm:")
    assert env["VMM_BROKER__URL"] == "redis://redis:6379/0"
    assert env["VMM_STORAGE__URL"].startswith("s3://")
    assert '"endpoint_url": "http://minio:9000"' in env["VMM_STORAGE__OPTIONS"]
    assert api["command"][:2] == ["vmm", "serve"]
    # Workers share the API's settings; the GPU one reserves a GPU.
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["command"][:2] == ["vmm", "worker"]
        assert {k: v for k, v in services[name]["environment"].items()
                if k != "VMM_FEATURES__DEVICE"} == env
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # Data and models are volumes, not image layers.
    for name in ("api", "worker-cpu", "worker-gpu"):
        targets = {str(v).split(":")[1] if isinstance(v, str) else v["target"]
                   for v in services[name]["volumes"]}
        assert {"/data", "/models"} <= targets


@needs_compose
def test_compose_settings_are_valid_video_mm_settings() -> None:
    """The environment compose gives the API builds a Settings object (JSON values included)."""
    from video_mm.settings import Settings

    env = yaml.safe_load(_config().stdout)["services"]["api"]["environment"]
    old = dict(os.environ)
    try:
        os.environ.update({k: str(v) for k, v in env.items()})
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert settings.api_tokens == ["t0ken"]
    assert settings.storage.options["endpoint_url"] == "http://minio:9000"
    assert settings.catalog_url.startswith("postgresql+psycopg://")
    assert settings.models.captioners == []


@needs_compose
def test_compose_refuses_to_start_without_a_token() -> None:
    done = _config(token=None)
    assert done.returncode != 0
    assert "VMM_API_TOKEN" in done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_like_the_readme_and_run_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    makefile = (REPO / "Makefile").read_text()
    stamp = re.search(r"^STAMP := \$\(VENV\)/(\S+)", makefile, re.M)
    venv = re.search(r"^VENV := (\S+)", makefile, re.M)
    assert stamp and venv
    # The Makefile target `make demo` / `make test` build on (python3.11 venv + pip install -e).
    assert f"RUN make {venv[1]}/{stamp[1]} PY=python3.11" in text
    assert "pip install -q -e '.[dev]'" in makefile
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'VOLUME ["/data", "/models"]' in text
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").exists()
