"""Shard registry and shard directory.

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
        "shards",
        sa.Column("shard_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("location", sa.String(length=512), nullable=False),
        sa.Column("accepting_accounts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("shard_id", name=op.f("pk_shards")),
        comment="Shard databases known to the platform, in shard order.",
    )
    op.create_table(
        "shard_directory",
        sa.Column("account_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("shard_id", sa.Integer(), nullable=False),
        sa.Column("assign_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_shard_directory")),
        comment="The shard of each account, chosen once at account creation and never moved.",
    )
    op.create_index(op.f("ix_shard_directory_shard_id"), "shard_directory", ["shard_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_shard_directory_shard_id"), table_name="shard_directory")
    op.drop_table("shard_directory")
    op.drop_table("shards")
