"""Shared fixtures: real data from ../shared/data and settings isolated per test."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from video_mm.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VMM_SHARED_DATA", REPO.parent / "shared" / "data"))
# Tests never need the network: weights and hub models come from local servers and caches only
# (tests of downloading lift this for themselves).
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout; its absence is an error, not a skip."""
    if not (SHARED_DATA / "PROVENANCE.md").exists():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set VMM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def msvd14_videos(shared_data: Path) -> list[Path]:
    videos = sorted((shared_data / "msvd14" / "videos").iterdir())
    assert len(videos) == 14
    return videos


@pytest.fixture(scope="session")
def msvd14_captions(shared_data: Path) -> dict[str, list[str]]:
    """Training captions of the 14 real clips, by video id (held-out ones are for evaluation)."""
    data = json.loads((shared_data / "msvd14" / "captions.json").read_text())
    return {v["video_id"]: v["captions"] for v in data["videos"]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose every file lives under this test's temporary directory."""
    return Settings(data_dir=tmp_path / "vmm")



@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic benchmark: 16 videos of 64 px, 12 train and 4 test, no val split."""
    from video_mm.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, 16, seed=3, config=SynthConfig(size=64, frames=8, fps=4), progress=False)
    return out

@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI reads the process settings: point their data_dir (and the caches) at tmp_path."""
    from video_mm.settings import get_settings

    monkeypatch.setenv("VMM_DATA_DIR", str(tmp_path / "vmm"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


# --- tiny randomly initialised transformers models, written with save_pretrained ---------------

TINY_WORDS = (
    "a", "man", "woman", "dog", "cat", "is", "are", "playing", "plays", "piano", "guitar",
    "running", "runs", "the", "on", "in", "ball", "red", "blue", "square", "circle", "moving",
    "spinning",
)


def _tiny_tokenizer(folder: Path) -> None:
    """A word-level tokenizer (``[PAD] [UNK] [BOS] [EOS]`` then the words) saved beside a model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    vocab |= {w: i + 4 for i, w in enumerate(TINY_WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
        eos_token="[EOS]", model_max_length=16,
    ).save_pretrained(folder)


def build_tiny_hf(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random model of ``family`` (hidden 32, one layer, 32 px images) with its image
    processor (and, for CLIP and SigLIP, a tokenizer) written to ``folder``."""
    import torch
    import transformers as tf

    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                  num_attention_heads=4, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                vocab_size=4 + len(TINY_WORDS), max_position_embeddings=16, pad_token_id=0,
                bos_token_id=2, eos_token_id=3)
    stats = dict(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    torch.manual_seed(seed)
    if family == "clip":
        model = tf.CLIPModel(tf.CLIPConfig(vision_config=vision, text_config=text,
                                           projection_dim=24))
        proc = tf.CLIPImageProcessor(size={"shortest_edge": 32},
                                     crop_size={"height": 32, "width": 32}, **stats)
    elif family == "siglip":
        model = tf.SiglipModel(tf.SiglipConfig(vision_config=vision, text_config=text))
        proc = tf.SiglipImageProcessor(size={"height": 32, "width": 32}, **stats)
    elif family == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**vision))
        proc = tf.BitImageProcessor(size={"shortest_edge": 36},
                                    crop_size={"height": 32, "width": 32}, **stats)
    elif family == "vit":
        model = tf.ViTModel(tf.ViTConfig(**vision), add_pooling_layer=False)
        proc = tf.ViTImageProcessor(size={"height": 32, "width": 32}, **stats)
    elif family == "convnext":
        model = tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32],
                                                   depths=[1, 1, 1, 1], image_size=32))
        proc = tf.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, **stats)
    elif family == "resnet":
        model = tf.ResNetModel(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32],
                                               depths=[1, 1, 1, 1], layer_type="basic"))
        proc = tf.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875, **stats)
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    if family in ("clip", "siglip"):
        _tiny_tokenizer(folder)
    return folder


TINY_FAMILIES = ("clip", "siglip", "dinov2", "vit", "convnext", "resnet")


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> folder of a tiny random model of that family."""
    root = tmp_path_factory.mktemp("tiny_hf")
    return {f: build_tiny_hf(f, root / f) for f in TINY_FAMILIES}


def hub_cache_entry(hf_home: Path, repo_id: str, folder: Path, revision: str) -> Path:
    """Lay ``folder`` out as the hub cache does: ``hub/models--org--name/snapshots/<rev>/`` with
    ``refs/main`` naming the revision (files copied; the real cache links them to blobs/)."""
    import shutil

    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


FEATURE_BACKBONE = "mobilenet_v3_small"  # 30x cheaper than resnet18: fast tests
FEAT_DIM = 576


# Tiny, randomly initialised models saved the way real ones are, and settings that use them (the
# pipeline, API and worker tests). The pipeline only needs models that load through the factories
# and produce captions and vectors; training quality is the models' rooms' business. Small sizes
# keep every job a fraction of a second.
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, msvd14_captions: dict) -> dict:
    """``{"captioners": [dir, dir], "retrieval": dir | None}`` under a session temp folder."""
    import torch

    from video_mm.artifacts import BackboneSpec
    from video_mm.data.vocab import Vocabulary
    from video_mm.models.factory import create_model, save_pretrained

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


def _pipeline_settings(data_dir: Path, models: dict, **overrides: object) -> Settings:
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


@pytest.fixture(scope="session")
def pipeline_settings(tiny_models: dict):  # type: ignore[no-untyped-def]
    """``pipeline_settings(data_dir, **overrides) -> Settings``: fast jobs on the tiny models."""

    def make(data_dir: Path, **overrides: object) -> Settings:
        return _pipeline_settings(data_dir, tiny_models, **overrides)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """The real app under uvicorn in a thread on a free loopback port; ``url`` once it answers."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from video_mm.api.app import create_app

        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="session")
def api_server() -> type[ApiServer]:
    """``with api_server(settings) as server: httpx.get(server.url + ...)``."""
    return ApiServer
