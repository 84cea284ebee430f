"""Run a job: the stages in order, in three steps split by the resource they need.

- :func:`prepare` (CPU: probe, segment) writes the video's metadata and clips;
- :func:`analyse` (GPU: features, captions, embeddings) decodes each clip's frames once for its
  features and its thumbnail, writes thumbnails, captions and embedding rows and returns the blob
  key of the clip vectors;
- :func:`publish` (index) puts the vectors in the index and turns the video ``ready``.

:data:`STEPS` is the one table of them: each step's task name, its queue (``cpu``, ``gpu``,
``index``), its function, the stages it reports and whether its result is handed to the next step.
A Celery worker (``workers/``) runs each step as one task from that table; :func:`run_job` runs
all three in this process. Both go through :func:`guarded`, which decides what an error means:
bad input (a non-transient :class:`~video_mm.errors.VideoMMError`) fails the job with its reason
and is never retried; transient errors (storage, index, database, network) are retried with
exponential backoff up to ``broker.max_retries``; anything else fails the job as an internal error.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from video_mm.errors import VideoError, VideoMMError
from video_mm.pipeline import stages
from video_mm.pipeline.prefetch import Prefetched, Prefetcher
from video_mm.records import Clip, clip_id
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
# A job's progress is written at most this often within a step (a short video's stages end
# milliseconds apart, and a write per stage and clip was a catalog transaction each).
PROGRESS_INTERVAL_S = 0.25


def _span(stage: str) -> tuple[float, float]:
    """The share of a job's progress before ``stage`` starts and once it ends."""
    i = stages.STAGES.index(stage)
    return (stages.PROGRESS[stages.STAGES[i - 1]] if i else 0.0), stages.PROGRESS[stage]


class JobProgress:
    """Records a step's stages as the job's stage and overall progress: a step's start and end
    are always written, reports between them at most every :data:`PROGRESS_INTERVAL_S`. Also
    adds the wall time since the previous report to that stage's :data:`STAGE_SECONDS`."""

    def __init__(self, catalog: Any, job_id: str) -> None:
        self.catalog, self.job_id = catalog, job_id
        self.last = self.written = time.perf_counter()
        self.pending: dict[str, Any] | None = None

    def start(self, stage: str) -> None:
        """The step running ``stage`` begins: the job shows it at once (the worker policy reads
        ``running`` and the stage to tell an interrupted step from a new one)."""
        self._write(state="running", stage=stage, progress=_span(stage)[0])
        self.last = time.perf_counter()

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        STAGE_SECONDS[stage] += now - self.last
        lo, hi = _span(stage)
        self.pending = dict(stage=stage, progress=lo + (hi - lo) * fraction)
        if now - self.written >= PROGRESS_INTERVAL_S:
            self.flush()
        self.last = time.perf_counter()

    def flush(self) -> None:
        """Write the latest report if it was held back (call at the end of a step)."""
        if self.pending is not None:
            self._write(**self.pending)

    def _write(self, **values: Any) -> None:
        self.catalog.update_job(self.job_id, **values)
        self.pending, self.written = None, time.perf_counter()


# --- the per-process context ---------------------------------------------------------------------


@dataclass
class Context:
    """Catalog and blob store of one settings object; one per process, reused across jobs."""

    settings: Settings
    catalog: Any
    blobs: Any
    _index: Any = field(default=None, repr=False)
    _index_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, job_id: str) -> JobProgress:
        return JobProgress(self.catalog, job_id)

    @contextmanager
    def video_file(self, video_id: str) -> Any:
        video = self.catalog.get_video(video_id)
        suffix = Path(video.filename or "").suffix[:16]
        with self.blobs.local_path(video.blob_key, suffix=suffix) as path:
            yield path

    @contextmanager
    def index(self, dim: int) -> Iterator[Any]:
        """The process's handle on the index, opened once and kept across jobs: a publish then
        costs its own change (one journal record) and other processes' new records, not a load
        of the whole index (17 s at 10M clips). A failed use drops the handle, so the next job
        opens the index afresh."""
        from video_mm.index.base import open_index

        with self._index_lock:
            if self._index is None:
                self._index = open_index(self.settings, dim=dim)
            index = self._index
        try:
            yield index
        except BaseException:
            with self._index_lock:
                if self._index is index:
                    self._index = None
            try:
                index.close()
            except Exception:  # the job's own error is the one to report; a retry re-indexes
                log.warning("closing the index after a failed publish failed", exc_info=True)
            raise


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


def prepare(ctx: Context, job_id: str) -> list[Clip]:
    """probe -> segment; the video's metadata and clips are written, and the clips returned
    (decoding ahead starts from them without reading them back; not handed to the next step)."""
    cat = ctx.catalog
    job = cat.get_job(job_id)
    report = ctx.progress(job_id)
    report.start("probe")
    if cat.get_video(job.video_id).state != "ready":  # a ready video stays searchable meanwhile
        cat.set_video_state(job.video_id, "processing")
    with ctx.video_file(job.video_id) as path:
        info = stages.probe_stage(path, ctx.settings)
        cat.set_video_info(job.video_id, info)
        report("probe", 1.0)
        clips = stages.segment_stage(path, info, job.video_id, ctx.settings)
        cat.upsert_clips(job.video_id, clips)
        report("segment", 1.0)
    report.flush()
    return clips


