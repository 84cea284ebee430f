"""What search reads from the catalog: index ids mapped to searchable clips, clip details for
hits, and full-text search over captions (SQLite FTS5 / PostgreSQL GIN).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Float, Integer, func, literal_column, select, text

from video_mm.storage.database import Database
from video_mm.storage.models import Captions, Clips, Embeddings, Videos
from video_mm.storage.rows import ClipDetail, in_chunks, searchable

_WORD = re.compile(r"\w+", re.UNICODE)


class SearchReads(Database):
    """Reads for search, over ``ready`` videos only."""

    def resolve_index_ids(
        self,
        index_ids: Sequence[str],
        *,
        model: str | None = None,
        video_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, str]:
        """Index id -> clip id, for searchable (ready) videos passing the filters only."""
        out: dict[str, str] = {}
        with self._read() as s:
            for chunk in in_chunks(list(index_ids)):
                q = (
                    select(Embeddings.index_id, Embeddings.clip_id)
                    .join(Clips, Clips.id == Embeddings.clip_id)
                    .join(Videos, Videos.id == Clips.video_id)
                    .where(Embeddings.index_id.in_(chunk), *searchable(video_id, since, until))
                )
                if model is not None:
                    q = q.where(Embeddings.model == model)
                out.update(dict(s.execute(q).tuples().all()))
        return out

    def clip_details(
        self, clip_ids: Sequence[str], *, caption_model: str | None = None
    ) -> dict[str, ClipDetail]:
        """Clips of searchable videos with their caption: ``caption_model``'s, else the best."""
        out: dict[str, ClipDetail] = {}
        with self._read() as s:
            for chunk in in_chunks(list(clip_ids)):
                q = (
                    select(Clips, Videos.filename, Videos.created_at)
                    .join(Videos, Videos.id == Clips.video_id)
                    .where(Clips.id.in_(chunk), Videos.state == "ready")
                )
                clips = s.execute(q).all()
                caps: dict[str, Captions] = {}
                cq = select(Captions).where(Captions.clip_id.in_(chunk))
                for c in s.scalars(cq.order_by(Captions.score.desc(), Captions.model)):
                    preferred = caption_model is not None and c.model == caption_model
                    if c.clip_id not in caps or preferred:
                        caps[c.clip_id] = c
                for clip, filename, created_at in clips:
                    cap = caps.get(clip.id)
                    out[clip.id] = ClipDetail(
                        clip_id=clip.id,
                        video_id=clip.video_id,
                        index=clip.index,
                        start=clip.start,
                        end=clip.end,
                        thumbnail_key=clip.thumbnail_key,
                        caption=cap.text if cap else "",
                        caption_model=cap.model if cap else None,
                        filename=filename,
                        created_at=created_at,
                    )
        return out

    def text_search(
        self,
        query: str,
        *,
        limit: int,
        caption_model: str | None = None,
        video_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[str, float]]:
        """Clips whose captions match the query's words, best first, as (clip id, score).

        SQLite ranks with FTS5's BM25; PostgreSQL with ``ts_rank_cd`` over its GIN index. Any word
        may match (OR): the ranking, not the match, decides.
        """
        words = _WORD.findall(query.lower())
        if not words:
            return []
        if self.dialect == "postgresql":
            tsquery = func.to_tsquery(literal_column("'english'"), " | ".join(words))
            tsvector = func.to_tsvector(literal_column("'english'"), Captions.text)
            score = func.max(func.ts_rank_cd(tsvector, tsquery))
            match = tsvector.op("@@")(tsquery)
            q = select(Captions.clip_id, score.label("score")).where(match)
        else:
            fts = (
                text(
                    "SELECT rowid AS id, bm25(captions_fts) AS rank FROM captions_fts "
                    "WHERE captions_fts MATCH :q"
                )
                .bindparams(q=" OR ".join(f'"{w}"' for w in words))
                .columns(id=Integer, rank=Float)
                .cte("fts")
                .prefix_with("MATERIALIZED")  # bm25() only works where FTS5 runs the match
            )
            score = func.max(-fts.c.rank)  # bm25() is smaller for better matches
            q = select(Captions.clip_id, score.label("score")).join(fts, fts.c.id == Captions.id)
        q = q.join(Clips, Clips.id == Captions.clip_id).join(Videos, Videos.id == Clips.video_id)
        q = q.where(*searchable(video_id, since, until))
        if caption_model is not None:
            q = q.where(Captions.model == caption_model)
        q = q.group_by(Captions.clip_id).order_by(score.desc(), Captions.clip_id).limit(limit)
        with self._read() as s:
            return [(cid, float(sc)) for cid, sc in s.execute(q).tuples()]
