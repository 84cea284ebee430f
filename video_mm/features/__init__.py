"""Per-frame CNN features: torchvision backbones, batched extraction with decode overlapped,
and a content-keyed cache."""

from video_mm.features.backbones import Backbone, Preprocess, create_backbone, list_backbones
from video_mm.features.cache import CacheKey, FeatureCache
from video_mm.features.extract import FeatureExtractor, Window, extract_video, extract_videos

__all__ = [
    "Backbone",
    "CacheKey",
    "FeatureCache",
    "FeatureExtractor",
    "Preprocess",
    "Window",
    "create_backbone",
    "extract_video",
    "extract_videos",
    "list_backbones",
]
