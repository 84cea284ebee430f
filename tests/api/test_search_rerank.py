"""Search with re-ranking through the API: a re-ranker saved where the server finds it, a real
video processed by the pipeline (which stores its clips' features as the re-ranker reads them:
one vector a frame, or 2 x 2 cells of the backbone's grid), then ``rerank_k`` per query."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

FEAT_DIM = 576  # the tiny pipeline models' backbone (tests/pipeline/conftest.py)


@pytest.fixture(scope="module", params=[1, 2], ids=["frames", "cells"])
def rerank_server(tmp_path_factory: pytest.TempPathFactory, make_module_server, mp4_clip: Path,
                  request: pytest.FixtureRequest) -> Iterator[tuple[object, str]]:  # fmt: skip
    from video_mm.artifacts import FeatureRecipe
    from video_mm.rerank.model import Reranker, load_config, save_pretrained

    tmp = tmp_path_factory.mktemp("rerank-api")
    torch.manual_seed(0)
    k = request.param
    config = load_config({"name": "tiny-reranker", "hidden": 32, "layers": 1, "heads": 2,
                          "intermediate": 64, "grid_pool": k})  # fmt: skip
    model = Reranker(config, FEAT_DIM * k * k)
    model.prior_weight = 0.5  # search adds the retrieval model's logit from the stored features
    # the pipeline's sampling (tests/conftest.py); cells: the same pass keeps the grid
    recipe = FeatureRecipe(backbone="mobilenet_v3_small", weights="none", n_frames=4, size=112,
                           grid_pool=k, normalize=False) if k > 1 else None
    save_pretrained(tmp / "vmm" / "models" / "reranker", model, recipe=recipe)
    with make_module_server(tmp) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        with open(mp4_clip, "rb") as f:
            r = c.post("/v1/videos", files={"file": ("video8560.mp4", f, "video/mp4")},
                       headers={"Authorization": f"Bearer {server.settings.api_tokens[0]}"})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 300  # a hang guard, not a speed assertion
        while (job := c.get(r.json()["job_url"]).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"job still {job['state']}"
            time.sleep(0.2)
        assert job["state"] == "done", job
        yield server, r.json()["video_id"]


def test_search_with_rerank_k_rescores_the_candidates(rerank_server) -> None:  # type: ignore[no-untyped-def]
    server, video_id = rerank_server
    with httpx.Client(base_url=server.url, timeout=120) as c:
        query = "a man is talking"
        plain = c.get("/v1/search", params={"q": query, "k": 20, "rerank_k": 0}).json()["hits"]
        r = c.get("/v1/search", params={"q": query, "k": 20, "rerank_k": 20})
        assert r.status_code == 200, r.text
        reranked = r.json()["hits"]
        assert len(plain) >= 2 and {h["stage"] for h in plain} == {"hybrid"}
        assert all(h["stage"] == "rerank" and h["score_model"] == "tiny-reranker"
                   for h in reranked)  # fmt: skip
        # the same candidates come back (none lost), in the re-ranker's order
        key = lambda h: (h["video_id"], h["clip_index"])  # noqa: E731
        assert sorted(map(key, plain)) == sorted(map(key, reranked))
        scores = [h["score"] for h in reranked]
        assert scores == sorted(scores, reverse=True)
        # Each score says what it is; a re-ranked hit keeps its first-stage score and cosine.
        before = {key(h): h for h in plain}
        assert {h["score_kind"] for h in plain} == {"rank fusion"}
        assert all(h["score_kind"] == "re-ranker" and "match logit" in h["score_meaning"]
                   and h["first_stage_score"] == before[key(h)]["score"]
                   and h["vector_score"] == before[key(h)]["vector_score"] for h in reranked)
        assert all(h["video_id"] == video_id for h in reranked)
        capped = c.get("/v1/search", params={"q": query, "k": 20, "rerank_k": 100_000})
        assert capped.status_code == 200  # capped at search.max_rerank_k, like k
        assert {h["stage"] for h in capped.json()["hits"]} == {"rerank"}
