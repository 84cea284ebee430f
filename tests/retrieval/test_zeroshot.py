"""Zero-shot search with a pretrained dual encoder: a tiny random CLIP as the retrieval model,
checked against the model's own embeddings, saved and loaded, then end to end (index, search,
the HTTP API) on real clips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from video_mm.errors import ConfigError, ModelError
from video_mm.features.backbones import create_backbone
from video_mm.retrieval.model import from_pretrained, load_config, save_pretrained
from video_mm.retrieval.training import (
    ClipSet,
    RetrievalTrainConfig,
    build_model,
    evaluate,
    train_retrieval,
)
from video_mm.retrieval.zeroshot import ZERO_SHOT_NOTE, init_config, zero_shot
from video_mm.settings import Settings
from video_mm.train.loop import TrainConfig


def clip_reference(folder: Path, frames: np.ndarray, texts: list[str]) -> tuple:
    """CLIP4Clip meanP computed with transformers directly."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(images=list(frames),
                                                        return_tensors="pt")["pixel_values"]
    tok = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        txt = model.get_text_features(**tok).pooler_output
    video = torch.nn.functional.normalize(img, dim=-1).mean(0)
    return (torch.nn.functional.normalize(video, dim=0).numpy(),
            torch.nn.functional.normalize(txt, dim=-1).numpy())


def test_zero_shot_is_clip4clip_meanp(tiny_hf: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_hf["clip"]
    model = zero_shot(str(folder))
    assert model.trained_on == ZERO_SHOT_NOTE and model.backbone.name == f"hf:{folder}"
    assert model.recipe.normalize is False and model.recipe.size == 32
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    texts = ["a man playing guitar", "a cat is playing piano"]
    feats = create_backbone(model.backbone.name)
    with torch.inference_mode():
        frame_feats = feats(feats.preprocess(frames)).numpy()
    video_ref, text_ref = clip_reference(folder, frames, texts)
    np.testing.assert_allclose(model.embed_videos([frame_feats])[0], video_ref, atol=1e-5)
    np.testing.assert_allclose(model.embed_texts(texts), text_ref, atol=1e-5)
    # saved without the CLIP weights (read again from their source), loaded the same
    saved = save_pretrained(tmp_path / "zs", model)
    card = (saved / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])  # the Hugging Face model-card metadata
    assert meta["library_name"] == "video-mm" and "video-text-retrieval" in meta["tags"]
    assert meta["video_mm"]["frame_encoder"]["backbone"] == f"hf:{folder}"
    assert meta["video_mm"]["created"] and "pytest" in meta["video_mm"]["metrics_command"]
    from huggingface_hub import ModelCard  # the hub's own parser reads the card as pushed

    hub_card = ModelCard.load(saved / "README.md")
    assert hub_card.data.library_name == "video-mm"
    assert hub_card.data.to_dict()["video_mm"]["kind"] == "retrieval"
    assert (saved / "model.safetensors").stat().st_size < 4096
    assert json.loads((saved / "features.json").read_text())["backbone"] == f"hf:{folder}"
    again = from_pretrained(saved)
    np.testing.assert_allclose(again.embed_texts(texts), text_ref, atol=1e-5)
    assert again.trained_on == ZERO_SHOT_NOTE


def test_siglip_zero_shot_and_refusals(tiny_hf: dict[str, Path], tmp_path: Path) -> None:
    model = zero_shot(str(tiny_hf["siglip"]))
    v = model.embed_texts(["a dog", "a red ball"])
    assert v.shape == (2, 32) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="CLIP or SigLIP"):
        zero_shot(str(tiny_hf["dinov2"]))
    (tmp_path / "config.json").write_text("{not json")  # read as the backbones read it
    with pytest.raises(ModelError, match=r"no readable transformers config\.json"):
        zero_shot(str(tmp_path))


