"""What one small write costs the FAISS index: flushing a few vectors (one video's clips) and
another process catching up with them, at 100k and 1M vectors (10M with ``--sizes 10000000``),
journaled against rewriting the whole file, in the same run.

    nice -n 10 .venv/bin/python benchmarks/index_flush.py                   # 100k and 1M
    nice -n 10 .venv/bin/python benchmarks/index_flush.py --sizes 10000000  # ~6 min build, 2 x 3 GB
    nice -n 10 .venv/bin/python benchmarks/index_flush.py --id-map 1000000 10000000

"Rewrite" is the code before the journal: ``journal_fraction = journal_min_bytes = 0`` compacts on
every flush (the whole base written, fsynced, renamed), and the other process reloads the file.
Per size, a child process builds the index (``IVF{nlist}_HNSW32,SQ8``, as ``search.py --large``)
and compacts it to its file; this process opens it as the writer and a second child (``--reader``)
as a reader. Each round the writer adds ``--batch`` vectors and flushes (timed here), then the
reader answers one query, which first catches up with the write (timed there: replaying the new
journal record, or loading the whole file). Rounds alternate journal / rewrite.

``--id-map`` times what a video's index stage costs the id map in memory (in the writer, and in
every process replaying its journal): ``delete_prefix("<video_id>:")`` (prefix search and
removal) and the add of its 8 clip ids, at N ids of that form, 20 videos each.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in search.py: idle threads sleep

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from search import DIM, clustered

from video_mm.index.faiss_index import FaissIndex
from video_mm.index.ids import IdMap
from video_mm.settings import IndexSettings

REWRITE = {"journal_fraction": 0.0, "journal_min_bytes": 0}


def settings_for(n: int) -> IndexSettings:
    """The 10M recipe of search.py --large, its list count scaled down for smaller indexes."""
    nlist = min(4096, int(4 * np.sqrt(n)))
    return IndexSettings(exact_max=0, ann="factory", factory="IVF{nlist}_HNSW32,SQ8",
                         ivf_nlist=nlist, ivf_train_max=100_000)  # fmt: skip


def centres() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2000, DIM))


def build(n: int, path: Path) -> None:
    """``--build``: stream ``n`` vectors into a new index (no write log: the sole writer) and
    write its base file."""
    rng = np.random.default_rng(1)
    index = FaissIndex(path, settings_for(n), log_writes=False)
    for s in range(0, n, 100_000):
        x = clustered(min(100_000, n - s), rng, centres(), 0.5)
        index.add([f"v{i}:0" for i in range(s, s + len(x))], x)
    index.compact()


def reader(path: Path, n: int) -> None:
    """``--reader``: hold the index; per line on stdin, time one query (catch-up included)."""
    start = time.perf_counter()
    index = FaissIndex(path, settings_for(n))
    print(json.dumps({"load_s": time.perf_counter() - start}), flush=True)
    query = clustered(1, np.random.default_rng(2), centres(), 0.5)
    for _ in sys.stdin:
        start = time.perf_counter()
        index.search(query, 10)
        print(json.dumps({"s": time.perf_counter() - start, "n": len(index)}), flush=True)


def run(n: int, rounds: int, batch: int) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="vmm-flush-"))
    path = tmp / "bench.faiss"
    try:
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build", str(n), str(path)], check=True)
        print(f"{n:,}: built in {time.perf_counter() - t:.0f} s, file "
              f"{path.stat().st_size / 2**20:,.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
        other = subprocess.Popen(
            [sys.executable, __file__, "--reader", str(n), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        t = time.perf_counter()
        writer = FaissIndex(path, settings_for(n))
        own_load = time.perf_counter() - t
        reader_load = json.loads(other.stdout.readline())["load_s"]
        journaled = writer.settings
        rewrite = journaled.model_copy(update=REWRITE)
        rng = np.random.default_rng(3)
        times: dict[str, dict[str, list[float]]] = {}
        for r in range(2 * rounds):
            mode, writer.settings = ("journal", journaled) if r % 2 == 0 else ("rewrite", rewrite)
            x = clustered(batch, rng, centres(), 0.5)
            writer.add([f"w{r}:{j}" for j in range(batch)], x)
            t = time.perf_counter()
            writer.flush()
            flush_s = time.perf_counter() - t
            other.stdin.write("search\n")
            other.stdin.flush()
            seen = json.loads(other.stdout.readline())
            assert seen["n"] == len(writer), "the reader missed the write"
            got = times.setdefault(mode, {"flush": [], "catch_up": []})
            got["flush"].append(flush_s)
            got["catch_up"].append(seen["s"])
            print(f"  {mode}: flush {flush_s * 1e3:,.1f} ms, reader {seen['s'] * 1e3:,.1f} ms",
                  file=sys.stderr, flush=True)  # fmt: skip
        other.stdin.close()
        other.wait()
        return {
            mode: {
                "flush_ms": 1e3 * float(np.median(t["flush"])),
                "catch_up_ms": 1e3 * float(np.median(t["catch_up"])),
                "file_mb": path.stat().st_size / 2**20,
                "load_s": (own_load + reader_load) / 2,
            }
            for mode, t in times.items()
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def id_map(n: int) -> tuple[float, float, float]:
    """Per video, in ms: the prefix search, the removal of its ids, the add of 8 new ones."""
    m = IdMap()
    for s in range(0, n, 100_000):
        m.add([f"video{i // 8:07d}:{i % 8}" for i in range(s, min(s + 100_000, n))])
    took = np.zeros(3)
    for r in range(20):
        t0 = time.perf_counter()
        found = m.with_prefix(f"video{r * 997:07d}:")
        t1 = time.perf_counter()
        m.remove(found)
        t2 = time.perf_counter()
        m.add([f"video{r * 997:07d}:{j}" for j in range(8)])
        took += (t1 - t0, t2 - t1, time.perf_counter() - t2)
    return tuple(1e3 * took / 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=5, help="flushes of each mode, alternated")
    parser.add_argument("--batch", type=int, default=5, help="vectors added per flush")
    parser.add_argument("--id-map", type=int, nargs="+", help="time the id map at these sizes")
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--reader", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build(int(args.build[0]), Path(args.build[1]))
    if args.reader:
        return reader(Path(args.reader[1]), int(args.reader[0]))
    print(f"load average {os.getloadavg()[0]:.1f} at the start", file=sys.stderr)
    if args.id_map:
        print("| ids | with_prefix ms | remove ms | add 8 ms |\n|---:|---:|---:|---:|")
        for n in args.id_map:
            prefix_ms, remove_ms, add_ms = id_map(n)
            print(f"| {n:,} | {prefix_ms:.1f} | {remove_ms:.2f} | {add_ms:.2f} |", flush=True)
        return print(f"load average {os.getloadavg()[0]:.1f} at the end", file=sys.stderr)
    print("| vectors | file MiB | load s | flush ms: rewrite | journal | speedup "
          "| reader catch-up ms: rewrite | journal | speedup |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        m = run(n, args.rounds, args.batch)
        old, new = m["rewrite"], m["journal"]
        print(f"| {n:,} | {old['file_mb']:,.0f} | {old['load_s']:.1f} "
              f"| {old['flush_ms']:,.1f} | {new['flush_ms']:,.2f} "
              f"| {old['flush_ms'] / new['flush_ms']:,.0f}x "
              f"| {old['catch_up_ms']:,.1f} | {new['catch_up_ms']:,.2f} "
              f"| {old['catch_up_ms'] / new['catch_up_ms']:,.0f}x |", flush=True)  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end", file=sys.stderr)


if __name__ == "__main__":
    main()
