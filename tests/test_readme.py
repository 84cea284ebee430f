"""Every command in the README runs exactly as written.

The shell blocks are read from README.md and each line is run with ``bash -c`` in a scratch
folder holding the files they name (``clip.mp4`` and ``videos/`` are real MSVD clips), with
``vmm`` on ``PATH`` and this checkout on ``PYTHONPATH``. Lines that need Docker, a running server,
the network or pretrained weights absent offline are skipped, each with its reason below.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from video_mm.io.ffmpeg import run_ffmpeg

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# (pattern, reason): README lines that do not run here.
SKIPS = [
    (r"\bmake (demo|test)\b", "installs into .venv (the demo and suite are tested themselves)"),
    (r"hf:|--weights ResNet50|WEIGHTS_MIRROR", "needs pretrained weights (network or HF cache)"),
    (r"models/clip|data/msrvtt", "needs a pretrained CLIP and MSR-VTT videos (not offline)"),
    (r"vmm models pull ORG/NAME", "ORG/NAME is a placeholder for a hub repo (network)"),
    (r"docker|VMM_API_TOKEN=", "needs Docker Engine and Compose v2"),
    (r"^curl ", "needs the compose stack running (the API is tested in tests/api)"),
]
LONG_RUNNING = ("vmm serve", "vmm worker")


def readme_commands() -> list[str]:
    """The command lines of the README's ``bash`` blocks, continuation lines joined, comments
    and comment-only lines kept for bash to drop."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line + "\n"
            if not line.rstrip().endswith("\\"):
                commands.append(pending.strip())
                pending = ""
    return commands


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, command, flags=re.M):
            return reason
    return None


def test_readme_has_the_using_it_commands():
    commands = readme_commands()
    for expected in ("vmm probe clip.mp4 --json", "vmm synth data/synth", "vmm serve",
                     "vmm worker -Q cpu,gpu,index", "vmm search"):
        assert any(c.startswith(expected) for c in commands), expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_long(command: str, cwd: Path, env: dict[str, str], ready, prelude: str = "") -> None:
    """Start a long-running command, wait until ``ready(its output so far)`` holds, then stop it
    with SIGINT."""
    log = cwd.parent / "long.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", f"{prelude}exec {command}"], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ready(log.read_text()):
            if proc.poll() is not None:
                raise AssertionError(f"{command!r} exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{command!r} never became ready")
            time.sleep(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.integration
def test_every_readme_command_runs(tmp_path: Path, msvd14_videos: list[Path]):
    work = tmp_path / "work"
    (work / "videos").mkdir(parents=True)
    avis = [v for v in msvd14_videos if v.suffix == ".avi"]
    # clip.mp4: a real clip as H.264 MP4 (the MSVD files are AVI and GIF); videos/: two as they are
    run_ffmpeg(["-i", str(avis[0]), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-an",
                str(work / "clip.mp4")])
    for v in avis[1:3]:
        shutil.copy(v, work / "videos" / v.name)
    port = free_port()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "VMM_DATA_DIR": str(tmp_path / "vmm"),
        "VMM_API__PORT": str(port),
        "VMM_BROKER__URL": "",  # the embedded broker, private to this data dir
        "HF_HUB_OFFLINE": "1",
    }
    ran, skipped = [], []
    prelude = ""  # the README's `export` lines, in force for the commands after them
    for command in readme_commands():
        reason = skip_reason(command)
        if reason:
            skipped.append((command, reason))
            continue
        if command.startswith("vmm serve"):
            def answers(_: str) -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                        return r.status == 200
                except OSError:
                    return False
            run_long(command, work, env, answers, prelude)
        elif command.startswith("vmm worker"):  # Celery says "ready." once it has the broker
            run_long(command, work, env, lambda output: " ready." in output, prelude)
        else:
            done = subprocess.run(["bash", "-c", prelude + command], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (
                f"{command!r} exited {done.returncode}\n{done.stdout[-2000:]}\n"
                f"{done.stderr[-3000:]}")
            assert "Traceback" not in done.stderr, (command, done.stderr[-3000:])
            if command.startswith("export "):
                prelude += command + "\n"
        ran.append(command)
    assert any(c.startswith("vmm train reranker") for c in ran)
    print(f"ran {len(ran)} README commands; skipped:")
    for command, reason in skipped:
        print(f"  {command.splitlines()[0]}  ({reason})")
