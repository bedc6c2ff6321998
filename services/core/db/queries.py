"""Query shapes the stores share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, or_, select


def newest_first(
    table: Table,
    id_column: str,
    conditions: Sequence[ColumnElement[bool]],
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Select[Any]:
    """Rows matching `conditions`, newest `create_time` first (ties by id, descending), after the keyset position
    (create_time, id) of the previous page's last row."""
    where = list(conditions)
    if after is not None:
        where.append(
            or_(
                table.c.create_time < after[0],
                and_(table.c.create_time == after[0], table.c[id_column] < after[1]),
            )
        )
    return select(table).where(*where).order_by(table.c.create_time.desc(), table.c[id_column].desc()).limit(limit)
