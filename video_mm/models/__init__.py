"""Video captioners: mean-pool, LRCN and temporal attention, their decoding, saving and loading."""

from video_mm.models.base import CaptionerOutput, CaptionModel, caption_loss
from video_mm.models.decoding import Decoding, Hypothesis, beam_search, greedy
from video_mm.models.factory import (
    BackboneSpec,
    Captioner,
    create_model,
    export_frozen,
    from_pretrained,
    list_configs,
    load_config,
    save_pretrained,
)

__all__ = [
    "BackboneSpec",
    "CaptionModel",
    "Captioner",
    "CaptionerOutput",
    "Decoding",
    "Hypothesis",
    "beam_search",
    "caption_loss",
    "create_model",
    "export_frozen",
    "from_pretrained",
    "greedy",
    "list_configs",
    "load_config",
    "save_pretrained",
]
