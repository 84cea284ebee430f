"""Batched feature extraction with decoding overlapped with inference.

A producer thread decodes (and, on CPU, preprocesses) the next clips while the caller's thread runs
the backbone; a bounded queue (``features.queue_size`` clips) keeps memory flat. Frames of several
clips are packed into full batches of ``features.batch_size`` and the results are split back per
clip, in input order. Inference runs a batch-norm-folded copy of the backbone under
``torch.inference_mode()`` in channels_last memory; on CUDA with AMP (bf16/fp16), pinned host
memory and non-blocking copies, on CPU in ``features.precision`` (float32; bfloat16 autocast; or
int8, see :mod:`video_mm.features.quantize`); ``features.compile`` adds ``torch.compile``.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from video_mm.artifacts import resolve_device
from video_mm.errors import ConfigError, VideoMMError
from video_mm.features.backbones import Backbone, create_backbone, fetch_settings
from video_mm.features.cache import CacheKey, FeatureCache, file_sha256, window_sampler
from video_mm.io.sampling import sample_frames
from video_mm.records import ClipFeatures, FrameBatch
from video_mm.settings import FeatureSettings, IOSettings, SamplingSettings

Job = TypeVar("Job")
_END = object()


@dataclass
class _Pending:
    """One clip in flight: its frames' features arrive batch by batch."""

    job: Any
    result: FrameBatch | ClipFeatures | VideoMMError
    remaining: int = 0
    pooled: list[torch.Tensor] = field(default_factory=list)
    grids: list[torch.Tensor] = field(default_factory=list)


