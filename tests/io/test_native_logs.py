"""Decord's log lines (its FFmpeg's and its own) go to the ``video_mm.native`` logger at debug
level, never to the process's real stderr, and are counted; a forked child (a Celery prefork
worker) captures its own. Each case runs in a child process, so its real file descriptor 2 is
what is checked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.io import damaged_corpus

corpus = damaged_corpus.load()
NATIVE = ("[h264 @", "[mov,mp4", ".cc:", "Traceback")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("native")
    corpus.make_corpus(d)
    return d


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(damaged_corpus.ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


READ_WITH_DECORD = """
    import logging, sys
    import numpy as np
    from video_mm.io import open_video
    from video_mm.io.native_logs import native_errors

    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    native = logging.getLogger("video_mm.native")
    native.addHandler(Keep())
    native.setLevel(logging.DEBUG)

    def read(path):
        before = native_errors()
        with open_video(path, size=32, backend="decord") as reader:
            reader.get_frames(np.arange(len(reader)))
            return native_errors() - before, reader.warning
"""


@pytest.mark.timeout(120)
def test_decord_lines_go_to_the_debug_logger(workdir: Path) -> None:
    run = run_child(
        READ_WITH_DECORD
        + """
    counted, warning = read(sys.argv[1])
    assert counted > 0, counted
    assert any(line.startswith("[h264 @") for line in lines), lines
    assert warning.startswith("Decord's decoder reported damage in frames"), warning
    counted, warning = read(sys.argv[2])
    assert (counted, warning) == (0, ""), (counted, warning)  # a sound file says nothing
    print("ok")
    """,
        str(workdir / "flip_middle.mp4"),
        str(workdir / "good.mp4"),
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    assert not any(s in run.stderr for s in NATIVE), run.stderr


@pytest.mark.timeout(120)
def test_a_forked_child_captures_its_own_lines(workdir: Path) -> None:
    run = run_child(
        READ_WITH_DECORD
        + """
    import os
    read(sys.argv[2])  # Decord imported and the capture made before the fork
    seen = native_errors()
    pid = os.fork()
    if pid == 0:
        counted, _ = read(sys.argv[1])
        os._exit(0 if counted > 0 and any(line.startswith("[h264 @") for line in lines) else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), native_errors() - seen)  # none came to the parent
    """,
        str(workdir / "flip_middle.mp4"),
        str(workdir / "good.mp4"),
    )
    assert run.returncode == 0 and run.stdout.split() == ["0", "0"], (run.stdout, run.stderr)
    assert not any(s in run.stderr for s in NATIVE), run.stderr
