"""The API over real HTTP: upload, jobs, videos, captions, media, search, delete, auth, errors.

One server per module (see conftest); the first test uploads a real MP4 and later tests read what
its job wrote, so the module runs the pipeline a few times only.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import av
import httpx
import pytest

from video_mm.settings import Settings

VIDEO_ID_LEN = 64


@pytest.fixture(scope="module")
def ready_video(server, mp4_clip: Path) -> dict:  # type: ignore[no-untyped-def]
    """The MP4 uploaded once and processed to the end: its submission and final job."""
    import time

    with httpx.Client(base_url=server.url, timeout=120) as c, open(mp4_clip, "rb") as f:
        r = c.post(
            "/v1/videos",
            files={"file": ("video8560.mp4", f, "video/mp4")},
            headers={"Authorization": f"Bearer {server.settings.api_tokens[0]}"},
        )
        assert r.status_code == 202, r.text
        sub = r.json()
        deadline = time.monotonic() + 300
        while (job := c.get(sub["job_url"]).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"job still {job['state']}"
            time.sleep(0.2)
    return {"submission": sub, "job": job}


def test_upload_returns_ids_and_the_job_finishes(ready_video: dict, mp4_clip: Path) -> None:
    sub, job = ready_video["submission"], ready_video["job"]
    assert sub["video_id"] == hashlib.sha256(mp4_clip.read_bytes()).hexdigest()
    assert sub["created"] is True
    assert sub["filename"] == "video8560.mp4"
    assert job["state"] == "done", job["error"]
    assert job["progress"] == 1.0
    assert job["video_id"] == sub["video_id"]


def test_video_has_metadata_and_captioned_clips(client: httpx.Client, ready_video: dict) -> None:
    v = client.get(ready_video["submission"]["video_url"]).json()
    assert v["state"] == "ready"
    assert (v["width"], v["height"]) == (400, 300)
    assert v["duration"] == pytest.approx(15.0, abs=0.2)
    clips = v["clips"]
    assert len(clips) >= 3  # 15 s in 4 s windows (tests' segment settings)
    assert clips[0]["start"] == 0.0
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(clips))
    for clip in clips:
        assert {c["model"] for c in clip["captions"]} == {"lrcn", "attention"}
        assert all(c["text"] for c in clip["captions"])
        # each caption says what its model's output is worth (the tiny models: random CNN)
        assert all(c["notes"] == ["frame encoder has random weights: not for real video"]
                   for c in clip["captions"])
        for c in clip["captions"]:  # n-best (models.n_best = 3): the next two, with scores
            assert len(c["alternatives"]) == 2
            assert len({c["text"], *(a["text"] for a in c["alternatives"])}) == 3
            assert all(isinstance(a["score"], float) for a in c["alternatives"])
    attention = next(c for c in clips[0]["captions"] if c["model"] == "attention")["attention"]
    assert attention and len(attention[0]) >= 1  # [words, frames]
    assert v["jobs"][0]["state"] == "done"


def test_captions_as_webvtt_and_srt(client: httpx.Client, ready_video: dict) -> None:
    url = ready_video["submission"]["video_url"]
    v = client.get(url).json()
    vtt = client.get(f"{url}/captions.vtt")
    assert vtt.status_code == 200
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n")
    assert vtt.text.count(" --> ") == sum(len(c["captions"]) for c in v["clips"])
    first = v["clips"][0]["captions"][0]["text"]
    assert first in vtt.text
    srt = client.get(f"{url}/captions.srt", params={"model": "lrcn"})
    assert srt.status_code == 200
    assert srt.text.startswith("1\n00:00:00,000 --> ")
    assert srt.text.count(" --> ") == len(v["clips"])


def test_video_file_supports_ranges(
    client: httpx.Client, ready_video: dict, mp4_clip: Path
) -> None:
    data = mp4_clip.read_bytes()
    url = f"{ready_video['submission']['video_url']}/file"
    whole = client.get(url)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.content == data
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.content == data[100:1100]
    tail = client.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    open_ended = client.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_ended.content == data[-10:]
    bad = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(data)}"


def test_thumbnails_are_jpegs(client: httpx.Client, ready_video: dict) -> None:
    v = client.get(ready_video["submission"]["video_url"]).json()
    for clip in v["clips"]:
        r = client.get(clip["thumbnail_url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert r.content[:3] == b"\xff\xd8\xff"
    missing = client.get(f"{ready_video['submission']['video_url']}/clips/999/thumbnail.jpg")
    assert missing.status_code == 404


def test_search_finds_the_clip_by_its_caption(client: httpx.Client, ready_video: dict) -> None:
    video_id = ready_video["submission"]["video_id"]
    clip = client.get(f"/v1/videos/{video_id}").json()["clips"][1]
    caption = next(c for c in clip["captions"] if c["model"] == "lrcn")["text"]
    r = client.get("/v1/search", params={"q": caption, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == caption and body["k"] == 5
    assert 1 <= len(body["hits"]) <= 5
    hit = body["hits"][0]
    assert hit["video_id"] == video_id
    assert hit["end"] > hit["start"] >= 0
    assert hit["caption"]
    assert hit["thumbnail_url"].startswith(f"/v1/videos/{video_id}/clips/")
    assert client.get(hit["thumbnail_url"]).status_code == 200
    assert hit["file_url"] == f"/v1/videos/{video_id}/file"
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    # The retrieval model's embeddings alone (the tests' model is untrained, so only that the
    # video's clips come back, ranked, not which one first).
    dense = client.get("/v1/search", params={"q": caption, "k": 3, "mode": "vector"}).json()
    assert video_id in {h["video_id"] for h in dense["hits"]}
    assert 1 <= len(dense["hits"]) <= 3
    bad = client.get("/v1/search", params={"q": "x", "mode": "sideways"})
    assert bad.status_code == 422


def test_same_bytes_again_return_the_same_video_and_job(
    client: httpx.Client, auth: dict, ready_video: dict, mp4_clip: Path
) -> None:
    # A raw body this time (no multipart), with a name that tries to be a path.
    r = client.post(
        "/v1/videos",
        content=mp4_clip.read_bytes(),
        params={"filename": "../../etc/again.mp4"},
        headers={**auth, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["video_id"] == ready_video["submission"]["video_id"]
    assert again["job_id"] == ready_video["submission"]["job_id"]
    assert again["created"] is False
    assert again["filename"] == "again.mp4"


def test_jobs_list_and_metrics(client: httpx.Client, ready_video: dict) -> None:
    jobs = client.get("/v1/jobs").json()["jobs"]
    assert ready_video["submission"]["job_id"] in [j["id"] for j in jobs]
    assert all(j["filename"] for j in jobs)
    text = client.get("/metrics").text
    assert 'vmm_jobs{state="done"}' in text
    assert "vmm_queue_depth " in text
    assert 'vmm_videos{state="ready"}' in text
    assert "# TYPE vmm_stage_duration_seconds histogram" in text
    assert 'vmm_http_requests_total{method="GET",route="/v1/jobs",status="200"}' in text


def test_writes_need_a_token(client: httpx.Client, mp4_clip: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.post("/v1/videos", content=b"x" * 10, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    r = client.delete(f"/v1/videos/{'0' * 64}")
    assert r.status_code == 401


def test_content_is_sniffed_not_trusted(
    client: httpx.Client, auth: dict, server, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    before = client.get("/v1/videos").json()["videos"]
    fake = b"this is a text file pretending to be a video\n" * 40
    r = client.post(
        "/v1/videos", files={"file": ("clip.mp4", fake, "video/mp4")}, headers=auth
    )
    assert r.status_code == 415
    assert r.json()["error"] == {
        "code": "not_a_video",
        "message": "the content is not a known video container",
    }
    assert client.get("/v1/videos").json()["videos"] == before
    assert not list((Path(server.settings.data_dir) / "uploads").iterdir())  # spool cleaned


def test_broken_video_fails_its_job_with_a_reason(
    client: httpx.Client, auth: dict, wait_job  # type: ignore[no-untyped-def]
) -> None:
    # Starts like an MP4 (passes the sniff) but is garbage after the header: the job fails.
    fake = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 8
    r = client.post("/v1/videos", files={"file": ("broken.mp4", fake)}, headers=auth)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["state"] == "failed"
    assert job["error"]


def test_batch_upload(
    client: httpx.Client, auth: dict, avi_clip: Path, gif_clip: Path, wait_job  # type: ignore[no-untyped-def]
) -> None:
    with open(avi_clip, "rb") as a, open(gif_clip, "rb") as g:
        files = [("files", (avi_clip.name, a)), ("files", (gif_clip.name, g))]
        r = client.post("/v1/videos:batch", files=files, headers=auth)
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert [i["filename"] for i in items] == [avi_clip.name, gif_clip.name]
    assert len({i["video_id"] for i in items}) == 2
    for item in items:
        assert wait_job(client, item["job_id"])["state"] == "done"


def test_idempotency_key(client: httpx.Client, auth: dict, avi_clip: Path, gif_clip: Path) -> None:
    headers = {**auth, "Idempotency-Key": "upload-42"}
    first = client.post("/v1/videos", files={"file": (avi_clip.name, avi_clip.read_bytes())},
                        headers=headers)
    assert first.status_code == 202
    second = client.post("/v1/videos", files={"file": (avi_clip.name, avi_clip.read_bytes())},
                         headers=headers)
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.json()["created"] is False
    unseen = gif_clip.read_bytes() + b"\0 only this test sends these bytes"
    other = client.post("/v1/videos", files={"file": (gif_clip.name, unseen)}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    unseen_id = hashlib.sha256(unseen).hexdigest()  # refused, so nothing was stored
    assert client.get(f"/v1/videos/{unseen_id}", headers=auth).status_code == 404
    bad = client.post("/v1/videos", content=b"x", headers={**auth, "Idempotency-Key": "a b"})
    assert bad.status_code == 400


def test_errors_are_json_with_a_code(client: httpx.Client) -> None:
    r = client.get(f"/v1/videos/{'a' * 64}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/videos/not-an-id")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.get("/v1/search", params={"q": "", "k": 5})
    assert r.status_code == 422 and "q" in r.json()["error"]["message"]
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.put("/v1/videos")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_delete_removes_the_video_from_everything(
    client: httpx.Client, auth: dict, avi_clip: Path, wait_job  # type: ignore[no-untyped-def]
) -> None:
    sub = client.post("/v1/videos", files={"file": (avi_clip.name, avi_clip.read_bytes())},
                      headers=auth).json()
    wait_job(client, sub["job_id"])
    video = client.get(sub["video_url"]).json()
    caption = video["clips"][0]["captions"][0]["text"]
    r = client.delete(sub["video_url"], headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"video_id": sub["video_id"], "clips": len(video["clips"]), "deleted": True}
    assert client.get(sub["video_url"]).status_code == 404
    assert client.get(f"{sub['video_url']}/file").status_code == 404
    hits = client.get("/v1/search", params={"q": caption, "k": 50}).json()["hits"]
    assert sub["video_id"] not in {h["video_id"] for h in hits}
    assert client.delete(sub["video_url"], headers=auth).status_code == 404


def test_health_readiness_openapi_and_page(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok"
    assert ready["checks"] == {"startup": "ok", "catalog": "ok", "storage": "ok",
                               "worker": "embedded"}
    schema = client.get("/openapi.json").json()
    assert {"/v1/videos", "/v1/videos:batch", "/v1/jobs/{job_id}", "/v1/search",
            "/v1/videos/{video_id}/captions.vtt"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "<title>video-mm</title>" in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200


def test_upload_size_limit(
    tmp_path: Path, mp4_clip: Path, make_server  # type: ignore[no-untyped-def]
) -> None:
    with make_server(tmp_path, max_upload_bytes=100_000) as srv, httpx.Client(
        base_url=srv.url, timeout=60
    ) as c:
        auth = {"Authorization": f"Bearer {srv.settings.api_tokens[0]}"}

        def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: checked while streaming
            data = mp4_clip.read_bytes()
            for i in range(0, len(data), 16_384):
                yield data[i : i + 16_384]

        r = c.post("/v1/videos", content=chunks(), headers=auth)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "video_too_large"
        r = c.post("/v1/videos", files={"file": ("v.mp4", mp4_clip.read_bytes())}, headers=auth)
        assert r.status_code == 413
        assert c.get("/v1/videos").json()["videos"] == []
        assert not list((Path(srv.settings.data_dir) / "uploads").iterdir())


def test_private_reads(tmp_path: Path, make_server) -> None:  # type: ignore[no-untyped-def]
    with make_server(tmp_path, public_reads=False) as srv, httpx.Client(
        base_url=srv.url, timeout=60
    ) as c:
        token = srv.settings.api_tokens[0]
        r = c.get("/v1/jobs")
        assert r.status_code == 401
        assert c.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        c.cookies.set("vmm_token", token)  # what the page sets for <video> and <img>
        assert c.get("/v1/jobs").status_code == 200
        assert c.get("/healthz").status_code == 200  # health is never behind auth


def test_settings_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMM_API_TOKEN", "from-env")
    assert Settings(api={"tokens": ["a"]}).api_tokens == ["a", "from-env"]


def test_formats_browsers_cannot_play_get_an_h264_copy(
    client: httpx.Client, auth: dict, server, ready_video: dict, gif_clip: Path,  # type: ignore[no-untyped-def]
    wait_job, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A GIF's play_url is its preview: an H.264 MP4 made once, served with ranges, kept as a
    blob of the video, and deleted with it. An MP4 plays as it is."""
    from video_mm.storage.blobs import BlobStore

    mp4 = ready_video["submission"]["video_url"]
    assert client.get(mp4).json()["play_url"] == f"{mp4}/file"
    sub = client.post("/v1/videos", files={"file": (gif_clip.name, gif_clip.read_bytes())},
                      headers=auth).json()
    assert wait_job(client, sub["job_id"])["state"] == "done"
    video = client.get(sub["video_url"]).json()
    assert video["play_url"] == f"{sub['video_url']}/preview.mp4"
    first = client.get(video["play_url"])
    assert first.status_code == 200 and first.headers["content-type"] == "video/mp4"
    (tmp_path / "p.mp4").write_bytes(first.content)
    with av.open(str(tmp_path / "p.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) > 10
    again = client.get(video["play_url"], headers={"Range": "bytes=0-99"})
    assert again.status_code == 206 and again.content == first.content[:100]  # the kept copy
    blobs = BlobStore.from_settings(server.settings)
    key = hashlib.sha256(first.content).hexdigest()
    assert blobs.exists(key)
    hits = client.get("/v1/search", params={"q": video["clips"][0]["captions"][0]["text"],
                                            "k": 50}).json()["hits"]
    assert {h["play_url"] for h in hits if h["video_id"] == sub["video_id"]} == {video["play_url"]}
    assert client.delete(sub["video_url"], headers=auth).status_code == 200
    assert client.get(video["play_url"]).status_code == 404 and not blobs.exists(key)
