"""One suite, both backends: FAISS on local disk and a real Milvus server in another process."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from video_mm.errors import ConfigError, NotFound
from video_mm.index import BadVectors, VectorIndex, open_index
from video_mm.index.faiss_index import FaissIndex
from video_mm.index.milvus_index import MilvusIndex
from video_mm.settings import IndexSettings, Settings

DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors around a few centres, the way real embeddings fall."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clip_ids(n: int, per_video: int = 4) -> list[str]:
    return [f"video{i // per_video:03d}:{i % per_video}" for i in range(n)]


Factory = Callable[..., VectorIndex]


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Factory, Callable]:
    """``(open, reopen)``: open a fresh index; reopen one from what its backend persisted."""
    collection = f"c{uuid.uuid4().hex[:12]}"
    if request.param == "faiss":

        def make(**overrides) -> VectorIndex:
            return FaissIndex.open(str(tmp_path), collection, IndexSettings(**overrides))

        def reopen(index: VectorIndex) -> VectorIndex:
            index.close()
            return FaissIndex.open(str(tmp_path), collection, index.settings)

    else:
        server = request.getfixturevalue("milvus_server")

        def make(**overrides) -> VectorIndex:
            return MilvusIndex.open(server.uri, collection, IndexSettings(**overrides))

        def reopen(index: VectorIndex) -> VectorIndex:
            index.close()
            server.restart()  # the data must survive the server process, not only the client
            return MilvusIndex.open(server.uri, collection, index.settings)

    return make, reopen


def test_add_and_search_finds_each_vector_first(backend):
    make, _ = backend
    index = make()
    vectors, ids = clustered(60), clip_ids(60)
    index.add(ids, vectors)
    assert len(index) == 60 and index.dim == DIM
    assert "video001:2" in index and "video999:0" not in index
    results = index.search(vectors[:10], k=5)
    assert [hits[0][0] for hits in results] == ids[:10]
    for hits in results:
        assert len(hits) == 5
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(1.0, abs=1e-5)


def test_add_again_replaces_and_update_needs_existing_ids(backend):
    make, _ = backend
    index = make()
    vectors = clustered(20)
    ids = clip_ids(20)
    index.add(ids, vectors)
    index.add(["video000:0"], vectors[7:8])  # upsert: now a copy of video001:3
    assert len(index) == 20
    hits = index.search(vectors[7], k=2)[0]
    assert {h[0] for h in hits} == {"video000:0", "video001:3"}
    index.update(["video000:1"], vectors[9:10])
    assert {h[0] for h in index.search(vectors[9], k=2)[0]} == {"video000:1", "video002:1"}
    with pytest.raises(NotFound):
        index.update(["nope:0"], vectors[:1])


def test_deleting_a_video_removes_all_its_clips(backend):
    make, _ = backend
    index = make()
    vectors, ids = clustered(40), clip_ids(40)
    index.add(ids, vectors)
    assert index.delete_prefix("video002:") == 4
    assert len(index) == 36
    for hits in index.search(vectors, k=40):
        assert not any(i.startswith("video002:") for i, _ in hits)
    assert index.delete(["video003:0", "video003:1", "missing:0"]) == 2
    assert "video003:0" not in index and "video003:2" in index
    # a prefix must not reach a longer video id that shares it
    index.add(["video00:0"], vectors[:1])
    assert index.delete_prefix("video00:") == 1
    assert "video000:0" in index
    # LIKE wildcards in ids (MSVD ids have underscores) are matched literally
    index.add(["a_b%1:0", "a_b%1:1", "axb%1:0", "a_b%12:0"], vectors[:4])
    assert index.delete_prefix("a_b%1:") == 2
    assert "axb%1:0" in index and "a_b%12:0" in index


def test_persists_and_reopens(backend):
    make, reopen = backend
    index = make()
    vectors, ids = clustered(30), clip_ids(30)
    index.add(ids, vectors)
    index.delete_prefix("video001:")
    index.flush()
    before = index.search(vectors[:5], k=5)
    index = reopen(index)
    assert len(index) == 26 and index.dim == DIM
    after = index.search(vectors[:5], k=5)
    assert _same_ids(after, before)
    assert [s for row in after for _, s in row] == pytest.approx(
        [s for row in before for _, s in row], abs=1e-5
    )
    index.add(["video100:0"], vectors[:1])
    index.close()


def _same_ids(a, b) -> bool:
    return [[i for i, _ in row] for row in a] == [[i for i, _ in row] for row in b]


def test_switches_to_approximate_index_past_exact_max(backend):
    make, _ = backend
    for ann in ("hnsw", "ivf", "ivfpq", "ivfsq8"):
        index = make(exact_max=300, ann=ann, ivf_nprobe=16, pq_m=16, collection=ann)
        vectors, ids = clustered(1200, seed=1), clip_ids(1200)
        index.add(ids[:200], vectors[:200])
        assert index.kind == "flat"
        index.add(ids[200:], vectors[200:])
        assert index.kind == ann
        queries = clustered(50, seed=2)
        exact = queries @ vectors.T
        truth = np.argsort(-exact, axis=1)[:, :10]
        found = index.search(queries, k=10)
        recall = np.mean(
            [
                len({ids[j] for j in t} & {i for i, _ in f}) / 10
                for t, f in zip(truth, found, strict=True)
            ]
        )
        # the quantizing kinds (PQ: 2 bytes per 4 dims; SQ8: a byte a dim) lose a little
        assert recall >= {"ivfpq": 0.8, "ivfsq8": 0.85}.get(ann, 0.9), (ann, recall)
        assert index.delete_prefix("video000:") == 4
        assert all(not i.startswith("video000:") for i, _ in index.search(vectors[0], k=20)[0])
        if isinstance(index, MilvusIndex):
            index.drop()


def test_rejects_bad_input(backend):
    make, _ = backend
    index = make()
    index.add(["a:0"], clustered(1))
    with pytest.raises(BadVectors):
        index.add(["a:1"], np.ones((1, DIM + 1), np.float32))
    with pytest.raises(BadVectors):
        index.add(["a:1", "a:2"], clustered(1))
    with pytest.raises(BadVectors):
        index.add(["a:1"], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(BadVectors):
        index.add(["a:1", "a:1"], clustered(2))
    with pytest.raises(BadVectors):
        index.add(['a"1:0'], clustered(1))
    with pytest.raises(BadVectors):
        index.search(clustered(1), k=0)
    assert len(index) == 1


def test_both_backends_return_identical_top_k_in_exact_mode(tmp_path, milvus_server):
    vectors, ids = clustered(300, seed=3), clip_ids(300)
    queries = clustered(20, seed=4)
    faiss_index = FaissIndex.open(str(tmp_path), "same", IndexSettings())
    milvus_index = MilvusIndex.open(milvus_server.uri, "same", IndexSettings())
    results = []
    for index in (faiss_index, milvus_index):
        index.add(ids, vectors)
        index.delete_prefix("video007:")
        results.append(index.search(queries, k=10))
    milvus_index.drop()
    assert _same_ids(*results)
    for a, b in zip(*results, strict=True):
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)


def test_open_index_follows_settings(tmp_path, milvus_server):
    settings = Settings(data_dir=tmp_path)
    index = open_index(settings)
    assert isinstance(index, FaissIndex) and index.dim is None and len(index) == 0
    index.add(["v:0"], clustered(1))
    index.close()
    assert (tmp_path / "index" / "clips.faiss").exists()
    assert open_index(settings, dim=DIM).dim == DIM

    settings = Settings(data_dir=tmp_path, index={"backend": "milvus", "url": milvus_server.uri})
    index = open_index(settings, collection="opened", dim=DIM)
    assert isinstance(index, MilvusIndex) and index.dim == DIM
    index.drop()


def test_faiss_writers_in_two_processes_merge_on_flush(tmp_path):
    """Two handles on one file stand for two worker processes; neither loses the other's writes."""
    vectors = clustered(8)
    a = FaissIndex.open(str(tmp_path), "shared", IndexSettings())
    b = FaissIndex.open(str(tmp_path), "shared", IndexSettings())
    a.add(["a:0", "a:1"], vectors[:2])
    b.add(["b:0", "b:1"], vectors[2:4])
    a.flush()
    b.delete(["b:1"])
    b.flush()
    merged = FaissIndex.open(str(tmp_path), "shared", IndexSettings())
    assert len(merged) == 3 and all(i in merged for i in ["a:0", "a:1", "b:0"])
    # a reader sees another process's flush on its next search
    merged.add(["c:0"], vectors[4:5])
    merged.flush()
    assert a.search(vectors[4], k=1)[0][0][0] == "c:0"
    assert not list(tmp_path.glob(".shared.faiss.*"))  # no temporary files left behind


