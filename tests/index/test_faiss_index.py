"""The FAISS backend's memory-minded parts: staged adds merged into exactly sized lists, the
streamed file, and files of the previous format."""

from __future__ import annotations

import json

import faiss
import numpy as np

from video_mm.index.faiss_index import FaissIndex, array_lists, merge_exact
from video_mm.settings import IndexSettings

DIM = 16


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def names(start: int, stop: int) -> list[str]:
    return [f"v{i}:0" for i in range(start, stop)]


def lists_of(index) -> list[list[int]]:
    """The ids in each inverted list, as the index holds them."""
    lists = array_lists(index)
    return [
        sorted(faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).tolist())
        for i in range(index.nlist)
    ]


def test_merge_exact_lists_equal_plain_adds_and_trimming_keeps_them():
    x = unit(3000, 0)
    plain = faiss.index_factory(DIM, "IVF32,SQ8", faiss.METRIC_INNER_PRODUCT)
    plain.train(x)
    merged = faiss.clone_index(plain)
    plain.add_with_ids(x, np.arange(3000))
    merged.add_with_ids(x[:1000], np.arange(1000))
    merge_exact(merged, merged.sa_encode(x[1000:]), np.arange(1000, 3000))
    assert merged.ntotal == plain.ntotal == 3000
    assert lists_of(merged) == lists_of(plain)
    merge_exact(merged)  # nothing to add: only trims
    assert merged.ntotal == 3000 and lists_of(merged) == lists_of(plain)
    plain.nprobe = merged.nprobe = 4
    assert np.array_equal(plain.search(x[:20], 5)[1], merged.search(x[:20], 5)[1])


def test_staged_adds_are_searchable_deletable_and_persist(tmp_path):
    settings = IndexSettings(exact_max=0, ann="ivfsq8", ivf_nlist=64, ivf_nprobe=64)
    index = FaissIndex(tmp_path / "i.faiss", settings)
    x = unit(2403, 1)
    for start in range(0, 2000, 100):  # 20 adds, merged on the way (or by a rebuild)
        index.add(names(start, start + 100), x[start : start + 100])
    assert index.kind == "ivfsq8" and len(index) == 2000
    index.add(names(2000, 2005), x[2000:2005])  # a few: settled by FAISS's own add
    assert index.search(x[2003], k=1)[0][0][0] == "v2003:0"
    index.add(names(2005, 2400), x[2005:2400])  # many: merged into exact lists
    index.add(names(2400, 2403), x[2400:2403])  # staged until the next search
    assert index.delete(["v2401:0", "v5:0"]) == 2  # one staged, one in the lists
    found = index.search(x[[7, 2401, 2402]], k=1)
    assert found[0][0][0] == "v7:0" and found[2][0][0] == "v2402:0"
    assert found[1][0][0] != "v2401:0" and len(index) == 2401
    index.flush()
    again = FaissIndex(tmp_path / "i.faiss", settings)
    assert len(again) == 2401 and again.kind == "ivfsq8"
    assert again.search(x[1234], k=1)[0][0][0] == "v1234:0"
    assert "v2401:0" not in again and "v5:0" not in again


def test_reads_files_of_format_1(tmp_path):
    """Format 1 held the FAISS bytes as an array; it opens, and a flush rewrites it as 2."""
    x = unit(300, 2)
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    flat.add_with_ids(x, np.arange(300))
    meta = {"format": 1, "dim": DIM, "kind": "flat", "next_label": 300, "trained_on": 0}
    path = tmp_path / "old.faiss"
    with open(path, "wb") as f:
        np.savez(
            f,
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            index=faiss.serialize_index(flat),
            labels=np.arange(300, dtype=np.int64),
            names=np.frombuffer("\n".join(names(0, 300)).encode(), np.uint8),
            tombstones=np.zeros(0, np.int64),
        )
    index = FaissIndex(path, IndexSettings())
    assert len(index) == 300 and index.search(x[42], k=1)[0][0][0] == "v42:0"
    index.add(["new:0"], unit(1, 3))
    index.flush()
    again = FaissIndex(path, IndexSettings())
    assert len(again) == 301 and "new:0" in again and "v299:0" in again
