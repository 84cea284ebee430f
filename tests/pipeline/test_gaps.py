"""No silent emptiness: a pipeline without a captioner or a retrieval model says so at start and
every job records what it could not do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from video_mm.pipeline.stages import NO_CAPTIONER, NO_RETRIEVAL, gap_messages, model_gaps
from video_mm.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_gaps_follow_the_configuration(tmp_path: Path, tiny_models: dict) -> None:
    bare = Settings(data_dir=tmp_path / "vmm")
    assert model_gaps(bare) == [NO_CAPTIONER, NO_RETRIEVAL]
    assert any("vmm models zero-shot" in m for m in gap_messages(bare))
    full = Settings(data_dir=tmp_path / "vmm", models={
        "captioners": [str(p) for p in tiny_models["captioners"]],
        "retrieval": str(tiny_models["retrieval"])})
    assert model_gaps(full) == []


def test_index_without_models_says_so_and_jobs_record_it(
    tmp_path: Path, msvd14_videos: list[Path]
) -> None:
    env = {"VMM_DATA_DIR": str(tmp_path / "vmm"), "VMM_SAMPLING__N_FRAMES": "2",
           "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "video_mm", "index", str(msvd14_videos[0]),
                          "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "note: no captioner configured" in run.stderr
    assert "note: no retrieval model configured" in run.stderr
    [row] = json.loads(run.stdout)
    assert row["state"] == "done" and row["notes"] == [NO_CAPTIONER, NO_RETRIEVAL]
