"""Run a job: the stages in order, in three steps split by the resource they need.

- :func:`prepare` (CPU: probe, segment, thumbnails) writes the video's metadata and clips;
- :func:`analyse` (GPU: features, captions, embeddings) writes captions and embedding rows and
  returns the blob key of the clip vectors;
- :func:`publish` (index) puts the vectors in the index and turns the video ``ready``.

A Celery worker runs each step as one task (queues ``cpu``, ``gpu``, ``index``); :func:`run_job`
runs all three in this process. Both go through :func:`guarded`, which decides what an error means:
bad input (a non-transient :class:`~video_mm.errors.VideoMMError`) fails the job with its reason
and is never retried; transient errors (storage, index, database, network) are retried with
exponential backoff up to ``broker.max_retries``; anything else fails the job as an internal error.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from video_mm.errors import VideoError, VideoMMError
from video_mm.pipeline import stages
from video_mm.records import Clip
from video_mm.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors a retry can fix: the database or a network service was briefly away.
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OperationalError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, VideoMMError):
        return exc.transient
    return isinstance(exc, TRANSIENT_TYPES)


def reason(exc: BaseException, filename: str = "") -> str:
    """The job's error text: the typed error's code and message, or the internal error's type.
    A video error names the file as it was submitted, not the blob path it was read from."""
    if isinstance(exc, VideoError) and filename:
        return f"{exc.code}: {filename}: {exc.reason}"
    if isinstance(exc, VideoMMError):
        return f"{exc.code}: {exc}"
    return f"internal_error: {type(exc).__name__}: {exc}"


def backoff(settings: Settings, retries: int) -> float:
    """Exponential backoff with full jitter, so retries of many jobs do not arrive together."""
    cap = min(settings.broker.retry_backoff_max_s, settings.broker.retry_backoff_s * 2**retries)
    return random.uniform(cap / 2, cap)


# Seconds spent in each stage by this process (catalog writes of progress excluded): the
# benchmark's time per stage.
STAGE_SECONDS: Counter[str] = Counter()


# --- the per-process context ---------------------------------------------------------------------


@dataclass
class Context:
    """Catalog and blob store of one settings object; one per process, reused across jobs."""

    settings: Settings
    catalog: Any
    blobs: Any

    def progress(self, job_id: str) -> stages.Progress:
        """A callback that records a stage's own fraction as the job's overall progress, and the
        wall time since the previous report as that stage's (into :data:`STAGE_SECONDS`)."""
        names = stages.STAGES
        last = time.perf_counter()

        def report(stage: str, fraction: float) -> None:
            nonlocal last
            now = time.perf_counter()
            STAGE_SECONDS[stage] += now - last
            i = names.index(stage)
            lo = stages.PROGRESS[names[i - 1]] if i else 0.0
            hi = stages.PROGRESS[stage]
            self.catalog.update_job(job_id, stage=stage, progress=lo + (hi - lo) * fraction)
            last = time.perf_counter()

        return report

    @contextmanager
    def video_file(self, video_id: str) -> Any:
        video = self.catalog.get_video(video_id)
        suffix = Path(video.filename or "").suffix[:16]
        with self.blobs.local_path(video.blob_key, suffix=suffix) as path:
            yield path


@lru_cache(maxsize=8)
def _context(settings_json: str) -> Context:
    from video_mm.storage.blobs import BlobStore
    from video_mm.storage.catalog import Catalog

    settings = Settings.model_validate_json(settings_json)
    return Context(settings, Catalog.from_settings(settings), BlobStore.from_settings(settings))


def context(settings: Settings) -> Context:
    """The process's context for these settings (catalog connections are pooled, not reopened)."""
    return _context(settings.model_dump_json())


# --- the three steps ------------------------------------------------------------------------------


def prepare(ctx: Context, job_id: str) -> None:
    """probe -> segment -> thumbnails; the video's metadata and clips are written."""
    cat = ctx.catalog
    job = cat.get_job(job_id)
    report = ctx.progress(job_id)
    cat.update_job(job_id, state="running", stage="probe")
    if cat.get_video(job.video_id).state != "ready":  # a ready video stays searchable meanwhile
        cat.set_video_state(job.video_id, "processing")
    with ctx.video_file(job.video_id) as path:
        info = stages.probe_stage(path, ctx.settings)
        cat.set_video_info(job.video_id, info)
        report("probe", 1.0)
        clips = stages.segment_stage(path, info, job.video_id, ctx.settings)
        cat.upsert_clips(job.video_id, clips)
        report("segment", 1.0)

        def put(data: bytes) -> str:
            key = ctx.blobs.put(data)
            cat.attach_blob(job.video_id, key, "thumbnail")
            return key

        thumbs = stages.thumbnails_stage(path, clips, put, ctx.settings)
        cat.set_thumbnails({stages.clip_id(job.video_id, i): k for i, k in thumbs.items()})
        report("thumbnails", 1.0)


