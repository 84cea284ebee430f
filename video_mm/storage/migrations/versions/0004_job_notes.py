"""jobs.notes: what a finished job could not do (e.g. "no captioner configured")

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:00:00

A job that ends ``done`` without captions or embeddings, for lack of a configured model, says so
here instead of a bare ``done``. Existing jobs get NULL (nothing recorded).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('notes', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('notes')
