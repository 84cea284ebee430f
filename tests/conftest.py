"""Shared fixtures: real data from ../shared/data and settings isolated per test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from video_mm.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VMM_SHARED_DATA", REPO.parent / "shared" / "data"))
# Tests never need the network: weights and hub models come from local servers and caches only
# (tests of downloading lift this for themselves).
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout; its absence is an error, not a skip."""
    if not (SHARED_DATA / "PROVENANCE.md").exists():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set VMM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def msvd14_videos(shared_data: Path) -> list[Path]:
    videos = sorted((shared_data / "msvd14" / "videos").iterdir())
    assert len(videos) == 14
    return videos


@pytest.fixture(scope="session")
def msvd14_captions(shared_data: Path) -> dict[str, list[str]]:
    """Training captions of the 14 real clips, by video id (held-out ones are for evaluation)."""
    data = json.loads((shared_data / "msvd14" / "captions.json").read_text())
    return {v["video_id"]: v["captions"] for v in data["videos"]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose every file lives under this test's temporary directory."""
    return Settings(data_dir=tmp_path / "vmm")