def _clips(ctx: Context, video_id: str) -> list[Clip]:
    return [Clip(video_id, c.index, c.start, c.end) for c in ctx.catalog.get_clips(video_id)]


def decoding(settings: Settings) -> Any:
    """How the pipeline decodes captions: ``Settings.models`` as a search's options."""
    from video_mm.models.decoding import Decoding

    return Decoding.from_settings(settings.models)


def analyse(ctx: Context, job_id: str, ahead: DecodingAhead | None = None) -> str | None:
    """features (and thumbnails, from the same decode) -> caption -> embed -> write; returns the
    key of the clip-vectors blob (or None when no retrieval model is configured). ``ahead``: the
    video's frames already decoding in a prefetch thread (:func:`run_jobs`); read once, so a
    retry decodes for itself."""
    cat = ctx.catalog
    job = cat.get_job(job_id)
    report = ctx.progress(job_id)
    report.start("features")
    models = stages.load_models(ctx.settings)
    ahead = ahead if ahead is not None and ahead.frames.claim() else None
    clips = ahead.clips if ahead is not None else _clips(ctx, job.video_id)
    specs = models.feature_specs()
    if ahead is not None:
        decoded = stages.features_stage(ahead.path, clips, specs, ctx.settings, report,
                                        decoded=ahead.frames)
    else:
        with ctx.video_file(job.video_id) as path:
            decoded = stages.features_stage(path, clips, specs, ctx.settings, report)
    if decoded.warning:  # a damaged file: what decoding found lost is kept on the video
        cat.set_video_warning(job.video_id, decoded.warning)
    thumbs = {i: ctx.blobs.put(data) for i, data in decoded.thumbnails.items()}
    cat.attach_blobs(job.video_id, thumbs.values(), "thumbnail")
    cat.set_thumbnails({clip_id(job.video_id, i): k for i, k in thumbs.items()})
    report("features", 1.0)
    captions = stages.caption_stage(models, decoded.features, decoding(ctx.settings))
    report("caption", 1.0)
    vectors = stages.embed_stage(models, decoded.features)
    report("embed", 1.0)
    results = stages.Results(clips, captions, vectors, models.retrieval_name)
    stages.write_stage(cat, results)
    key = None
    if vectors is not None:
        key = ctx.blobs.put(stages.vectors_to_bytes(vectors))
        cat.attach_blob(job.video_id, key, "vectors")
    rerank_features = stages.rerank_features_stage(models, clips, decoded.features)
    if rerank_features is not None:  # what search re-ranks with (video_mm.rerank.stored)
        from video_mm.rerank.stored import CLIP_FEATURES

        cat.attach_blob(job.video_id, ctx.blobs.put(rerank_features), CLIP_FEATURES)
    report("write", 1.0)
    report.flush()
    return key


def publish(ctx: Context, job_id: str, vectors_key: str | None) -> None:
    """index -> ready: the video becomes searchable only now, with everything written."""
    cat = ctx.catalog
    job = cat.get_job(job_id)
    report = ctx.progress(job_id)
    report.start("index")
    clips = _clips(ctx, job.video_id)
    ids = [c.id for c in clips]
    vectors = None if vectors_key is None else stages.vectors_from_bytes(
        ctx.blobs.get(vectors_key)
    )
    if vectors is not None:
        with ctx.index(vectors.shape[1]) as index:
            stages.index_stage(index, job.video_id, ids, vectors)
    models = stages.load_models(ctx.settings)
    cat.mark_ready(
        job.video_id,
        captioners=list(models.captioners),
        embedding_model=models.retrieval_name if vectors is not None else None,
    )
    report("index", 1.0)  # timed only: the job's last write below says it
    # what it could not do for lack of a model is recorded, not a bare "done"
    gaps = [g for g, missing in ((stages.NO_CAPTIONER, not models.captioners),
                                 (stages.NO_RETRIEVAL, models.retrieval is None)) if missing]
    cat.update_job(job_id, state="done", stage="index", progress=1.0, error=None,
                   notes="; ".join(gaps) or None)


# --- the table of steps ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a job: the task that runs it, the queue of workers with the resource it needs,
    its function ``run(ctx, job_id, *handed)``, the stages it reports, and whether its result is
    handed to the next step (as the argument after the job id)."""

    name: str
    queue: str
    run: Callable[..., Any]
    stages: tuple[str, ...]
    hands_on: bool = False

    def handed(self, output: Any) -> tuple[Any, ...]:
        """What the next step gets after the job id, from this step's result."""
        return (output,) if self.hands_on else ()


