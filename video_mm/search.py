"""Text -> clips: the query's embedding against the vector index, fused with caption text search.

Two rankings of clips, each over searchable (``ready``) videos only and narrowed by the same
filters (video, date):

1. dense: the retrieval model's text tower embeds the query; the vector index returns the nearest
   clip embeddings (cosine), mapped to clips through the catalog's ``embeddings`` rows;
2. text: the query's words against the generated captions (BM25 in SQLite's FTS5, ``ts_rank_cd``
   in PostgreSQL), through the catalog.

Hybrid search fuses them by reciprocal rank fusion (Cormack et al., 2009): a clip scores
``sum over rankings of weight / (rrf_k + rank)``, which needs no calibration between cosine and
BM25 scores; ``text_weight`` is the caption ranking's weight (the vector ranking's is 1). Hits of
one video whose spans overlap (or lie within ``merge_gap_s``) are merged into one hit covering
both, keeping the better hit's score, caption and thumbnail.

Re-ranking (``rerank_k > 0``, a re-ranker model configured): the first ``rerank_k`` clips of that
ranking are scored again by the co-attention re-ranker (:mod:`video_mm.rerank`), which reads the
query's words against each clip's frame features (stored by the pipeline as a ``clip_features``
blob of the video), all ``rerank_k`` in one batched forward; they are put in the re-ranker's order
ahead of the rest, which keep theirs. Nothing is dropped: a candidate without stored features
keeps its first-stage score after the re-scored ones. Each hit's ``extra["stage"]`` says which
stage produced its score (``rerank``, or the first stage's mode) and ``extra["score_model"]``
which model.

A score means something only beside its kind, so each hit also says what its score is for
people: ``extra["score_kind"]`` (``cosine``, ``caption match``, ``rank fusion``, ``re-ranker``)
and ``extra["score_meaning"]`` (one sentence, with the scale of a rank-fusion score), next to the
signals behind it: ``vector_score`` (the cosine) and ``vector_rank``, ``text_score`` and
``text_rank``, and for a re-ranked hit ``first_stage_score``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np

from video_mm import provenance
from video_mm.artifacts import captioner_dirs, model_name, reranker_dir, retrieval_dir
from video_mm.errors import ConfigError, VideoMMError
from video_mm.records import Hit
from video_mm.settings import SearchSettings, Settings
from video_mm.storage.catalog import Catalog, ClipDetail

Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "text")


class BadQuery(VideoMMError):
    """A query that cannot be run: empty, too long a k, an unknown mode."""

    code = "bad_query"


class TextEncoder(Protocol):
    """The retrieval model's text tower (``RetrievalModel.encode_text``): L2-normalised rows."""

    def encode_text(self, texts: list[str]) -> Any: ...


class ClipReranker(Protocol):
    """The re-ranker (``video_mm.rerank.Reranker.score``): one matching logit per clip."""

    name: str

    prior_weight: float

    def score(
        self, query: str, features: list[np.ndarray], times: list[np.ndarray] | None = None, *,
        prior: np.ndarray | None = None,
    ) -> np.ndarray: ...


# clip ids -> {clip id: (the re-ranker's frame features [T, D], frame times in the clip [T], the
# retrieval model's inputs [T, D'] for the first stage's logit)}, those it has
StoredClip = tuple[np.ndarray, np.ndarray, np.ndarray]
ClipFeatures = Callable[[list[str]], dict[str, StoredClip]]


class Index(Protocol):
    """The part of ``video_mm.index.base.VectorIndex`` search uses."""

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]: ...

    def __len__(self) -> int: ...


