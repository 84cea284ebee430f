"""Vector search: query latency (p50/p99) and recall@10 against exact search, per backend and
index type, at 100k and 1M vectors of the retrieval model's dimension; plus embedding throughput.

Vectors are drawn the way real clip embeddings fall: a mixture of clusters (scenes, topics) with
spread inside each, L2-normalised; queries come from the same clusters. Uniform points on the
sphere would be the worst case for any approximate index and say little about real archives.
The baseline is exact inner-product search over the same vectors in the same run (FAISS flat).

    .venv/bin/python benchmarks/search.py                       # 100k and 1M, FAISS + Milvus
    .venv/bin/python benchmarks/search.py --sizes 20000 --queries 50   # a quick look
    .venv/bin/python benchmarks/search.py --sizes --large 10000000 --queries 300   # 10M, streamed

``--large`` sizes are built by streaming: vectors are generated 100k at a time, added, and
forgotten (10M 256-d float32 vectors would take 10 GB), while exact top-10 for the queries is
kept up to date chunk by chunk. The index is FAISS with ``--large-ann`` (default an IVF-SQ8 whose
coarse quantizer is an HNSW graph, so assigning 10M vectors is cheap). The build process flushes
it to its file; then a fresh process (``--serve FILE``) loads the file and answers the same
queries. Memory is each process's peak resident set (``VmHWM``): the build's includes generating
the vectors and the exact truth, not only the index.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning burns the CPU that
# the measured query needs. Set before faiss and torch load the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from video_mm.index.faiss_index import FaissIndex
from video_mm.index.milvus_index import MilvusIndex
from video_mm.settings import IndexSettings

DIM = 256  # the embed_dim of configs/models/retrieval*.json
K = 10


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray, spread: float) -> np.ndarray:
    """Unit vectors around random centres (cluster sizes vary, Zipf-like)."""
    weights = 1.0 / np.arange(1, len(centres) + 1) ** 0.5
    which = rng.choice(len(centres), size=n, p=weights / weights.sum())
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, 20_000):  # chunks keep the float64 temporaries small
        idx = which[start : start + 20_000]
        x = centres[idx] + spread * rng.standard_normal((len(idx), centres.shape[1]))
        out[start : start + len(idx)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    return flat.search(queries, K)[1]


def measure(index, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """One query at a time, as a search request arrives: latency percentiles and recall@10.
    ``cpu_p50_ms`` is this process's CPU time per query: on a shared machine it is what an idle
    core would take (single-query searches run on one thread; Milvus's server time is not in it)."""
    index.search(queries[:5], K)  # warm up
    latencies, cpu, hits = [], [], 0
    for q, t in zip(queries, truth, strict=True):
        start, start_cpu = time.perf_counter(), time.process_time()
        found = index.search(q[None, :], K)[0]
        latencies.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        hits += len({int(i.split(":")[0][1:]) for i, _ in found} & set(t.tolist()))
    ms = 1000 * np.array(latencies)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "cpu_p50_ms": float(np.percentile(1000 * np.array(cpu), 50)),
            "recall@10": hits / (K * len(queries))}  # fmt: skip


NPROBES = (16, 32, 64)  # swept on the streamed builds
# Search-time knobs swept on one built index: (label, settings field, values).
SWEEPS = {"flat (exact)": ("", "", [None]), "hnsw": ("ef", "ef_search", [64, 128, 256]),
          "ivf": ("nprobe", "ivf_nprobe", [16, 32, 64, 128]),
          "ivfsq8": ("nprobe", "ivf_nprobe", [16, 32, 64])}  # fmt: skip


def ids(start: int, stop: int) -> list[str]:
    return [f"v{i}:0" for i in range(start, stop)]


def fill(index, base: np.ndarray, chunk: int) -> float:
    start = time.perf_counter()
    for s in range(0, len(base), chunk):
        index.add(ids(s, min(s + chunk, len(base))), base[s : s + chunk])
    return time.perf_counter() - start


