"""What re-ranking adds to a query's latency on the CPU, for k = 10, 20, 50 candidates.

Baseline (measured in the same run): the first stage of a dense query, i.e. the retrieval
model's text tower on the query plus an exact FAISS search over ``--clips`` clip vectors (the
part of ``video_mm.search.search`` that re-ranking adds to; catalog lookups are the same with
and without it). Re-ranking: ``video_mm.search.rerank`` over the first stage's top k, i.e.
MiniLM on the query once, then one batched forward of the re-ranker over the k candidates'
stored frame features (8 frames x 512 by default), then the sort. Both at the shipped configs
(``configs/models/retrieval_minilm.json``, ``reranker.json``, ``reranker_single.json``) with
random weights: speed does not depend on the weights.

    .venv/bin/python benchmarks/rerank_latency.py               # torch's default threads
    .venv/bin/python benchmarks/rerank_latency.py --threads 1

Reports p50 / p99 milliseconds per query over ``--queries`` queries (after warm-up) and the
added p50 as a ratio of the first stage's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from video_mm.index.faiss_index import FaissIndex
from video_mm.rerank.model import Reranker, load_config
from video_mm.retrieval.model import RetrievalModel
from video_mm.retrieval.model import load_config as retrieval_config
from video_mm.search import encode_query, rerank
from video_mm.settings import IndexSettings

WORDS = ("a", "red", "blue", "green", "yellow", "circle", "square", "triangle", "moves", "left",
         "right", "up", "down", "and", "then", "first", "after", "that", "spins", "grows",
         "shrinks", "appears", "disappears", "bounces", "big", "small")


def queries(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 14)))) for _ in range(n)]


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = 1000.0 * np.asarray(times)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10_000, help="vectors in the index")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--feat-dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--ks", default="10,20,50")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ks = [int(k) for k in args.ks.split(",")]

    dual = RetrievalModel(retrieval_config("retrieval_minilm"), args.feat_dim, None).eval()
    vectors = rng.standard_normal((args.clips, dual.embed_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"v{i // 4}:{i % 4}" for i in range(args.clips)]
    store = {cid: (np.abs(rng.standard_normal((args.frames, args.feat_dim))).astype(np.float32),
                   ((np.arange(args.frames) + 0.5) / args.frames).astype(np.float32))
             for cid in ids[: max(ks) * 4]}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="vmm-rerank-bench-"))
    index = FaissIndex(tmp / "index.faiss", IndexSettings())
    index.add(ids, vectors)
    qs = queries(args.queries + args.warmup, rng)

    def first_stage(q: str, k: int) -> list[tuple[str, float]]:
        return index.search(encode_query(dual, q), k)[0]

    rows = []
    base = []
    for i, q in enumerate(qs):
        t = time.perf_counter()
        first_stage(q, max(ks))
        if i >= args.warmup:
            base.append(time.perf_counter() - t)
    b50, b99 = percentiles(base)
    rows.append(("first stage (text tower + FAISS exact)", "-", b50, b99, "1.00"))
    rankings = {q: [(ids[j], 1.0) for j in rng.choice(len(store), max(ks), replace=False)]
                for q in qs}  # fmt: skip
    for name in ("reranker", "reranker_single"):
        model = Reranker(load_config(name), args.feat_dim).eval()
        for k in ks:
            added = []
            for i, q in enumerate(qs):
                t = time.perf_counter()
                new, scores = rerank(q, rankings[q], k, model, lambda c: {x: store[x] for x in c})
                if i >= args.warmup:
                    added.append(time.perf_counter() - t)
                assert len(scores) == k and len(new) == len(rankings[q])
            p50, p99 = percentiles(added)
            rows.append((f"+ re-rank ({load_config(name).variant})", str(k), p50, p99,
                         f"{p50 / b50:.2f}"))  # fmt: skip

    print(f"Re-ranking latency per query: {args.clips:,} clips indexed, {args.frames} frames x "
          f"{args.feat_dim} per candidate, {args.queries} queries, torch threads "
          f"{torch.get_num_threads()}")
    print()
    print("| stage | k | p50 ms | p99 ms | added p50 / first-stage p50 |")
    print("|---|---:|---:|---:|---:|")
    for stage, k, p50, p99, ratio in rows:
        print(f"| {stage} | {k} | {p50:.1f} | {p99:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
