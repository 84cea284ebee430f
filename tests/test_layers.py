"""The layers of ``docs/architecture.md`` are checked, not only documented: import-linter's
contracts (``[tool.importlinter]`` in pyproject.toml) hold for the tree, and break on an import
that runs up a layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` (first on the path), with the repository's
    contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", str(REPO / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def test_every_layer_contract_holds() -> None:
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout and "KEPT" in run.stdout


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    for package in ("video_mm", "workers"):
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "static"))
    guard = tmp_path / "video_mm" / "io" / "guard.py"
    guard.write_text(guard.read_text() + "\nfrom video_mm.pipeline import runner  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "video_mm.io.guard -> video_mm.pipeline.runner" in run.stdout
