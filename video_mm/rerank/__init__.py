"""Co-attention re-ranking: a cross-modal model that re-scores the dual encoder's top-k."""

from video_mm.rerank.model import (
    Reranker,
    RerankerConfig,
    from_pretrained,
    is_reranker,
    load_config,
    save_pretrained,
)

__all__ = [
    "Reranker", "RerankerConfig", "from_pretrained", "is_reranker", "load_config",
    "save_pretrained",
]
