"""Reliability under Celery with real worker processes and real brokers (Redis, RabbitMQ, and the
embedded SQLite default): end to end, kill -9 mid-job, bad input, broker restart."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workers.jobs import submit_all
from video_mm.pipeline.runner import context
from video_mm.pipeline.stages import PROGRESS
from video_mm.settings import Settings

pytestmark = pytest.mark.integration


def _ffmpeg(*args: str) -> None:
    from video_mm.io.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=120)


def _testsrc(path: Path, seconds: float, size: str = "160x120", rate: int = 5) -> Path:
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-t", str(seconds),
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(rate * 2), str(path))
    return path


def _tasks_run(log: Path) -> set[str]:
    """The task names a worker's log (level info) shows it received."""
    return set(re.findall(r"Task (vmm\.\w+)\[[^\]]+\] received", log.read_text(errors="replace")))


@pytest.mark.parametrize("worker_settings", ["redis", "rabbitmq"], indirect=True)
def test_end_to_end_real_and_synthetic_clips(
    worker_settings: Settings, workers: Any, wait: Any, msvd14_videos: list[Path], tmp_path: Path,
    tiny_models: dict, results_once: Any,
) -> None:
    from video_mm.data.synth import generate

    generate(tmp_path / "synth", n_videos=3, seed=7, progress=False)
    synth = sorted((tmp_path / "synth" / "videos").glob("*.mp4"))
    workers.start("cpu,gpu,index", concurrency=2)
    job_ids = submit_all(worker_settings, [*msvd14_videos, *synth])
    states = wait(worker_settings, job_ids, workers)
    cat = context(worker_settings).catalog
    errors = {j: cat.get_job(j).error for j, s in states.items() if s != "done"}
    assert not errors, f"{errors}\n{workers.log_tail()}"
    results_once(worker_settings, job_ids, tiny_models)
    assert all(p.poll() is None for p in workers.procs)
    # A worker of every queue runs each video in one task: no queue hops between the steps.
    assert _tasks_run(workers.logs / "worker0.log") == {"vmm.prepare"}


@pytest.mark.parametrize("worker_settings", ["redis"], indirect=True)
def test_split_workers_pass_each_step_through_its_queue(
    worker_settings: Settings, workers: Any, wait: Any, msvd14_videos: list[Path],
    tiny_models: dict, results_once: Any,
) -> None:
    steps = {"cpu": "vmm.prepare", "gpu": "vmm.analyse", "index": "vmm.publish"}
    for queue in steps:
        workers.start(queue)
    job_ids = submit_all(worker_settings, msvd14_videos[:3])
    states = wait(worker_settings, job_ids, workers)
    assert set(states.values()) == {"done"}, workers.log_tail()
    results_once(worker_settings, job_ids, tiny_models)
    for i, step in enumerate(steps.values()):
        assert _tasks_run(workers.logs / f"worker{i}.log") == {step}, workers.log_tail()


@pytest.mark.parametrize("worker_settings", ["rabbitmq", "redis"], indirect=True)
def test_kill_9_mid_job_is_redelivered_without_duplicates(
    worker_settings: Settings, workers: Any, wait: Any, tmp_path: Path, tiny_models: dict,
    results_once: Any, fault_row: Any, request: pytest.FixtureRequest,
) -> None:
    video = _testsrc(tmp_path / "long.mp4", seconds=160)
    first = workers.start("cpu,gpu,index")
    (job_id,) = submit_all(worker_settings, [video])
    cat = context(worker_settings).catalog
    # Kill once features are part way: the analyse task is running and holds its message unacked.
    deadline = time.monotonic() + 240
    while True:
        job = cat.get_job(job_id)
        if job.stage == "features" and job.progress > PROGRESS["segment"]:
            break
        assert job.state not in ("done", "failed"), f"the job ended before the kill: {job.error}"
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.02)
    workers.kill(first, signal.SIGKILL)
    assert cat.get_job(job_id).state == "running"
    workers.start("cpu,gpu,index")
    states = wait(worker_settings, [job_id], workers)
    job = cat.get_job(job_id)
    assert states[job_id] == "done", f"{job.error}\n{workers.log_tail()}"
    assert job.attempts >= 2  # the first run and the redelivery
    results_once(worker_settings, [job_id], tiny_models)
    broker = request.node.callspec.params["worker_settings"]
    fault_row(f"kill -9 of the worker in analyse, mid-features ({broker})", worker_settings,
              [job_id])


