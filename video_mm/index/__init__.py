"""Vector indexes: one :class:`VectorIndex` interface, a FAISS file backend and a Milvus backend."""

from video_mm.index.base import BadVectors, SearchResult, VectorIndex, open_index

__all__ = ["BadVectors", "SearchResult", "VectorIndex", "open_index"]
