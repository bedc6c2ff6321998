"""One series on the engine's leader: its bar buffer, its units and alert rules, and its checkpoint. It processes
the series' closed bars in order, in its own task: evaluate the units, fuse, store, publish, fire alerts, then
advance the checkpoint, so a new leader re-evaluates exactly the bars not finished (ids make that idempotent)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.core.auth.service_identity import ServiceIdentity
from services.core.backoff import backoff_delay
from services.core.bars import Bar
from services.core.clock import WallClock, utc_now
from services.core.errors import DomainError
from services.core.market_data import MarketData
from services.core.settings import SignalSettings
from services.signal.alerts.store import AlertRule
from services.signal.fusion import Fused, TechnicalOnly
from services.signal.history import History, read_history
from services.signal.live.alerting import AlertDispatcher
from services.signal.live.encoding import signal_envelope
from services.signal.live.evaluator import UnitState, evaluate_at, keep_for
from services.signal.live.hub import SignalHub
from services.signal.live.model_fusion import ModelFusion
from services.signal.live.records import LiveSignal, SeriesKey, Unit, grade_fires
from services.signal.live.series import BarBuffer, ClosedBar
from services.signal.live.signal_store import SignalStore
from services.signal.strategies.base import SignalEvent

log = logging.getLogger("bullant.signal.engine")
_MICROSECOND = timedelta(microseconds=1)
_DIRECTIONS = {1: "UP", 2: "DOWN", 3: "FLAT"}
_TECHNICAL_ONLY = {
    TechnicalOnly.MODEL_UNAVAILABLE: "the model service is unavailable",
    TechnicalOnly.MODEL_TIMEOUT: "the model service did not answer in time",
    TechnicalOnly.MODEL_NOT_TRAINED: "no production model for {symbol} {timeframe}",
    TechnicalOnly.FUSION_DISABLED: "model fusion is switched off",
    TechnicalOnly.MODEL_GATE_NOT_PASSED: (
        "the production model for {symbol} {timeframe} was promoted over its gate and does not beat naive"
    ),
}


# Called after each processed bar with (series, bar time, stored signals): the benchmark's and tests' probe.
ProcessedProbe = Callable[[SeriesKey, datetime, Sequence[LiveSignal]], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerPolicy:
    """How a series runner signals: repeats suppressed, the forecast horizon it fuses, how it catches up."""

    repeat_bars: int
    fusion_horizon: int
    # The newest bars a new leader evaluates after the checkpoint (older ones are history, not news).
    max_catch_up_bars: int = 500
    # How long to wait for the market's stored copy of a bar the engine saw only part of.
    stored_bar_attempts: int = 12
    stored_bar_wait_seconds: float = 0.25

    @classmethod
    def from_settings(cls, signal: SignalSettings) -> RunnerPolicy:
        return cls(repeat_bars=signal.signal_repeat_bars, fusion_horizon=signal.signal_fusion_horizon_bars)


@dataclass(slots=True)
class Units:
    """A new configuration of the series: its units (platform or not) and the rules on each."""

    states: list[UnitState]
    rules: dict[Unit, list[AlertRule]] = field(default_factory=dict)


# Tries to prepare a series (each with the client's own retries inside) that fail quietly before it warns: a
# platform starting on a busy machine, or a market replica restarting, answers within them.
_QUIET_ATTEMPTS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalPipeline:
    """What every series runner puts a closed bar through: the market's stored bars (history, catch-up), the model
    fusion, the signal store, the replica hub it publishes on and the alert dispatcher, under the engine's service
    identity, with the runner policy, the engine's clock and the benchmark's probe."""

    market: MarketData
    signals: SignalStore
    fusion: ModelFusion
    hub: SignalHub
    dispatcher: AlertDispatcher
    identity: ServiceIdentity
    policy: RunnerPolicy
    clock: WallClock = utc_now
    on_processed: ProcessedProbe | None = None


class SeriesRunner:
    def __init__(self, key: SeriesKey, pipeline: SignalPipeline, units: Units) -> None:
        self.key = key
        self._pipeline = pipeline
        self._queue: asyncio.Queue[ClosedBar | Units] = asyncio.Queue()
        self._states: dict[Unit, UnitState] = {}
        self._rules: dict[Unit, list[AlertRule]] = {}
        self._pending_units: Units | None = units
        self._buffer: BarBuffer | None = None
        self._need = History(1)
        self.checkpoint: datetime | None = None
        self.processed_bars = 0

    def closed(self, bar: ClosedBar) -> None:
        self._queue.put_nowait(bar)

    def configure(self, units: Units) -> None:
        self._queue.put_nowait(units)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                with self._pipeline.identity.acting():
                    await self._prepare()
                break
            except (DomainError, OSError) as error:
                attempt += 1
                delay = backoff_delay(attempt - 1, 0.5, 30.0, jitter_floor=0.5)
                # A market still starting (its own server, or another replica's) is normal for the first tries.
                level = logging.INFO if attempt <= _QUIET_ATTEMPTS else logging.WARNING
                log.log(level, "series %s/%s not ready (%s); retrying in %.1fs", *self._name(), error, delay)
                await asyncio.sleep(delay)
        while True:
            item = await self._queue.get()
            try:
                with self._pipeline.identity.acting():
                    if isinstance(item, Units):
                        await self._configure(item)
                    else:
                        await self._on_close(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "series %s/%s: processing failed; the next close retries from the checkpoint", *self._name()
                )

    def _name(self) -> tuple[str, str]:
        return self.key.symbol, self.key.timeframe.label

    # -- preparation ------------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Read the checkpoint and the history, then evaluate the bars a previous leader did not finish."""
        units = self._pending_units or Units([])
        self.checkpoint = await self._pipeline.signals.checkpoint(self.key)
        need = _need(units.states)
        history = await read_history(self._pipeline.market, self.key.symbol, int(self.key.timeframe), None, need)
        self._buffer = BarBuffer(self.key.timeframe, keep_for(units.states))
        self._buffer.extend(history)
        await self._configure(units)
        self._pending_units = None
        if self.checkpoint is None:
            # A series watched for the first time starts now: its history is not news.
            last = self._buffer.last_time
            if last is not None:
                await self._advance(last)
            return
        await self._evaluate_pending()

    async def _configure(self, units: Units) -> None:
        states: dict[Unit, UnitState] = {}
        for state in units.states:
            known = self._states.get(state.unit)
            if known is not None:
                known.platform = state.platform
                states[state.unit] = known
                continue
            if self._buffer is not None:
                before = self.checkpoint + _MICROSECOND if self.checkpoint is not None else None
                latest = await self._pipeline.signals.latest(state.unit, before=before)
                if latest is not None:
                    state.remember(latest.side, latest.bar_time)
            states[state.unit] = state
        if self._buffer is None:
            self._pending_units = units
            return
        self._states = states
        self._rules = units.rules
        self._need = _need(list(states.values()))
        keep = keep_for(list(states.values()))
        # Takes effect as the buffer grows: a unit needing more history waits for it.
        self._buffer.keep = max(self._buffer.keep, keep)

    # -- bars -------------------------------------------------------------------------------------------------------

    async def _on_close(self, closed: ClosedBar) -> None:
        buffer = self._buffer
        assert buffer is not None
        bar = closed.bar
        if not closed.trusted:
            bar = await self._stored(bar) or bar
        if len(buffer) < self._need.bars:
            buffer = await self._reload(bar.open_time)
        last = buffer.last_time
        if last is not None and bar.open_time <= last:
            return
        if last is not None and bar.open_time - last > self.key.timeframe.delta:
            # Bars this leader did not see built (quiet periods have none; a broken stream's may be stored).
            missing = await self._pipeline.market.bars(
                self.key.symbol,
                int(self.key.timeframe),
                start=last + _MICROSECOND,
                end=bar.open_time,
                limit=self._pipeline.policy.max_catch_up_bars,
            )
            buffer.extend(missing)
        buffer.append(bar)
        await self._evaluate_pending()

    async def _reload(self, before: datetime) -> BarBuffer:
        """Read the history again when the buffer holds less than the units need (the symbol's history was stored
        after the series started, e.g. by a backfill); a series that had none starts after it, as a new one does."""
        buffer = self._buffer
        assert buffer is not None
        history = await read_history(
            self._pipeline.market, self.key.symbol, int(self.key.timeframe), before, self._need
        )
        if len(history) <= len(buffer):
            return buffer
        fresh = BarBuffer(self.key.timeframe, buffer.keep)
        fresh.extend(history)
        self._buffer = fresh
        if self.checkpoint is None and fresh.last_time is not None:
            await self._advance(fresh.last_time)
        return fresh

    async def _stored(self, bar: Bar) -> Bar | None:
        """The market's stored copy of a bar (it writes closed bars within about a second)."""
        policy = self._pipeline.policy
        for _ in range(policy.stored_bar_attempts):
            found = await self._pipeline.market.bars(
                self.key.symbol,
                int(self.key.timeframe),
                start=bar.open_time,
                end=bar.open_time + self.key.timeframe.delta,
                limit=1,
            )
            if len(found):
                return Bar(
                    found.times[0],
                    float(found.open[0]),
                    float(found.high[0]),
                    float(found.low[0]),
                    float(found.close[0]),
                    float(found.volume[0]),
                )
            await asyncio.sleep(policy.stored_bar_wait_seconds)
        log.warning("series %s/%s: bar %s not stored by the market; using the engine's", *self._name(), bar.open_time)
        return None

    async def _evaluate_pending(self) -> None:
        buffer = self._buffer
        assert buffer is not None
        for index in buffer.after(self.checkpoint)[-self._pipeline.policy.max_catch_up_bars :]:
            await self._process(index)

    async def _process(self, index: int) -> None:
        buffer = self._buffer
        assert buffer is not None
        bar_time: datetime = buffer.times[index].astype(datetime)
        states = list(self._states.values())
        found = await asyncio.to_thread(evaluate_at, buffer, index, states) if states else []
        within = self.key.timeframe.delta * self._pipeline.policy.repeat_bars
        kept = [(state, event) for state, event in found if not state.repeats(event.side, bar_time, within)]
        made = await asyncio.gather(*(self._signal(state, event, bar_time) for state, event in kept))
        new, existing = await self._pipeline.signals.add_split(made)
        for state, event in kept:
            state.remember(event.side, bar_time)
        stored = new + existing
        for signal in stored:
            if signal.platform:
                await self._pipeline.hub.publish(signal_envelope(signal))
        firings = [
            self._pipeline.dispatcher.fire(rule, signal)
            for signal in stored
            for rule in self._rules.get(
                Unit(self.key, signal.strategy_id, signal.parameters, signal.parameters_key), ()
            )
            if grade_fires(rule.min_grade, signal.grade)
        ]
        # Rules fire independently (each in its owner's shard); a failure leaves the checkpoint where it is.
        for outcome in await asyncio.gather(*firings, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await self._advance(bar_time)
        self.processed_bars += 1
        if self._pipeline.on_processed is not None:
            self._pipeline.on_processed(self.key, bar_time, stored)

    async def _advance(self, bar_time: datetime) -> None:
        await self._pipeline.signals.advance(self.key, bar_time, self._pipeline.clock())
        self.checkpoint = bar_time

    async def _signal(self, state: UnitState, event: SignalEvent, bar_time: datetime) -> LiveSignal:
        unit = state.unit
        signal_id = unit.signal_id(bar_time)
        fused = await self._pipeline.fusion.fuse(
            symbol=self.key.symbol,
            timeframe=self.key.timeframe,
            side=event.side,
            technical=event.confidence,
            horizon=self._pipeline.policy.fusion_horizon,
            request_key=signal_id,
        )
        model = fused.model
        return LiveSignal(
            signal_id=signal_id,
            symbol=self.key.symbol,
            timeframe=self.key.timeframe,
            strategy_id=unit.strategy_id,
            parameters=dict(unit.parameters),
            parameters_key=unit.parameters_key,
            platform=state.platform,
            side=event.side,
            strong=event.strong,
            technical_confidence=event.confidence,
            model_confidence=model.confidence if model is not None else None,
            model_agrees=fused.agrees,
            fused_confidence=fused.confidence,
            grade=fused.grade,
            technical_only_reason=int(fused.reason),
            reason=event.reason + _model_part(fused, self.key),
            price=event.price,
            bar_time=bar_time,
            create_time=self._pipeline.clock(),
            model_prediction_id=model.prediction_id if model is not None else "",
            model_id=model.model_id if model is not None else "",
            indicator_values=dict(event.values),
        )


def _need(states: Sequence[UnitState]) -> History:
    """The history every unit of a series needs."""
    need = History(1)
    for state in states:
        need = need | state.need
    return need


def _model_part(fused: Fused, key: SeriesKey) -> str:
    model = fused.model
    if model is None:
        why = _TECHNICAL_ONLY.get(fused.reason, "no model prediction")
        return f"; technical only: {why.format(symbol=key.symbol, timeframe=key.timeframe.label)}"
    direction = _DIRECTIONS.get(model.direction, "FLAT")
    verdict = "agrees" if fused.agrees else ("disagrees" if fused.agrees is False else "has no direction")
    return (
        f"; model {model.model_id} predicts {direction} {model.expected_return:+.2%} at confidence "
        f"{model.confidence:.2f} ({verdict}), fused {fused.confidence:.2f}"
    )
