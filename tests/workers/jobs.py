"""Submitting test videos as queued jobs, shared by the worker integration tests."""

from __future__ import annotations

from pathlib import Path

from video_mm.pipeline import enqueue, submit_video
from video_mm.settings import Settings


def submit_all(settings: Settings, paths: list[Path]) -> list[str]:
    """Store each file and queue its job; the job ids, in order."""
    jobs = []
    for p in paths:
        sub = submit_video(p, settings=settings)
        assert enqueue(sub.job_id, settings, queue=True) == "queued"
        jobs.append(sub.job_id)
    return jobs
