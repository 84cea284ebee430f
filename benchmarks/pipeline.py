"""Pipeline throughput: seconds of video indexed per wall-clock second, in-process and on Celery.

A fixed archive: ``--n-synth`` 360p h264 clips of ``--seconds`` s (ffmpeg ``testsrc2``, 30 fps)
plus the 14 real clips of ``../shared/data/msvd14``. Every job runs every stage: probe, segment
(10 s windows), thumbnails, resnet18 features at 1 frame/s (224 px), two captioners (LRCN and
temporal attention, beam 3), retrieval embeddings, catalog writes, FAISS index. Models are randomly
initialised at the demo's sizes: their cost does not depend on their weights.

Runs, each on a fresh data folder: in-process (the baseline), then Celery on Redis with one worker
process and with two. Workers are started and warmed up (models loaded, one job run) before the
clock starts. Queue overhead = (Celery 1-process time - in-process time) / Celery time.

    .venv/bin/python benchmarks/pipeline.py [--n-synth 10] [--seconds 20] [--broker redis://...]
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
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning, as in `vmm` (see video_mm/cli/service.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "msvd14" / "videos"


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


def bench_settings(data_dir: Path, models: dict, broker: str = "", prefix: str = ""):
    from video_mm.settings import Settings

    return Settings(
        data_dir=data_dir,
        sampling={"sampler": "fps", "fps": 1.0, "size": 224},
        segment={"method": "fixed", "window_s": 10.0, "stride_s": 10.0},
        features={"backbone": "resnet18", "weights": "none", "batch_size": 32},
        models=models,
        broker={"url": broker, "queue_prefix": prefix},
    )


def duration_of(paths: list[Path]) -> float:
    from video_mm.io.probe import probe

    return sum(probe(p).duration for p in paths)


def run_in_process(paths: list[Path], warm: Path, models: dict, root: Path) -> dict:
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import STAGE_SECONDS

    settings = bench_settings(root / "inprocess", models)
    index_paths([warm], settings, queue=False, progress=False)  # load models, warm caches
    STAGE_SECONDS.clear()
    start, cpu = time.perf_counter(), time.process_time()
    rows = index_paths(paths, settings, queue=False, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(r["state"] == "done" for r in rows), rows
    return {"wall": wall, "cpu": cpu, "stages": dict(STAGE_SECONDS)}


def settings_env(settings) -> dict[str, str]:
    env = {"VMM_DATA_DIR": str(settings.data_dir)}
    for section, values in settings.model_dump(mode="json").items():
        if isinstance(values, dict):
            for key, value in values.items():
                env[f"VMM_{section.upper()}__{key.upper()}"] = (
                    value if isinstance(value, str) else json.dumps(value)
                )
    return env


def wait_done(settings, job_ids: list[str]) -> None:
    from video_mm.pipeline.runner import context

    cat = context(settings).catalog
    while True:
        states = [cat.get_job(j).state for j in job_ids]
        if "failed" in states:
            raise SystemExit(f"a job failed: {[cat.get_job(j).error for j in job_ids]}")
        if all(s == "done" for s in states):
            return
        time.sleep(0.05)


def run_celery(paths: list[Path], warm: Path, models: dict, root: Path, broker: str,
               processes: int) -> dict:
    from video_mm.pipeline.dispatch import enqueue
    from video_mm.pipeline.submit import submit_video

    settings = bench_settings(root / f"celery{processes}", models, broker,
                              f"vmmbench-{uuid.uuid4().hex[:6]}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMM_")}
    env.update(settings_env(settings))
    log = (root / f"worker{processes}.log").open("wb")
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
        start = time.perf_counter()
        jobs = []
        for p in paths:
            sub = submit_video(p, settings=settings)
            enqueue(sub.job_id, settings, queue=True)
            jobs.append(sub.job_id)
        wait_done(settings, jobs)
        return {"wall": time.perf_counter() - start}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-synth", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    root = args.workdir or Path(tempfile.mkdtemp(prefix="vmm-bench-pipeline-"))
    for sub in ("inprocess", "celery1", "celery2"):
        shutil.rmtree(root / sub, ignore_errors=True)
    paths = make_archive(root / "archive", args.n_synth, args.seconds)
    warm = make_archive(root / "warm", 1, 4)[0]
    models = make_models(root / "models")
    video_s = duration_of(paths)
    print(f"archive: {len(paths)} videos, {video_s:.0f} s of video; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)

    results = {"in-process": run_in_process(paths, warm, models, root)}
    for n in (1, 2):
        results[f"celery, {n} worker process{'es' if n > 1 else ''}"] = run_celery(
            paths, warm, models, root, args.broker, n
        )

    base = results["in-process"]["wall"]
    print("\n| run | wall s | video s / wall s | vs in-process |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall']:.1f} | {video_s / r['wall']:.1f}x | {base / r['wall']:.2f} |")
    cpu = results["in-process"]["cpu"]
    cores = os.cpu_count() or 1
    print(f"\nin-process CPU time: {cpu:.1f} s on {cores} cores: {video_s / cpu * cores:.1f}x real "
          f"time if the run had the cores to itself (video s / (CPU s / cores))")
    celery1 = results["celery, 1 worker process"]["wall"]
    print(f"\nqueue overhead (Celery 1 process vs in-process): "
          f"{(celery1 - base) / celery1:+.1%} of the Celery time")
    stages = results["in-process"]["stages"]
    total = sum(stages.values())
    print("\n| stage (in-process) | s | share | video s / stage s |\n|---|---:|---:|---:|")
    for name, secs in stages.items():
        print(f"| {name} | {secs:.2f} | {secs / total:.0%} | {video_s / max(secs, 1e-9):.0f}x |")
    print(f"| catalog writes, submit, other | {base - total:.2f} | "
          f"{(base - total) / base:.0%} of wall | |")


if __name__ == "__main__":
    main()
