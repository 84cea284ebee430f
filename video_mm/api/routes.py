"""The /v1 endpoints. Each one parses, calls the library, and shapes the answer; the work (storing,
running jobs, searching, deleting) is the library's."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from video_mm.api import schemas
from video_mm.api.limits import check_free_disk, client_key
from video_mm.api.media import ranged_response
from video_mm.api.upload import BadRequest, Spooled, receive_files
from video_mm.errors import NotFound, VideoMMError, VideoTooLarge
from video_mm.export import Cue, to_srt, to_vtt
from video_mm.io.transcode import browser_playable

if TYPE_CHECKING:
    from video_mm.storage.catalog import Catalog

VIDEO_ID = r"^[0-9a-f]{64}$"
JOB_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
# What a search hit's score is, and the signals behind it (see video_mm.search).
HIT_SCORES = ("score_kind", "score_meaning", "vector_score", "vector_rank", "text_score",
              "text_rank", "first_stage_score")

VideoId = Annotated[str, PathParam(pattern=VIDEO_ID, description="sha256 of the video's bytes")]
JobId = Annotated[str, PathParam(pattern=JOB_ID, description="uuid of the job")]

# Auth is attached when the app includes these (see app.py), so the published schema asks for a
# token exactly where this server's settings do.
reads = APIRouter(prefix="/v1")
writes = APIRouter(prefix="/v1")

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": schemas.ErrorOut} for s in (400, 401, 404, 409, 413, 415, 422, 429, 503, 507)
}


class Conflict(VideoMMError):
    code = "idempotency_conflict"


class InvalidUpload(VideoMMError):
    code = "invalid_request"


def _ctx(request: Request) -> Any:
    from video_mm.pipeline.runner import context

    return context(request.app.state.settings)


# -- links ----------------------------------------------------------------------------------------
def video_url(video_id: str) -> str:
    return f"/v1/videos/{video_id}"


def file_url(video_id: str) -> str:
    return f"/v1/videos/{video_id}/file"


def preview_url(video_id: str) -> str:
    return f"/v1/videos/{video_id}/preview.mp4"


def play_url(v: Any) -> str:
    """The file when browsers play it as it is, else its preview (before probing: the file)."""
    info = v.info or {}
    if not info or browser_playable(info.get("container", ""), info.get("codec", "")):
        return file_url(v.id)
    return preview_url(v.id)


def thumbnail_url(video_id: str, index: int) -> str:
    return f"/v1/videos/{video_id}/clips/{index}/thumbnail.jpg"


def _job(row: Any, filename: str = "") -> schemas.JobOut:
    return schemas.JobOut(
        id=row.id, video_id=row.video_id, filename=filename, state=row.state, stage=row.stage,
        progress=row.progress, attempts=row.attempts, error=row.error,
        notes=row.notes.split("; ") if row.notes else [],
        created_at=row.created_at, updated_at=row.updated_at,
    )


def _summary(v: Any) -> dict[str, Any]:
    return dict(
        id=v.id, filename=v.filename, state=v.state, error=v.error, duration=v.duration,
        width=v.width, height=v.height, fps=v.fps, created_at=v.created_at,
        url=video_url(v.id), file_url=file_url(v.id), play_url=play_url(v),
        warning=(v.info or {}).get("warning", ""),
    )


# -- uploads --------------------------------------------------------------------------------------
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
BATCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "minItems": 1,
                    }
                },
                "required": ["files"],
            }
        }
    },
}


async def _receive(request: Request, *, max_files: int, filename: str | None) -> list[Spooled]:
    settings = request.app.state.settings
    request.app.state.limits.uploads.check(client_key(request))
    check_free_disk(Path(settings.data_dir) / "uploads", settings.api.min_free_disk_bytes)
    limit = settings.api.max_upload_bytes  # for a batch, all its files together
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 2**20:  # 1 MiB for form overhead
        raise VideoTooLarge("upload", f"the upload is larger than the limit of {limit} bytes")
    try:
        return await receive_files(
            request.stream(),
            request.headers.get("content-type", "application/octet-stream"),
            spool_dir=Path(settings.data_dir) / "uploads",
            max_bytes=limit,
            max_files=max_files,
            filename=filename,
        )
    except BadRequest as exc:
        raise InvalidUpload(str(exc)) from exc


async def _submit(request: Request, spooled: Spooled, key: str | None) -> schemas.SubmissionOut:
    """Store the spooled file through the library, then start its job if it is new."""
    from video_mm.pipeline.submit import submit_video

    settings = request.app.state.settings
    try:
        if key is not None:  # refuse a reused key before storing anything
            await run_in_threadpool(_check_key, _ctx(request).catalog, key, spooled.path)
        sub = await run_in_threadpool(
            submit_video, spooled.path, settings=settings, filename=spooled.filename,
            idempotency_key=key,
        )
    finally:
        spooled.path.unlink(missing_ok=True)
    if key is not None:  # a rival request took the key between the check and the submit
        job = await run_in_threadpool(_ctx(request).catalog.get_job, sub.job_id)
        if job.video_id != sub.video_id:
            raise Conflict("this Idempotency-Key was already used for a different video")
    if sub.created or await run_in_threadpool(_stuck, request, sub.job_id):
        await request.app.state.start_job(sub.job_id)
    return schemas.SubmissionOut(
        video_id=sub.video_id, job_id=sub.job_id, created=sub.created, filename=spooled.filename,
        job_url=f"/v1/jobs/{sub.job_id}", video_url=video_url(sub.video_id),
    )


def _stuck(request: Request, job_id: str) -> bool:
    """A job sent to workers whose message never reached the broker: uploading it again sends
    it (the reaper would, later)."""
    if request.app.state.runtime.worker is not None:  # embedded: this process runs its jobs
        return False
    catalog = _ctx(request).catalog
    return catalog.get_job(job_id).state == "queued" and not catalog.is_sent(job_id)


def _check_key(catalog: Catalog, key: str, path: Path) -> None:
    """Conflict when ``key`` already names a job for other bytes (video ids are sha256s)."""
    job = catalog.find_job(key)
    if job is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != job.video_id:
        raise Conflict("this Idempotency-Key was already used for a different video")


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidUpload("Idempotency-Key must be 1 to 200 printable ASCII characters")
    return f"client:{value}"  # never collides with the keys the library makes itself


@writes.post(
    "/videos",
    status_code=202,
    response_model=schemas.SubmissionOut,
    responses=ERRORS,
    openapi_extra={"requestBody": UPLOAD_BODY},
    summary="Upload a video and queue its job",
)
async def upload_video(
    request: Request,
    filename: Annotated[
        str | None, Query(max_length=1024, description="Name shown for a raw (non-form) body")
    ] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> schemas.SubmissionOut:
    """Stream one video (a multipart ``file`` field or a raw body) to storage and queue its job.

    The content is sniffed: a body that does not start like a video container is refused (415)
    before it is stored. The same bytes uploaded again return the same video and job
    (``created: false``); so does a repeated ``Idempotency-Key``.
    """
    key = _idempotency_key(idempotency_key)
    (spooled,) = await _receive(request, max_files=1, filename=filename)
    return await _submit(request, spooled, key)


@writes.post(
    "/videos:batch",
    status_code=202,
    response_model=schemas.BatchOut,
    responses=ERRORS,
    openapi_extra={"requestBody": BATCH_BODY},
    summary="Upload several videos at once",
)
async def upload_batch(
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> schemas.BatchOut:
    """Several file parts in one multipart body (at most ``api.max_batch_files``); all are
    checked before any is stored. With an ``Idempotency-Key``, file *i* uses ``<key>:<i>``."""
    key = _idempotency_key(idempotency_key)
    spooled = await _receive(
        request, max_files=request.app.state.settings.api.max_batch_files, filename=None
    )
    items = []
    try:
        for i, one in enumerate(spooled):
            items.append(await _submit(request, one, None if key is None else f"{key}:{i}"))
    finally:
        for one in spooled:
            one.path.unlink(missing_ok=True)
    return schemas.BatchOut(items=items)


# -- jobs -----------------------------------------------------------------------------------------
@reads.get("/jobs", response_model=schemas.JobList, responses=ERRORS, summary="Recent jobs")
def list_jobs(
    request: Request,
    state: Annotated[str | None, Query(pattern="^(queued|running|done|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> schemas.JobList:
    """Newest first, with each video's filename (the page's live job list polls this)."""
    cat = _ctx(request).catalog
    jobs = cat.list_jobs(state=state, limit=limit, offset=offset)
    names: dict[str, str] = {}
    for j in jobs:
        if j.video_id not in names:
            names[j.video_id] = cat.get_video(j.video_id).filename
    return schemas.JobList(jobs=[_job(j, names[j.video_id]) for j in jobs])


@reads.get("/jobs/{job_id}", response_model=schemas.JobOut, responses=ERRORS, summary="One job")
def get_job(request: Request, job_id: JobId) -> schemas.JobOut:
    """State, stage, progress (0..1) and, for a failed job, the reason."""
    cat = _ctx(request).catalog
    job = cat.get_job(job_id)
    return _job(job, cat.get_video(job.video_id).filename)


# -- videos ---------------------------------------------------------------------------------------
@reads.get("/videos", response_model=schemas.VideoList, responses=ERRORS, summary="Videos")
def list_videos(
    request: Request,
    state: Annotated[
        str | None, Query(pattern="^(pending|processing|ready|failed|deleting)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> schemas.VideoList:
    """Newest first."""
    rows = _ctx(request).catalog.list_videos(state=state, limit=limit, offset=offset)
    return schemas.VideoList(videos=[schemas.VideoSummary(**_summary(v)) for v in rows])


@reads.get(
    "/videos/{video_id}", response_model=schemas.VideoOut, responses=ERRORS, summary="One video"
)
def get_video(request: Request, video_id: VideoId) -> schemas.VideoOut:
    """Metadata, jobs, and every clip with its captions (one per captioner)."""
    from video_mm import provenance
    from video_mm.artifacts import captioner_dirs

    cat = _ctx(request).catalog
    video = cat.get_video(video_id)
    notes = provenance.notes_by_name(captioner_dirs(request.app.state.settings))
    by_clip: dict[str, list[schemas.CaptionOut]] = {}
    for c in cat.get_captions(video_id=video_id):
        by_clip.setdefault(c.clip_id, []).append(
            schemas.CaptionOut(model=c.model, text=c.text, score=c.score, attention=c.attention,
                               alternatives=c.alternatives or [], notes=notes.get(c.model, []))
        )
    clips = [
        schemas.ClipOut(
            index=c.index, start=c.start, end=c.end,
            thumbnail_url=thumbnail_url(video_id, c.index) if c.thumbnail_key else None,
            captions=sorted(by_clip.get(c.id, []), key=lambda x: -x.score),
        )
        for c in cat.get_clips(video_id)
    ]
    return schemas.VideoOut(
        **_summary(video),
        captions_vtt_url=f"{video_url(video_id)}/captions.vtt",
        captions_srt_url=f"{video_url(video_id)}/captions.srt",
        jobs=[_job(j, video.filename) for j in cat.list_jobs(video_id=video_id)],
        clips=clips,
    )


def _cues(request: Request, video_id: str, model: str | None) -> list[Cue]:
    cat = _ctx(request).catalog
    cat.get_video(video_id)  # 404 for an unknown video, not an empty file
    clips = {c.id: c for c in cat.get_clips(video_id)}
    return [
        Cue(clips[c.clip_id].start, clips[c.clip_id].end, c.text, c.model, c.score)
        for c in cat.get_captions(video_id=video_id, model=model)
    ]


ModelFilter = Annotated[
    str | None, Query(max_length=255, description="Only this captioner's captions")
]


@reads.get(
    "/videos/{video_id}/captions.vtt",
    response_class=Response,
    responses={200: {"content": {"text/vtt": {"schema": {"type": "string"}}}}, **ERRORS},
    summary="Captions as WebVTT",
)
def captions_vtt(request: Request, video_id: VideoId, model: ModelFilter = None) -> Response:
    """One cue per clip and captioner; the page's ``<track>``."""
    return Response(to_vtt(_cues(request, video_id, model)), media_type="text/vtt; charset=utf-8")