def _clips(ctx: Context, video_id: str) -> list[Clip]:
    return [Clip(video_id, c.index, c.start, c.end) for c in ctx.catalog.get_clips(video_id)]


def analyse(ctx: Context, job_id: str) -> str | None:
    """features -> caption -> embed -> write; returns the key of the clip-vectors blob (or None
    when no retrieval model is configured)."""
    cat = ctx.catalog
    job = cat.get_job(job_id)
    report = ctx.progress(job_id)
    cat.update_job(job_id, state="running", stage="features")
    models = stages.load_models(ctx.settings)
    clips = _clips(ctx, job.video_id)
    specs = models.feature_specs()
    with ctx.video_file(job.video_id) as path:
        feats = stages.features_stage(path, clips, specs, ctx.settings, report)
    captions = stages.caption_stage(models, feats)
    report("caption", 1.0)
    vectors = stages.embed_stage(models, feats)
    report("embed", 1.0)
    results = stages.Results(clips, captions, vectors, models.retrieval_name)
    stages.write_stage(cat, results)
    key = None
    if vectors is not None:
        key = ctx.blobs.put(stages.vectors_to_bytes(vectors))
        cat.attach_blob(job.video_id, key, "vectors")
    report("write", 1.0)
    return key


def publish(ctx: Context, job_id: str, vectors_key: str | None) -> None:
    """index -> ready: the video becomes searchable only now, with everything written."""
    from video_mm.index.base import open_index

    cat = ctx.catalog
    job = cat.get_job(job_id)
    cat.update_job(job_id, state="running", stage="index")
    report = ctx.progress(job_id)
    clips = _clips(ctx, job.video_id)
    ids = [stages.clip_id(c.video_id, c.index) for c in clips]
    vectors = None if vectors_key is None else stages.vectors_from_bytes(
        ctx.blobs.get(vectors_key)
    )
    if vectors is not None:
        index = open_index(ctx.settings, dim=vectors.shape[1])
        try:
            stages.index_stage(index, job.video_id, ids, vectors)
        finally:
            index.close()
    models = stages.load_models(ctx.settings)
    cat.mark_ready(
        job.video_id,
        captioners=list(models.captioners),
        embedding_model=models.retrieval_name if vectors is not None else None,
    )
    report("index", 1.0)
    cat.update_job(job_id, state="done", error=None)


def fail(ctx: Context, job_id: str, exc: BaseException) -> None:
    """End the job ``failed`` with its reason; the video is failed unless it was ready before."""
    job = ctx.catalog.get_job(job_id)
    video = ctx.catalog.get_video(job.video_id)
    why = reason(exc, video.filename or video.id)
    log.info("job %s failed: %s", job_id, why)
    ctx.catalog.update_job(job_id, state="failed", error=why)
    if video.state != "ready":
        ctx.catalog.set_video_state(job.video_id, "failed", error=why)


# --- in-process ---------------------------------------------------------------------------------


def guarded(
    ctx: Context, job_id: str, step: Callable[..., T], *args: Any, retries: int = 0
) -> T:
    """Run one step in-process, retrying transient errors with backoff; other errors fail the job
    and propagate."""
    while True:
        try:
            return step(ctx, job_id, *args)
        except Exception as exc:
            if is_transient(exc) and retries < ctx.settings.broker.max_retries:
                delay = backoff(ctx.settings, retries)
                log.warning("job %s: transient error, retry in %.1fs: %s", job_id, delay, exc)
                time.sleep(delay)
                retries += 1
                continue
            fail(ctx, job_id, exc)
            raise


def run_job(job_id: str, settings: Settings) -> str:
    """Run every stage of a job in this process; returns its final state (``done``/``failed``).

    Bad input is not an exception here: the job ends ``failed`` with the reason in the catalog.
    """
    ctx = context(settings)
    ctx.catalog.update_job(job_id, add_attempt=True)
    try:
        guarded(ctx, job_id, prepare)
        key = guarded(ctx, job_id, analyse)
        guarded(ctx, job_id, publish, key)
    except Exception:  # the reason is in the job; a folder of videos goes on with the next one
        log.debug("job %s failed", job_id, exc_info=True)
        return "failed"
    return "done"