# -- the pieces, each testable alone ---------------------------------------------------------------
def score_kinds(options: SearchSettings, prior_weight: float = 0.0) -> dict[str, tuple[str, str]]:
    """What a hit's score is, by the stage that produced it: a label and one sentence for people
    (a rank-fusion score is ~0.03 by construction, which says nothing without its scale)."""
    k, w = options.rrf_k, options.text_weight
    prior = f" plus {prior_weight:g} x the retrieval model's logit" if prior_weight else ""
    return {
        "vector": ("cosine", "cosine similarity of the query and the clip in the search model's "
                   "space: 1 the same direction, 0 unrelated"),
        "text": ("caption match", "how well the clip's caption matches the query's words (BM25, "
                 "or ts_rank_cd in PostgreSQL): higher is better, on no fixed scale"),
        "hybrid": ("rank fusion", f"reciprocal rank fusion of the vector and caption rankings, "
                   f"each adding weight/({k} + rank): {1 / (k + 1):.4f} is first by vectors "
                   f"alone, {(1 + w) / (k + 1):.4f} first in both; it ranks, it does not measure"),
        "rerank": ("re-ranker", f"the co-attention re-ranker's match logit{prior}: higher is a "
                   "better match, on no fixed scale"),
    }


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]],
    rrf_k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse rankings (best first) into one: ``score = sum w / (rrf_k + rank)``, rank from 1."""
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or min(weights, default=0.0) < 0:
        raise ValueError(f"need one non-negative weight per ranking, got {weights}")
    scores: dict[str, float] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for r, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
            first_seen.setdefault(item, (rank, r))
    # Ties (the same ranks in different lists) go to the better single rank, then list order.
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def merge_overlapping(hits: Sequence[Hit], k: int, gap_s: float = 0.0) -> list[Hit]:
    """The top ``k`` hits after merging, best first, hits of one video that overlap.

    ``hits`` come best first; a hit overlapping (within ``gap_s``) one already taken widens it
    instead of taking a place; the merged hit lists its clips in ``extra["clips"]``.
    """
    merged: list[Hit] = []
    for hit in hits:
        into = next((m for m in merged if _overlap(m, hit, gap_s)), None)
        if into is None:
            if len(merged) == k:
                break
            merged.append(
                Hit(
                    video_id=hit.video_id,
                    clip_index=hit.clip_index,
                    start=hit.start,
                    end=hit.end,
                    score=hit.score,
                    caption=hit.caption,
                    thumbnail=hit.thumbnail,
                    extra={**hit.extra, "clips": [hit.clip_index]},
                )
            )
            continue
        into.start, into.end = min(into.start, hit.start), max(into.end, hit.end)
        into.extra["clips"].append(hit.clip_index)
        # A widened hit can now reach another one of its video: fold that in too.
        for other in [m for m in merged if m is not into and _overlap(into, m, gap_s)]:
            into.start, into.end = min(into.start, other.start), max(into.end, other.end)
            into.extra["clips"].extend(other.extra["clips"])
            merged.remove(other)
    for m in merged:
        m.extra["clips"].sort()
    return merged


def _overlap(a: Hit, b: Hit, gap_s: float) -> bool:
    # Strict: clips that only touch (fixed windows, stride = window) stay apart unless gap_s > 0.
    return a.video_id == b.video_id and b.start < a.end + gap_s and b.end > a.start - gap_s


def encode_query(encoder: TextEncoder, query: str) -> np.ndarray:
    """The query as one float32 row ``[1, E]``, computed without autograd."""
    import torch

    with torch.inference_mode():
        vec = encoder.encode_text([query])
    if hasattr(vec, "detach"):
        vec = vec.detach().float().cpu().numpy()
    return np.asarray(vec, dtype=np.float32).reshape(1, -1)


def vector_ranking(
    query_vector: np.ndarray,
    *,
    catalog: Catalog,
    index: Index,
    candidates: int,
    embedding_model: str | None = None,
    **filters: Any,
) -> list[tuple[str, float]]:
    """Clip ids by cosine similarity, best first, at most ``candidates``.

    The index knows no filters, so its hits are filtered through the catalog; when too few survive
    (a filter on one video in a large archive), the index is asked for more, up to all of it.
    """
    size = len(index)
    n = min(candidates, size)
    while n > 0:
        hits = index.search(query_vector, n)[0]
        clips = catalog.resolve_index_ids([i for i, _ in hits], model=embedding_model, **filters)
        ranked: dict[str, float] = {}
        for index_id, score in hits:
            cid = clips.get(index_id)
            if cid is not None and cid not in ranked:
                ranked[cid] = float(score)
        if len(ranked) >= candidates or n >= size:
            return list(ranked.items())[:candidates]
        n = min(n * 4, size)
    return []


def rerank(
    query: str,
    ranking: list[tuple[str, float]],
    k: int,
    reranker: ClipReranker,
    clip_features: ClipFeatures,
    prior: Callable[[list[np.ndarray]], np.ndarray] | None = None,
) -> tuple[list[tuple[str, float]], dict[str, float]]:
    """``ranking`` (clip id, score; best first) with its first ``k`` re-scored by ``reranker``
    in one batched forward and put in its order; those without features follow in their order,
    then the rest. ``prior(features)``: the retrieval model's logits of those clips from its
    stored inputs, which the re-ranker adds with its ``prior_weight``. Returns the new ranking
    and the re-ranker's scores by clip id."""
    head, tail = ranking[:k], ranking[k:]
    found = clip_features([c for c, _ in head])
    scored = [c for c, _ in head if c in found]
    if not scored:
        return ranking, {}
    import torch

    feats, times = [found[c][0] for c in scored], [found[c][1] for c in scored]
    with torch.inference_mode():
        first = prior([found[c][2] for c in scored]) if prior is not None else None
        logits = reranker.score(query, feats, times, prior=first)
    new = {c: float(s) for c, s in zip(scored, np.asarray(logits, np.float64), strict=True)}
    order = sorted(scored, key=lambda c: -new[c])  # stable: ties keep the first stage's order
    rest = [(c, s) for c, s in head if c not in new]
    return [(c, new[c]) for c in order] + rest + tail, new


