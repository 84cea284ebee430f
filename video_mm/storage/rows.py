"""The frozen rows the catalog hands out (never sessions or ORM objects), and the small query
helpers its parts share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from video_mm.storage.models import Videos

R = TypeVar("R")
IN_CHUNK = 500  # ids per IN (...) clause: well under every backend's parameter limit


# -- rows handed out ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoRow:
    id: str
    filename: str
    blob_key: str
    state: str
    error: str | None
    duration: float | None
    width: int | None
    height: int | None
    fps: float | None
    info: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClipRow:
    id: str
    video_id: str
    index: int
    start: float
    end: float
    thumbnail_key: str | None


@dataclass(frozen=True)
class CaptionRow:
    clip_id: str
    model: str
    text: str
    score: float
    attention: list[list[float]] | None
    alternatives: list[dict[str, Any]] | None  # the next best captions (n-best), best first


@dataclass(frozen=True)
class EmbeddingRow:
    clip_id: str
    model: str
    index_id: str


@dataclass(frozen=True)
class JobRow:
    id: str
    video_id: str
    state: str
    stage: str
    progress: float
    attempts: int
    error: str | None
    notes: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ClipDetail:
    """A clip joined with its video and caption: what a search hit shows."""

    clip_id: str
    video_id: str
    index: int
    start: float
    end: float
    thumbnail_key: str | None
    caption: str
    caption_model: str | None
    filename: str
    created_at: datetime


def to_row(cls: type[R], obj: Any) -> R:
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def in_chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def aware(when: datetime | None) -> datetime | None:
    if when is not None and when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone")
    return when


def check_state(state: str, allowed: tuple[str, ...]) -> None:
    if state not in allowed:
        raise ValueError(f"state {state!r} is not one of {', '.join(allowed)}")


def date_filters(since: datetime | None, until: datetime | None) -> list[Any]:
    filters = []
    if (since := aware(since)) is not None:
        filters.append(Videos.created_at >= since)
    if (until := aware(until)) is not None:
        filters.append(Videos.created_at < until)
    return filters


def searchable(video_id: str | None, since: datetime | None, until: datetime | None) -> list[Any]:
    """Search sees ready videos only, narrowed by the filters given."""
    filters = [Videos.state == "ready", *date_filters(since, until)]
    if video_id is not None:
        filters.append(Videos.id == video_id)
    return filters


