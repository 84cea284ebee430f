"""The main job: submit a video, run its stages (in-process or on Celery workers), track the job.

``submit_video`` stores a video and queues a job; ``enqueue`` runs it here or sends it to workers;
``run_job`` is the in-process runner. The stages themselves are in :mod:`.stages`.
"""

from video_mm.pipeline.dispatch import enqueue
from video_mm.pipeline.runner import run_job
from video_mm.pipeline.submit import Submission, submit_video

__all__ = ["Submission", "enqueue", "run_job", "submit_video"]
