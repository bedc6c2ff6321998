"""Indicator requests: validated against the catalogue, computed over bar arrays, trimmed to the asked range.

With extend_for_warmup the values on a range are those of the whole stored history: the history read before the
range is what each indicator's recursion needs (its Memory) – exactly for windows, to a start's weight below
CONVERGED_WEIGHT for exponential and Wilder smoothing (derived from their poles), and for the parabolic SAR until
SAR computed from two starting points agrees on the range (its state is reset only by reversals, so no count of
bars is enough by itself). Bounded reads beat computing from the first stored bar: an EMA(20) needs 296 bars
whatever the history holds, where years of minute bars would otherwise be read on every call. Cumulative
indicators (OBV, VWAP with period 0) never forget, so their origin is part of the contract: the range's first bar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.signal.indicators.base import REGISTRY, Array, Bars, IndicatorDef, Memory, MemoryKind

if TYPE_CHECKING:  # the bars come from services.core.market_data, whose client this module does not need
    from services.core.market_data import BarSeries

MAX_INDICATORS = 50
# Most bars read before a range to warm its indicators up (as many as a range may hold). Recursions that need more
# (an EMA over more than about 13,500 bars, Wilder's smoothing over more than about 7,000) start that far back and
# are not fully converged.
MAX_WARMUP_BARS = 200_000


class PriceSource(IntEnum):
    """Numbers of bullant.signal.v1.PriceSource."""

    UNSPECIFIED = 0
    OPEN = 1
    HIGH = 2
    LOW = 3
    CLOSE = 4
    HL2 = 5
    HLC3 = 6
    OHLC4 = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorRequest:
    """One requested indicator, as the client sent it."""

    name: str
    parameters: Mapping[str, float] = field(default_factory=dict)
    alias: str = ""
    outputs: Sequence[str] = ()
    source: PriceSource = PriceSource.UNSPECIFIED


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedIndicator:
    """A validated request: the definition, every parameter's value, alias, outputs and source."""

    definition: IndicatorDef
    parameters: dict[str, float]
    alias: str
    outputs: tuple[str, ...]
    source: PriceSource

    @property
    def memory(self) -> Memory:
        """How far back its values reach."""
        return self.definition.memory(**self.parameters)


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    name: str
    output: str
    values: Array
    warmup: int


def _default_alias(definition: IndicatorDef, parameters: Mapping[str, float]) -> str:
    parts = [definition.name] + [f"{value:g}" for value in parameters.values()]
    return "_".join(parts)


def prepare(requests: Sequence[IndicatorRequest]) -> list[PreparedIndicator]:
    """Validate every request; INVALID_ARGUMENT / NOT_FOUND with the contract's reasons."""
    if not requests:
        raise InvalidArgument.field("indicators", "ask for at least one indicator")
    if len(requests) > MAX_INDICATORS:
        raise InvalidArgument(
            FieldViolation("indicators", f"at most {MAX_INDICATORS} per call"), reason="TOO_MANY_INDICATORS"
        )
    prepared: list[PreparedIndicator] = []
    aliases: set[str] = set()
    for index, request in enumerate(requests):
        where = f"indicators[{index}]"
        definition = REGISTRY.get(request.name.strip().lower())
        if definition is None:
            raise NotFound(
                f"no indicator {request.name!r}; ListIndicators names them",
                reason="INDICATOR_NOT_FOUND",
                metadata={"name": request.name[:64]},
            )
        try:
            parameters = definition.resolve(request.parameters, field=f"{where}.parameters")
        except InvalidArgument as error:
            raise InvalidArgument(error.violations, reason="INVALID_PARAMETER") from None
        known = [output.name for output in definition.outputs]
        unknown = [name for name in request.outputs if name not in known]
        if unknown:
            raise InvalidArgument(
                FieldViolation(
                    f"{where}.outputs",
                    f"unknown output(s) {', '.join(unknown)}; {definition.name} has {', '.join(known)}",
                ),
                reason="UNKNOWN_OUTPUT",
            )
        if request.source is not PriceSource.UNSPECIFIED and not definition.accepts_source:
            raise InvalidArgument(
                FieldViolation(f"{where}.source", f"{definition.name} reads several bar fields; source does not apply"),
                reason="INVALID_PARAMETER",
            )
        alias = request.alias.strip() or _default_alias(definition, parameters)
        if len(alias) > 64 or not alias.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise InvalidArgument.field(f"{where}.alias", "1 to 64 of letters, digits, '_', '-', '.'")
        if alias in aliases:
            raise InvalidArgument(
                FieldViolation(f"{where}.alias", f"alias {alias!r} is used twice"), reason="DUPLICATE_ALIAS"
            )
        aliases.add(alias)
        prepared.append(
            PreparedIndicator(
                definition=definition,
                parameters=parameters,
                alias=alias,
                outputs=tuple(name for name in known if not request.outputs or name in request.outputs),
                source=request.source,
            )
        )
    return prepared


