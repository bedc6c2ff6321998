"""Firing alert rules: the firing (with the cooldown) in the owner's shard, then its notification in the outbox
(keyed by the firing, so a retry after a fail-over queues nothing twice), then the owner's StreamSignals."""

from __future__ import annotations

import logging
from dataclasses import replace

from services.core.clock import WallClock, utc_now
from services.core.db.databases import Databases
from services.core.db.outbox import OutboxMessage, add_outbox
from services.signal.alerts.store import AlertRule, AlertStore
from services.signal.live.encoding import firing_envelope, side_number
from services.signal.live.firing_store import FiringStore
from services.signal.live.hub import SignalHub
from services.signal.live.records import Firing, LiveSignal
from services.signal.live.signal_store import SignalStore

log = logging.getLogger("bullant.signal.alerts")
CHANNEL_NAMES = {1: "in_app", 2: "email", 3: "webhook", 4: "push"}
_GRADE_NAMES = {1: "STRONG_BUY", 2: "BUY", 3: "HOLD", 4: "SELL", 5: "STRONG_SELL"}


def notification(firing: Firing, rule_name: str, channels: tuple[int, ...], signal: LiveSignal) -> OutboxMessage:
    """The outbox message of a firing: the notification service resolves the owner's addresses per channel."""
    return OutboxMessage(
        account_id=firing.owner.account_id,
        channel="alert",
        recipient=f"account:{firing.owner.account_id}",
        template="alert_triggered",
        payload={
            "alert_id": firing.alert_id,
            "alert_display_name": rule_name,
            "channels": [CHANNEL_NAMES.get(channel, str(channel)) for channel in channels],
            "signal_id": signal.signal_id,
            "symbol": signal.symbol,
            "timeframe": signal.timeframe.label,
            "strategy_id": signal.strategy_id,
            "side": "BUY" if side_number(signal.side) == 1 else "SELL",
            "grade": _GRADE_NAMES[int(signal.grade)],
            "fused_confidence": round(signal.fused_confidence, 4),
            "technical_only": signal.technical_only,
            "price": signal.price,
            "bar_time": signal.bar_time.isoformat() + "Z",
            "reason": signal.reason,
        },
        dedup_key=firing.firing_id,
    )


class AlertDispatcher:
    """Fires rules for signals and delivers the firings."""

    def __init__(
        self,
        *,
        firings: FiringStore,
        rules: AlertStore,
        signals: SignalStore,
        databases: Databases,
        hub: SignalHub,
        clock: WallClock = utc_now,
    ) -> None:
        self._firings = firings
        self._rules = rules
        self._signals = signals
        self._databases = databases
        self._hub = hub
        self._clock = clock

    async def fire(self, rule: AlertRule, signal: LiveSignal) -> Firing | None:
        """Fire `rule` for `signal` unless its cooldown holds it back; the firing (also when this signal had fired it
        before a fail-over: then it is delivered again, and subscribers drop the repeat by id)."""
        outcome = await self._firings.fire(rule.owner, rule.alert_id, signal, self._clock())
        if outcome is None:
            return None
        firing, _ = outcome
        if not firing.notification_id:
            firing = await self._queue(firing, rule.display_name, rule.channels, signal)
        await self._hub.publish(firing_envelope(firing, rule.display_name, signal))
        return firing

    async def _queue(self, firing: Firing, rule_name: str, channels: tuple[int, ...], signal: LiveSignal) -> Firing:
        message = notification(firing, rule_name, channels, signal)
        now = self._clock()
        notification_id = await self._databases.run_global(lambda connection: add_outbox(connection, message, now))
        await self._firings.attach(firing, notification_id)
        return replace(firing, notification_id=notification_id)

    async def recover(self) -> int:
        """Deliver firings a stopped leader recorded but did not queue; how many."""
        done = 0
        for firing in await self._firings.unnotified(limit=500):
            rule = await self._rules.get(firing.owner, firing.alert_id)
            signal = await self._signals.get(firing.signal_id)
            if rule is None or signal is None:
                await self._firings.attach(firing, 0)  # the rule was deleted meanwhile: nothing to deliver
                continue
            queued = await self._queue(firing, rule.display_name, rule.channels, signal)
            await self._hub.publish(firing_envelope(queued, rule.display_name, signal))
            done += 1
        if done:
            log.info("delivered %d alert firings left undelivered by an earlier leader", done)
        return done