STEPS = (
    Step("vmm.prepare", "cpu", prepare, ("probe", "segment")),
    Step("vmm.analyse", "gpu", analyse, ("features", "caption", "embed", "write"), hands_on=True),
    Step("vmm.publish", "index", publish, ("index",)),
)
QUEUES = tuple(s.queue for s in STEPS)


def step(name: str) -> Step:
    """The step a task name runs."""
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"no pipeline step {name!r}")


def next_step(current: Step) -> Step | None:
    """The step after ``current``; None after the last."""
    i = STEPS.index(current) + 1
    return STEPS[i] if i < len(STEPS) else None


def stages_from(current: Step) -> set[str]:
    """The stages of ``current`` and of the steps after it."""
    return {stage for s in STEPS[STEPS.index(current):] for stage in s.stages}


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


@dataclass
class DecodingAhead:
    """A prepared job's video, held open, its clips, and their frames decoding in the prefetch
    thread."""

    path: Path
    clips: list[Clip]
    frames: Prefetched


@dataclass
class _Started:
    """A job whose first step ran (or failed) in :func:`run_jobs`, waiting for the rest."""

    job_id: str
    held: ExitStack  # its heartbeat, its video file, its prefetch request
    handed: tuple[Any, ...] = ()
    ahead: DecodingAhead | None = None
    failed: bool = False


def _decode_ahead(
    ctx: Context, job_id: str, prefetcher: Prefetcher, held: ExitStack, clips: list[Clip]
) -> DecodingAhead | None:
    """Start decoding the frames of the prepared job's ``clips`` in the prefetch thread (None when
    no model reads frames: its features stage only cuts thumbnails)."""
    job = ctx.catalog.get_job(job_id)
    specs = stages.load_models(ctx.settings).feature_specs()
    if not specs:
        return None
    path = held.enter_context(ctx.video_file(job.video_id))
    frames = prefetcher.request(
        partial(stages.decode_frames, path, clips, specs, ctx.settings),
        ctx.settings.features.queue_size,
    )
    held.callback(frames.close)
    return DecodingAhead(path, clips, frames)


def _start(ctx: Context, job_id: str, prefetcher: Prefetcher | None) -> _Started:
    """Count the attempt, start its heartbeat, run the first step and, with a prefetcher, start
    decoding the video's frames ahead."""
    from video_mm.pipeline.lifecycle import heartbeat

    ctx.catalog.update_job(job_id, add_attempt=True)
    held = ExitStack()
    held.enter_context(heartbeat(ctx.catalog, job_id, ctx.settings.reaper.heartbeat_s))
    started = _Started(job_id, held)
    try:
        first = STEPS[0]
        clips = guarded(ctx, job_id, first.run)  # prepare's clips
        started.handed = first.handed(clips)
        if prefetcher is not None:
            started.ahead = guarded(ctx, job_id, _decode_ahead, prefetcher, held, clips)
    except Exception:  # the reason is in the job; a folder of videos goes on with the next one
        log.debug("job %s failed", job_id, exc_info=True)
        held.close()
        started.failed = True
    return started


def _finish(ctx: Context, started: _Started) -> tuple[str, str]:
    job_id = started.job_id
    if started.failed:
        return job_id, "failed"
    try:
        with started.held:
            handed = started.handed
            for s in STEPS[1:]:
                run = partial(analyse, ahead=started.ahead) if s.run is analyse else s.run
                handed = s.handed(guarded(ctx, job_id, run, *handed))
    except Exception:
        log.debug("job %s failed", job_id, exc_info=True)
        return job_id, "failed"
    return job_id, "done"


def run_jobs(job_ids: Iterable[str], settings: Settings) -> Iterator[tuple[str, str]]:
    """Run jobs one after another in this process, each as :func:`run_job` does; yields
    ``(job id, final state)`` in order. With ``features.decode_ahead = n > 0``, the next ``n``
    jobs are prepared (probe, segment) and their frames decode in a background thread
    (:class:`~video_mm.pipeline.prefetch.Prefetcher`) while the current one is analysed and
    published, so decoding runs beside inference, captioning and catalog writes."""
    n = settings.features.decode_ahead
    if n == 0:
        for job_id in job_ids:
            yield job_id, run_job(job_id, settings)
        return
    ctx = context(settings)
    pending: deque[_Started] = deque()
    with Prefetcher() as prefetcher:
        try:
            try:
                for job_id in job_ids:
                    pending.append(_start(ctx, job_id, prefetcher))
                    while len(pending) > n:
                        yield _finish(ctx, pending.popleft())
            except Exception:  # the job ids' source failed: the jobs started still finish
                while pending:
                    yield _finish(ctx, pending.popleft())
                raise
            while pending:
                yield _finish(ctx, pending.popleft())
        finally:
            for started in pending:  # interrupted: release what the waiting jobs hold
                started.held.close()


def run_job(job_id: str, settings: Settings) -> str:
    """Run every stage of a job in this process; returns its final state (``done``/``failed``).

    Bad input is not an exception here: the job ends ``failed`` with the reason in the catalog.
    """
    ctx = context(settings)
    return _finish(ctx, _start(ctx, job_id, None))[1]