def with_source(bars: Bars, source: PriceSource) -> Bars:
    """The bars with `close` replaced by the chosen price series (single-series indicators read close)."""
    if source in (PriceSource.UNSPECIFIED, PriceSource.CLOSE):
        return bars
    series = {
        PriceSource.OPEN: bars.open,
        PriceSource.HIGH: bars.high,
        PriceSource.LOW: bars.low,
        PriceSource.HL2: (bars.high + bars.low) / 2.0,
        PriceSource.HLC3: (bars.high + bars.low + bars.close) / 3.0,
        PriceSource.OHLC4: (bars.open + bars.high + bars.low + bars.close) / 4.0,
    }[source]
    return Bars(bars.open, bars.high, bars.low, series, bars.volume)


def _tail(bars: Bars, first: int) -> Bars:
    if not first:
        return bars
    return Bars(bars.open[first:], bars.high[first:], bars.low[first:], bars.close[first:], bars.volume[first:])


def _outputs(indicator: PreparedIndicator, bars: Bars) -> tuple[Array, ...]:
    return indicator.definition.batch(with_source(bars, indicator.source), **indicator.parameters)


def history_needed(prepared: Sequence[PreparedIndicator]) -> int:
    """Bars to read before a range so every indicator's values on it are those of the whole history (a first
    guess for PATH indicators; see `paths_settled`), at most MAX_WARMUP_BARS."""
    needs = [item.memory.bars for item in prepared if item.memory.kind is not MemoryKind.CUMULATIVE]
    return min(max(needs, default=0), MAX_WARMUP_BARS)


def paths_settled(prepared: Sequence[PreparedIndicator], bars: Bars, skip: int) -> bool:
    """Whether every PATH indicator gives the same values on the range (the bars after the first `skip`) when
    computed from the first bar and from halfway to the range: its paths from both starts have merged."""
    half = skip // 2
    for item in prepared:
        if item.memory.kind is not MemoryKind.PATH or not half:
            continue
        whole, later = _outputs(item, bars), _outputs(item, _tail(bars, half))
        if not all(
            np.array_equal(a[skip:], b[skip - half :], equal_nan=True) for a, b in zip(whole, later, strict=True)
        ):
            return False
    return True


async def with_warmup(
    prepared: Sequence[PreparedIndicator], series: BarSeries, earlier: Callable[[int], Awaitable[BarSeries]]
) -> tuple[BarSeries, int]:
    """`series` preceded by the stored bars its indicators need (`earlier(count)` reads the latest `count` bars
    before it), and how many those are. The read doubles while a PATH indicator has not settled, until the stored
    history is exhausted (then every value is the whole history's) or MAX_WARMUP_BARS."""
    need = history_needed(prepared)
    while need:
        history = await earlier(need)
        whole = history.followed_by(series) if len(history) else series
        skip = len(history)
        if skip < need or need >= MAX_WARMUP_BARS:
            return whole, skip
        bars = Bars(whole.open, whole.high, whole.low, whole.close, whole.volume)
        if paths_settled(prepared, bars, skip):
            return whole, skip
        need = min(2 * need, MAX_WARMUP_BARS)
    return series, 0


def compute(indicator: PreparedIndicator, bars: Bars, *, skip: int = 0) -> list[Series]:
    """The indicator's requested outputs over `bars`, without the first `skip` bars (read only to warm it up). A
    CUMULATIVE indicator starts at the first bar after them: its origin is the range's first bar."""
    if indicator.memory.kind is MemoryKind.CUMULATIVE:
        bars, skip = _tail(bars, skip), 0
    values = _outputs(indicator, bars)
    names = [output.name for output in indicator.definition.outputs]
    single = len(names) == 1
    found: list[Series] = []
    for name, array in zip(names, values, strict=True):
        if name not in indicator.outputs:
            continue
        trimmed = np.asarray(array[skip:], dtype=np.float64)
        defined = np.flatnonzero(~np.isnan(trimmed))
        warmup = int(defined[0]) if defined.size else len(trimmed)
        found.append(
            Series(
                name=indicator.alias if single else f"{indicator.alias}.{name}",
                output=name,
                values=trimmed,
                warmup=warmup,
            )
        )
    return found
