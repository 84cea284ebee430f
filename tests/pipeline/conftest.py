"""Tiny, randomly initialised models saved the way real ones are, and settings that use them.

The pipeline only needs models that load through the factories and produce captions and vectors;
training quality is the models' rooms' business. Small sizes keep every job a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.settings import Settings

FEATURE_BACKBONE = "mobilenet_v3_small"  # 30x cheaper than resnet18: fast tests
FEAT_DIM = 576


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, msvd14_captions: dict) -> dict:
    """``{"captioners": [dir, dir], "retrieval": dir | None}`` under a session temp folder."""
    import torch

    from video_mm.data.vocab import Vocabulary
    from video_mm.models.factory import BackboneSpec, create_model, save_pretrained

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vocab = Vocabulary.build([c for caps in msvd14_captions.values() for c in caps], min_count=2)
    spec = BackboneSpec(name=FEATURE_BACKBONE, weights="none", dim=FEAT_DIM)
    configs = {
        "lrcn": {"arch": "lrcn", "embed_dim": 16, "hidden_dim": 32, "conditioning": "both"},
        "attention": {"arch": "temporal_attention", "embed_dim": 16, "hidden_dim": 32,
                      "attention": "additive", "attn_dim": 16},
    }
    dirs = []
    for name, cfg in configs.items():
        model = create_model({"name": name, **cfg}, len(vocab), FEAT_DIM)
        dirs.append(save_pretrained(root / "captioners" / name, model, vocab, spec,
                                    trained_on="nothing (random init, for tests)"))
    from video_mm.retrieval.model import RetrievalModel, load_config
    from video_mm.retrieval.model import save_pretrained as save_retrieval

    config = load_config({"name": "retrieval", "embed_dim": 32, "text_tower": "learned",
                          "video": {"pooling": "mean", "hidden": 32},
                          "text": {"word_dim": 16, "hidden": 32}})
    model = RetrievalModel(config, FEAT_DIM, vocab)
    model.backbone = spec
    retrieval = save_retrieval(root / "retrieval", model)
    return {"captioners": dirs, "retrieval": retrieval}


def pipeline_settings(data_dir: Path, models: dict, **overrides: object) -> Settings:
    """Settings for fast jobs: few frames per clip, short windows, the tiny models."""
    values: dict = {
        "data_dir": data_dir,
        "sampling": {"sampler": "uniform", "n_frames": 4, "size": 112},
        "segment": {"method": "fixed", "window_s": 4.0, "stride_s": 4.0, "min_clip_s": 1.0},
        "features": {"backbone": FEATURE_BACKBONE, "weights": "none", "batch_size": 16},
        "models": {
            "captioners": [str(p) for p in models["captioners"]],
            "retrieval": str(models["retrieval"] or ""),
        },
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fast_settings(tmp_path: Path, tiny_models: dict) -> Settings:
    return pipeline_settings(tmp_path / "vmm", tiny_models)


CUT_WARNING = "decoded 50 of 100 frames: the file is cut at 2.0 s"


@pytest.fixture
def cut_mp4(tmp_path: Path) -> Path:
    """A 4 s, 100-frame H.264 MP4 (moov first) cut after half its bytes: 50 frames are there."""
    from video_mm.io.ffmpeg import run_ffmpeg

    whole = tmp_path / "whole.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4", "-c:v",
                "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(whole)])  # fmt: skip
    data = whole.read_bytes()
    (cut := tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2 + 101])
    return cut
