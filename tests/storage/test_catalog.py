"""The catalog on SQLite and PostgreSQL: keyed upserts, readiness, jobs, text search, deletion."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from video_mm.errors import NotFound
from video_mm.index.faiss_index import FaissIndex
from video_mm.records import Caption, Clip, VideoInfo
from video_mm.settings import IndexSettings
from video_mm.storage.blobs import BlobStore
from video_mm.storage.catalog import Catalog, NotReady, clip_id
from video_mm.storage.models import Base, Captions, Clips, Embeddings, include_object

CAPTIONER = "lrcn"
RETRIEVAL = "joint"


def vid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def clips_of(video_id: str, n: int, window: float = 10.0) -> list[Clip]:
    return [Clip(video_id, i, i * window, (i + 1) * window) for i in range(n)]


def add_ready(catalog: Catalog, name: str, captions: list[str]) -> str:
    """A video with one clip per caption, captioned and embedded, marked ready."""
    v = vid(name)
    catalog.add_video(v, blob_key=v, filename=f"{name}.mp4")
    ids = catalog.upsert_clips(v, clips_of(v, len(captions)))
    catalog.upsert_captions(
        (c, Caption(t, -1.0, CAPTIONER)) for c, t in zip(ids, captions, strict=True)
    )
    catalog.upsert_embeddings(RETRIEVAL, {c: c for c in ids})
    catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
    return v


def count(catalog: Catalog, model: type) -> int:
    with catalog._read() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.filterwarnings("ignore:autogenerate skipping:UserWarning")
def test_schema_is_created_by_migrations_and_matches_models(
    catalog: Catalog, catalog_url: str
) -> None:
    assert catalog.revision() is not None
    with catalog.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": include_object, "compare_type": True}
        )
        assert compare_metadata(ctx, Base.metadata) == []
    with Catalog(catalog_url) as again:  # reopening an up-to-date catalog changes nothing
        assert again.revision() == catalog.revision()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with Catalog(f"sqlite:///{tmp_path / 'c.db'}") as c, c.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_add_video_once(catalog: Catalog) -> None:
    v = vid("a")
    row, created = catalog.add_video(v, blob_key=v, filename="a.mp4")
    assert created and row.state == "pending" and row.created_at.tzinfo is not None
    again, created = catalog.add_video(v, blob_key=v, filename="other-name.mp4")
    assert not created and again.filename == "a.mp4"
    assert [r.id for r in catalog.list_videos()] == [v]
    with pytest.raises(NotFound):
        catalog.get_video(vid("missing"))
    with pytest.raises(ValueError):
        catalog.add_video("a:b", blob_key=v)


def test_video_info(catalog: Catalog) -> None:
    v = vid("info")
    catalog.add_video(v, blob_key=v)
    info = VideoInfo(
        path="/x.mp4",
        container="mp4",
        codec="h264",
        pix_fmt="yuv420p",
        width=640,
        height=360,
        rotation=0,
        duration=12.5,
        fps=25.0,
        variable_fps=False,
        frame_count=312,
        has_audio=False,
        size_bytes=1000,
    )
    catalog.set_video_info(v, info)
    row = catalog.get_video(v)
    assert (row.duration, row.width, row.height, row.fps) == (12.5, 640, 360, 25.0)
    assert row.info["codec"] == "h264"


def test_rerunning_stages_never_duplicates(catalog: Catalog) -> None:
    v = vid("rerun")
    catalog.add_video(v, blob_key=v)
    for attempt in range(2):
        ids = catalog.upsert_clips(v, clips_of(v, 3), thumbnails={0: "f" * 64})
        catalog.upsert_captions((c, Caption(f"caption {attempt}", -0.5, CAPTIONER)) for c in ids)
        catalog.upsert_captions([(ids[0], Caption("other model", -0.7, "meanpool"))])
        catalog.upsert_embeddings(RETRIEVAL, {c: c for c in ids})
    assert count(catalog, Clips) == 3
    assert count(catalog, Captions) == 4
    assert count(catalog, Embeddings) == 3
    caps = catalog.get_captions(video_id=v, model=CAPTIONER)
    assert [c.text for c in caps] == ["caption 1"] * 3  # the re-run replaced, not added
    # Re-running without thumbnails keeps the stored one.
    catalog.upsert_clips(v, clips_of(v, 3))
    assert catalog.get_clips(v)[0].thumbnail_key == "f" * 64


def test_fewer_clips_remove_stale_ones_with_their_results(catalog: Catalog) -> None:
    v = vid("stale")
    catalog.add_video(v, blob_key=v)
    ids = catalog.upsert_clips(v, clips_of(v, 4))
    catalog.upsert_captions((c, Caption("x", -1.0, CAPTIONER)) for c in ids)
    catalog.upsert_clips(v, clips_of(v, 2, window=20.0))
    assert [(c.index, c.end) for c in catalog.get_clips(v)] == [(0, 20.0), (1, 40.0)]
    assert count(catalog, Captions) == 2


def test_bad_clips_are_refused(catalog: Catalog) -> None:
    v = vid("bad")
    catalog.add_video(v, blob_key=v)
    with pytest.raises(ValueError):
        catalog.upsert_clips(v, [Clip(v, 0, 5.0, 5.0)])
    with pytest.raises(ValueError):
        catalog.upsert_clips(v, [Clip(vid("other"), 0, 0.0, 1.0)])
    with pytest.raises(NotFound):
        catalog.upsert_clips(vid("nope"), [])


def test_searchable_only_once_ready(catalog: Catalog) -> None:
    v = vid("ready")
    catalog.add_video(v, blob_key=v)
    ids = catalog.upsert_clips(v, clips_of(v, 2))
    catalog.upsert_captions([(ids[0], Caption("a dog runs on grass", -1.0, CAPTIONER))])
    catalog.upsert_embeddings(RETRIEVAL, {ids[0]: ids[0]})

    def visible() -> tuple:
        return (
            catalog.text_search("dog", limit=10),
            catalog.resolve_index_ids(ids),
            catalog.clip_details(ids),
        )

    assert visible() == ([], {}, {})
    with pytest.raises(NotReady, match=r"1 clip.*caption 'lrcn'.*1 clip.*embedding 'joint'"):
        catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
    assert catalog.get_video(v).state == "pending"
    with pytest.raises(ValueError):
        catalog.set_video_state(v, "ready")
    catalog.upsert_captions([(ids[1], Caption("a cat sleeps", -1.0, CAPTIONER))])
    catalog.upsert_embeddings(RETRIEVAL, {ids[1]: ids[1]})
    catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
    texts, resolved, details = visible()
    assert [c for c, _ in texts] == [ids[0]]
    assert resolved == {i: i for i in ids}
    assert details[ids[1]].caption == "a cat sleeps" and details[ids[1]].end == 20.0


def test_text_search_ranks_and_follows_updates(catalog: Catalog) -> None:
    v = add_ready(
        catalog,
        "ranked",
        [
            "a man is cooking rice in a kitchen",
            "a dog gives a man a high five",
            "a dog is running on the beach",
            "two dogs play with a ball",
        ],
    )
    ranked = [c for c, _ in catalog.text_search("A dog gives a man a high-five!", limit=10)]
    assert ranked[0] == clip_id(v, 1)
    assert set(ranked) >= {clip_id(v, 2), clip_id(v, 3)}  # stemming: dogs ~ dog
    assert catalog.text_search("...", limit=5) == []
    assert catalog.text_search("zebra", limit=5) == []
    # An updated caption is searched by its new text, and only by it.
    catalog.upsert_captions([(clip_id(v, 0), Caption("a zebra crosses the road", -1.0, CAPTIONER))])
    assert [c for c, _ in catalog.text_search("zebra", limit=5)] == [clip_id(v, 0)]
    assert catalog.text_search("kitchen", limit=5) == []
    scores = [s for _, s in catalog.text_search("dog", limit=5)]
    assert scores == sorted(scores, reverse=True)


def test_filters_by_video_and_date(catalog: Catalog) -> None:
    a = add_ready(catalog, "first", ["a red car drives down a road"])
    b = add_ready(catalog, "second", ["a blue car parks"])
    assert {c for c, _ in catalog.text_search("car", limit=5)} == {clip_id(a, 0), clip_id(b, 0)}
    assert [c for c, _ in catalog.text_search("car", limit=5, video_id=b)] == [clip_id(b, 0)]
    created_b = catalog.get_video(b).created_at
    later = created_b + timedelta(seconds=1)
    assert catalog.text_search("car", limit=5, since=later) == []
    assert catalog.list_videos(since=later) == []
    assert {v.id for v in catalog.list_videos(until=later)} == {a, b}
    earlier = datetime(2000, 1, 1, tzinfo=UTC)
    assert len(catalog.resolve_index_ids([clip_id(a, 0), clip_id(b, 0)], since=earlier)) == 2
    with pytest.raises(ValueError):
        catalog.list_videos(since=datetime(2000, 1, 1))  # naive


def test_jobs(catalog: Catalog) -> None:
    v = vid("job")
    catalog.add_video(v, blob_key=v)
    job, created = catalog.create_job(v, idempotency_key="upload-1")
    assert created and job.state == "queued" and job.attempts == 0
    same, created = catalog.create_job(v, idempotency_key="upload-1")
    assert not created and same.id == job.id
    other, created = catalog.create_job(v)
    assert created and other.id != job.id
    assert catalog.find_job("upload-1") == same and catalog.find_job("nope") is None

    running = catalog.update_job(
        job.id, state="running", stage="features", progress=0.4, add_attempt=True
    )
    assert (running.state, running.stage, running.progress, running.attempts) == (
        "running",
        "features",
        0.4,
        1,
    )
    assert running.updated_at >= job.updated_at
    again = catalog.update_job(job.id, add_attempt=True)
    assert again.attempts == 2 and again.stage == "features"
    failed = catalog.update_job(other.id, state="failed", error="not_a_video: x.txt")
    assert failed.error == "not_a_video: x.txt"
    assert catalog.update_job(other.id, error=None).error is None

    assert [j.id for j in catalog.list_jobs(state="running")] == [job.id]
    assert {j.id for j in catalog.list_jobs(video_id=v)} == {job.id, other.id}
    assert catalog.job_counts() == {"queued": 0, "running": 1, "done": 0, "failed": 1}
    with pytest.raises(ValueError):
        catalog.update_job(job.id, progress=1.5)
    with pytest.raises(ValueError):
        catalog.update_job(job.id, state="exploded")
    with pytest.raises(NotFound):
        catalog.update_job("0" * 36, state="done")
    with pytest.raises(NotFound):
        catalog.create_job(vid("no such video"))


def test_delete_video_removes_rows_blobs_and_index_entries(
    catalog: Catalog, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    index = FaissIndex(tmp_path / "index.faiss", IndexSettings())
    videos = {}
    shared_thumb = blobs.put(b"black frame")
    for name in ("keep", "drop"):
        key = blobs.put(f"video bytes of {name}".encode())
        v = key
        catalog.add_video(v, blob_key=key, filename=name)
        ids = catalog.upsert_clips(
            v, clips_of(v, 3), thumbnails={0: shared_thumb, 1: blobs.put(name.encode())}
        )
        catalog.upsert_captions((c, Caption(f"{name} caption", -1.0, CAPTIONER)) for c in ids)
        index.add(ids, np.eye(8, dtype=np.float32)[: len(ids)] + (name == "drop"))
        catalog.upsert_embeddings(RETRIEVAL, {c: c for c in ids})
        features = blobs.put(f"features of {name}".encode())
        catalog.attach_blob(v, features, "features")
        catalog.attach_blobs(v, [features, features], "features")  # once, however often
        catalog.create_job(v)
        catalog.mark_ready(v, captioners=[CAPTIONER], embedding_model=RETRIEVAL)
        videos[name] = v
    index.flush()
    keep, drop = videos["keep"], videos["drop"]
    drop_keys = catalog.blob_keys(drop)
    assert len(drop_keys) == 4

    report = catalog.delete_video(drop, blobs=blobs, index=index)

    assert report.clips == 3 and len(report.index_ids) == 3
    assert set(report.blobs) == drop_keys - {shared_thumb}  # the shared thumbnail stays
    assert all(not blobs.exists(k) for k in report.blobs)
    assert all(blobs.exists(k) for k in catalog.blob_keys(keep))
    assert len(index) == 3 and all(
        c.startswith(keep) for c in (h for h, _ in index.search(np.eye(8)[0], 10)[0])
    )
    with pytest.raises(NotFound):
        catalog.get_video(drop)
    assert catalog.list_jobs(video_id=drop) == []
    assert catalog.get_clips(drop) == [] and catalog.get_captions(video_id=drop) == []
    assert catalog.text_search("drop", limit=5) == []
    assert [c for c, _ in catalog.text_search("keep", limit=5)]
    assert (
        count(catalog, Clips) == 3
        and count(catalog, Captions) == 3
        and count(catalog, Embeddings) == 3
    )
    reopened = FaissIndex(tmp_path / "index.faiss", IndexSettings())
    assert len(reopened) == 3
    with pytest.raises(NotFound):
        catalog.delete_video(drop)


def test_delete_resumes_after_a_crash(catalog: Catalog, tmp_path: Path) -> None:
    """A crash between the index and the rows leaves the video hidden; deleting again finishes."""
    v = add_ready(catalog, "crash", ["a dog"])

    class CrashingIndex:
        def delete(self, ids: list[str]) -> int:
            raise OSError("killed")

    with pytest.raises(OSError):
        catalog.delete_video(v, index=CrashingIndex())
    assert catalog.get_video(v).state == "deleting"
    assert catalog.text_search("dog", limit=5) == []  # hidden from search meanwhile
    with pytest.raises(NotReady):
        catalog.mark_ready(v)
    assert catalog.delete_video(v).clips == 1
    assert catalog.list_videos() == []


WRITER = """
import sys
from video_mm.storage.catalog import Catalog
url, video_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Catalog(url) as c:
    c.add_video(video_id, blob_key=video_id)
    for _ in range(n):
        job, _ = c.create_job(video_id)
        c.update_job(job.id, state="running", add_attempt=True)
        c.update_job(job.id, state="done", progress=1.0)
