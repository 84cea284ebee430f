"""A feature cache keyed by what the features depend on, so nothing is computed twice.

The key is (sha256 of the video's bytes, sampler settings, backbone, weights hash, grid; an int8
backbone's weights id names its calibration too): renaming or moving a video still hits, changing
any input misses. Features of a time window of a file add the window to the sampler settings
(:func:`window_sampler`); a whole file's key has no window. Entries are safetensors files written
through fsspec (a local folder, ``s3://``, ``memory://``), one per key, atomically. Models that
train their CNN read decoded frames instead; those are cached the same way (:func:`frames_key`,
``get_frames``/``put_frames``: uint8 ``[T, H, W, 3]``), since decoding is then the repeated work.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from video_mm.errors import StorageError
from video_mm.records import ClipFeatures
from video_mm.settings import Settings

FORMAT_VERSION = 1
T = TypeVar("T")

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a big file is hashed once."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def dumps(feats: ClipFeatures, metadata: dict[str, str] | None = None) -> bytes:
    """ClipFeatures -> safetensors bytes: ``features [T, D]``, ``timestamps [T]``, ``grid``; the
    backbone and a damaged video's warning in the metadata."""
    tensors = {
        "features": np.ascontiguousarray(feats.features, dtype=np.float32),
        "timestamps": np.ascontiguousarray(feats.times, dtype=np.float64),
    }
    if feats.grid is not None:
        tensors["grid"] = np.ascontiguousarray(feats.grid, dtype=np.float32)
    warning = {"warning": feats.warning} if feats.warning else {}
    return st_save(tensors, metadata={**(metadata or {}), "backbone": feats.backbone, **warning})


def read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors blob (the numpy loader drops them)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def loads(data: bytes) -> ClipFeatures:
    tensors = st_load(data)
    metadata = read_metadata(data)
    return ClipFeatures(
        features=tensors["features"],
        times=tensors["timestamps"],
        backbone=metadata.get("backbone", ""),
        grid=tensors.get("grid"),
        warning=metadata.get("warning", ""),
    )


@dataclass(frozen=True)
class CacheKey:
    """Everything the features of one video depend on."""

    video_sha256: str
    sampler: dict[str, Any] = field(hash=False)  # sampler name, n, fps, size, start, end
    backbone: str
    weights_id: str
    grid: bool = False

    def digest(self) -> str:
        doc = {"v": FORMAT_VERSION, **asdict(self)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def window_sampler(
    sampler: dict[str, Any], start: float | None = None, end: float | None = None
) -> dict[str, Any]:
    """The sampler part of a key for ``[start, end)`` of a file: two windows of one file never
    share an entry, and a whole file (no window) keeps the key it had before windows existed."""
    window = {k: float(v) for k, v in (("start", start), ("end", end)) if v is not None}
    return {**sampler, **window}


def frames_key(video_sha256: str, sampler: dict[str, Any]) -> CacheKey:
    """The key of a video's sampled uint8 frames: no backbone, so it never meets a features key."""
    return CacheKey(video_sha256=video_sha256, sampler=sampler, backbone="frames:uint8",
                    weights_id="")


class FeatureCache:
    """``get``/``put`` ClipFeatures by :class:`CacheKey` under an fsspec root."""

    def __init__(self, root: str | Path, **storage_options: Any) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(str(root), **storage_options)
        self.root = self.root.rstrip("/")
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureCache:
        return cls(settings.features.cache_url or settings.data_dir / "features")

    def path(self, key: CacheKey) -> str:
        d = key.digest()
        return f"{self.root}/{d[:2]}/{d}.safetensors"

    def get(self, key: CacheKey) -> ClipFeatures | None:
        """The cached features, or None; an unreadable entry counts as a miss and is rewritten."""
        return self._load(key, loads)

    def put(self, key: CacheKey, feats: ClipFeatures) -> str:
        """Write atomically (temporary name, then move) so readers never see half a file."""
        return self._write(key, dumps(feats, {"key": key.digest(), "weights": key.weights_id}))

    def get_frames(self, key: CacheKey) -> np.ndarray | None:
        """Cached uint8 frames ``[T, H, W, 3]`` (a :func:`frames_key`), or None."""
        return self._load(key, lambda data: st_load(data)["frames"])

    def put_frames(self, key: CacheKey, frames: np.ndarray) -> str:
        """Write uint8 frames atomically, as :meth:`put` writes features."""
        data = st_save({"frames": np.ascontiguousarray(frames, dtype=np.uint8)},
                       metadata={"key": key.digest()})
        return self._write(key, data)

    def _load(self, key: CacheKey, parse: Callable[[bytes], T]) -> T | None:
        try:
            with self.fs.open(self.path(key), "rb") as f:
                value: T | None = parse(f.read())
        except Exception:  # absent, truncated or foreign: recompute rather than fail the video
            value = None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def _write(self, key: CacheKey, data: bytes) -> str:
        path = self.path(key)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write feature cache entry {path}: {exc}") from exc
        return path