# -- search ----------------------------------------------------------------------------------------
def search(
    query: str,
    k: int = 10,
    *,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    index: Index | None = None,
    encoder: TextEncoder | None = None,
    mode: Mode | None = None,
    video_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    embedding_model: str | None = None,
    caption_model: str | None = None,
    options: SearchSettings | None = None,
    rerank_k: int | None = None,
    reranker: ClipReranker | None = None,
    clip_features: ClipFeatures | None = None,
    model_notes: dict[str, list[str]] | None = None,
) -> list[Hit]:
    """The top ``k`` clips for ``query``, each with video id, span, score, caption, thumbnail key.

    Give the components (``catalog``, ``index``, ``encoder``) to search with them, or ``settings``
    to open those it names (once per process). ``mode`` defaults to ``options.mode``; ``hybrid``
    without an encoder or index (no retrieval model trained yet) searches captions only, and says
    so in each hit's ``extra["mode"]``. ``rerank_k`` (default ``options.rerank_k``; 0: off)
    re-scores that many first-stage candidates with ``reranker`` over ``clip_features``.
    Each hit names the models behind it (``extra["caption_model"]``, ``extra["embedding_model"]``)
    and their warnings (``extra["notes"]``, from ``model_notes``: model name -> notes).
    """
    if settings is not None and catalog is None:
        searcher = Searcher.from_settings(settings)
        catalog = searcher.catalog
        index = searcher.index if index is None else index
        encoder = searcher.encoder if encoder is None else encoder
        embedding_model = embedding_model or searcher.embedding_model
        reranker = searcher.reranker if reranker is None else reranker
        clip_features = searcher.clip_features if clip_features is None else clip_features
        model_notes = model_notes if model_notes is not None else searcher.model_notes
    if catalog is None:
        raise ConfigError("search needs a catalog (or settings to open one)")
    opts = options or (settings.search if settings is not None else SearchSettings())
    mode = mode or opts.mode
    query = query.strip()
    if not query:
        raise BadQuery("empty query")
    if len(query) > opts.max_query_chars:
        raise BadQuery(f"query longer than {opts.max_query_chars} characters")
    if mode not in MODES:
        raise BadQuery(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 1 <= k <= opts.max_k:
        raise BadQuery(f"k must be within 1..{opts.max_k}, got {k}")
    asked = rerank_k is not None
    rerank_k = rerank_k if asked else opts.rerank_k
    if not 0 <= rerank_k <= opts.max_rerank_k:
        raise BadQuery(f"rerank_k must be within 0..{opts.max_rerank_k}, got {rerank_k}")
    skipped_rerank = ""
    if rerank_k and (reranker is None or clip_features is None):
        if not asked:  # the deployment's default needs a model it does not have
            raise ConfigError(
                "re-ranking (rerank_k > 0) needs a re-ranker model: set models.reranker"
            )
        # A query may ask for what this archive cannot do: answer with the first stage, and say so
        # on every hit (its ``stage`` names the first stage, not "rerank").
        skipped_rerank = "not re-ranked: this archive has no re-ranker (models.reranker)"
        rerank_k = 0
    dense = encoder is not None and index is not None
    if mode == "vector" and not dense:
        raise ConfigError("vector search needs a retrieval model and an index")
    if mode == "hybrid" and not dense:
        mode = "text"
    filters: dict[str, Any] = dict(video_id=video_id, since=since, until=until)
    # Merging folds hits together, so take enough candidates to still fill k places.
    candidates = max(opts.candidates, 4 * k, rerank_k)

    vector: list[tuple[str, float]] = []
    text: list[tuple[str, float]] = []
    dense_prior = bool(rerank_k) and bool(getattr(reranker, "prior_weight", 0.0))
    needs_vector = mode in ("vector", "hybrid") or dense_prior
    query_vector = encode_query(encoder, query) if encoder is not None and needs_vector else None
    if mode in ("vector", "hybrid"):
        assert query_vector is not None and index is not None
        vector = vector_ranking(
            query_vector,
            catalog=catalog,
            index=index,
            candidates=candidates,
            embedding_model=embedding_model,
            **filters,
        )
    if mode in ("text", "hybrid"):
        text = catalog.text_search(query, limit=candidates, caption_model=caption_model, **filters)
    if mode == "hybrid":
        fused = reciprocal_rank_fusion(
            [[c for c, _ in vector], [c for c, _ in text]], opts.rrf_k, (1.0, opts.text_weight)
        )
    else:
        fused = vector or text
    first = {cid: score for cid, score in fused}
    reranked: dict[str, float] = {}
    if rerank_k and fused:
        assert reranker is not None and clip_features is not None
        fused, reranked = rerank(query, fused, rerank_k, reranker, clip_features,
                                 _dual_prior(encoder, query_vector))

    details = catalog.clip_details([c for c, _ in fused], caption_model=caption_model)
    signals = {"vector": _ranks(vector), "text": _ranks(text)}
    first_model = {"vector": embedding_model, "text": caption_model or "captions",
                   "hybrid": f"{embedding_model} + {caption_model or 'captions'}"}[mode]
    models = ModelsUsed(embedding_model if vector else None, model_notes or {})
    kinds = score_kinds(opts, getattr(reranker, "prior_weight", 0.0))
    hits = []
    for cid, score in fused:
        if cid not in details:
            continue
        hit = _hit(details[cid], score, mode, signals, models)
        if cid in reranked:
            hit.extra.update(stage="rerank", score_model=getattr(reranker, "name", "reranker"),
                             first_stage_score=first[cid])
        else:
            hit.extra.update(stage=mode, score_model=first_model)
        hit.extra["score_kind"], hit.extra["score_meaning"] = kinds[hit.extra["stage"]]
        if skipped_rerank:
            hit.extra["notes"] = [*hit.extra.get("notes", []), skipped_rerank]
        hits.append(hit)
    return merge_overlapping(hits, k, opts.merge_gap_s)


def _dual_prior(
    encoder: Any, query_vector: np.ndarray | None
) -> Callable[[list[np.ndarray]], np.ndarray] | None:
    """The retrieval model's logits (scaled cosine) of the query and clips from their stored
    features: the first-stage score a re-ranker adds with its ``prior_weight``."""
    if query_vector is None or not hasattr(encoder, "embed_videos"):
        return None
    scale = float(encoder.logit_scale.detach().exp()) if hasattr(encoder, "logit_scale") else 1.0
    return lambda feats: scale * (encoder.embed_videos(feats) @ query_vector[0])


def _ranks(ranking: list[tuple[str, float]]) -> dict[str, tuple[int, float]]:
    return {cid: (rank, score) for rank, (cid, score) in enumerate(ranking, start=1)}


@dataclass(frozen=True)
class ModelsUsed:
    """The embedding model of a search (None: captions only) and the warnings of each model."""

    embedding_model: str | None
    notes: dict[str, list[str]]


def _hit(
    d: ClipDetail, score: float, mode: str, signals: dict[str, dict[str, tuple[int, float]]],
    models: ModelsUsed,
) -> Hit:
    extra: dict[str, Any] = {"mode": mode, "clip_id": d.clip_id, "filename": d.filename,
                             "caption_model": d.caption_model,
                             "embedding_model": models.embedding_model}
    notes = [n for m in (d.caption_model, models.embedding_model) if m
             for n in models.notes.get(m, [])]
    extra["notes"] = list(dict.fromkeys(notes))
    for name, ranks in signals.items():
        if d.clip_id in ranks:
            extra[f"{name}_rank"], extra[f"{name}_score"] = ranks[d.clip_id]
    return Hit(
        video_id=d.video_id,
        clip_index=d.index,
        start=d.start,
        end=d.end,
        score=float(score),
        caption=d.caption,
        thumbnail=d.thumbnail_key or "",
        extra=extra,
    )


# -- components from settings ----------------------------------------------------------------------


class StoredClipFeatures:
    """Clip features as the pipeline stored them (one ``clip_features`` blob a video), read once
    per blob and kept in a bounded cache (blobs are content-addressed, so never stale)."""

    def __init__(self, catalog: Catalog, blobs: Any, dim: int, max_videos: int = 256) -> None:
        from functools import lru_cache

        from video_mm.rerank.stored import CLIP_FEATURES, clip_features_from_bytes

        self.catalog, self.kind, self.dim = catalog, CLIP_FEATURES, dim
        self._load = lru_cache(maxsize=max_videos)(
            lambda key: clip_features_from_bytes(blobs.get(key))
        )

    def __call__(self, clip_ids: list[str]) -> dict[str, StoredClip]:
        out: dict[str, StoredClip] = {}
        for video_id in dict.fromkeys(c.rpartition(":")[0] for c in clip_ids):
            # A video analysed again with another retrieval model has one blob per feature kind.
            fitting = (self._load(k) for k in self.catalog.attached(video_id, self.kind))
            stored = next((f for f in fitting if f and _feature_dim(f) == self.dim), None)
            if stored is None:
                continue
            for cid in clip_ids:
                vid, _, index = cid.rpartition(":")
                if vid == video_id and int(index) in stored:
                    out[cid] = stored[int(index)]
        return out


def _feature_dim(stored: dict[int, StoredClip]) -> int:
    return int(next(iter(stored.values()))[0].shape[-1])


@dataclass
class Searcher:
    """Search's components for one settings object, opened once per process and reused."""

    catalog: Catalog
    index: Index | None = None
    encoder: TextEncoder | None = None
    embedding_model: str | None = None
    options: SearchSettings = field(default_factory=SearchSettings)
    reranker: ClipReranker | None = None
    clip_features: ClipFeatures | None = None
    model_notes: dict[str, list[str]] = field(default_factory=dict)  # model name -> warnings

    def search(self, query: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        return search(
            query,
            k,
            catalog=self.catalog,
            index=self.index,
            encoder=self.encoder,
            embedding_model=kwargs.pop("embedding_model", self.embedding_model),
            options=kwargs.pop("options", self.options),
            reranker=kwargs.pop("reranker", self.reranker),
            clip_features=kwargs.pop("clip_features", self.clip_features),
            model_notes=kwargs.pop("model_notes", self.model_notes),
            **kwargs,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Searcher:
        key = settings.model_dump_json()
        with _lock:
            cached = _searchers.get(key)
            # Without a model so far: look again, a server outlives the first `vmm demo`.
            if cached is None or (cached.encoder is None and retrieval_dir(settings)) or (
                cached.reranker is None and cached.encoder is not None and reranker_dir(settings)
            ):
                cached = _searchers[key] = cls._open(settings)
            return cached

    @classmethod
    def _open(cls, settings: Settings) -> Searcher:
        catalog = Catalog.from_settings(settings)
        model_dir = retrieval_dir(settings)
        notes = provenance.notes_by_name([*captioner_dirs(settings),
                                          *([model_dir] if model_dir else [])])
        if model_dir is None:
            return cls(catalog, options=settings.search, model_notes=notes)
        from video_mm.index.base import open_index
        from video_mm.retrieval.model import from_pretrained

        encoder = from_pretrained(model_dir)
        encoder.eval()
        searcher = cls(catalog, open_index(settings), encoder, model_name(model_dir),
                       settings.search, model_notes=notes)
        rerank_dir = reranker_dir(settings)
        if rerank_dir is not None:
            from video_mm.rerank.model import from_pretrained as reranker_from_pretrained
            from video_mm.storage.blobs import BlobStore

            searcher.reranker = reranker_from_pretrained(rerank_dir)
            searcher.clip_features = StoredClipFeatures(
                catalog, BlobStore.from_settings(settings), searcher.reranker.feat_dim
            )
        return searcher


_lock = threading.Lock()
_searchers: dict[str, Searcher] = {}


def hits_to_json(hits: Sequence[Hit]) -> str:
    """Hits as a JSON array (what ``vmm search --json`` prints)."""
    rows = [
        {
            "video_id": h.video_id,
            "clip_index": h.clip_index,
            "start": h.start,
            "end": h.end,
            "score": h.score,
            "caption": h.caption,
            "thumbnail": h.thumbnail,
            **h.extra,
        }
        for h in hits
    ]
    return json.dumps(rows, indent=2)
