"""Pipeline throughput: seconds of video indexed per wall-clock second, in-process and on Celery.

A fixed archive: ``--n-synth`` 360p h264 clips of ``--seconds`` s (ffmpeg ``testsrc2``, 30 fps)
plus the 14 real clips of ``../shared/data/msvd14``. Every job runs every stage: probe, segment
(10 s windows), resnet18 features at 1 frame/s (224 px) with each clip's thumbnail cut from those
frames, two captioners (LRCN and temporal attention, beam 3), retrieval embeddings, catalog writes,
FAISS index. Models are randomly initialised at the demo's sizes: their cost does not depend on
their weights.

Nine kinds of run (``--kinds`` picks some; the first is the baseline), each on a fresh data folder
and in processes of its own (in a new session, so each gets the same share of a contended CPU):
in-process (the baseline), in-process with every probe and decode in a child process
(``io.isolate_decode``, ``io.isolate_probe``: the cost of isolation), Celery on Redis with one
worker process and with two (workers started and warmed up, models loaded and one job run, before
the clock starts; the clock stops at the last job's final catalog write); in-process and Celery
with two processes again with int8 features (``features.precision = "int8"``,
benchmarks/features.py has its drift); and in-process in float32 and in int8 without decoding
ahead (``features.decode_ahead = 0``: each video decodes in its own features stage; the other
in-process kinds decode the next video in a thread while one is analysed); and in-process int8
with one inference thread (``features.threads = 1``: inference on one core beside the decoding
thread, not three threads contending for two cores). In-process runs also
report the CPU time of the main thread (the part that does not overlap the decoding thread).
The machine may be shared, so the kinds are interleaved:
``--repeats`` rounds, every other round in reverse order, and every ratio is taken within a round
(neighbouring runs) and reported as the median over rounds.
Queue overhead = (Celery 1-process time - in-process time) / Celery time, of wall time and of CPU
time (every process of the run: this one, which submits and waits, plus the worker's).

    .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--n-synth 10] [--seconds 20] \
        [--broker redis://...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from statistics import median

# Idle OpenMP threads sleep instead of spinning, as in `vmm` (see video_mm/cli/service.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VMM_SHARED_DATA", REPO.parent / "shared" / "data"))
REAL = DATA / "msvd14" / "videos"


def make_archive(folder: Path, n: int, seconds: int) -> list[Path]:
    from video_mm.io.ffmpeg import ffmpeg_exe

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip{i:02d}_360p.mp4"
        if not path.exists():
            subprocess.run(
                [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                 f"testsrc2=size=640x360:rate=30:duration={seconds},hue=h={i * 37}",
                 "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
                check=True,
            )
        paths.append(path)
    return paths + (sorted(REAL.iterdir()) if REAL.is_dir() else [])


def make_models(folder: Path) -> dict:
    """Randomly initialised captioners and retrieval model at the demo's sizes."""
    import torch

    from video_mm.data.vocab import Vocabulary
    from video_mm.models.factory import BackboneSpec, create_model, save_pretrained
    from video_mm.pipeline.demo import CAPTIONERS
    from video_mm.retrieval.model import RetrievalModel, load_config
    from video_mm.retrieval.model import save_pretrained as save_retrieval

    torch.manual_seed(0)
    words = "a man woman dog cat is playing running red blue circle square moves left right"
    vocab = Vocabulary.build(words.split() * 2)
    spec = BackboneSpec(name="resnet18", weights="none", dim=512)
    archs = {"lrcn": "lrcn", "attention": "temporal_attention"}
    dirs = []
    for name, cfg in CAPTIONERS.items():
        model = create_model({"name": name, "arch": archs[name], **cfg}, len(vocab), 512)
        dirs.append(str(save_pretrained(folder / "captioners" / name, model, vocab, spec)))
    config = load_config({"name": "retrieval", "embed_dim": 128, "text_tower": "learned",
                          "video": {"pooling": "attention", "hidden": 128},
                          "text": {"word_dim": 64, "hidden": 128}})
    model = RetrievalModel(config, 512, vocab)
    model.backbone = spec
    return {"captioners": dirs, "retrieval": str(save_retrieval(folder / "retrieval", model))}


def bench_settings(data_dir: Path, models: dict, broker: str = "", prefix: str = "",
                   isolate: bool = False, precision: str = "float32", decode_ahead: int = 1,
                   threads: int = 0):
    from video_mm.settings import Settings

    return Settings(
        data_dir=data_dir,
        io={"isolate_decode": isolate, "isolate_probe": isolate},
        sampling={"sampler": "fps", "fps": 1.0, "size": 224},
        segment={"method": "fixed", "window_s": 10.0, "stride_s": 10.0},
        features={"backbone": "resnet18", "weights": "none", "batch_size": 32,
                  "precision": precision, "decode_ahead": decode_ahead, "threads": threads},
        models=models,
        broker={"url": broker, "queue_prefix": prefix},
    )


def duration_of(paths: list[Path]) -> float:
    from video_mm.io.probe import probe

    return sum(probe(p).duration for p in paths)


