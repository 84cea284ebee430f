"""Installed, not only editable: a wheel built from this tree, installed into a fresh virtual
environment, finds its configs (model configs, default.toml, training TOMLs) and runs the CLI:
``vmm --help``, ``vmm synth`` and a short ``vmm train captioner``.

The fresh environment borrows the heavy dependencies (torch, ...) from the running interpreter's
site-packages through ``.pth`` lines, which adds the folder to the path without running its own
``.pth`` files, so the editable install of the checkout is not what gets imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
SOURCES = ("video_mm", "workers", "configs", "pyproject.toml", "README.md")


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this tree installed (not editable)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:  # build from a copy: an in-tree build would leave build/ in the checkout
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("video_mm-*.whl")
    env_dir = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env_dir)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    # every site-packages folder this interpreter sees (a venv may itself borrow from another)
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    run(sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "-q",
        "--no-deps", "--no-build-isolation", "--ignore-installed", wheel)
    return env_dir


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMM_", "PYTHON"))}
    return env | {"VMM_DATA_DIR": str(tmp / "data")}


def test_the_installed_wheel_runs_the_cli(venv: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    where = run(venv / "bin" / "python", "-c",
                "import video_mm.settings as s; print(s.__file__); print(s.CONFIG_DIR)",
                env=env, cwd=tmp_path).split()
    site = next((venv / "lib").glob("python*/site-packages"))
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel, not the checkout

    vmm = venv / "bin" / "vmm"
    help_text = run(vmm, "--help", env=env, cwd=tmp_path)
    assert "synth" in help_text and "worker" in help_text  # workers' command, by entry point
    data = tmp_path / "synth"
    summary = json.loads(run(vmm, "synth", data, "--n-videos", 12, "--size", 64, "--frames", 8,
                             "--json", env=env, cwd=tmp_path))
    assert summary["videos"] == 12
    out = tmp_path / "run"
    printed = run(
        vmm, "train", "captioner", "--data", data, "--arch", "meanpool", "--out", out,
        "--epochs", 2, "--n-frames", 4, "--train-split", "all", "--val-split", "all",
        "--device", "cpu", "--json", env=env, cwd=tmp_path,
    )
    result = json.loads(printed)  # only the summary: epoch lines go to stderr
    assert result["epochs_run"] == 2 and Path(result["best"]) == out / "best"
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["model"]["arch"] == "meanpool"  # built from the packaged configs/models
    assert (out / "best" / "features.json").is_file()
