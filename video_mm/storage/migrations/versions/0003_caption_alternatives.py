"""captions.alternatives: the decoder's next best captions of a clip (n-best), best first

Revision ID: 0003
Revises: 0002 (jobs.sent_at: both were 0002 after 0001, two heads; re-chained)
Create Date: 2026-11-29 22:00:00

A JSON list of ``{"text", "score"}``; NULL for captions written before it existed. Not full-text
indexed: search matches the best caption only.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # a plain ADD COLUMN (no table copy), so SQLite's full-text triggers on captions stay
    op.add_column('captions', sa.Column('alternatives', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('captions', 'alternatives')
