"""live signals of the trend-following Bollinger breakout move to its own id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:30:00.000000

Until now `bollinger_breakout` bought a close above the upper band. It now follows the seed's rule, which sells
there; the trend-following reading is `bollinger_trend_breakout`, with the same parameters. The stored signals were
produced by the trend-following reading, so they move to its new id: their history, performance figures and the
repeat rule stay with the strategy that made them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD, NEW = "bollinger_breakout", "bollinger_trend_breakout"


def _rename(old: str, new: str) -> None:
    op.execute(sa.text("UPDATE signals SET strategy_id = :new WHERE strategy_id = :old").bindparams(old=old, new=new))


def upgrade() -> None:
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)