@pytest.mark.integration
def test_zero_shot_end_to_end_index_search_api(
    tiny_hf: dict[str, Path], tmp_path: Path, msvd14_videos: list[Path],
    monkeypatch: pytest.MonkeyPatch, api_server: Any,
) -> None:
    """`vmm index` with only a zero-shot CLIP configured embeds every clip; `vmm search` and
    GET /v1/search find them and name the model. With random weights the ranking means nothing,
    so the test checks the plumbing: each video's own clip vector, used as the query's, comes
    first (text queries then go through the same index)."""
    from video_mm.cli import app
    from video_mm.settings import get_settings

    model_dir = save_pretrained(tmp_path / "models" / "clip-zs", zero_shot(str(tiny_hf["clip"])))
    env = {"VMM_DATA_DIR": str(tmp_path / "vmm"), "VMM_MODELS__RETRIEVAL": str(model_dir),
           "VMM_MODELS__CAPTIONERS": "[]", "VMM_SEGMENT__WINDOW_S": "60",
           "VMM_SEGMENT__STRIDE_S": "60"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        videos = msvd14_videos[:3]
        result = runner.invoke(app, ["index", *map(str, videos), "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert "note: no captioner configured" in result.stderr  # said at start
        assert all(r["notes"] == ["no captioner configured"] for r in rows)  # and recorded
        assert [r["state"] for r in rows] == ["done"] * 3
        found = runner.invoke(app, ["search", "a man is playing a guitar", "-k", "3", "--json",
                                    "--mode", "vector"])
        assert found.exit_code == 0, found.output
        hits = json.loads(found.stdout)
        assert len(hits) == 3 and {h["video_id"] for h in hits} == {r["video_id"] for r in rows}
        assert {h["embedding_model"] for h in hits} == {"clip-zs"}
        settings = get_settings()
    finally:
        get_settings.cache_clear()

    with api_server(Settings(**{**settings.model_dump(), "api": {"embedded_worker": False}})) as s:
        r = httpx.get(f"{s.url}/v1/search", params={"q": "a cat plays the piano", "k": 3,
                                                     "mode": "vector"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["hits"]) == 3
        assert all(h["embedding_model"] == "clip-zs" for h in body["hits"])
        assert all(h["caption_model"] is None for h in body["hits"])  # no captioner configured
        jobs = httpx.get(f"{s.url}/v1/jobs", timeout=60).json()["jobs"]
        assert len(jobs) == 3 and all(j["notes"] == ["no captioner configured"] for j in jobs)
        assert body["hits"][0]["notes"] == [
            "zero-shot: pretrained image-text model, not trained on video"]


def _clips(n: int, seed: int, dim: int) -> ClipSet:
    """Clips whose frame features carry their colour, shape and motion; captions in the tiny
    tokenizer's words."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((6, dim)).astype(np.float32)
    ids, feats, caps = [], [], []
    for ci, colour in enumerate(("red", "blue")):
        for si, shape in enumerate(("square", "circle")):
            for mi, motion in enumerate(("moving", "spinning")):
                for rep in range(n):
                    x = basis[ci] + basis[2 + si] + basis[4 + mi]
                    ids.append(f"{colour}-{shape}-{motion}-{seed}-{rep}")
                    feats.append((x + 0.3 * rng.standard_normal((6, dim))).astype(np.float32))
                    caps.append([f"a {colour} {shape} {motion}", f"the {colour} {shape} is "
                                 f"{motion}"])
    return ClipSet(ids, feats, caps)


def test_init_fine_tunes_on_top_of_the_zero_shot_space(
    tiny_hf: dict[str, Path], tmp_path: Path
) -> None:
    """`--init hf:<clip>`: linear projections from the identity (so it starts exactly at the
    zero-shot model) and the pooling train on the frozen towers; held-out recall rises."""
    config, recipe = init_config(str(tiny_hf["clip"]))
    assert recipe.backbone == f"hf:{tiny_hf['clip']}" and config["text_tower"] == "hf"
    train, test = _clips(4, 0, 24), _clips(1, 1, 24)
    cfg = load_config(config)
    start = build_model(cfg, train, 24)
    zs = zero_shot(str(tiny_hf["clip"]))
    np.testing.assert_allclose(start.embed_texts(["a red ball"]), zs.embed_texts(["a red ball"]),
                               atol=1e-5)
    before = evaluate(start, test)
    run = RetrievalTrainConfig(
        train=TrainConfig(epochs=8, lr=5e-3, warmup_steps=2, progress=False, device="cpu"),
        batch_size=8, pairs_per_clip=2,
    )
    model, _ = train_retrieval(cfg, train, test, out_dir=tmp_path / "run", run=run, resume=False)
    after = evaluate(model, test)
    assert after["rsum"] > before["rsum"] + 50, (before, after)
    # the checkpoint holds the projections, not the CLIP it starts from
    assert (tmp_path / "run" / "best" / "model.safetensors").stat().st_size < 20_000
