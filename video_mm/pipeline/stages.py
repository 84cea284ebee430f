"""The pipeline's stages, one function each, with explicit inputs and outputs.

probe -> segment -> features (+ thumbnails, same decode) -> caption -> embed -> write -> index

Every write is keyed by what produced it (video, clip index, model), so running a stage again
after a crash or a redelivered task replaces rows instead of adding them: captions and embeddings
are upserts per (clip, model), blobs are content-addressed, index entries are upserts per clip id.
A video turns ``ready`` (searchable) only after :func:`index_stage`, once everything is written.

Stages never decide about retries or job states; :mod:`video_mm.pipeline.runner` does.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from video_mm.artifacts import (
    FeatureRecipe,
    model_dirs,
    model_name,
    pool_grid,
    read_saved,
    reranker_dir,
    warn_precision,
)
from video_mm.errors import ConfigError, CorruptVideo, ModelError
from video_mm.records import Caption, Clip, ClipFeatures, FrameBatch, VideoInfo, clip_id
from video_mm.settings import FeatureSettings, SamplingSettings, Settings

# Share of a job's progress reached when each stage is done (features take most of the time).
PROGRESS = {
    "probe": 0.05,
    "segment": 0.08,
    "features": 0.65,
    "caption": 0.8,
    "embed": 0.88,
    "write": 0.95,
    "index": 1.0,
}
STAGES = tuple(PROGRESS)
Progress = Callable[[str, float], None]  # (stage, job fraction 0..1)


def _no_progress(stage: str, fraction: float) -> None:
    return None


# --- models: loaded once per process --------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """How one model's input features are computed: the backbone, the frame sampling, and
    whether it reads the CNN grid (``features.grid``: a spatial model, or a recipe's k x k cells).
    """

    features: FeatureSettings
    sampling: SamplingSettings

    @property
    def key(self) -> str:
        """What one decoding and extraction pass computes: models that differ only in needing the
        grid share it (the pass keeps the grid when any of them needs it)."""
        f, s = self.features, self.sampling
        return f"{f.backbone}/{f.weights}/{s.sampler}/{s.n_frames}/{s.fps}/{s.size}"


@dataclass
class Models:
    """The captioners and the retrieval model a pipeline run uses, by name, each with the
    features it was trained on."""

    captioners: dict[str, Any] = field(default_factory=dict)
    retrieval: Any | None = None
    retrieval_name: str = ""
    # the configured re-ranker's inputs (its recipe: cells, or the retrieval model's features)
    # are what the pipeline stores for search to re-rank with; its weights are not loaded here
    reranker_name: str = ""
    specs: dict[str, FeatureSpec] = field(default_factory=dict)  # model name -> its features
    # model name -> the recipe saved with it: its grid_pool makes k x k cells of the grid and its
    # apply() standardises features as in training
    recipes: dict[str, FeatureRecipe] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)  # model name -> the feature dim it reads

    def inputs(self, name: str, features: dict[str, list[ClipFeatures]]) -> list[np.ndarray]:
        """What model ``name`` reads, as when it was trained: the pooled features, or the grid
        pooled to the recipe's k x k cells, standardised; checked against the model's dim."""
        feats = features[self.specs[name].key]
        recipe = self.recipes.get(name)
        k = recipe.grid_pool if recipe else 1
        out = []
        for f in feats:
            if k > 1:
                if f.grid is None:
                    raise ModelError(f"{name} reads {k} x {k} grid cells (features.json "
                                     "grid_pool) but the features were computed without the grid")
                x = pool_grid(f.grid, k)
            else:
                x = f.features
            out.append(recipe.apply(x) if recipe else x)
        want = self.dims.get(name, 0)
        if want and out and out[0].shape[-1] != want:
            raise ModelError(
                f"{name} reads {want}-d features but its recipe (backbone "
                f"{self.specs[name].features.backbone}, grid_pool {k}) gives "
                f"{out[0].shape[-1]}-d: the model folder's features.json does not match it")
        return out

    def feature_specs(self) -> list[FeatureSpec]:
        """One spec per extraction pass: models of the same backbone and sampling share one, which
        keeps the grid when any of them reads it."""
        merged: dict[str, FeatureSpec] = {}
        for spec in self.specs.values():
            have = merged.get(spec.key)
            if have is None or (spec.features.grid and not have.features.grid):
                merged[spec.key] = spec
        return list(merged.values())


def feature_spec(model: Any, folder: Path, settings: Settings) -> FeatureSpec:
    """The features a loaded model expects: its backbone spec and, when training saved one, its
    recipe (``model.recipe``, from ``features.json``: sampling, and grid_pool k > 1 for k x k
    cells of the grid); else the configured features and sampling. The precision stays the
    configured one (int8 serving is a speed option), said once when it is not the model's."""
    features, sampling = settings.features, settings.sampling
    spec = getattr(model, "backbone", None)
    if spec is not None:
        if getattr(spec, "input", "features") != "features":
            raise ConfigError(
                f"{folder}: the model takes raw frames (end to end); the pipeline serves models "
                "on precomputed features: export it with a frozen backbone"
            )
        features = features.model_copy(
            update={"backbone": spec.name, "weights": spec.weights, "grid": bool(spec.grid)}
        )
    recipe: FeatureRecipe | None = getattr(model, "recipe", None)
    if recipe is not None:
        if recipe.grid_pool > 1:
            features = features.model_copy(update={"grid": True})
        sampling = SamplingSettings(sampler="uniform", n_frames=recipe.n_frames, size=recipe.size)
        warn_precision(folder, recipe, features)
    return FeatureSpec(features, sampling)


def _feat_dim(model: Any) -> int:
    """The per-frame feature dim a loaded model reads (a Captioner wraps its network)."""
    return int(getattr(getattr(model, "model", model), "feat_dim", 0) or 0)


# What a pipeline without a model cannot do: said at start (vmm index, serve, worker) and recorded
# on each job it affects, so an empty result is never silent.
NO_CAPTIONER = "no captioner configured"
NO_RETRIEVAL = "no retrieval model configured"
GAP_HINTS = {
    NO_CAPTIONER: "videos get no captions (put one in place: `vmm models pull REPO_ID`, or "
                  "models.captioners / VMM_MODELS__CAPTIONERS)",
    NO_RETRIEVAL: "clips are not embedded and search matches caption text only (`vmm models "
                  "zero-shot hf:openai/clip-vit-base-patch32`, `vmm models pull REPO_ID`, or "
                  "models.retrieval / VMM_MODELS__RETRIEVAL)",
}


def model_gaps(settings: Settings) -> list[str]:
    """What this configuration cannot do for lack of a model (empty: nothing missing)."""
    captioners, retrieval = model_dirs(settings)
    return [gap for gap, missing in ((NO_CAPTIONER, not captioners),
                                     (NO_RETRIEVAL, retrieval is None)) if missing]


def gap_messages(settings: Settings) -> list[str]:
    """:func:`model_gaps` as sentences saying what follows and how to fix it."""
    return [f"{gap}: {GAP_HINTS[gap]}" for gap in model_gaps(settings)]


_models_lock = threading.Lock()
_models_cache: dict[tuple[str, ...], Models] = {}


def load_models(settings: Settings) -> Models:
    """Load the configured models once per process (a worker keeps them between tasks)."""
    captioners, retrieval = model_dirs(settings)
    rerank = reranker_dir(settings)
    key = (
        *(str(p.resolve()) for p in captioners),
        str(retrieval.resolve()) if retrieval else "",
        str(rerank.resolve()) if rerank else "",
        settings.features.model_dump_json(),
        settings.sampling.model_dump_json(),
    )
    with _models_lock:
        if key not in _models_cache:
            from video_mm.models.factory import from_pretrained

            models = Models()
            for folder in captioners:
                name = model_name(folder)
                models.captioners[name] = model = from_pretrained(folder)
                models.specs[name] = feature_spec(model, folder, settings)
                models.dims[name] = _feat_dim(model)
                if model.recipe is not None:
                    models.recipes[name] = model.recipe
            if retrieval is not None:
                from video_mm.retrieval.model import from_pretrained as retrieval_from_pretrained

                models.retrieval = retrieval_from_pretrained(retrieval)
                models.retrieval_name = name = model_name(retrieval)
                models.specs[name] = feature_spec(models.retrieval, retrieval, settings)
                models.dims[name] = _feat_dim(models.retrieval)
                if models.retrieval.recipe is not None:
                    models.recipes[name] = models.retrieval.recipe
                if rerank is not None:
                    saved = read_saved(rerank, kind="re-ranker")
                    models.reranker_name = name = f"reranker/{model_name(rerank)}"
                    models.specs[name] = feature_spec(saved, rerank, settings)
                    models.dims[name] = int(saved.config.get("feat_dim", 0))
                    if saved.recipe is not None:
                        models.recipes[name] = saved.recipe
            _models_cache[key] = models
        return _models_cache[key]


# --- stages ---------------------------------------------------------------------------------------


def probe_stage(video: Path, settings: Settings) -> VideoInfo:
    """Container metadata within the configured limits; bad input raises a typed VideoError."""
    from video_mm.io.probe import probe

    return probe(video, limits=settings.io)


def segment_stage(video: Path, info: VideoInfo, video_id: str, settings: Settings) -> list[Clip]:
    """Clips (fixed windows or shots) covering the video."""
    from video_mm.io.segment import segment

    clips = segment(video, info, settings.segment, video_id, limits=settings.io)
    if not clips:
        raise CorruptVideo(video, f"no clips: {info.duration:.3f} s of video is too short")
    return clips


_extractors: dict[str, Any] = {}


def _extractor(spec: FeatureSettings) -> Any:
    key = spec.model_dump_json()
    with _models_lock:
        if key not in _extractors:
            from video_mm.features.extract import FeatureExtractor

            _extractors[key] = FeatureExtractor(spec)
        return _extractors[key]


@dataclass
class Decoded:
    """What the one decoding pass over a video produced."""

    features: dict[str, list[ClipFeatures]]  # spec key -> one ClipFeatures a clip
    thumbnails: dict[int, bytes]  # clip index -> JPEG
    warning: str = ""  # what of a damaged video was lost (the readers' warning), else empty


def _thumbnail(frame: np.ndarray, width: int) -> bytes:
    """JPEG of a frame at most ``width`` px wide: frames decoded at the sampling size (224 px short
    side by default) are scaled down, never up."""
    from video_mm.io.thumbnail import jpeg_bytes

    return jpeg_bytes(frame, min(width, frame.shape[1]))


# What :func:`decode_frames` yields, in order: for each spec, ``("frames", FrameBatch)`` a clip
# (with ``("thumbnail", clip index, JPEG)`` after it when the spec is the one thumbnails are cut
# from), then ``("read", warning)`` once its reader is closed.
DecodedItem = tuple[str, Any] | tuple[str, int, bytes]


def decode_frames(
    video: Path, clips: Sequence[Clip], specs: Sequence[FeatureSpec], settings: Settings,
    *, thumbnail_width: int = 320,
) -> Iterator[DecodedItem]:
    """The decoding half of :func:`features_stage`: each spec's reader opened in turn, each clip's
    sampled frames, and each clip's thumbnail from the spec decoded at the largest size (the
    sampled frame nearest the clip's middle). Lazy: whoever iterates it does the decoding (the
    extractor's producer thread, or a :class:`~video_mm.pipeline.prefetch.Prefetcher` thread
    ahead of time). Typed errors (:class:`~video_mm.errors.VideoError`) propagate."""
    from video_mm.io.decode import open_video
    from video_mm.io.sampling import sample_frames

    largest = max(specs, key=lambda sp: sp.sampling.size or float("inf"))
    for spec in specs:
        s = spec.sampling
        with open_video(video, size=s.size, limits=settings.io) as reader:
            for c in clips:
                batch = sample_frames(reader, sampler=s.sampler, n=s.n_frames, fps=s.fps,
                                      start=c.start, end=c.end)
                yield "frames", batch
                if spec is largest:
                    middle = int(np.argmin(np.abs(batch.times - (c.start + c.end) / 2)))
                    yield "thumbnail", c.index, _thumbnail(batch.frames[middle], thumbnail_width)
            warning = reader.warning
        yield "read", warning


def features_stage(
    video: Path,
    clips: Sequence[Clip],
    specs: Sequence[FeatureSpec],
    settings: Settings,
    progress: Progress = _no_progress,
    *,
    thumbnail_width: int = 320,
    decoded: Iterable[DecodedItem] | None = None,
) -> Decoded:
    """Per-frame CNN features of every clip for each spec, and one thumbnail a clip, from one
    decoding pass per spec.

    Frames are sampled per clip from one open reader per spec (:func:`decode_frames`); the
    extractor decodes the next clip in a producer thread while it runs inference on the current
    one. ``decoded``: that decoding already under way elsewhere (a prefetch thread, started while
    the previous video was captioned); it must be :func:`decode_frames` of the same arguments.
    Thumbnails are cut from the frames of the spec decoded at the largest size, where they are
    decoded, so they cost a JPEG encode, not a second decode of the video.
    """
    from video_mm.io.decode import open_video
    from video_mm.io.thumbnail import frame_at

    thumbs: dict[int, bytes] = {}
    if not specs:  # no model reads frames: decode each clip's middle frame for its thumbnail
        with open_video(video, size=settings.sampling.size, limits=settings.io) as reader:
            times = reader.frame_times()
            frames = reader.get_frames([frame_at(times, (c.start + c.end) / 2) for c in clips])
            warning = reader.warning
        for clip, frame in zip(clips, frames, strict=True):
            thumbs[clip.index] = _thumbnail(frame, thumbnail_width)
        return Decoded({}, thumbs, warning)
    items = iter(decoded if decoded is not None else decode_frames(
        video, clips, specs, settings, thumbnail_width=thumbnail_width))
    warnings: list[str] = []

    def batches() -> Iterator[FrameBatch]:
        """One spec's clips, from the shared stream (iterated in the extractor's thread)."""
        for item in items:
            if item[0] == "read":
                warnings.append(item[1])
                return
            if item[0] == "thumbnail":
                thumbs[item[1]] = item[2]
            else:
                yield item[1]

    out: dict[str, list[ClipFeatures]] = {}
    total = len(clips) * len(specs)
    done = 0
    try:
        for spec in specs:
            feats = []
            for f in _extractor(spec.features).extract(batches()):
                feats.append(f)
                done += 1
                progress("features", done / total)
            out[spec.key] = feats
    finally:
        if isinstance(items, Generator):  # decoding here: close the open reader now
            items.close()
    return Decoded(out, thumbs, max(warnings, key=len, default=""))


def caption_stage(
    models: Models, features: dict[str, list[ClipFeatures]], decoding: Any
) -> dict[str, list[Caption]]:
    """Each captioner's caption of every clip: model name -> one Caption per clip (clip order),
    decoded as ``decoding`` (a :class:`~video_mm.models.decoding.Decoding`, from
    ``Settings.models``) says; its next best captions (``n_best`` - 1) as its alternatives."""
    out = {}
    for name, captioner in models.captioners.items():
        feats = features[models.specs[name].key]
        grids = [f.grid for f in feats] if captioner.model.uses_grid else None
        found = captioner.n_best(models.inputs(name, features), decoding, grids=grids)
        out[name] = [
            Caption(best.text, float(best.score), name, best.attention,
                    [{"text": c.text, "score": round(float(c.score), 4)} for c in rest])
            for best, *rest in found
        ]
    return out


def embed_stage(models: Models, features: dict[str, list[ClipFeatures]]) -> np.ndarray | None:
    """L2-normalised clip embeddings ``[N, E]`` from the retrieval model (None without one)."""
    if models.retrieval is None:
        return None
    return models.retrieval.embed_videos(models.inputs(models.retrieval_name, features))


def rerank_features_stage(
    models: Models, clips: Sequence[Clip], features: dict[str, list[ClipFeatures]]
) -> bytes | None:
    """The configured re-ranker's input features of every clip (without one, the retrieval
    model's) with its frames' times in the clip, as one blob (:mod:`video_mm.rerank.stored`):
    what search re-ranks with (None without a retrieval model: nothing to re-rank); the
    retrieval model's inputs beside them when they differ (cells), for the first stage's logit."""
    if models.retrieval is None:
        return None
    from video_mm.rerank.stored import clip_features_to_bytes, relative_times

    name = models.reranker_name or models.retrieval_name
    feats = features[models.specs[name].key]
    inputs = models.inputs(name, features)
    first = models.inputs(models.retrieval_name, features)
    return clip_features_to_bytes({
        c.index: (x, relative_times(f.times, c.start, c.end))
        for c, f, x in zip(clips, feats, inputs, strict=True)
    }, None if name == models.retrieval_name or _same(inputs, first) else {
        c.index: x for c, x in zip(clips, first, strict=True)
    })  # fmt: skip


def _same(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def vectors_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@dataclass
class Results:
    """What the analysis of one video produced, ready to be written."""

    clips: list[Clip]
    captions: dict[str, list[Caption]]
    vectors: np.ndarray | None
    retrieval_model: str = ""

    @cached_property
    def clip_ids(self) -> list[str]:
        return [c.id for c in self.clips]


def write_stage(catalog: Any, results: Results) -> None:
    """Captions and embedding rows, upserted per (clip, model)."""
    for captions in results.captions.values():
        catalog.upsert_captions(zip(results.clip_ids, captions, strict=True))
    if results.vectors is not None:
        catalog.upsert_embeddings(results.retrieval_model, {c: c for c in results.clip_ids})


def index_stage(index: Any, video_id: str, ids: Sequence[str], vectors: np.ndarray | None) -> None:
    """Replace the video's index entries with these (stale clips from an earlier run go)."""
    index.delete_prefix(clip_id(video_id, ""))
    if vectors is not None and len(ids):
        index.add(list(ids), vectors)
    index.flush()
