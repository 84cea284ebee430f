"""The pipeline in-process on real clips: every stage's rows written once, bad input fails its job
with the reason, re-running a finished job changes nothing, transient errors are retried."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from tests.pipeline.conftest import CUT_WARNING
from video_mm.errors import CorruptVideo, StorageError
from video_mm.pipeline import run_job, submit_video
from video_mm.pipeline import runner as runner_mod
from video_mm.pipeline.runner import JobProgress, context
from video_mm.pipeline.stages import PROGRESS
from video_mm.settings import Settings


def _counts(settings: Settings, video_id: str) -> dict:
    from video_mm.index.base import open_index

    cat = context(settings).catalog
    clips = cat.get_clips(video_id)
    index = open_index(settings)
    try:
        in_index = sum(f"{video_id}:{c.index}" in index for c in clips)
        size = len(index)
    finally:
        index.close()
    return {
        "clips": len(clips),
        "captions": len(cat.get_captions(video_id=video_id)),
        "embeddings": len(cat.get_embeddings(video_id=video_id)),
        "in_index": in_index,
        "index_size": size,
        "thumbnails": sum(c.thumbnail_key is not None for c in clips),
    }


@pytest.fixture
def three_clips(msvd14_videos: list[Path]) -> list[Path]:
    avi = [v for v in msvd14_videos if v.suffix == ".avi"]
    gif = [v for v in msvd14_videos if v.suffix == ".gif"]
    return [avi[0], avi[1], gif[0]]


def test_jobs_run_to_done_with_every_result_once(
    fast_settings: Settings, three_clips: list[Path], tiny_models: dict
) -> None:
    cat = context(fast_settings).catalog
    n_captioners = len(tiny_models["captioners"])
    for path in three_clips:
        sub = submit_video(path, settings=fast_settings)
        assert sub.created
        assert run_job(sub.job_id, fast_settings) == "done"
        job = cat.get_job(sub.job_id)
        assert (job.state, job.stage, job.progress, job.error) == ("done", "index", 1.0, None)
        video = cat.get_video(sub.video_id)
        assert video.state == "ready" and video.duration > 1.0 and video.width > 0
        c = _counts(fast_settings, sub.video_id)
        assert c["clips"] >= 1
        assert c["thumbnails"] == c["clips"]
        assert c["captions"] == c["clips"] * n_captioners
        if tiny_models["retrieval"]:
            assert c["embeddings"] == c["in_index"] == c["clips"]
        # Clips tile the video: start at 0, each starts where the last ended, end at the duration.
        clips = cat.get_clips(sub.video_id)
        assert clips[0].start == 0.0
        assert clips[-1].end == pytest.approx(video.duration, abs=0.5)
        for caption in cat.get_captions(video_id=sub.video_id):
            assert caption.text.strip() and caption.score <= 0.0
        for clip in clips:
            thumb = Image.open(io.BytesIO(context(fast_settings).blobs.get(clip.thumbnail_key)))
            assert thumb.format == "JPEG" and thumb.width <= 320

    # Running a finished job's stages again (a redelivered task) duplicates nothing.
    before = {v.id: _counts(fast_settings, v.id) for v in cat.list_videos()}
    ctx = context(fast_settings)
    job = cat.list_jobs(limit=1)[0]
    runner_mod.prepare(ctx, job.id)
    key = runner_mod.analyse(ctx, job.id)
    runner_mod.publish(ctx, job.id, key)
    after = {v.id: _counts(fast_settings, v.id) for v in cat.list_videos()}
    assert after == before


def test_same_video_twice_is_one_video_and_one_job(
    fast_settings: Settings, three_clips: list[Path], tmp_path: Path
) -> None:
    first = submit_video(three_clips[0], settings=fast_settings)
    copy = tmp_path / "renamed.avi"
    copy.write_bytes(three_clips[0].read_bytes())
    with copy.open("rb") as f:
        second = submit_video(f, settings=fast_settings, filename="renamed.avi")
    assert second.video_id == first.video_id and second.job_id == first.job_id
    assert not second.created
    other = submit_video(three_clips[0], settings=fast_settings, idempotency_key="again")
    assert other.created and other.video_id == first.video_id and other.job_id != first.job_id
    assert len(list(context(fast_settings).blobs.keys())) == 1


def test_bad_input_fails_its_job_and_the_next_job_completes(
    fast_settings: Settings, three_clips: list[Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    cat = context(fast_settings).catalog
    for bad in (empty, text):
        sub = submit_video(bad, settings=fast_settings)
        assert run_job(sub.job_id, fast_settings) == "failed"
        job = cat.get_job(sub.job_id)
        assert job.state == "failed" and job.stage == "probe"
        assert job.error.startswith(("not_a_video:", "corrupt_video:")), job.error
        assert bad.name in job.error
        assert cat.get_video(sub.video_id).state == "failed"
    good = submit_video(three_clips[2], settings=fast_settings)
    assert run_job(good.job_id, fast_settings) == "done"


def test_transient_error_is_retried_then_succeeds(
    fast_settings: Settings, three_clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is briefly unwritable (StorageError is transient): the step runs again."""
    settings = fast_settings.model_copy(
        update={"broker": fast_settings.broker.model_copy(update={"retry_backoff_s": 0.01})}
    )
    calls = []
    real = runner_mod.publish

    def flaky(ctx, job_id, key):  # type: ignore[no-untyped-def]
        calls.append(job_id)
        if len(calls) == 1:
            raise StorageError("index volume briefly unavailable")
        return real(ctx, job_id, key)

    steps = runner_mod.STEPS
    monkeypatch.setattr(runner_mod, "STEPS", (*steps[:-1], replace(steps[-1], run=flaky)))
    sub = submit_video(three_clips[1], settings=settings)
    assert run_job(sub.job_id, settings) == "done"
    assert len(calls) == 2


