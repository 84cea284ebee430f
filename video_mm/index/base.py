"""The one vector-index interface every backend keeps, and the factory that picks a backend.

Ids are strings (clip ids ``"<video_id>:<index>"``); vectors are L2-normalised float32 rows, and
scores are inner products (cosine similarity). Writes are upserts: adding an id that is already
there replaces its vector, so re-running the embed stage never duplicates a clip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from video_mm.errors import IndexError_
from video_mm.settings import Settings

SearchResult = list[list[tuple[str, float]]]
# Server backends put ids into filter expressions, where these cannot travel unescaped.
FORBIDDEN_ID_CHARS = frozenset("\n\\\"'")


class BadVectors(IndexError_):
    """A write or query the index refuses: wrong shape, dimension, NaNs, bad ids. Never retried."""

    code = "bad_vectors"
    transient = False


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest-neighbour search over named vectors, by inner product."""

    @property
    def dim(self) -> int | None:
        """Vector dimension; None until the first vectors arrive in a new, empty index."""
        ...

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert or replace one vector per id."""
        ...

    def update(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace vectors of ids that must already be present (:class:`NotFound` otherwise)."""
        ...

    def delete(self, ids: Iterable[str]) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every id starting with ``prefix``, e.g. ``"<video_id>:"`` for all of a video."""
        ...

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-``k`` ``(id, score)`` per query row, best first."""
        ...

    def flush(self) -> None:
        """Make every write so far durable."""
        ...

    def close(self) -> None:
        """Flush and release the backend."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...


def check_vectors(ids: Sequence[str], vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Validate a write batch and return it as a contiguous float32 matrix."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise BadVectors(f"vectors must be a [N, D] matrix, got shape {array.shape}")
    if len(ids) != array.shape[0]:
        raise BadVectors(f"{len(ids)} ids for {array.shape[0]} vectors")
    if dim is not None and array.shape[1] != dim:
        raise BadVectors(f"vectors have dimension {array.shape[1]}, the index has {dim}")
    if not np.isfinite(array).all():
        raise BadVectors("vectors contain NaN or infinity")
    if len(set(ids)) != len(ids):
        raise BadVectors("duplicate ids in one batch")
    for id_ in ids:
        if not isinstance(id_, str) or not id_ or any(c in id_ for c in FORBIDDEN_ID_CHARS):
            raise BadVectors(
                f"ids must be non-empty one-line strings without quotes or backslashes, got {id_!r}"
            )
    return array


def check_queries(queries: np.ndarray, dim: int | None, k: int) -> np.ndarray:
    """Validate a query batch (one vector or a matrix) and return it as a float32 matrix."""
    array = np.ascontiguousarray(queries, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise BadVectors(f"queries must be a [Q, D] matrix, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise BadVectors(f"queries have dimension {array.shape[1]}, the index has {dim}")
    if k < 1:
        raise BadVectors(f"k must be at least 1, got {k}")
    return array


def open_index(
    settings: Settings, *, collection: str | None = None, dim: int | None = None
) -> VectorIndex:
    """Open (or create) the index that ``settings.index`` names.

    ``collection`` keeps embedding spaces apart (one per retrieval model); it defaults to
    ``settings.index.collection``. ``dim`` may be left out: an existing index knows it, a new one
    takes it from its first vectors.
    """
    name = collection or settings.index.collection
    if settings.index.backend == "faiss":
        from video_mm.index.faiss_index import FaissIndex

        return FaissIndex.open(settings.index_url, name, settings.index, dim=dim)
    if settings.index.backend == "milvus":
        from video_mm.index.milvus_index import MilvusIndex

        return MilvusIndex.open(settings.index_url, name, settings.index, dim=dim)
    raise IndexError_(f"unknown index backend {settings.index.backend!r}")
