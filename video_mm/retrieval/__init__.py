"""Joint video-text embedding: towers, InfoNCE, training, evaluation, save and load."""

from video_mm.retrieval.model import (
    RetrievalConfig,
    RetrievalModel,
    from_pretrained,
    load_config,
    save_pretrained,
)

__all__ = ["RetrievalConfig", "RetrievalModel", "from_pretrained", "load_config", "save_pretrained"]
