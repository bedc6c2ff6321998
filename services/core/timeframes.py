"""Bar timeframes, shared by every service that reads or makes bars (the numbers are bullant.common.v1.Timeframe's)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import IntEnum

EPOCH = datetime(1970, 1, 1)


class Timeframe(IntEnum):
    """Bar spans: 1 minute to 1 trading day; numbers of bullant.common.v1.Timeframe (names by `proto_name`)."""

    M1 = 1
    M5 = 2
    M15 = 3
    H1 = 4
    D1 = 5

    @property
    def seconds(self) -> int:
        return _SECONDS[self]

    @property
    def delta(self) -> timedelta:
        """The bar's span."""
        return timedelta(seconds=_SECONDS[self])

    @property
    def label(self) -> str:
        """Short name: "1m", "5m", "15m", "1h", "1d"."""
        return _LABELS[self]

    @property
    def proto_name(self) -> str:
        """The proto enum value name, e.g. "TIMEFRAME_1D" (what CHOICE parameters naming a timeframe take)."""
        return f"TIMEFRAME_{_LABELS[self].upper()}"

    @classmethod
    def from_proto_name(cls, name: str) -> Timeframe | None:
        return next((timeframe for timeframe in cls if timeframe.proto_name == name), None)

    @classmethod
    def from_label(cls, label: str) -> Timeframe:
        """The timeframe of a short name ("1m" … "1d"); ValueError for another."""
        found = next((timeframe for timeframe in cls if timeframe.label == label), None)
        if found is None:
            raise ValueError(f"unknown timeframe {label!r}")
        return found

    def floor(self, moment: datetime) -> datetime:
        """The open time of the bar containing `moment` (naive UTC)."""
        epoch = int((moment - EPOCH).total_seconds())
        return EPOCH + timedelta(seconds=epoch - epoch % self.seconds)

    def aligned(self, moment: datetime) -> bool:
        return moment.microsecond == 0 and self.floor(moment) == moment


_SECONDS = {Timeframe.M1: 60, Timeframe.M5: 300, Timeframe.M15: 900, Timeframe.H1: 3600, Timeframe.D1: 86400}
_LABELS = {Timeframe.M1: "1m", Timeframe.M5: "5m", Timeframe.M15: "15m", Timeframe.H1: "1h", Timeframe.D1: "1d"}
INTRADAY = (Timeframe.M1, Timeframe.M5, Timeframe.M15, Timeframe.H1)