@reads.get(
    "/videos/{video_id}/captions.srt",
    response_class=Response,
    responses={
        200: {"content": {"application/x-subrip": {"schema": {"type": "string"}}}}, **ERRORS
    },
    summary="Captions as SRT",
)
def captions_srt(request: Request, video_id: VideoId, model: ModelFilter = None) -> Response:
    return Response(
        to_srt(_cues(request, video_id, model)), media_type="application/x-subrip; charset=utf-8"
    )


@reads.get(
    "/videos/{video_id}/file",
    response_class=Response,
    responses={200: {"content": {"video/*": {}}}, 206: {"description": "A byte range"}, **ERRORS},
    summary="The video file (HTTP ranges supported)",
)
def video_file(request: Request, video_id: VideoId) -> Response:
    """The uploaded bytes, with ``Range`` support so a player can seek."""
    ctx = _ctx(request)
    video = ctx.catalog.get_video(video_id)
    size = ctx.blobs.size(video.blob_key)
    container = (video.info or {}).get("container", "")
    return ranged_response(
        lambda: ctx.blobs.open(video.blob_key),
        size,
        _MEDIA_TYPES.get(container.split(",")[0], "video/mp4"),
        request.headers.get("range"),
        headers={"cache-control": "private, max-age=86400, immutable"},
    )