def test_faiss_factory_recipes_and_pq_persist(tmp_path):
    """Any IVF recipe of FAISS's factory is a setting; IVF-PQ survives a reopen; a non-IVF recipe
    (which could not upsert or delete) is refused with a clear error, and so is Milvus."""
    vectors, ids = clustered(1200, seed=5), clip_ids(1200)
    for recipe in ("IVF{nlist},SQ8", "OPQ8,IVF{nlist},PQ8"):
        settings = IndexSettings(exact_max=300, ann="factory", factory=recipe, ivf_nlist=16)
        index = FaissIndex.open(str(tmp_path), recipe[:4], settings)
        index.add(ids, vectors)
        assert index.kind == "factory"
        hits = index.search(vectors[:20], k=5)
        assert np.mean([h[0][0] == i for h, i in zip(hits, ids[:20], strict=True)]) >= 0.8
        assert index.delete_prefix("video001:") == 4 and len(index) == 1196
    settings = IndexSettings(exact_max=300, ann="ivfpq", pq_m=16, ivf_nprobe=64)
    index = FaissIndex.open(str(tmp_path), "pq", settings)
    index.add(ids, vectors)
    before = index.search(vectors[:10], k=5)
    index.close()
    again = FaissIndex.open(str(tmp_path), "pq", settings)
    assert again.kind == "ivfpq" and _same_ids(again.search(vectors[:10], k=5), before)
    with pytest.raises(ConfigError, match="not an IVF index"):
        bad = FaissIndex.open(
            str(tmp_path), "bad", IndexSettings(exact_max=10, ann="factory", factory="HNSW16")
        )
        bad.add(ids[:300], vectors[:300])
    with pytest.raises(ConfigError, match="FAISS-only"):
        MilvusIndex("http://127.0.0.1:1", "x", IndexSettings(ann="factory"))


