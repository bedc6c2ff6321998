"""google.protobuf.Timestamp ⇄ the platform's moments, in one place for every encoder, decoder and client: the
platform keeps times as naive UTC datetimes (services/core/clock.py) or numpy datetime64, the wire as Timestamp."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp


def naive_utc(stamp: Timestamp) -> datetime:
    """A Timestamp as naive UTC (how the platform stores times)."""
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


@overload
def timestamp(moment: datetime | np.datetime64) -> Timestamp: ...


@overload
def timestamp(moment: None) -> None: ...


@overload
def timestamp(moment: datetime | np.datetime64 | None) -> Timestamp | None: ...


def timestamp(moment: datetime | np.datetime64 | None) -> Timestamp | None:
    """A naive-UTC (or aware) datetime, or a datetime64, as a Timestamp; None stays None (the field is left
    absent)."""
    if moment is None:
        return None
    stamp = Timestamp()
    if isinstance(moment, np.datetime64):
        stamp.FromNanoseconds(int(moment.astype("datetime64[ns]").astype(np.int64)))
    else:
        stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp
