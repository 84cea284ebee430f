"""Search: fusion and merging alone, then with a real catalog (SQLite FTS5) and FAISS index."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from video_mm.errors import ConfigError
from video_mm.index.faiss_index import FaissIndex
from video_mm.records import Caption, Clip, Hit
from video_mm.search import (
    BadQuery,
    Searcher,
    merge_overlapping,
    reciprocal_rank_fusion,
    search,
)
from video_mm.settings import IndexSettings, SearchSettings, Settings
from video_mm.storage.catalog import Catalog, clip_id

DIM = 8
CAPTIONER = "lrcn"
RETRIEVAL = "joint"


def unit(*weights: float) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


class LookupEncoder:
    """A text tower stand-in whose query vectors the test chooses (the real one is learned)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


class Archive:
    """A catalog and a FAISS index written the way the pipeline writes them."""

    def __init__(self, root: Path) -> None:
        self.catalog = Catalog(f"sqlite:///{root / 'catalog.db'}")
        self.index = FaissIndex(root / "index.faiss", IndexSettings())

    def add(
        self,
        name: str,
        clips: list[tuple[float, float, str, np.ndarray]],
        *,
        ready: bool = True,
    ) -> str:
        v = hashlib.sha256(name.encode()).hexdigest()
        self.catalog.add_video(v, blob_key=v, filename=f"{name}.mp4")
        ids = self.catalog.upsert_clips(
            v,
            [Clip(v, i, s, e) for i, (s, e, _, _) in enumerate(clips)],
            thumbnails={i: f"{i:064x}" for i in range(len(clips))},
        )
        self.catalog.upsert_captions(
            (cid, Caption(text, -1.0, CAPTIONER))
            for cid, (_, _, text, _) in zip(ids, clips, strict=True)
        )
        self.index.add(ids, np.stack([vec for *_, vec in clips]))
        self.index.flush()
        self.catalog.upsert_embeddings(RETRIEVAL, {c: c for c in ids})
        if ready:
            self.catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
        return v

    def search(self, query: str, k: int = 5, **kwargs) -> list[Hit]:
        kwargs.setdefault("encoder", LookupEncoder({query: kwargs.pop("vector", unit(1))}))
        return search(query, k, catalog=self.catalog, index=self.index, **kwargs)


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path)


# -- the pieces -----------------------------------------------------------------------------------
def test_rrf_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], rrf_k=60)
    assert [c for c, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1][1] == pytest.approx(1 / 61)
    assert reciprocal_rank_fusion([[], []]) == []
    weighted = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], rrf_k=0, weights=(1.0, 0.25))
    assert weighted == [("a", pytest.approx(1 + 0.25 / 2)), ("b", pytest.approx(0.5 + 0.25))]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], weights=(1.0, 1.0))
    # Equal scores: the better single rank first, then the first list.
    assert [c for c, _ in reciprocal_rank_fusion([["x", "y"], ["z", "x"]])][:2] == ["x", "z"]


def _hit(video: str, index: int, start: float, end: float, score: float) -> Hit:
    return Hit(video, index, start, end, score, caption=f"{video}{index}", thumbnail=str(index))


def test_merge_overlapping() -> None:
    hits = [
        _hit("a", 1, 5, 15, 0.9),
        _hit("b", 0, 0, 10, 0.8),
        _hit("a", 0, 0, 10, 0.7),  # overlaps a1: folded into it
        _hit("a", 3, 30, 40, 0.6),  # same video, apart: its own hit
        _hit("c", 0, 0, 10, 0.5),
    ]
    merged = merge_overlapping(hits, k=3)
    assert [(h.video_id, h.start, h.end) for h in merged] == [
        ("a", 0, 15),
        ("b", 0, 10),
        ("a", 30, 40),
    ]
    assert merged[0].extra["clips"] == [0, 1]
    assert (merged[0].score, merged[0].caption, merged[0].thumbnail) == (0.9, "a1", "1")
    assert hits[0].end == 15 and hits[0].start == 5  # inputs are not modified
    # A gap setting joins hits that nearly touch; a widened hit absorbs the one it now reaches.
    near = [_hit("a", 0, 0, 10, 0.9), _hit("a", 2, 21, 30, 0.8), _hit("a", 1, 10.5, 20.5, 0.7)]
    assert len(merge_overlapping(near, k=5)) == 3  # none overlap
    chained = merge_overlapping(near, k=5, gap_s=0.6)
    assert [(h.start, h.end, h.extra["clips"]) for h in chained] == [(0, 30, [0, 1, 2])]


# -- with a real catalog and index ----------------------------------------------------------------
def test_hybrid_fuses_vector_and_caption_rankings(archive: Archive) -> None:
    v = archive.add(
        "dogs",
        [
            (0, 10, "a man is cooking in a kitchen", unit(1, 0.1)),  # nearest vector, wrong words
            (20, 30, "a dog gives a man a high five", unit(1, 0.5)),  # near and the right words
            (40, 50, "a dog sleeps on a sofa", unit(0, 1)),  # right-ish words only
        ],
    )
    query = "a dog gives a man a high five"
    vector = archive.search(query, mode="vector")
    text = archive.search(query, mode="text")
    hybrid = archive.search(query, mode="hybrid")
    assert [h.clip_index for h in vector] == [0, 1, 2]
    assert text[0].clip_index == 1
    assert [h.clip_index for h in hybrid][:2] == [1, 0]
    best = hybrid[0]
    assert (best.video_id, best.start, best.end) == (v, 20.0, 30.0)
    assert best.caption == query and best.thumbnail == f"{1:064x}"
    assert best.extra["vector_rank"] == 2 and best.extra["text_rank"] == 1
    assert best.extra["filename"] == "dogs.mp4" and best.extra["mode"] == "hybrid"
    assert vector[0].score == pytest.approx(float(unit(1) @ unit(1, 0.1)), abs=1e-5)
    # Each score says what it is; a fused one comes with its scale and the cosine behind it.
    assert best.score == pytest.approx(1 / 62 + 1 / 61)
    assert best.extra["score_kind"] == "rank fusion"
    assert "0.0164 is first by vectors alone, 0.0328 first in both" in best.extra["score_meaning"]
    assert best.extra["vector_score"] == pytest.approx(float(unit(1) @ unit(1, 0.5)), abs=1e-5)
    assert (vector[0].extra["score_kind"], text[0].extra["score_kind"]) == ("cosine",
                                                                           "caption match")


def test_overlapping_clips_of_one_video_become_one_hit(archive: Archive) -> None:
    archive.add(
        "windows",
        [
            (0, 10, "a car", unit(1, 0.05)),
            (5, 15, "a car", unit(1, 0.1)),
            (30, 40, "a car", unit(1, 0.2)),
        ],
    )
    archive.add("other", [(0, 10, "a truck", unit(1, 0.3))])
    hits = archive.search("car", k=3, mode="vector")
    assert [(h.extra["filename"], h.start, h.end) for h in hits] == [
        ("windows.mp4", 0, 15),
        ("windows.mp4", 30, 40),
        ("other.mp4", 0, 10),
    ]
    assert hits[0].extra["clips"] == [0, 1]


def test_filters_by_video_and_date(archive: Archive) -> None:
    crowd = archive.add(
        "crowd", [(i * 10, i * 10 + 10, "a crowd", unit(1, 0.01 * i)) for i in range(12)]
    )
    target = archive.add("target", [(0, 10, "a crowd far away", unit(0.2, 1))])
    only = archive.search(
        "crowd", k=3, mode="vector", video_id=target, options=SearchSettings(candidates=1)
    )
    assert [h.video_id for h in only] == [target]  # found past the crowd's 12 nearer clips
    assert {h.video_id for h in archive.search("crowd", k=20, video_id=crowd)} == {crowd}
    added = archive.catalog.get_video(target).created_at
    assert archive.search("crowd", since=added + timedelta(seconds=1)) == []
    assert len(archive.search("crowd", k=20, mode="text", until=added + timedelta(seconds=1))) == 13
    assert archive.search("crowd", until=datetime(2000, 1, 1, tzinfo=UTC)) == []