class MilvusServer:
    """A milvus-lite gRPC server in its own process: the client talks to it over the network."""

    def __init__(self, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("milvus-lite server did not start")

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def large(n: int, args: argparse.Namespace, centres: np.ndarray) -> list[tuple]:
    """Build a FAISS index of ``n`` streamed vectors, exact truth kept chunk by chunk; flush it,
    measure it here, then in a fresh process that loads the file."""
    rng = np.random.default_rng(1)
    queries = clustered(args.queries, rng, centres, args.spread)
    best = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), K), np.int64)
    overrides = {"exact_max": 0, "ivf_nlist": args.large_nlist,
                 "ivf_train_max": args.large_train, "ann": args.large_ann}  # fmt: skip
    if args.large_ann == "factory":
        overrides["factory"] = args.large_factory
    settings = IndexSettings(**overrides)
    tmp = Path(tempfile.mkdtemp(prefix="vmm-bench-"))
    rows = []
    try:
        index = FaissIndex(tmp / "bench.faiss", settings, log_writes=False)
        before = rss_mb()
        build = exact_s = 0.0
        chunk = 100_000
        for s in range(0, n, chunk):
            x = clustered(min(chunk, n - s), rng, centres, args.spread)
            t = time.perf_counter()
            index.add(ids(s, s + len(x)), x)
            build += time.perf_counter() - t
            t = time.perf_counter()
            for a in range(0, len(x), 20_000):  # small temporaries: the peak is the index's
                scores = queries @ x[a : a + 20_000].T
                top = np.argpartition(-scores, K, axis=1)[:, :K]
                cand = np.concatenate([best, np.take_along_axis(scores, top, 1)], axis=1)
                cand_ids = np.concatenate([best_ids, top + s + a], axis=1)
                keep = np.argsort(-cand, axis=1)[:, :K]
                best = np.take_along_axis(cand, keep, 1)
                best_ids = np.take_along_axis(cand_ids, keep, 1)
            exact_s += time.perf_counter() - t
            if s % 1_000_000 == 0:
                print(f"  {s + len(x):>11,} added, {build:6.0f} s, RSS {rss_mb():,.0f} MB",
                      file=sys.stderr, flush=True)  # fmt: skip
        t = time.perf_counter()
        index.flush()
        flush_s = time.perf_counter() - t
        build_peak = rss_mb("VmHWM")
        memory = {"grown_mb": rss_mb() - before, "build_peak_mb": build_peak,
                  "file_mb": index.path.stat().st_size / 2**20}  # fmt: skip
        print(f"  flushed in {flush_s:.0f} s: file {memory['file_mb']:,.0f} MB; build process "
              f"peak {build_peak:,.0f} MB, resident growth {memory['grown_mb']:,.0f} MB",
              file=sys.stderr, flush=True)  # fmt: skip
        label = settings.factory if args.large_ann == "factory" else args.large_ann
        label = label.replace("{nlist}", str(args.large_nlist))
        for nprobe in NPROBES:
            index.settings.ivf_nprobe = nprobe
            m = {**measure(index, queries, best_ids), **memory, "where": "build process"}
            rows.append((n, f"{label} nprobe={nprobe}", build, m))
            print(f"  {n:>11,} {label} nprobe={nprobe} build {build:.0f} s p50 "
                  f"{m['p50_ms']:.2f} ms recall@10 {m['recall@10']:.3f}",
                  file=sys.stderr, flush=True)  # fmt: skip
        del index
        np.savez(tmp / "truth.npz", queries=queries, truth=best_ids)
        served = subprocess.run(
            [sys.executable, __file__, "--serve", str(tmp / "bench.faiss"),
             "--threads", str(args.threads)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        for line in served.stdout.splitlines():
            m = json.loads(line)
            rows.append((n, f"{label} nprobe={m['nprobe']}", build, m))
            print(f"  fresh process: load {m['load_s']:.0f} s, nprobe={m['nprobe']} p50 "
                  f"{m['p50_ms']:.2f} ms recall@10 {m['recall@10']:.3f}, peak "
                  f"{m['build_peak_mb']:,.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
        print(f"  exact top-{K} of {len(queries)} queries, streamed: {exact_s:.0f} s",
              file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def serve(path: Path) -> None:
    """``--serve``: load an index file in this fresh process and answer the queries saved beside
    it; one JSON line per nprobe, with this process's load time and peak resident set."""
    with np.load(path.with_name("truth.npz")) as saved:
        queries, truth = saved["queries"], saved["truth"]
    start = time.perf_counter()
    index = FaissIndex(path, IndexSettings(exact_max=0))
    load_s = time.perf_counter() - start
    loaded_mb = rss_mb()
    for nprobe in NPROBES:
        index.settings.ivf_nprobe = nprobe
        m = measure(index, queries, truth)
        print(json.dumps({**m, "nprobe": nprobe, "load_s": load_s, "grown_mb": loaded_mb,
                          "build_peak_mb": rss_mb("VmHWM"), "file_mb": path.stat().st_size / 2**20,
                          "where": "fresh process"}), flush=True)  # fmt: skip


def embedding_throughput(n_clips: int, n_texts: int, threads: int) -> list[tuple[str, float]]:
    """Clips/s and queries/s of the default towers (random weights: speed does not care)."""
    import torch

    torch.set_num_threads(threads)
    from video_mm.data.vocab import Vocabulary
    from video_mm.retrieval.model import RetrievalModel, load_config

    rng = np.random.default_rng(0)
    feats = [rng.random((8, 512), dtype=np.float32) for _ in range(n_clips)]
    words = ["a", "man", "woman", "dog", "cat", "plays", "runs", "jumps", "with", "the", "ball"]
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(n_texts)]
    rows = []
    for name in ("retrieval", "retrieval_minilm"):
        torch.manual_seed(0)
        cfg = load_config(name)
        vocab = Vocabulary.build(texts) if cfg.text_tower == "learned" else None
        model = RetrievalModel(cfg, 512, vocab).eval()
        model.embed_videos(feats[:8]), model.embed_texts(texts[:8])  # warm up
        start = time.perf_counter()
        model.embed_videos(feats)
        rows.append((f"{name}: clips/s (8 frames x 512)", n_clips / (time.perf_counter() - start)))
        start = time.perf_counter()
        model.embed_texts(texts)
        rows.append((f"{name}: text queries/s", n_texts / (time.perf_counter() - start)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument(
        "--milvus-sizes",
        type=int,
        nargs="*",
        default=[100_000],
        help="sizes also run on Milvus (milvus-lite inserts are slow)",
    )
    parser.add_argument("--large", type=int, nargs="*", default=[],
                        help="sizes built streamed (FAISS only), e.g. 10000000")
    parser.add_argument("--large-ann", default="factory", help="index.ann for --large")
    parser.add_argument("--large-factory", default="IVF{nlist}_HNSW32,SQ8")
    parser.add_argument("--large-nlist", type=int, default=4096)
    parser.add_argument("--large-train", type=int, default=100_000,
                        help="vectors the IVF quantizer trains on (ivf_train_max)")
    parser.add_argument("--no-embed", action="store_true", help="skip embedding throughput")
    parser.add_argument("--ann", nargs="+", default=["hnsw", "ivf"],
                        help="approximate kinds run at --sizes (besides exact): hnsw ivf ivfsq8")
    parser.add_argument("--milvus-timeout", type=float, default=300.0)
    parser.add_argument("--no-milvus-exact", dest="milvus_exact", action="store_false",
                        help="skip Milvus's exact run (each Milvus run inserts every vector again)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument(
        "--spread",
        type=float,
        default=0.06,
        help="noise per dimension around a centre (0.06: cos to centre ~0.7)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # large()'s fresh process
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    if args.serve:
        serve(args.serve)
        return
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, DIM)) / np.sqrt(DIM)

    rows = []
    for n in args.sizes:
        base = clustered(n, rng, centres, args.spread)
        queries = clustered(args.queries, rng, centres, args.spread)
        truth = exact_top_k(base, queries)
        kinds = [("flat (exact)", {"exact_max": n})] + [
            (k, {"exact_max": 0, "ann": k}) for k in args.ann if k != "flat (exact)"
        ]
        runs = [("faiss", kind, o) for kind, o in kinds]
        if n in args.milvus_sizes:  # a loaded machine slows milvus-lite's answers
            runs += [("milvus", kind, {**o, "milvus_timeout_s": args.milvus_timeout})
                     for kind, o in kinds[0 if args.milvus_exact else 1 :]]  # fmt: skip
        baseline = None
        for backend, kind, overrides in runs:
            settings = IndexSettings(**overrides)
            tmp = Path(tempfile.mkdtemp(prefix="vmm-bench-"))
            server = None
            try:
                if backend == "faiss":
                    index = FaissIndex(tmp / "bench.faiss", settings)
                    build = fill(index, base, 100_000)
                else:
                    server = MilvusServer(tmp / "milvus")
                    index = MilvusIndex(server.uri, "bench", settings)
                    build = fill(index, base, 100_000)  # as FAISS: the same list count
                    index.flush()
                label, field, values = SWEEPS[kind]
                for value in values:
                    if field:
                        setattr(index.settings, field, value)
                    m = measure(index, queries, truth)
                    if baseline is None:
                        baseline = m["p50_ms"]
                    name = f"{kind} {label}={value}" if field else kind
                    rows.append((n, backend, name, build, m, baseline / m["p50_ms"]))
                    line = (f"  {n:>9,} {backend:<6} {name:<16} build {build:7.1f} s  "
                            f"p50 {m['p50_ms']:7.2f} ms  cpu p50 {m['cpu_p50_ms']:7.2f} ms  "
                            f"recall@10 {m['recall@10']:.3f}")  # fmt: skip
                    print(line, file=sys.stderr, flush=True)
                del index
            finally:
                if server:
                    server.stop()
                shutil.rmtree(tmp, ignore_errors=True)
        del base

    print(
        f"\nSearch: one query at a time, k={K}, dim {DIM}, {args.queries} queries, "
        f"{args.threads} threads; speedup = exact FAISS p50 / this p50 at the same size\n"
    )
    header = (
        "vectors | backend | index | build s | p50 ms | p99 ms | CPU p50 ms | recall@10 | speedup"
    )
    print(f"| {header} |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n, backend, kind, build, m, speedup in rows:
        print(
            f"| {n:,} | {backend} | {kind} | {build:.1f} | {m['p50_ms']:.2f} | "
            f"{m['p99_ms']:.2f} | {m['cpu_p50_ms']:.2f} | {m['recall@10']:.3f} | {speedup:.1f}x |"
        )
    if args.large:
        big = [r for n in args.large for r in large(n, args, centres)]
        print(f"\nStreamed builds (FAISS, exact truth over all vectors for {args.queries} "
              "queries); peak = the process's peak resident set; resident = its set after the "
              "build (growth over it) or after loading the file (all of it)\n")
        print("| vectors | index | process | build s | p50 ms | p99 ms | CPU p50 ms | recall@10 | "
              "resident MB | peak MB | file MB |\n"
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, name, build, m in big:
            print(f"| {n:,} | {name} | {m['where']} | {build:.0f} | {m['p50_ms']:.2f} | "
                  f"{m['p99_ms']:.2f} | {m['cpu_p50_ms']:.2f} | {m['recall@10']:.3f} | "
                  f"{m['grown_mb']:,.0f} | {m['build_peak_mb']:,.0f} | {m['file_mb']:,.0f} |")
    if args.no_embed:
        return
    print("\nEmbedding throughput (CPU, random weights, batch 64 clips / 256 texts)\n")
    print("| what | per second |\n|---|---:|")
    for name, rate in embedding_throughput(512, 2048, args.threads):
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
