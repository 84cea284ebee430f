"""The feature cache: round trip, keys, fsspec roots, damaged entries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from video_mm.features.cache import (
    CacheKey,
    FeatureCache,
    dumps,
    file_sha256,
    frames_key,
    loads,
)
from video_mm.records import ClipFeatures
from video_mm.settings import Settings

KEY = CacheKey(
    video_sha256="ab" * 32,
    sampler={"sampler": "uniform", "n_frames": 16, "fps": 1.0, "size": 224},
    backbone="resnet18",
    weights_id="none:seed0",
)


def feats(grid: bool = False) -> ClipFeatures:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((3, 8, 2, 2)).astype(np.float32) if grid else None
    f = rng.standard_normal((3, 8)).astype(np.float32)
    return ClipFeatures(f, np.array([0.0, 0.5, 1.0]), "resnet18", grid=g)


@pytest.mark.parametrize("grid", [False, True])
def test_safetensors_round_trip(grid: bool) -> None:
    a = feats(grid)
    b = loads(dumps(a))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.times, b.times)
    assert b.times.dtype == np.float64 and b.backbone == "resnet18"
    assert (b.grid is None) == (not grid)


def test_frames_are_kept_apart_from_features(tmp_path: Path) -> None:
    """Decoded uint8 frames (end-to-end training) share the cache but never a features key."""
    cache = FeatureCache(tmp_path)
    key = frames_key(KEY.video_sha256, KEY.sampler)
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 10, 3), dtype=np.uint8)
    assert cache.get_frames(key) is None and cache.misses == 1
    cache.put(KEY, feats())
    cache.put_frames(key, frames)
    got = cache.get_frames(key)
    assert got is not None and got.dtype == np.uint8 and np.array_equal(got, frames)
    assert cache.get(key) is None and cache.get_frames(KEY) is None  # neither reads as the other
    np.testing.assert_array_equal(cache.get(KEY).features, feats().features)


def test_under_data_dir_by_default(settings: Settings) -> None:
    cache = FeatureCache.from_settings(settings)
    assert cache.get(KEY) is None and cache.misses == 1
    path = cache.put(KEY, feats())
    root = (settings.data_dir / "features").resolve()
    assert Path(path).is_file() and Path(path).is_relative_to(root)
    hit = cache.get(KEY)
    assert hit is not None and cache.hits == 1
    np.testing.assert_array_equal(hit.features, feats().features)
    assert not list(Path(path).parent.glob("*.tmp"))  # written atomically


def test_any_fsspec_root() -> None:
    cache = FeatureCache("memory://vmm-test-cache")
    cache.put(KEY, feats())
    assert cache.get(KEY) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"video_sha256": "cd" * 32},
        {"sampler": {**KEY.sampler, "n_frames": 8}},
        {"backbone": "resnet50"},
        {"weights_id": "sha256:00"},
        {"grid": True},
    ],
)
def test_any_key_part_changes_the_entry(tmp_path: Path, change: dict) -> None:
    cache = FeatureCache(tmp_path)
    cache.put(KEY, feats())
    other = dataclasses.replace(KEY, **change)
    assert other.digest() != KEY.digest()
    assert cache.get(other) is None


def test_damaged_entry_is_a_miss(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    Path(cache.put(KEY, feats())).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    assert cache.get(KEY) is None
    cache.put(KEY, feats())
    assert cache.get(KEY) is not None


def test_file_sha256_is_the_content_hash(tmp_path: Path) -> None:
    import hashlib

    p = tmp_path / "v.bin"
    p.write_bytes(b"video bytes")
    assert file_sha256(p) == hashlib.sha256(b"video bytes").hexdigest()
    q = tmp_path / "renamed.bin"
    q.write_bytes(b"video bytes")
    assert file_sha256(q) == file_sha256(p)
