"""Submit a video: store its bytes once, record the video and a queued job.

The blob is content-addressed, so the same upload twice is stored once and gets the same video id
(its sha256). A job is keyed by an idempotency key: by default the video id plus a fingerprint of
the settings that shape the results (segmentation, sampling, features, models, decoding), so
submitting the same video again under the same settings returns the existing job instead of
redoing the work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from video_mm.settings import Settings

# the [models] settings that change the captions the pipeline writes (models.decoding.Decoding)
DECODING_SETTINGS = {"beam_size", "max_caption_len", "length_penalty", "no_repeat_ngram",
                     "no_repeat_adjacent", "repetition_penalty", "n_best"}


@dataclass(frozen=True)
class Submission:
    video_id: str
    job_id: str
    created: bool  # False when the idempotency key matched an existing job


def results_fingerprint(settings: Settings) -> str:
    """A short hash of every setting that changes what the pipeline writes."""
    from video_mm.artifacts import model_dirs

    captioners, retrieval = model_dirs(settings)
    shape = {
        "segment": settings.segment.model_dump(),
        "sampling": settings.sampling.model_dump(),
        "features": settings.features.model_dump(include={"backbone", "weights"}),
        "captioners": [str(p.resolve()) for p in captioners],
        "retrieval": str(retrieval.resolve()) if retrieval else "",
        "decoding": settings.models.model_dump(include=DECODING_SETTINGS),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def submit_video(
    source: Path | str | BinaryIO,
    *,
    settings: Settings,
    filename: str | None = None,
    idempotency_key: str | None = None,
) -> Submission:
    """Store ``source`` (a path or a binary file object) and queue a job for it.

    Nothing is decoded here: a bad file is accepted and its job fails with the reason, so callers
    see one error path (the job) for every input.
    """
    from video_mm.pipeline.runner import context

    ctx = context(settings)
    if filename is None:
        filename = Path(source).name if isinstance(source, str | Path) else ""
    max_bytes = settings.io.max_file_bytes
    key = ctx.blobs.put(source, max_bytes=max_bytes)
    video_id = key
    ctx.catalog.add_video(video_id, blob_key=key, filename=filename)
    job_key = idempotency_key or f"{video_id}:{results_fingerprint(settings)}"
    job, created = ctx.catalog.create_job(video_id, idempotency_key=job_key)
    return Submission(video_id=video_id, job_id=job.id, created=created)
