"""The error tree. Every error says what was wrong and with which file or object.

Surfaces map these to exit codes (CLI), JSON error bodies (API) and failed jobs (workers).
``transient`` tells the worker whether a retry can help: bad input never retries.
"""

from __future__ import annotations

from pathlib import Path


class VideoMMError(Exception):
    """Base of every error video-mm raises on purpose."""

    code = "error"
    transient = False


class ConfigError(VideoMMError):
    code = "bad_config"


class VideoError(VideoMMError):
    """Something is wrong with one input video."""

    code = "bad_video"

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class NotAVideo(VideoError):
    code = "not_a_video"


class CorruptVideo(VideoError):
    code = "corrupt_video"


class UnsupportedCodec(VideoError):
    code = "unsupported_codec"


class VideoTooLarge(VideoError):
    code = "video_too_large"


class DecodeTimeout(VideoError):
    code = "decode_timeout"


class WindowPastEnd(VideoError):
    """A time window asked of a video (a dataset record's span) starts after its last frame."""

    code = "window_past_end"


class ForbiddenSource(VideoError):
    """URLs, playlists and non-file protocols are refused before ffmpeg sees them."""

    code = "forbidden_source"


class ModelError(VideoMMError):
    code = "model_error"


class WeightsNotFound(ModelError):
    code = "weights_not_found"

    def __init__(self, path: str | Path, hint: str) -> None:
        self.path = str(path)
        super().__init__(f"weights file not found: {self.path}. {hint}")


class UnknownWeights(ConfigError):
    """A weights name the backbone does not have (a typo, or another model's weights)."""

    code = "unknown_weights"


class WeightsDownloadFailed(ModelError):
    """Fetching weights failed (server down, HTTP error, disk full); nothing was left behind."""

    code = "weights_download_failed"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class WeightsCorrupt(ModelError):
    """A weights file whose bytes do not match the hash in its name (truncated or corrupted)."""

    code = "weights_corrupt"


class StorageError(VideoMMError):
    code = "storage_error"
    transient = True


class NotFound(VideoMMError):
    code = "not_found"


class IndexError_(VideoMMError):
    """Vector index failures (named with a trailing underscore to not shadow the builtin)."""

    code = "index_error"
    transient = True
