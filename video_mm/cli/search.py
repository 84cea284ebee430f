"""`vmm search` and `vmm delete`: query the archive by text; remove a video from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from video_mm.settings import get_settings

out = Console(highlight=False, soft_wrap=True)
NUMBERS = ("#", "score", "cosine", "from", "to")  # right-aligned columns


def _date(value: str | None) -> datetime | None:
    """ISO date or date-time; without a timezone it is taken as UTC."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date like 2026-01-31 or 2026-01-31T12:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:04.1f}"


def search(
    query: Annotated[str, typer.Argument(help="What happens in the clip, in words.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many clips to return.")] = 10,
    video: Annotated[
        str | None, typer.Option("--video", help="Only clips of this video id.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only videos added at or after this date (ISO, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only videos added before this date (ISO, UTC).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="hybrid (vectors + captions), vector or text (default: search.mode)."),
    ] = None,
    rerank_k: Annotated[
        int | None,
        typer.Option(min=0, help="Re-score this many first-stage hits with the co-attention "
                     "re-ranker (default: search.rerank_k; 0: off)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Search indexed videos by text: the best-matching clips with times and captions; each
    score says what it is (cosine, caption match, rank fusion or re-ranker), with the cosine
    beside a score of another kind."""
    from video_mm.search import hits_to_json
    from video_mm.search import search as run_search

    hits = run_search(
        query,
        k,
        settings=get_settings(),
        mode=mode,  # type: ignore[arg-type]
        video_id=video,
        since=_date(since),
        until=_date(until),
        rerank_k=rerank_k,
    )
    if as_json:
        print(hits_to_json(hits))
        return
    if not hits:
        out.print("no matching clips (only videos whose processing finished are searched)")
        return
    table = Table(title=f"{query!r}: top {len(hits)} ({hits[0].extra.get('mode', '')})")
    # The cosine beside a score of another kind: a number that says how close query and clip are.
    cosine = any(h.extra.get("score_kind") != "cosine" and "vector_score" in h.extra for h in hits)
    columns = ("#", "score", "score is", *(("cosine",) if cosine else ()), "video", "from", "to",
               "caption", "captioner")
    for col in columns:
        # In a narrow terminal the file name is cut short, not the caption (one word a line).
        table.add_column(col, justify="right" if col in NUMBERS else "left",
                         min_width=24 if col == "caption" else None,
                         max_width=18 if col == "video" and out.width < 120 else None,
                         no_wrap=col in ("video", "score is"),
                         overflow="ellipsis" if col == "video" else "fold")
    for i, h in enumerate(hits, start=1):
        name = h.extra.get("filename") or h.video_id[:12]
        near = h.extra.get("vector_score")
        table.add_row(str(i), f"{h.score:.4f}", str(h.extra.get("score_kind", "")),
                      *((f"{near:.3f}" if near is not None else "-",) if cosine else ()), name,
                      _clock(h.start), _clock(h.end), h.caption,
                      h.extra.get("caption_model") or "")
    out.print(table, markup=False)
    for kind, meaning in dict.fromkeys((h.extra.get("score_kind"), h.extra.get("score_meaning"))
                                       for h in hits):  # fmt: skip
        if kind:
            out.print(f"score ({kind}): {meaning}", markup=False)
    if cosine:
        out.print("cosine: the query's similarity to the clip in the search model's space "
                  "(-: not among the vector ranking's candidates)", markup=False)
    embedding = hits[0].extra.get("embedding_model")
    out.print(f"search model: {embedding or 'none (caption text only)'}", markup=False)
    for note in dict.fromkeys(n for h in hits for n in h.extra.get("notes", [])):
        out.print(f"warning: {note}", markup=False)


def delete(
    video_id: Annotated[str, typer.Argument(help="The video's id (its sha256).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Delete a video: its index entries, blobs, clips, captions and jobs."""
    from video_mm.pipeline.delete import delete_video
    from video_mm.pipeline.runner import context

    settings = get_settings()
    video = context(settings).catalog.get_video(video_id)  # NotFound before anything is touched
    if not yes:
        typer.confirm(f"delete {video.filename or video.id} and all its results?", abort=True)
    report = delete_video(video_id, settings)
    if as_json:
        print(
            json.dumps(
                {
                    "video_id": report.video_id,
                    "clips": report.clips,
                    "index_entries": len(report.index_ids),
                    "blobs": len(report.blobs),
                }
            )
        )
    else:
        out.print(
            f"deleted {report.video_id}: {report.clips} clips, "
            f"{len(report.index_ids)} index entries, {len(report.blobs)} blobs"
        )


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(delete)