@reads.get(
    "/videos/{video_id}/preview.mp4",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "A byte range"}, **ERRORS},
    summary="An H.264 MP4 copy every browser plays (made on first request, then kept)",
)
async def video_preview(request: Request, video_id: VideoId) -> Response:
    """AVI, GIF, MKV/HEVC and the like do not play in a ``<video>``: the first request converts the
    upload (``api.preview_max_height``, ``api.preview_timeout_s``) and stores the copy as a blob
    attached to the video, so later requests, and deleting the video, find it."""
    from video_mm.pipeline.preview import preview_key

    ctx = _ctx(request)
    await run_in_threadpool(ctx.catalog.get_video, video_id)  # 404 before any work
    key = await run_in_threadpool(  # at most api.preview_max_concurrent conversions at once
        preview_key, video_id, request.app.state.settings,
        slot=request.app.state.limits.previews.place,
    )
    return ranged_response(
        lambda: ctx.blobs.open(key),
        ctx.blobs.size(key),
        "video/mp4",
        request.headers.get("range"),
        headers={"cache-control": "private, max-age=86400, immutable"},
    )


_MEDIA_TYPES = {
    "mov": "video/mp4", "mp4": "video/mp4", "matroska": "video/x-matroska", "webm": "video/webm",
    "avi": "video/x-msvideo", "flv": "video/x-flv", "ogg": "video/ogg", "mpegts": "video/mp2t",
    "mpeg": "video/mpeg", "asf": "video/x-ms-asf", "gif": "image/gif",
}