def test_only_ready_videos_are_found_and_deleted_ones_vanish(archive: Archive) -> None:
    ready = archive.add("ready", [(0, 10, "a cat", unit(1, 0.5))])
    pending = archive.add("pending", [(0, 10, "a cat", unit(1))], ready=False)
    for mode in ("vector", "text", "hybrid"):
        assert {h.video_id for h in archive.search("cat", mode=mode)} == {ready}
    archive.catalog.mark_ready(pending, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
    assert archive.search("cat", mode="vector")[0].video_id == pending
    archive.catalog.delete_video(pending, index=archive.index)
    assert [h.video_id for h in archive.search("cat")] == [ready]
    assert clip_id(pending, 0) not in archive.index


def test_bad_queries(archive: Archive) -> None:
    archive.add("x", [(0, 10, "a cat", unit(1))])
    with pytest.raises(BadQuery):
        archive.search("   ")
    with pytest.raises(BadQuery):
        archive.search("cat", k=0)
    with pytest.raises(BadQuery, match="longer than"):
        archive.search("cat " * 300)
    with pytest.raises(BadQuery):
        archive.search("cat", k=10_000)
    with pytest.raises(BadQuery):
        archive.search("cat", mode="fuzzy")
    with pytest.raises(ConfigError):
        search("cat", catalog=archive.catalog, mode="vector")
    # Hybrid without a model searches captions only, and says so.
    hits = search("cat", catalog=archive.catalog)
    assert [h.extra["mode"] for h in hits] == ["text"]
    # A query asking for re-ranking on an archive without a re-ranker gets the first stage's
    # order, and every hit says it was not re-ranked; a default that needs one is a bad setup.
    hits = search("cat", catalog=archive.catalog, rerank_k=10)
    assert [h.clip_index for h in hits] == [0] and hits[0].extra["stage"] == "text"
    assert any("no re-ranker" in n for n in hits[0].extra["notes"])
    with pytest.raises(ConfigError, match="re-ranker"):
        search("cat", catalog=archive.catalog, options=SearchSettings(rerank_k=5))


# -- from settings, with a real (untrained) retrieval model ---------------------------------------
@pytest.fixture
def model_settings(
    tmp_path: Path, msvd14_captions: dict[str, list[str]]
) -> tuple[Settings, list[str]]:
    """Settings naming a saved retrieval model, and an archive embedded with its text tower."""
    import torch

    from video_mm.data.vocab import Vocabulary
    from video_mm.index.base import open_index
    from video_mm.retrieval.model import RetrievalModel, load_config, save_pretrained

    torch.manual_seed(0)
    captions = [caps[0] for caps in msvd14_captions.values()]
    vocab = Vocabulary.build([c for caps in msvd14_captions.values() for c in caps], min_count=1)
    config = load_config(
        {
            "name": "tiny",
            "embed_dim": 32,
            "text_tower": "learned",
            "video": {"pooling": "mean", "hidden": 32},
            "text": {"word_dim": 16, "hidden": 32},
        }
    )
    model = RetrievalModel(config, 16, vocab).eval()
    model_dir = save_pretrained(tmp_path / "models" / "tiny", model)
    settings = Settings(data_dir=tmp_path / "vmm", models={"retrieval": str(model_dir)})
    catalog = Catalog.from_settings(settings)
    index = open_index(settings, dim=32)
    vectors = model.embed_texts(captions)
    for i, (caption, vec) in enumerate(zip(captions, vectors, strict=True)):
        v = hashlib.sha256(caption.encode()).hexdigest()
        catalog.add_video(v, blob_key=v, filename=f"clip{i}.avi")
        [cid] = catalog.upsert_clips(v, [Clip(v, 0, 0.0, 5.0)])
        catalog.upsert_captions([(cid, Caption(caption, -1.0, CAPTIONER))])
        index.add([cid], vec[None])
        catalog.upsert_embeddings(model_dir.name, {cid: cid})
        catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=model_dir.name)
    index.close()
    catalog.close()
    return settings, captions


def test_search_from_settings_loads_the_model_and_index(model_settings) -> None:
    settings, captions = model_settings
    for i in (0, 5, 13):
        hits = search(captions[i], 3, settings=settings, mode="vector")
        assert hits[0].caption == captions[i] and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].extra["filename"] == f"clip{i}.avi"
    assert Searcher.from_settings(settings) is Searcher.from_settings(settings)  # opened once
    hybrid = search(captions[5], 3, settings=settings)
    assert hybrid[0].caption == captions[5] and hybrid[0].extra["mode"] == "hybrid"


def test_cli_search_and_delete(model_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from video_mm.cli import app
    from video_mm.settings import get_settings

    settings, captions = model_settings
    monkeypatch.setenv("VMM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("VMM_MODELS__RETRIEVAL", settings.models.retrieval)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(app, ["search", captions[2], "-k", "3", "--json"])
        assert result.exit_code == 0, result.output
        hits = json.loads(result.stdout)
        assert len(hits) == 3 and hits[0]["caption"] == captions[2]
        assert set(hits[0]) >= {"video_id", "start", "end", "score", "caption", "thumbnail"}
        table = runner.invoke(app, ["search", captions[2], "-k", "2"], env={"COLUMNS": "160"})
        assert table.exit_code == 0 and "clip2.avi" in table.output and "0:05.0" in table.output
        # The table says what its scores are, as the JSON does, with the cosine beside them.
        assert hits[0]["score_kind"] == "rank fusion" and hits[0]["vector_score"] > 0.99
        row = next(line for line in table.stdout.splitlines() if "clip2.avi" in line)
        assert f"{hits[0]['score']:.4f}" in row and "rank fusion" in row and "1.000" in row
        assert f"score (rank fusion): {hits[0]['score_meaning']}" in " ".join(table.stdout.split())
        assert runner.invoke(app, ["search", "x", "--since", "yesterday"]).exit_code != 0

        victim = hits[0]["video_id"]
        refused = runner.invoke(app, ["delete", victim], input="n\n")
        assert refused.exit_code != 0
        deleted = runner.invoke(app, ["delete", victim, "--yes", "--json"])
        assert deleted.exit_code == 0, deleted.output
        assert json.loads(deleted.stdout) == {
            "video_id": victim,
            "clips": 1,
            "index_entries": 1,
            "blobs": 0,
        }
        after = json.loads(runner.invoke(app, ["search", captions[2], "-k", "3", "--json"]).stdout)
        assert victim not in {h["video_id"] for h in after}
    finally:
        get_settings.cache_clear()
