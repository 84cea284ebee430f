"""jobs.sent_at: when the job's message reached the broker (NULL: not yet, send it again)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:30:00

Jobs that exist already were sent (or ran in-process): they get their last update time.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET sent_at = updated_at")


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('sent_at')
