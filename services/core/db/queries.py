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
    time_column: str = "create_time",
) -> Select[Any]:
    """Rows matching `conditions`, newest `time_column` (create_time unless told) first, ties by id descending,
    after the keyset position (time, id) of the previous page's last row."""
    time, row_id = table.c[time_column], table.c[id_column]
    where = list(conditions)
    if after is not None:
        where.append(or_(time < after[0], and_(time == after[0], row_id < after[1])))
    return select(table).where(*where).order_by(time.desc(), row_id.desc()).limit(limit)
