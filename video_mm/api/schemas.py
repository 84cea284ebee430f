"""The API's response bodies: what the OpenAPI schema publishes and what clients can rely on."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable name, e.g. not_found, not_a_video")
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class SubmissionOut(BaseModel):
    video_id: str
    job_id: str
    created: bool = Field(
        description="False when the same video (or Idempotency-Key) was sent before"
    )
    filename: str
    job_url: str
    video_url: str


class BatchOut(BaseModel):
    items: list[SubmissionOut]


class JobOut(BaseModel):
    id: str
    video_id: str
    filename: str = ""
    state: str = Field(description="queued | running | done | failed")
    stage: str
    progress: float = Field(ge=0, le=1)
    attempts: int
    error: str | None
    notes: list[str] = Field(
        default_factory=list, description="what a done job could not do, e.g. no captioner "
        "configured (so the video has no captions)")
    created_at: datetime
    updated_at: datetime


class JobList(BaseModel):
    jobs: list[JobOut]


class AlternativeOut(BaseModel):
    text: str
    score: float = Field(description="Mean log-probability per word under the model")


class CaptionOut(BaseModel):
    model: str
    text: str
    score: float
    notes: list[str] = Field(
        default_factory=list,
        description="warnings about the captioner, e.g. trained on synthetic shapes: not for "
        "real video")
    attention: list[list[float]] | None = Field(
        None, description="[words, frames] attention weights, for models that attend"
    )
    alternatives: list[AlternativeOut] = Field(
        default_factory=list,
        description="The captioner's next best captions of the clip, best first (n-best: "
        "models.n_best - 1 of them)",
    )


class ClipOut(BaseModel):
    index: int
    start: float
    end: float
    thumbnail_url: str | None
    captions: list[CaptionOut]


class VideoSummary(BaseModel):
    id: str
    filename: str
    state: str = Field(description="pending | processing | ready | failed | deleting")
    error: str | None
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None
    created_at: datetime
    url: str
    file_url: str
    play_url: str = Field(
        description="What a browser's <video> should load: the file itself when every browser "
        "plays its format, else an H.264 MP4 copy made on first request"
    )
    warning: str = Field(
        "",
        description="What of a damaged file was lost, e.g. 'decoded 49 of 100 frames: the file "
        "is cut at 2.0 s'; empty for a sound file",
    )


class VideoList(BaseModel):
    videos: list[VideoSummary]


class VideoOut(VideoSummary):
    captions_vtt_url: str
    captions_srt_url: str
    jobs: list[JobOut]
    clips: list[ClipOut]


class DeletedOut(BaseModel):
    video_id: str
    clips: int
    deleted: bool = True


class HitOut(BaseModel):
    video_id: str
    filename: str
    clip_index: int
    start: float
    end: float
    score: float
    caption: str
    thumbnail_url: str
    video_url: str
    file_url: str
    play_url: str
    stage: str = ""  # what produced the score: rerank | hybrid | vector | text
    score_model: str = ""  # the model (or models) behind that score
    score_kind: str = Field(
        "", description="what the score is, for people: cosine | caption match | rank fusion | "
        "re-ranker")
    score_meaning: str = Field(
        "", description="one sentence on that kind of score and its scale")
    vector_score: float | None = Field(
        None, description="cosine similarity of the query and the clip in the search model's "
        "space (None: the vector ranking did not find the clip)")
    vector_rank: int | None = Field(None, description="the clip's place in the vector ranking")
    text_score: float | None = Field(
        None, description="the caption's text match score (BM25 or ts_rank_cd; None: no match)")
    text_rank: int | None = Field(None, description="the clip's place in the caption ranking")
    first_stage_score: float | None = Field(
        None, description="a re-ranked hit's score before re-ranking")
    caption_model: str | None = Field(None, description="the captioner that wrote the caption")
    embedding_model: str | None = Field(
        None, description="the retrieval model whose vectors matched (None: captions only)")
    notes: list[str] = Field(
        default_factory=list,
        description="warnings about those models, e.g. trained on synthetic shapes")


class SearchOut(BaseModel):
    query: str
    k: int
    hits: list[HitOut]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