def test_fixed_list_count_is_not_retrained_past_train_max(tmp_path):
    """Growing an IVF index with a fixed ``ivf_nlist`` retrains it only while the quantizer saw
    fewer than ``ivf_train_max`` vectors: past that a retrain would cost a pass over every vector
    and learn nothing new. Search stays right across the rebuilds."""
    settings = IndexSettings(exact_max=100, ann="ivfpq", pq_m=16, ivf_nlist=16, ivf_train_max=400)
    index = FaissIndex.open(str(tmp_path), "grow", settings)
    vectors, ids = clustered(4000, seed=6), clip_ids(4000)
    structures = []
    for start in range(0, 4000, 200):
        index.add(ids[start : start + 200], vectors[start : start + 200])
        structures.append(id(index._index))
    assert index._trained_on >= 400
    rebuilds = len(set(structures))
    assert rebuilds == 2, rebuilds  # flat until PQ can train (256), ivfpq at 400, never again
    hits = index.search(vectors[::100], k=1)
    assert np.mean([h[0][0] == i for h, i in zip(hits, ids[::100], strict=True)]) >= 0.9


def test_milvus_ivf_takes_faiss_list_count_and_grows_with_the_collection(milvus_server):
    """nlist reaches the server (milvus-lite reads only the JSON ``params`` form), is 4 * sqrt(N)
    when the index is built, and is built again at 4x the vectors; a fixed ivf_nlist stays."""
    x = clustered(9000, seed=3)
    index = MilvusIndex.open(milvus_server.uri, "grows", IndexSettings(exact_max=0, ann="ivfsq8"))
    index.add(clip_ids(2000), x[:2000])
    assert (index.kind, index.nlist) == ("ivfsq8", 178)
    index.add(clip_ids(7000)[2000:], x[2000:7000])
    assert index.nlist == 178  # under 4x the 2,000 it was built for
    index.add(clip_ids(9000)[7000:], x[7000:])
    assert index.nlist == 379
    index.close()
    again = MilvusIndex.open(milvus_server.uri, "grows", IndexSettings(exact_max=0, ann="ivfsq8"))
    assert (again.kind, again.nlist) == ("ivfsq8", 379)
    again.drop()
    fixed = MilvusIndex.open(
        milvus_server.uri, "fixed", IndexSettings(exact_max=0, ann="ivf", ivf_nlist=50)
    )
    fixed.add(clip_ids(300), x[:300])
    fixed.add(clip_ids(2000)[300:], x[300:2000])
    assert (fixed.kind, fixed.nlist) == ("ivf", 50)
    fixed.drop()
