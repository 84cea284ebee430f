"""The MiniLM text tower reads the packaged weights, with the network unreachable."""

from __future__ import annotations

import socket

import pytest
import torch

from video_mm.retrieval.model import RetrievalModel, from_pretrained, load_config, save_pretrained
from video_mm.retrieval.towers import MiniLMTextConfig, MiniLMTextTower, minilm_dir


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tower() -> MiniLMTextTower:
    torch.manual_seed(0)
    return MiniLMTextTower(32, MiniLMTextConfig(tune_layers=1, hidden=64)).eval()


def test_weights_come_from_the_installed_package():
    folder = minilm_dir()
    assert "site-packages" in str(folder) and (folder / "model.safetensors").is_file()


def test_loads_offline_and_encodes(no_network):
    tower = MiniLMTextTower(32, MiniLMTextConfig(hidden=64)).eval()
    out = tower.encode(["a dog gives a man a high five", "a woman is slicing an onion"])
    assert out.shape == (2, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_pretrained_encoder_knows_paraphrases(tower):
    """Before any training, the encoder's own pooled output puts paraphrases together."""
    enc = tower.tokenize(["a man is playing a guitar", "someone plays the guitar",
                          "a cat sleeps on a sofa"])  # fmt: skip
    with torch.no_grad():
        hidden = tower.encoder(**enc)[0]
    mask = enc["attention_mask"].unsqueeze(-1)
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2


def test_only_the_top_layers_train(tower):
    layers = tower.encoder.encoder.layer
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert not any(p.requires_grad for p in tower.encoder.embeddings.parameters())
    assert all(p.requires_grad for p in tower.proj.parameters())


def test_save_and_load_keep_tuned_weights_and_skip_frozen_ones(tmp_path, no_network):
    cfg = load_config({
        "name": "m", "embed_dim": 32, "video": {"pooling": "mean", "hidden": 32},
        "text_tower": "minilm", "text": {"tune_layers": 1, "hidden": 64},
    })  # fmt: skip
    torch.manual_seed(0)
    model = RetrievalModel(cfg, feat_dim=12, vocab=None).eval()
    with torch.no_grad():
        model.text.encoder.encoder.layer[-1].output.dense.bias.add_(0.5)  # as if tuned
    save_pretrained(tmp_path, model)
    size = (tmp_path / "model.safetensors").stat().st_size
    assert size < 20e6  # the 90 MB of frozen MiniLM weights are not copied
    loaded = from_pretrained(tmp_path, device="cpu")
    texts = ["a dog runs", "two people dance"]
    assert torch.allclose(loaded.encode_text(texts), model.encode_text(texts), atol=1e-5)