@pytest.fixture
def bad_corpus(tmp_path: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (file, acceptable error codes): the I/O layer's bad-input cases as uploads."""
    d = tmp_path / "bad"
    d.mkdir()
    real = _testsrc(d / "real.mp4", seconds=2)
    rng_bytes = bytes((i * 7919 + 13) % 256 for i in range(50_000))
    cases: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def case(name: str, data: bytes, *codes: str) -> None:
        (d / name).write_bytes(data)
        cases[name] = (d / name, codes)

    case("zero.mp4", b"", "not_a_video")
    case("random.mp4", rng_bytes, "not_a_video", "corrupt_video")
    case("text.mp4", b"just some text, not a video\n" * 100, "not_a_video")
    data = real.read_bytes()
    case("truncated.mp4", data[: len(data) // 2], "corrupt_video", "not_a_video")
    case("playlist.m3u8", f"#EXTM3U\n#EXTINF:2.0,\n{real}\n#EXT-X-ENDLIST\n".encode(),
         "forbidden_source", "not_a_video")
    case("list.ffconcat", f"ffconcat version 1.0\nfile '{real}'\n".encode(),
         "forbidden_source", "not_a_video")
    case("dash.mp4", b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">'
         b"<BaseURL>http://example.com/</BaseURL></MPD>\n", "forbidden_source")
    case("huge.y4m", b"YUV4MPEG2 W100000 H100000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\0" * 1000,
         "video_too_large", "corrupt_video")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac",
            "-f", "mp4", str(d / "audio.mp4"))
    cases["audio.mp4"] = (d / "audio.mp4", ("not_a_video",))
    cases["long.mp4"] = (_testsrc(d / "long.mp4", seconds=240, size="64x64", rate=1),
                         ("video_too_large",))
    real.unlink()
    return cases


@pytest.mark.parametrize("worker_settings", ["embedded"], indirect=True)
def test_bad_inputs_fail_with_reasons_and_the_worker_carries_on(
    worker_settings: Settings, workers: Any, wait: Any, bad_corpus: dict, msvd14_videos: list[Path],
    tiny_models: dict, results_once: Any, fault_row: Any,
) -> None:
    """On the embedded SQLite broker (the out-of-the-box default), no server at all."""
    proc = workers.start("cpu,gpu,index")
    names = list(bad_corpus)
    good = msvd14_videos[:2]
    job_ids = submit_all(worker_settings, [bad_corpus[n][0] for n in names[:4]])
    job_ids += submit_all(worker_settings, good[:1])
    job_ids += submit_all(worker_settings, [bad_corpus[n][0] for n in names[4:]])
    job_ids += submit_all(worker_settings, good[1:])
    states = wait(worker_settings, job_ids, workers)
    cat = context(worker_settings).catalog
    bad_jobs = job_ids[:4] + job_ids[5:-1]
    for name, job_id in zip(names, bad_jobs, strict=True):
        job = cat.get_job(job_id)
        codes = bad_corpus[name][1]
        assert states[job_id] == "failed", f"{name}: {job}"
        assert job.error.split(":")[0] in codes and name in job.error, f"{name}: {job.error}"
        assert job.attempts == 1  # bad input is never retried
    assert states[job_ids[4]] == states[job_ids[-1]] == "done", workers.log_tail()
    assert proc.poll() is None
    results_once(worker_settings, job_ids, tiny_models)
    fault_row(f"every bad input of the corpus ({len(bad_jobs)}) + 2 good, through the service "
              "(embedded broker)", worker_settings, job_ids)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, timeout=120, capture_output=True)


@pytest.mark.parametrize("worker_settings", ["rabbitmq"], indirect=True)
def test_rabbitmq_restart_with_jobs_queued_loses_none(
    worker_settings: Settings, workers: Any, wait: Any, msvd14_videos: list[Path],
    tiny_models: dict, results_once: Any, fault_row: Any,
) -> None:
    job_ids = submit_all(worker_settings, msvd14_videos[:6])
    _rabbitmqctl("stop_app")
    try:
        time.sleep(1)
    finally:
        _rabbitmqctl("start_app")
    _rabbitmqctl("await_startup")
    workers.start("cpu,gpu,index")
    # Restart again while the worker is consuming: it reconnects and unacked tasks come back.
    cat = context(worker_settings).catalog
    deadline = time.monotonic() + 240
    while not any(cat.get_job(j).state == "done" for j in job_ids):
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.1)
    _rabbitmqctl("stop_app")
    try:
        time.sleep(1)
    finally:
        _rabbitmqctl("start_app")
    states = wait(worker_settings, job_ids, workers)
    assert set(states.values()) == {"done"}, workers.log_tail()
    results_once(worker_settings, job_ids, tiny_models)
    fault_row("RabbitMQ restart (stop_app/start_app) with jobs queued and in flight",
              worker_settings, job_ids)


@pytest.mark.parametrize("worker_settings", ["embedded"], indirect=True)
def test_damaged_videos_end_done_with_warnings_and_no_native_log_lines(
    worker_settings: Settings, workers: Any, wait: Any, tmp_path: Path
) -> None:
    """Cut and corrupted files through a real worker: each job ends done with the video's warning
    (the one ffmpeg cannot open fails, in our words), the worker lives, and its log (its stdout and
    stderr) holds no line of FFmpeg's or Decord's."""
    from tests.io import damaged_corpus

    corpus = damaged_corpus.load()
    corpus.make_corpus(tmp_path / "corpus")
    names = ["cut_50.mp4", "broken_nal.mp4", "flip_middle.mp4", "flip_mpeg2.ts", "cut_h264.ts",
             "cut_packet_h264.ts", "lost_fragment.mp4", "lost_init.mp4"]  # fmt: skip
    proc = workers.start("cpu,gpu,index")
    job_ids = submit_all(worker_settings, [tmp_path / "corpus" / n for n in names])
    states = wait(worker_settings, job_ids, workers)
    cat = context(worker_settings).catalog
    for name, job_id in zip(names[:-1], job_ids, strict=False):
        job = cat.get_job(job_id)
        assert states[job_id] == "done", f"{name}: {job.error}"
        # broken_nal.mp4's 4 sampled frames (0, 33, 66, 99) skip its 3 broken ones (45-47), but
        # their NAL lengths, read without decoding, say they are lost
        assert cat.get_video(job.video_id).info.get("warning", "").startswith("decoded "), name
    assert cat.get_video(cat.get_job(job_ids[0]).video_id).info["warning"] == (
        "decoded 50 of 100 frames: the file is cut at 2.0 s"
    )
    failed = cat.get_job(job_ids[-1])
    assert states[job_ids[-1]] == "failed" and failed.attempts == 1
    assert failed.error.startswith("corrupt_video: lost_init.mp4: looks like a video container")
    assert proc.poll() is None
    log = workers.log_tail(10**6)
    assert not any(s in log for s in ("[h264 @", "[mpeg2video @", "[mov,mp4", ".cc:")), log
