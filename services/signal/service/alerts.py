"""Alert rules' use cases: create (idempotent by request id, at most a limit per account), read, list, update and
delete the caller's rules, and tell the live engine's leader when they change."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from services.core.accounts import AccountRef
from services.core.clock import WallClock, utc_now
from services.core.errors import AlreadyExists, ResourceExhausted
from services.core.market_data import MarketData
from services.core.paging import Page, PageTokens, keyset_after, keyset_cursor, keyset_page
from services.signal.alerts.rules import (
    AlertDraft,
    AlertSettings,
    alert_id_of,
    alert_not_found,
    new_alert_id,
    new_rule,
    updated,
)
from services.signal.alerts.store import AlertLimitReached, AlertRule, AlertStore

log = logging.getLogger("bullant.signal")
_ALERTS_CURSOR = keyset_cursor("signal.ListAlerts")


class RulesChanged(Protocol):
    """Tells the engine's leader to re-read the alert rules (services/signal/live/hub.py's WatchRegistry)."""

    async def notify_rules_changed(self) -> None: ...


class Alerts:
    """The caller's alert rules, stored in its shard; the symbol of a rule must be one the market service knows."""

    def __init__(
        self,
        market: MarketData,
        store: AlertStore,
        engine: RulesChanged,
        pages: PageTokens,
        *,
        limit: int = 100,
        clock: WallClock = utc_now,
    ) -> None:
        self._market = market
        self._store = store
        self._engine = engine
        self._pages = pages
        self._limit = limit
        self._clock = clock

    async def create(self, owner: AccountRef, draft: AlertDraft, *, request_id: str | None) -> AlertRule:
        """A new rule (or the one already created with `request_id`): its settings' rules, SYMBOL_NOT_FOUND,
        ALERT_LIMIT_EXCEEDED, REQUEST_ID_REUSED when the request id was used for other settings."""
        settings = AlertSettings.of(draft)
        await self._market.instrument(settings.symbol)
        rule = new_rule(settings, alert_id=new_alert_id(), owner=owner, now=self._clock(), request_id=request_id)
        try:
            stored, created = await self._store.insert(rule, limit=self._limit)
        except AlertLimitReached as full:
            raise ResourceExhausted(
                f"{full.count} alert rules already; delete one first",
                reason="ALERT_LIMIT_EXCEEDED",
                metadata={"limit": self._limit},
            ) from None
        if not created and stored.request_digest != rule.request_digest:
            raise AlreadyExists("this request id was used for a different alert", reason="REQUEST_ID_REUSED")
        if created:
            await self._rules_changed()
        return stored

    async def get(self, owner: AccountRef, alert_id: str, *, field: str = "alert_id") -> AlertRule:
        """The caller's rule: ALERT_NOT_FOUND also when another account owns it."""
        rule = await self._store.get(owner, alert_id_of(alert_id, field))
        if rule is None:
            raise alert_not_found(alert_id)
        return rule

    async def find(
        self, owner: AccountRef, *, symbol: str, enabled: bool | None, size: int, page_token: str
    ) -> Page[AlertRule]:
        """The caller's rules (of one symbol, enabled or not), newest first."""
        symbol = symbol.strip().upper()
        return await keyset_page(
            self._pages,
            _ALERTS_CURSOR,
            page_token,
            query=f"{symbol}|{enabled}",
            size=size,
            fetch=lambda after, limit: self._store.find(
                owner, symbol=symbol, enabled=enabled, after=keyset_after(after), limit=limit
            ),
            position=lambda rule: {"t": rule.create_time, "id": rule.alert_id},
        )

    async def update(self, owner: AccountRef, alert_id: str, changes: AlertDraft, paths: Sequence[str]) -> AlertRule:
        """The rule with the fields at `paths` changed, validated whole again (a new symbol must exist)."""
        rule = await self.get(owner, alert_id, field="alert.alert_id")
        changed = updated(rule, changes, paths, self._clock())
        if changed.symbol != rule.symbol:
            await self._market.instrument(changed.symbol)
        if not await self._store.save(changed):
            raise alert_not_found(rule.alert_id)
        await self._rules_changed()
        return changed

    async def delete(self, owner: AccountRef, alert_id: str, *, allow_missing: bool) -> None:
        """Delete the caller's rule (ALERT_NOT_FOUND when there is none, unless `allow_missing`)."""
        alert_id = alert_id_of(alert_id)
        deleted = await self._store.delete(owner, alert_id)
        if not deleted and not allow_missing:
            raise alert_not_found(alert_id)
        if deleted:
            await self._rules_changed()

    async def _rules_changed(self) -> None:
        """Tell the engine's leader to re-read the alert rules now (it also does every few seconds)."""
        try:
            await self._engine.notify_rules_changed()
        except Exception:  # the rule is stored; the engine's periodic refresh picks it up
            log.warning("could not notify the signal engine of an alert rule change", exc_info=True)
