"""Cheaper CPU precisions on real msvd14 frames: int8 and bfloat16 features stay close to
float32, are named for what made them (so caches keep them apart), and bad calibration input is a
clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from video_mm.errors import ConfigError
from video_mm.features.extract import FeatureExtractor, cache_key
from video_mm.features.quantize import synthetic_frames
from video_mm.io.sampling import sample_frames
from video_mm.settings import FeatureSettings, SamplingSettings


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def frames(avi_clips: list[Path]) -> np.ndarray:
    return np.concatenate([sample_frames(c, n=4, size=224).frames for c in avi_clips[:3]])


def test_int8_and_bf16_features_stay_close_to_float32(frames: np.ndarray) -> None:
    base = FeatureSettings(backbone="resnet18", batch_size=8, calibration_frames=16)
    fp32 = FeatureExtractor(base, device="cpu")
    reference = fp32.extract_frames(frames)
    for precision, floor, suffix in (("int8", 0.97, "+int8"), ("bfloat16", 0.99, "+bf16")):
        ex = FeatureExtractor(base.model_copy(update={"precision": precision}), device="cpu")
        assert ex.name == "resnet18" + suffix and fp32.name == "resnet18"
        feats = ex.extract_frames(frames)
        assert feats.shape == reference.shape and feats.dtype == np.float32
        cos = _cosine(feats, reference)
        assert cos.min() >= floor, (precision, cos.min())
        # still features of the frames: each one is nearest to its own float32 feature
        nearest = np.argmax(_cosine_matrix(feats, reference), axis=1)
        assert (nearest == np.arange(len(frames))).mean() >= 0.9


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_int8_calibrates_on_the_users_videos(avi_clips: list[Path], tmp_path: Path) -> None:
    settings = FeatureSettings(
        backbone="resnet18", precision="int8", calibration=str(avi_clips[0]), calibration_frames=8
    )
    ex = FeatureExtractor(settings, device="cpu")
    assert np.isfinite(ex.extract_frames(synthetic_frames(2))).all()
    with pytest.raises(ConfigError, match="no videos"):
        FeatureExtractor(settings.model_copy(update={"calibration": str(tmp_path)}), device="cpu")


def test_int8_cache_key_names_the_calibration(avi_clips: list[Path]) -> None:
    """Another calibration is another int8 model: its features must not be served from a cache
    filled with the first one's (the key was the backbone and weights alone)."""
    base = FeatureSettings(backbone="resnet18", precision="int8", calibration_frames=8)
    sampling = SamplingSettings(n_frames=2, size=64)

    def key(settings: FeatureSettings) -> str:
        return cache_key(avi_clips[0], sampling, FeatureExtractor(settings, device="cpu")).digest()

    same, fp32 = key(base), FeatureExtractor(
        base.model_copy(update={"precision": "float32"}), device="cpu")
    assert key(base) == same  # deterministic: the same settings hit the same entries
    assert key(base.model_copy(update={"calibration_frames": 4})) != same
    assert key(base.model_copy(update={"calibration": str(avi_clips[0])})) != same
    assert fp32.weights_id == fp32.backbone.weights_id  # float32 keys are unchanged


def test_synthetic_calibration_images_are_deterministic() -> None:
    a, b = synthetic_frames(4, 64), synthetic_frames(4, 64)
    assert a.shape == (4, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.std() > 20  # not a flat grey: calibration needs a spread of activations


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_gpu_path_logic_on_cpu(frames: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path (uint8 frames pinned in the decode thread, copied, preprocessed on the device,
    AMP) run with the device mocked as the CPU: the same features as the CPU path, so only the
    device itself is left for a lent GPU (benchmarks/features.py --device cuda)."""
    import torch

    settings = FeatureSettings(backbone="resnet18", batch_size=8)
    reference = FeatureExtractor(settings, device="cpu").extract_frames(frames)
    ex = FeatureExtractor(settings, device="cpu")
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)  # needs a driver
    ex.cuda, ex.amp_dtype = True, torch.bfloat16  # autocast("cuda") is a no-op on CPU tensors
    prepared = ex._prepare(_batch(frames))
    assert prepared.dtype == torch.uint8  # 4x fewer bytes over PCIe than float32
    np.testing.assert_allclose(ex.extract_frames(frames), reference, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="CPU inference"):
        ex_settings = settings.model_copy(update={"precision": "int8", "device": "cuda"})
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        FeatureExtractor(ex_settings, device="cuda")


def _batch(frames: np.ndarray):  # type: ignore[no-untyped-def]
    from video_mm.records import FrameBatch

    return FrameBatch(frames=frames, times=np.zeros(len(frames)), indices=np.arange(len(frames)))