def test_progress_writes_a_steps_start_and_end_and_throttles_reports_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[dict] = []

    class Catalog:
        def update_job(self, job_id: str, **values: object) -> None:
            writes.append(values)

    monkeypatch.setattr(runner_mod, "PROGRESS_INTERVAL_S", 3600.0)
    report = JobProgress(Catalog(), "job")
    report.start("features")
    for i in range(1, 11):
        report("features", i / 10)  # within the interval: held back
    report("caption", 1.0)
    report.flush()
    report.flush()  # nothing held back: no write
    assert writes == [
        dict(state="running", stage="features", progress=PROGRESS["segment"]),
        dict(stage="caption", progress=PROGRESS["caption"]),
    ]
    monkeypatch.setattr(runner_mod, "PROGRESS_INTERVAL_S", 0.0)
    report("embed", 0.5)
    assert writes[-1] == dict(stage="embed", progress=(PROGRESS["caption"] + PROGRESS["embed"]) / 2)


def test_damaged_video_is_done_with_its_warning(
    fast_settings: Settings, cut_mp4: Path, tmp_path: Path
) -> None:
    """A file cut in the middle is indexed from the frames that are there; the job ends done and
    the video (its catalog row, the API's body) says what was lost. Too little left: failed, with
    a reason in our words."""
    from video_mm.api.routes import _summary

    (stub := tmp_path / "stub.mp4").write_bytes(cut_mp4.read_bytes()[:8000])
    cat = context(fast_settings).catalog
    sub = submit_video(cut_mp4, settings=fast_settings)
    assert run_job(sub.job_id, fast_settings) == "done"
    video = cat.get_video(sub.video_id)
    assert video.state == "ready" and video.info["warning"] == CUT_WARNING
    assert video.duration == 2.0 and [c.end for c in cat.get_clips(sub.video_id)] == [2.0]
    assert _summary(video)["warning"] == CUT_WARNING
    sub = submit_video(stub, settings=fast_settings)
    assert run_job(sub.job_id, fast_settings) == "failed"
    error = cat.get_job(sub.job_id).error
    assert error.startswith("corrupt_video: stub.mp4: decoded "), error
    assert "io.min_decoded_share" in error and "@" not in error


def _ahead(settings: Settings, n: int) -> Settings:
    return settings.model_copy(
        update={"features": settings.features.model_copy(update={"decode_ahead": n})})


def _captions(settings: Settings, video_id: str) -> list[tuple[int, str, str]]:
    cat = context(settings).catalog
    index = {c.id: c.index for c in cat.get_clips(video_id)}
    return sorted((index[c.clip_id], c.model, c.text) for c in cat.get_captions(video_id=video_id))