def run_in_process(paths: list[Path], warm: Path, models: dict, folder: Path,
                   isolate: bool = False, precision: str = "float32",
                   decode_ahead: int = 1, threads: int = 0) -> dict:
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import STAGE_SECONDS

    settings = bench_settings(folder, models, isolate=isolate, precision=precision,
                              decode_ahead=decode_ahead, threads=threads)
    index_paths([warm], settings, queue=False, progress=False)  # open the catalog, warm caches
    STAGE_SECONDS.clear()
    start, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    rows = index_paths(paths, settings, queue=False, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(r["state"] == "done" for r in rows), rows
    return {"wall": wall, "cpu": cpu, "main_cpu": time.thread_time() - main,
            "stages": dict(STAGE_SECONDS)}


def settings_env(settings) -> dict[str, str]:
    env = {"VMM_DATA_DIR": str(settings.data_dir)}
    for section, values in settings.model_dump(mode="json").items():
        if isinstance(values, dict):
            for key, value in values.items():
                env[f"VMM_{section.upper()}__{key.upper()}"] = (
                    value if isinstance(value, str) else json.dumps(value)
                )
    return env


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group: a worker and its
    pool."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime, stime
            total += int(fields[11]) + int(fields[12])
    return total / tick


def wait_done(settings, job_ids: list[str]) -> datetime:
    """Wait for the jobs (polling one cheap query, not a query a job); return when the last one
    was finished, from the catalog, so the polling interval does not count."""
    from video_mm.pipeline.runner import context

    cat = context(settings).catalog
    while True:
        counts = cat.job_counts()
        if counts["failed"]:
            raise SystemExit(f"a job failed: {[cat.get_job(j).error for j in job_ids]}")
        if counts["queued"] == counts["running"] == 0:
            jobs = [cat.get_job(j) for j in job_ids]
            if all(j.state == "done" for j in jobs):
                return max(j.updated_at for j in jobs)
        time.sleep(0.2)


def run_celery(paths: list[Path], warm: Path, models: dict, folder: Path, broker: str,
               processes: int, precision: str = "float32") -> dict:
    from video_mm.pipeline.dispatch import enqueue
    from video_mm.pipeline.submit import submit_video

    settings = bench_settings(folder, models, broker, f"vmmbench-{uuid.uuid4().hex[:6]}-",
                              precision=precision)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMM_")}
    env.update(settings_env(settings))
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "video_mm", "worker", "-c", str(processes), "-l", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        warm_jobs = []
        for _ in range(processes):  # one warm-up job per process (they load models at start)
            sub = submit_video(warm, settings=settings, idempotency_key=uuid.uuid4().hex)
            enqueue(sub.job_id, settings, queue=True)
            warm_jobs.append(sub.job_id)
        wait_done(settings, warm_jobs)
        worker_cpu, cpu = group_cpu(proc.pid), time.process_time()
        start, clock = time.time(), time.perf_counter()
        jobs = []
        for p in paths:
            sub = submit_video(p, settings=settings)
            enqueue(sub.job_id, settings, queue=True)
            jobs.append(sub.job_id)
        end = wait_done(settings, jobs).timestamp()
        cpu = time.process_time() - cpu + group_cpu(proc.pid) - worker_cpu
        assert abs((time.perf_counter() - clock) - (time.time() - start)) < 1.0, "clock jumped"
        return {"wall": end - start, "cpu": cpu}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


RUNS = ("in-process", "in-process, decode isolated", "celery, 1 worker process",
        "celery, 2 worker processes", "in-process, int8 features",
        "celery, 2 worker processes, int8 features", "in-process, no decode ahead",
        "in-process, int8 features, no decode ahead",
        "in-process, int8 features, 1 inference thread")


def run(name: str, args: argparse.Namespace, root: Path, models: dict, folder: Path) -> dict:
    """One run. In-process runs too get a process of their own in a session of their own, as a
    worker does: with the kernel's autogroup scheduling, a new session gets its own share of a
    contended CPU, which would otherwise favour the workers on a loaded machine."""
    shutil.rmtree(folder, ignore_errors=True)
    precision = "int8" if "int8" in name else "float32"
    if not name.startswith("in-process"):
        paths, warm = archive(root, args)
        return run_celery(paths, warm, models, folder, args.broker, 1 if "1 worker" in name else 2,
                          precision)
    out = subprocess.run(
        [sys.executable, __file__, "--workdir", str(root), "--n-synth", str(args.n_synth),
         "--seconds", str(args.seconds), "--in-process-run", str(folder),
         "--models", json.dumps(models), "--precision", precision,
         "--decode-ahead", "0" if "no decode ahead" in name else "1",
         "--threads", "1" if "1 inference thread" in name else "0",
         *(["--isolated"] if "isolated" in name else [])],
        check=True, capture_output=True, text=True, start_new_session=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def archive(root: Path, args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The benchmark's videos and the short warm-up video (made on first use)."""
    paths = make_archive(root / "archive", args.n_synth, args.seconds)
    return paths, make_archive(root / "warm", 1, 4)[0]


def report(results: dict[str, list[dict]], video_s: float, loads: list[float]) -> None:
    base = results[RUNS[0]]
    print(f"\nload average (1 min) at the start of each run: "
          f"{', '.join(f'{x:.1f}' for x in loads)}")
    cores = os.cpu_count() or 1
    print("\n| run | wall s (median, min-max) | video s / wall s | vs in-process (median ratio) "
          "| CPU s (median) | video s / (CPU s / cores) | main-thread CPU s |"
          "\n|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in results.items():
        walls = [r["wall"] for r in rs]
        ratio = median([b["wall"] / r["wall"] for b, r in zip(base, rs, strict=True)])
        cpu = median([r["cpu"] for r in rs])
        main = median([r["main_cpu"] for r in rs]) if "main_cpu" in rs[0] else None
        print(f"| {name} | {median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}) | "
              f"{video_s / median(walls):.1f}x | {ratio:.2f} | {cpu:.1f} | "
              f"{video_s / cpu * cores:.1f}x | {'-' if main is None else f'{main:.1f}'} |")
    if RUNS[1] in results:
        isolated = results[RUNS[1]]
        shares = [(c["wall"] - b["wall"]) / b["wall"] for b, c in zip(base, isolated, strict=True)]
        print(f"\ndecode isolation (io.isolate_decode + io.isolate_probe: a child process per "
              f"opened file) vs in-process decoding, wall time: median {median(shares):+.1%} "
              f"(rounds: {', '.join(f'{x:+.1%}' for x in shares)})")
    celery1 = results.get(RUNS[2], [])
    for what in ("wall", "cpu") if celery1 else ():
        shares = [(c[what] - b[what]) / c[what] for b, c in zip(base, celery1, strict=True)]
        print(f"\nqueue overhead, {what} time (Celery 1 process vs in-process, share of the Celery "
              f"time): median {median(shares):+.1%} (rounds: "
              f"{', '.join(f'{x:+.1%}' for x in shares)})")
    cpu = median([r["cpu"] for r in base])
    print(f"\nin-process CPU time: {cpu:.1f} s on {cores} cores: {video_s / cpu * cores:.1f}x real "
          f"time if the run had the cores to itself (video s / (CPU s / cores))")
    for kind in (k for k in results if k.startswith("in-process") and "isolated" not in k):
        rs = results[kind]
        stages = {k: median([r["stages"].get(k, 0.0) for r in rs]) for k in rs[0]["stages"]}
        total, wall = sum(stages.values()), median([r["wall"] for r in rs])
        print(f"\n| stage ({kind}, median) | s | share | video s / stage s |\n"
              "|---|---:|---:|---:|")
        for name, secs in stages.items():
            print(f"| {name} | {secs:.2f} | {secs / total:.0%} | "
                  f"{video_s / max(secs, 1e-9):.0f}x |")
        print(f"| catalog writes, submit, other | {wall - total:.2f} | "
              f"{(wall - total) / wall:.0%} of wall | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-synth", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--in-process-run", type=Path, help=argparse.SUPPRESS)  # one run, as JSON
    parser.add_argument("--models", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--decode-ahead", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kinds", nargs="+", type=int, default=list(range(len(RUNS))),
                        help="which runs, by number: " + "; ".join(
                            f"{i} {name}" for i, name in enumerate(RUNS)) + " (0 always runs)")
    args = parser.parse_args()
    if args.in_process_run:
        paths, warm = archive(args.workdir, args)
        print(json.dumps(run_in_process(paths, warm, args.models, args.in_process_run,
                                        args.isolated, args.precision, args.decode_ahead,
                                        args.threads)))
        return

    import torch

    root = args.workdir or Path(tempfile.mkdtemp(prefix="vmm-bench-pipeline-"))
    paths, _ = archive(root, args)
    models = make_models(root / "models")
    video_s = duration_of(paths)
    print(f"archive: {len(paths)} videos, {video_s:.0f} s of video; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores; {args.repeats} rounds", flush=True)

    kinds = [RUNS[i] for i in sorted({0, *args.kinds})]
    results: dict[str, list[dict]] = {name: [] for name in kinds}
    loads = []
    for i in range(args.repeats):
        for name in kinds if i % 2 == 0 else kinds[::-1]:
            loads.append(os.getloadavg()[0])
            # A fresh folder a run: a process keeps its catalog and blob store per data folder.
            folder = root / "runs" / f"{i + 1}-{name.replace(',', '').replace(' ', '-')}"
            r = run(name, args, root, models, folder)
            results[name].append(r)
            print(f"round {i + 1}, {name}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU "
                  f"(load average {loads[-1]:.1f})", flush=True)
    (root / "results.json").write_text(json.dumps({"video_s": video_s, "loads": loads,
                                                   "results": results}, indent=1))
    report(results, video_s, loads)


if __name__ == "__main__":
    main()
