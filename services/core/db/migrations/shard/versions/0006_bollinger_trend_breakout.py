"""alert rules and backtests of the trend-following Bollinger breakout move to its own id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:30:00.000000

Until now `bollinger_breakout` bought a close above the upper band. It now follows the seed's rule, which sells
there; the trend-following reading is `bollinger_trend_breakout`, with the same parameters. Alert rules and
backtests stored under the old id were made with the trend-following reading, so they move to its new id: a user's
alert keeps firing on the side it always did, and a stored backtest names the strategy that produced its report.
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
    values = {"old": old, "new": new}
    op.execute(sa.text("UPDATE alerts SET strategy_id = :new WHERE strategy_id = :old").bindparams(**values))
    # The stored config is the request's JSON (json_format, sorted keys, no indent), whose strategy id moves too.
    op.execute(
        sa.text(
            "UPDATE backtests SET strategy_id = :new, config = REPLACE(config, :old_json, :new_json) "
            "WHERE strategy_id = :old"
        ).bindparams(**values, old_json=f'"strategyId": "{old}"', new_json=f'"strategyId": "{new}"')
    )


def upgrade() -> None:
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)
