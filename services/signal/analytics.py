"""Indicator requests: validated against the catalogue, computed over bar arrays, trimmed to the asked range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.signal.indicators.base import REGISTRY, Array, Bars, IndicatorDef

MAX_INDICATORS = 50


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
    def lookback(self) -> int:
        """Bars before the range that warm it up: a generous bound from its window parameters (recursive
        smoothing needs several windows to forget its seed)."""
        windows = [
            int(value)
            for spec, value in zip(self.definition.params, self.parameters.values(), strict=True)
            if spec.integer
        ]
        return 3 * sum(windows) + 10 if windows else 10


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


def compute(indicator: PreparedIndicator, bars: Bars, *, skip: int = 0) -> list[Series]:
    """The indicator's requested outputs over `bars`, without the first `skip` bars (read only to warm it up)."""
    values = indicator.definition.batch(with_source(bars, indicator.source), **indicator.parameters)
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