"""


def test_concurrent_processes_share_one_sqlite_catalog(tmp_path: Path) -> None:
    """Workers open a fresh SQLite catalog and write it at once: it is migrated once, no
    'database is locked', nothing lost, the video added once."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    v = vid("shared")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, v, "25"]) for _ in range(3)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    with Catalog(url) as c:
        assert c.job_counts()["done"] == 75
        assert [r.id for r in c.list_videos()] == [v]


def test_text_search_survives_any_query(catalog: Catalog) -> None:
    """Query text never reaches the FTS syntax raw: operators, quotes and odd words are words."""
    v = add_ready(catalog, "odd", ["a man plays c++ at the 1990s club", "the foo_bar café opens"])
    for query in ['"', "don't", "c++", "NOT AND OR", "a*", "(x", "foo_bar", "café", "the", "x:y"]:
        catalog.text_search(query, limit=5)  # no syntax error from SQLite FTS5 or to_tsquery
    assert [c for c, _ in catalog.text_search("CAFÉ", limit=5)] == [clip_id(v, 1)]
    assert [c for c, _ in catalog.text_search("1990s", limit=5)] == [clip_id(v, 0)]


def test_unreachable_database_is_a_transient_storage_error(tmp_path: Path) -> None:
    from video_mm.errors import StorageError

    with pytest.raises(StorageError) as err:
        Catalog("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert err.value.transient
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StorageError, match="unable to open"):
        Catalog(f"sqlite:///{tmp_path / 'dir.db'}")