@reads.get(
    "/videos/{video_id}/clips/{index}/thumbnail.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **ERRORS},
    summary="A clip's thumbnail",
)
def thumbnail(
    request: Request, video_id: VideoId, index: Annotated[int, PathParam(ge=0, le=10_000_000)]
) -> Response:
    ctx = _ctx(request)
    clip = next((c for c in ctx.catalog.get_clips(video_id) if c.index == index), None)
    if clip is None or not clip.thumbnail_key:
        raise NotFound(f"no thumbnail for clip {index} of video {video_id}")
    return Response(
        ctx.blobs.get(clip.thumbnail_key),
        media_type="image/jpeg",
        headers={"cache-control": "private, max-age=86400, immutable"},
    )


@writes.delete(
    "/videos/{video_id}",
    response_model=schemas.DeletedOut,
    responses=ERRORS,
    summary="Delete a video and everything derived from it",
)
def delete_video(request: Request, video_id: VideoId) -> schemas.DeletedOut:
    """Its index entries, blobs (those no other video shares), clips, captions and jobs."""
    from video_mm.pipeline.delete import delete_video as delete_everywhere

    deleted = delete_everywhere(video_id, request.app.state.settings)
    return schemas.DeletedOut(video_id=video_id, clips=deleted.clips)


# -- search ---------------------------------------------------------------------------------------
@reads.get("/search", response_model=schemas.SearchOut, responses=ERRORS, summary="Search clips")
def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=500, description="What happens in the clip")],
    k: Annotated[int, Query(ge=1, le=100, description="How many clips")] = 10,
    mode: Annotated[
        str | None,
        Query(
            pattern="^(hybrid|vector|text)$",
            description="hybrid (default: search.mode) fuses the query embedding with caption "
            "text search; vector or text use one of them",
        ),
    ] = None,
    rerank_k: Annotated[
        int | None,
        Query(
            ge=0,
            description="Re-score this many first-stage hits with the co-attention re-ranker "
            "(default: search.rerank_k; 0: off; at most search.max_rerank_k)",
        ),
    ] = None,
) -> schemas.SearchOut:
    """Clips ranked by how well they match the text, with times, captions and thumbnails; each
    hit's ``stage`` and ``score_model`` say which stage and model produced its score."""
    from video_mm.search import search as run_search

    request.app.state.limits.searches.check(client_key(request))

    settings = request.app.state.settings
    k = min(k, settings.search.max_k)
    if rerank_k is not None:
        rerank_k = min(rerank_k, settings.search.max_rerank_k)
    hits = run_search(q, k, settings=settings, mode=mode, rerank_k=rerank_k)
    catalog = _ctx(request).catalog
    plays = {v: play_url(catalog.get_video(v)) for v in dict.fromkeys(h.video_id for h in hits)}
    return schemas.SearchOut(
        query=q,
        k=k,
        hits=[
            schemas.HitOut(
                video_id=h.video_id, filename=str(h.extra.get("filename", "")),
                clip_index=h.clip_index, start=h.start, end=h.end, score=h.score,
                caption=h.caption, thumbnail_url=thumbnail_url(h.video_id, h.clip_index),
                video_url=video_url(h.video_id), file_url=file_url(h.video_id),
                play_url=plays[h.video_id], stage=str(h.extra.get("stage", "")),
                score_model=str(h.extra.get("score_model") or ""),
                **{key: h.extra.get(key) for key in HIT_SCORES if key in h.extra},
                caption_model=h.extra.get("caption_model"),
                embedding_model=h.extra.get("embedding_model"),
                notes=h.extra.get("notes", []),
            )
            for h in hits
        ],
    )
