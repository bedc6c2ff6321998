"""Shard identity.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_identity",
        sa.Column("shard_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("shard_id", name=op.f("pk_shard_identity")),
        comment="Which shard this database is; checked at start-up against the configured order.",
    )


def downgrade() -> None:
    op.drop_table("shard_identity")