class FeatureExtractor:
    """A backbone on a device plus the batching pipeline that feeds it."""

    def __init__(
        self,
        settings: FeatureSettings | None = None,
        *,
        backbone: Backbone | None = None,
        device: str | None = None,
        grid: bool | None = None,
    ) -> None:
        self.settings = settings = settings or FeatureSettings()
        self.device = resolve_device(device or settings.device)
        self.cuda = self.device.type == "cuda"
        self.precision = settings.precision
        if settings.threads and not self.cuda:  # e.g. one, beside a decoding thread on two cores
            torch.set_num_threads(settings.threads)
        if self.cuda and self.precision != "float32":
            raise ConfigError(
                f"features.precision {self.precision!r} is for CPU inference; on CUDA set "
                "features.amp and amp_dtype"
            )
        if backbone is None:
            backbone = create_backbone(
                settings.backbone,
                settings.weights,
                grid=settings.grid if grid is None else grid,
                fetch=fetch_settings(settings),
            )
        elif grid is not None:
            backbone.grid = grid
        # a backbone passed in is frozen for inference (and moved to the device)
        self.backbone = backbone.fine_tune(False).to(self.device, memory_format=torch.channels_last)
        self.amp_dtype = getattr(torch, settings.amp_dtype) if self.cuda and settings.amp else None
        self.calibration_id = ""  # int8: the sha256 of the frames it was calibrated on
        if self.precision == "int8":
            model = self._int8_model()
        else:
            model = self.backbone.for_inference().to(self.device, memory_format=torch.channels_last)
        self.model: Callable[[torch.Tensor], Any] = (
            torch.compile(model, dynamic=False) if settings.compile else model
        )

    @property
    def name(self) -> str:
        """The backbone, plus the precision when it is not float32 (``resnet18+int8``): features
        computed otherwise are another model's output, and caches keep them apart."""
        suffix = {"int8": "+int8", "bfloat16": "+bf16"}.get(self.precision, "")
        return self.backbone.name + suffix

    def _int8_model(self) -> Any:
        from video_mm.features.quantize import calibration_frames, quantize_int8

        s = self.settings
        frames = calibration_frames(s.calibration, s.calibration_frames)
        self.calibration_id = hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()
        return quantize_int8(self.backbone, self.backbone.preprocess(frames), s.batch_size)

    @property
    def weights_id(self) -> str:
        """The backbone's weights and, for int8, its calibration: another calibration (another
        ``features.calibration`` or ``calibration_frames``) is another model, and caches keep its
        features apart."""
        wid = self.backbone.weights_id
        return f"{wid}+calibration:{self.calibration_id[:16]}" if self.calibration_id else wid

    @property
    def grid(self) -> bool:
        return self.backbone.grid

    # --- public API ------------------------------------------------------------------------------

    def extract(self, batches: Iterable[FrameBatch]) -> Iterator[ClipFeatures]:
        """Features of each batch of frames, in order. ``batches`` may decode lazily: it is
        iterated in a producer thread, so the next clip decodes while this one is inferred."""
        for _, out in self.run(batches, lambda b: b):
            if isinstance(out, Exception):
                raise out
            yield out

    def extract_frames(self, frames: np.ndarray) -> np.ndarray:
        """Pooled features ``[T, D]`` of uint8 frames ``[T, H, W, 3]``, synchronously."""
        t = np.zeros(len(frames))
        batch = FrameBatch(frames=frames, times=t, indices=np.arange(len(frames)))
        return next(iter(self.extract([batch]))).features

    def run(
        self, jobs: Iterable[Job], load: Callable[[Job], FrameBatch | ClipFeatures]
    ) -> Iterator[tuple[Job, ClipFeatures | VideoMMError]]:
        """For each job, ``load(job)`` in the producer thread (decode, or a cache hit), then
        features; a job whose load raises a :class:`VideoMMError` yields that error and the
        rest continue. Results come in job order."""
        q: queue.Queue = queue.Queue(maxsize=self.settings.queue_size)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(jobs, load, q, stop), name="vmm-decode", daemon=True
        )
        producer.start()
        try:
            yield from self._consume(q)
        finally:
            stop.set()  # a producer blocked on the full queue sees this within 0.1 s
            producer.join()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One inference step on preprocessed frames on the device: ``(pooled, grid or None)``."""
        x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp_dtype is not None),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"),
        ):
            out = self.model(x)
        return out if isinstance(out, tuple) else (out, None)

    # --- producer: decode and prepare ------------------------------------------------------------

    def _produce(
        self,
        jobs: Iterable[Job],
        load: Callable[[Job], FrameBatch | ClipFeatures],
        q: queue.Queue,
        stop: threading.Event,
    ) -> None:
        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False

        try:
            for job in jobs:
                try:
                    result = load(job)
                    prepared = self._prepare(result) if isinstance(result, FrameBatch) else None
                except VideoMMError as exc:
                    result, prepared = exc, None
                if not put((job, result, prepared)):
                    return
        except BaseException as exc:  # a failure of the job iterator itself ends the run
            put(exc)
        put(_END)

    def _prepare(self, batch: FrameBatch) -> torch.Tensor:
        """CPU: preprocess here, off the inference thread. CUDA: pin the uint8 frames so the copy
        is asynchronous; preprocessing then runs on the GPU."""
        if len(batch) == 0:
            return torch.empty(0)
        if self.cuda:
            return torch.from_numpy(np.ascontiguousarray(batch.frames)).pin_memory()
        return self.backbone.preprocess(batch.frames)

    # --- consumer: pack, infer, split ------------------------------------------------------------

    def _consume(self, q: queue.Queue) -> Iterator[tuple[Any, ClipFeatures | VideoMMError]]:
        order: deque[_Pending] = deque()
        buf: list[tuple[_Pending, torch.Tensor]] = []
        filled = 0
        bs = self.settings.batch_size
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            job, result, prepared = item
            clip = _Pending(job, result, remaining=len(result) if prepared is not None else 0)
            order.append(clip)
            if clip.remaining:
                x = self._on_device(prepared)
                start = 0
                while start < len(x):
                    take = min(bs - filled, len(x) - start)
                    buf.append((clip, x[start : start + take]))
                    filled += take
                    start += take
                    if filled == bs:
                        self._infer(buf)
                        buf, filled = [], 0
            while order and order[0].remaining == 0:
                yield self._finish(order.popleft())
        if buf:
            self._infer(buf)
        while order:
            yield self._finish(order.popleft())

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return x
        x = x.to(self.device, non_blocking=True)
        return self.backbone.preprocess(x)

    def _infer(self, buf: list[tuple[_Pending, torch.Tensor]]) -> None:
        parts = [part for _, part in buf]
        short = self.settings.batch_size - sum(len(p) for p in parts)
        if self.settings.compile and short > 0:
            # a compiled graph is specialised to the full batch shape: pad, don't recompile
            parts.append(parts[0].new_zeros((short, *parts[0].shape[1:])))
        pooled, grid = self.forward(torch.cat(parts))
        pooled = pooled.float().cpu()
        grid = grid.float().cpu() if grid is not None else None
        start = 0
        for clip, part in buf:
            n = len(part)
            clip.pooled.append(pooled[start : start + n])
            if grid is not None:
                clip.grids.append(grid[start : start + n])
            clip.remaining -= n
            start += n

    def _finish(self, clip: _Pending) -> tuple[Any, ClipFeatures | VideoMMError]:
        result = clip.result
        if not isinstance(result, FrameBatch):
            return clip.job, result
        if len(result) == 0:
            empty = np.zeros((0, self.backbone.dim), np.float32)
            return clip.job, ClipFeatures(empty, result.times, self.name, warning=result.warning)
        feats = torch.cat(clip.pooled).numpy()
        grid = torch.cat(clip.grids).contiguous().numpy() if clip.grids else None
        times = np.asarray(result.times)
        return clip.job, ClipFeatures(feats, times, self.name, grid=grid, warning=result.warning)


# --- whole videos (or windows of them), with the cache -------------------------------------------


@dataclass(frozen=True)
class Window:
    """``[start, end)`` seconds of one video file (None: from its start / to its end). Sampled
    within the window; one that starts after the file ends is a
    :class:`~video_mm.errors.WindowPastEnd`, and one that runs past the end stops there."""

    source: str | Path
    start: float | None = None
    end: float | None = None


def sample_window(
    window: Window, sampling: SamplingSettings, limits: IOSettings | None = None
) -> FrameBatch:
    """The frames ``sampling`` picks within ``window`` (a window that starts after its file ends
    raises :class:`~video_mm.errors.WindowPastEnd`)."""
    return sample_frames(window.source, sampler=sampling.sampler, n=sampling.n_frames,
                         fps=sampling.fps, start=window.start, end=window.end, size=sampling.size,
                         limits=limits, strict_window=True)  # fmt: skip


def cache_key(
    source: str | Path | Window, sampling: SamplingSettings, extractor: FeatureExtractor
) -> CacheKey:
    """What the features of ``source`` depend on, its window included when it has one."""
    window = source if isinstance(source, Window) else Window(source)
    return CacheKey(
        video_sha256=file_sha256(window.source),
        sampler=window_sampler(sampling.model_dump(), window.start, window.end),
        backbone=extractor.name,
        weights_id=extractor.weights_id,
        grid=extractor.grid,
    )


def extract_videos(
    sources: Iterable[str | Path | Window],
    sampling: SamplingSettings,
    extractor: FeatureExtractor,
    *,
    cache: FeatureCache | None = None,
    limits: IOSettings | None = None,
) -> Iterator[tuple[str | Path | Window, ClipFeatures | VideoMMError]]:
    """Features of each video (or :class:`Window` of one), in order, decode overlapped with
    inference; cached results are read instead of computed. A bad video yields its error; the
    others continue."""
    misses: dict[int, CacheKey] = {}  # written by the producer before the job is queued

    def load(job: tuple[int, str | Path | Window]) -> FrameBatch | ClipFeatures:
        i, source = job
        window = source if isinstance(source, Window) else Window(source)
        if cache is not None:
            try:
                key = cache_key(window, sampling, extractor)
            except OSError:
                pass  # unreadable: sample_window below raises the typed error
            else:
                if (hit := cache.get(key)) is not None:
                    return hit
                misses[i] = key
        return sample_window(window, sampling, limits)

    for (i, source), out in extractor.run(enumerate(sources), load):
        key = misses.pop(i, None)
        if cache is not None and key is not None and isinstance(out, ClipFeatures):
            cache.put(key, out)
        yield source, out


def extract_video(
    source: str | Path,
    sampling: SamplingSettings | None = None,
    *,
    settings: FeatureSettings | None = None,
    extractor: FeatureExtractor | None = None,
    cache: FeatureCache | None = None,
    limits: IOSettings | None = None,
    start: float | None = None,
    end: float | None = None,
) -> ClipFeatures:
    """Features of one video (or of its ``start``-``end`` window); raises its VideoError."""
    extractor = extractor or FeatureExtractor(settings)
    sampling = sampling or SamplingSettings()
    runs = extract_videos([Window(source, start, end)], sampling, extractor, cache=cache,
                          limits=limits)  # fmt: skip
    _, out = next(iter(runs))
    if isinstance(out, Exception):
        raise out
    return out
