"""transformers image encoders as frame backbones: tiny random models of each family, loaded from
a folder and from a pre-populated hub cache with the network off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_FAMILIES, build_tiny_hf, hub_cache_entry
from video_mm.errors import ConfigError, ModelError, WeightsNotFound
from video_mm.features.backbones import create_backbone
from video_mm.features.cache import FeatureCache
from video_mm.features.extract import FeatureExtractor, extract_video
from video_mm.settings import FeatureSettings, SamplingSettings

# input sizes the families' processors leave unresized, so ours and theirs see the same pixels
NATIVE = {"clip": 32, "siglip": 32, "vit": 32, "dinov2": 36, "convnext": 36, "resnet": 36}
DIMS = {"clip": 24, "siglip": 32, "vit": 32, "dinov2": 32, "convnext": 32, "resnet": 32}


def frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def reference(family: str, folder: Path, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own pipeline: its image processor, then its pooled image vector."""
    from transformers import AutoImageProcessor, AutoModel

    proc = AutoImageProcessor.from_pretrained(folder)
    pixels = proc(images=list(x), return_tensors="pt")["pixel_values"]
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        if family in ("clip", "siglip"):
            pooled = model.get_image_features(pixel_values=pixels).pooler_output
        elif family in ("vit", "dinov2"):
            pooled = model(pixel_values=pixels).last_hidden_state[:, 0]
        else:
            pooled = model(pixel_values=pixels).pooler_output.flatten(1)
    return pixels, pooled


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_family_matches_its_own_processor_and_model(family: str, tiny_hf: dict[str, Path]) -> None:
    folder = tiny_hf[family]
    x = frames(3, NATIVE[family], NATIVE[family])
    b = create_backbone(f"hf:{folder}")
    assert b.dim == DIMS[family] and b.weights_id.startswith("sha256:")
    pixels, expected = reference(family, folder, x)
    ours = b.preprocess(x)
    torch.testing.assert_close(ours, pixels, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(b(ours), expected, atol=1e-4, rtol=1e-4)
    # any frame size comes out at the model's input size; the grid has the right shape
    g = create_backbone(f"hf:{folder}", grid=True)
    with torch.inference_mode():
        pooled, grid = g(g.preprocess(frames(2, 48, 80)))
    assert pooled.shape == (2, DIMS[family]) and grid.dim() == 4 and grid.shape[0] == 2
    assert grid.shape[2] == grid.shape[3] >= 1


def test_extractor_and_cache_keyed_by_the_model(
    tiny_hf: dict[str, Path], tmp_path: Path, msvd14_videos: list[Path]
) -> None:
    """Same [T, D] files and cache as torchvision backbones; two models never share entries and a
    copy of the same files is the same model."""
    other = build_tiny_hf("clip", tmp_path / "clip-seed1", seed=1)
    copy = Path(shutil.copytree(tiny_hf["clip"], tmp_path / "clip-copy"))
    a, b, c = (FeatureExtractor(FeatureSettings(backbone=f"hf:{f}", device="cpu", batch_size=4))
               for f in (tiny_hf["clip"], other, copy))
    assert a.backbone.weights_id != b.backbone.weights_id
    assert a.backbone.weights_id == c.backbone.weights_id
    sampling = SamplingSettings(n_frames=5, size=32)
    cache = FeatureCache(tmp_path / "cache")
    video = msvd14_videos[0]
    fa = extract_video(video, sampling, extractor=a, cache=cache)
    fb = extract_video(video, sampling, extractor=b, cache=cache)
    assert fa.features.shape == (5, 24) and cache.misses == 2 and cache.hits == 0
    assert not np.allclose(fa.features, fb.features)
    again = extract_video(video, sampling, extractor=a, cache=cache)
    assert cache.hits == 1 and np.array_equal(again.features, fa.features)


def test_unsupported_and_missing(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=37, vocab_size=50)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match="not a supported image encoder"):
        create_backbone(f"hf:{tmp_path / 'bert'}")
    with pytest.raises(ConfigError, match="neither a folder nor"):
        create_backbone("hf:not a repo id!")
    with pytest.raises(WeightsNotFound, match="hf download nobody/nothing"):
        create_backbone("hf:nobody/nothing")  # the suite runs with HF_HUB_OFFLINE=1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"broken: no readable transformers config\.json"):
        create_backbone(f"hf:{tmp_path / 'broken'}")


def test_repo_id_from_a_prepopulated_hub_cache_offline(
    tiny_hf: dict[str, Path], tmp_path: Path
) -> None:
    """A fresh process with HF_HOME at a cache laid out as the hub's and HF_HUB_OFFLINE=1 loads
    ``hf:tiny-org/tiny-clip``; its features equal those of the folder it came from."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    hub_cache_entry(tmp_path / "hf", "tiny-org/tiny-clip", tiny_hf["clip"], rev)
    x = frames(2, 32, 32)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import json, sys, numpy as np, torch\n"
        "from video_mm.features.backbones import create_backbone\n"
        "b = create_backbone('hf:tiny-org/tiny-clip')\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "with torch.inference_mode():\n"
        "    f = b(b.preprocess(x))\n"
        "print(json.dumps({'id': b.weights_id, 'f': f.tolist()}))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["id"] == f"hf:tiny-org/tiny-clip@{rev}"
    b = create_backbone(f"hf:{tiny_hf['clip']}")
    with torch.inference_mode():
        expected = b(b.preprocess(x))
    torch.testing.assert_close(torch.tensor(got["f"]), expected, atol=1e-5, rtol=1e-5)