def test_decoding_ahead_runs_jobs_in_order_with_the_same_results(
    pipeline_settings, three_clips: list[Path], cut_mp4: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """features.decode_ahead = 1: each next video is prepared and decodes in the prefetch thread
    while one is analysed. Jobs end in order, as without it, with the same captions; a file that
    fails in the probe, one whose decoding fails (in the prefetch thread: the same typed reason as
    when decoded in the step) and a damaged one (done, with its warning) change nothing for the
    others."""
    import video_mm.io.sampling as sampling

    (text := tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    # a copy of a clip (other bytes: another video) whose frames fail to decode
    (broken := tmp_path / "broken.avi").write_bytes(three_clips[1].read_bytes() + bytes(64))
    real = sampling.sample_frames

    def sample_frames(reader, **kwargs):  # type: ignore[no-untyped-def]
        if reader.info.size_bytes == broken.stat().st_size:
            raise CorruptVideo(reader.info.path, "decoding failed: invalid data in a packet")
        return real(reader, **kwargs)

    monkeypatch.setattr(sampling, "sample_frames", sample_frames)
    videos = [three_clips[0], text, three_clips[1], broken, cut_mp4, three_clips[2]]
    results = {}
    for ahead in (0, 1):
        settings = _ahead(pipeline_settings(tmp_path / f"ahead{ahead}"), ahead)
        subs = [submit_video(v, settings=settings) for v in videos]
        ran = list(runner_mod.run_jobs([s.job_id for s in subs], settings))
        assert ran == list(zip([s.job_id for s in subs],
                               ["done", "failed", "done", "failed", "done", "done"], strict=True))
        cat = context(settings).catalog
        jobs = [cat.get_job(s.job_id) for s in subs]
        assert jobs[1].stage == "probe" and jobs[1].error.startswith(
            ("not_a_video:", "corrupt_video:"))
        assert jobs[3].stage == "features"
        assert jobs[3].error == (
            "corrupt_video: broken.avi: decoding failed: invalid data in a packet")
        assert cat.get_video(subs[4].video_id).info["warning"] == CUT_WARNING
        results[ahead] = [(j.state, j.error, _captions(settings, s.video_id))
                          for s, j in zip(subs, jobs, strict=True)]
    assert results[1] == results[0]


def test_index_paths_with_decoding_ahead_reports_every_file_in_order(
    pipeline_settings, three_clips: list[Path], tmp_path: Path
) -> None:
    from video_mm.pipeline.dispatch import index_paths

    (text := tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    settings = _ahead(pipeline_settings(tmp_path / "vmm"), 2)
    files = [three_clips[0], text, three_clips[1], three_clips[0]]
    rows = index_paths(files, settings, queue=False, progress=False)
    assert [(r["path"], r["state"]) for r in rows] == [
        (str(files[0]), "done"), (str(text), "failed"), (str(files[2]), "done"),
        (str(files[0]), "done"),  # submitted again: the finished job, not run again
    ]
    assert rows[3]["job_id"] == rows[0]["job_id"]


def test_publishing_keeps_the_processes_index_open_and_journals_each_video(
    fast_settings: Settings, three_clips: list[Path], tiny_models: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each publish flushes its video through the process's one index handle: the index file is
    read at most once and written whole once (then each video is a journal record), and a fresh
    reader sees every video; a failed publish drops the handle and the retry opens it afresh."""
    from video_mm.index.base import open_index
    from video_mm.index.faiss_index import FaissIndex

    assert tiny_models["retrieval"]
    calls = {"load": 0, "write": 0}
    for name in calls:
        real = getattr(FaissIndex, f"_{name}")

        def spy(self, *args, _name=name, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(FaissIndex, f"_{name}", spy)
    subs = [submit_video(p, settings=fast_settings) for p in three_clips]
    assert [run_job(s.job_id, fast_settings) for s in subs] == ["done"] * 3
    assert calls == {"load": 0, "write": 1}  # created by the first video, journalled after
    fresh = open_index(fast_settings)
    try:
        for sub in subs:
            assert f"{sub.video_id}:0" in fresh
    finally:
        fresh.close()

    ctx = context(fast_settings)
    kept = ctx._index

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk gone")

    job = subs[0].job_id
    key = runner_mod.analyse(ctx, job)
    monkeypatch.setattr(runner_mod.stages, "index_stage", broken)
    with pytest.raises(OSError, match="disk gone"):
        runner_mod.publish(ctx, job, key)
    assert ctx._index is None
    monkeypatch.undo()
    runner_mod.publish(ctx, job, key)
    assert ctx._index is not None and ctx._index is not kept
