"""Caption files: WebVTT (browsers' <track>), SRT (players, editors) and JSON (scripts).

One clip's caption is one cue. Text is sanitised for each format, so a caption can never end a cue
early or inject markup: blank lines are collapsed, ``-->`` is broken, and VTT's ``& < >`` escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Format = Literal["text", "json", "vtt", "srt"]
FORMATS: tuple[str, ...] = ("text", "json", "vtt", "srt")


@dataclass(frozen=True)
class Cue:
    """A caption shown from ``start`` to ``end`` seconds."""

    start: float
    end: float
    text: str
    model: str = ""
    score: float | None = None
    alternatives: tuple[tuple[str, float], ...] = ()  # the next best captions (n-best)


def _timestamp(seconds: float, sep: str) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cue time must be a finite, non-negative number of seconds: {seconds}")
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _one_line(text: str) -> str:
    """Cue text on one line: a blank line would end the cue, ``-->`` would start a new one."""
    return " ".join(text.split()).replace("-->", "->")


def _sorted(cues: Iterable[Cue]) -> list[Cue]:
    cues = sorted(cues, key=lambda c: (c.start, c.end, c.model))
    for cue in cues:
        if cue.end < cue.start:
            raise ValueError(f"cue ends before it starts: {cue.start} > {cue.end}")
    return cues


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT; the model name, when there is one, becomes the cue's voice (``<v lrcn>``)."""
    lines = ["WEBVTT", ""]
    for i, cue in enumerate(_sorted(cues), start=1):
        text = _one_line(cue.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if cue.model:
            text = f"<v {_one_line(cue.model).replace('>', '')}>{text}"
        lines += [str(i), f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}", text, ""]
    return "\n".join(lines)


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip: numbered cues, comma before the milliseconds."""
    lines: list[str] = []
    for i, cue in enumerate(_sorted(cues), start=1):
        stamp = f"{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}"
        lines += [str(i), stamp, _one_line(cue.text) or "-", ""]
    return "\n".join(lines)


def to_json(cues: Iterable[Cue], *, n_best: int = 1, **meta: object) -> str:
    """``{**meta, "cues": [{"start", "end", "text", "model", "score"}, ...]}``; with ``n_best``
    > 1 each cue also lists ``n_best``: the best captions, ``[{"text", "score"}, ...]``."""
    rows = []
    for c in _sorted(cues):
        row: dict[str, Any] = {k: v for k, v in asdict(c).items() if k != "alternatives"}
        if n_best > 1:
            ranked = [(c.text, c.score), *c.alternatives][:n_best]
            row["n_best"] = [{"text": t, "score": s} for t, s in ranked]
        rows.append(row)
    return json.dumps({**meta, "cues": rows}, indent=2)


def to_text(cues: Iterable[Cue], *, n_best: int = 1) -> str:
    """One line a cue, for people: ``[0:00:00.000 - 0:00:10.000] lrcn: a man is cooking``; with
    ``n_best`` > 1 the next best captions follow, indented, with their scores."""
    out = []
    for cue in _sorted(cues):
        who = f"{cue.model}: " if cue.model else ""
        out.append(f"[{_timestamp(cue.start, '.')} - {_timestamp(cue.end, '.')}] {who}{cue.text}")
        if n_best > 1:
            out += [f"    {i}. {t} ({s:.3f})"
                    for i, (t, s) in enumerate(cue.alternatives[: n_best - 1], start=2)]
    return "\n".join(out) + ("\n" if out else "")


def render(cues: Sequence[Cue], fmt: str, *, n_best: int = 1, **meta: object) -> str:
    """The cues in ``fmt`` (one of :data:`FORMATS`); ``n_best`` > 1 adds the next best captions
    to text and JSON (subtitle files carry the best one)."""
    if fmt == "vtt":
        return to_vtt(cues)
    if fmt == "srt":
        return to_srt(cues)
    if fmt == "json":
        return to_json(cues, n_best=n_best, **meta)
    if fmt == "text":
        return to_text(cues, n_best=n_best)
    raise ValueError(f"unknown caption format {fmt!r}; choose one of {', '.join(FORMATS)}")


def video_cues(catalog: Any, video_id: str, model: str | None = None) -> list[Cue]:
    """A video's captions from the catalog as cues, in clip order (every model, or one)."""
    clips = {c.id: c for c in catalog.get_clips(video_id)}
    return [
        Cue(clips[c.clip_id].start, clips[c.clip_id].end, c.text, c.model, round(c.score, 4),
            tuple((a["text"], a["score"]) for a in c.alternatives or ()))
        for c in catalog.get_captions(video_id=video_id, model=model)
    ]
