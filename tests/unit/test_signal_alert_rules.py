"""Alert rules at their homes: AlertSettings' constructor and the merge of an update (services/signal/alerts/rules.py),
and CreateAlert's idempotency, limit and engine notice in the Alerts facade (services/signal/service/alerts.py),
here over in-memory fakes of the store, the market and the engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import pytest

from services.core.accounts import AccountRef
from services.core.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from services.core.market_data import MarketData
from services.core.paging import PageTokens
from services.core.timeframes import Timeframe
from services.signal.alerts.rules import DEFAULT_COOLDOWN, AlertDraft, AlertSettings, new_rule, updated
from services.signal.alerts.store import AlertLimitReached, AlertRule, AlertStore
from services.signal.service.alerts import Alerts
from services.signal.strategies.base import REGISTRY as STRATEGIES
from services.signal.strategies.catalogue import load_strategies

load_strategies()
NOW = datetime(2027, 1, 4, 12)
OWNER = AccountRef(7, 0)
DAY = int(Timeframe.D1)


def _draft(**changes: Any) -> AlertDraft:
    return replace(
        AlertDraft(symbol="demo", timeframe=DAY, strategy_id="golden_cross", parameters={}, channels=(1, 1)),
        **changes,
    )


def test_settings_fill_in_their_defaults() -> None:
    settings = AlertSettings.of(_draft())
    assert settings.symbol == "DEMO"
    assert settings.display_name == f"{STRATEGIES['golden_cross'].display_name} on DEMO"
    assert settings.cooldown_seconds == DEFAULT_COOLDOWN
    assert settings.enabled is True
    assert settings.channels == (1,)
    assert settings.parameters == {"fast": 50, "slow": 200}
    assert AlertSettings.of(_draft(enabled=False, display_name="  mine ")).display_name == "mine"


@pytest.mark.parametrize(
    ("changes", "error", "reason", "field"),
    [
        ({"strategy_id": "nope"}, NotFound, "STRATEGY_NOT_FOUND", None),
        ({"timeframe": 0}, InvalidArgument, "INVALID_ARGUMENT", "alert.timeframe"),
        ({"strategy_id": "multi_timeframe"}, InvalidArgument, "UNSUPPORTED_TIMEFRAME", "timeframe"),
        ({"parameters": {"speed": 1}}, InvalidArgument, "UNKNOWN_PARAMETER", "alert.parameters.speed"),
    ],
)
def test_settings_refuse_what_the_contract_cannot_declare(
    changes: dict[str, Any], error: type[Exception], reason: str, field: str | None
) -> None:
    with pytest.raises(error) as raised:
        AlertSettings.of(_draft(**changes))
    assert getattr(raised.value, "reason", None) == reason
    if field is not None:
        assert cast(InvalidArgument, raised.value).violations[0].field == field


def _rule(**changes: Any) -> AlertRule:
    settings = AlertSettings.of(_draft(**changes))
    return new_rule(settings, alert_id="alr_1", owner=OWNER, now=NOW, request_id=None)


def test_an_update_takes_only_the_masked_fields_and_validates_the_whole() -> None:
    rule = _rule(cooldown_seconds=600)
    changes = _draft(symbol="other", cooldown_seconds=900, enabled=None)
    changed = updated(rule, changes, ["cooldown_seconds"], NOW)
    assert (changed.symbol, changed.cooldown_seconds, changed.update_time) == ("DEMO", 900, NOW)
    # An absent `enabled` in the request turns the rule off when the mask names it (proto3's false).
    assert updated(rule, changes, ["enabled"], NOW).enabled is False
    with pytest.raises(InvalidArgument) as raised:
        updated(rule, _draft(strategy_id="multi_timeframe"), ["strategy_id", "parameters"], NOW)
    assert raised.value.reason == "UNSUPPORTED_TIMEFRAME"


def test_the_request_digest_covers_every_setting() -> None:
    assert _rule().request_digest == _rule().request_digest
    assert _rule().request_digest != _rule(cooldown_seconds=600).request_digest


class _Store:
    def __init__(self, limit_reached: bool = False) -> None:
        self.rules: dict[str | None, AlertRule] = {}
        self.limit_reached = limit_reached

    async def insert(self, rule: AlertRule, *, limit: int) -> tuple[AlertRule, bool]:
        if self.limit_reached:
            raise AlertLimitReached(limit)
        if rule.request_id in self.rules:
            return self.rules[rule.request_id], False
        self.rules[rule.request_id] = rule
        return rule, True


class _Market:
    async def instrument(self, symbol: str) -> None:
        if symbol != "DEMO":
            raise NotFound(f"no {symbol}", reason="SYMBOL_NOT_FOUND")


class _Engine:
    def __init__(self, fails: bool = False) -> None:
        self.notices = 0
        self.fails = fails

    async def notify_rules_changed(self) -> None:
        self.notices += 1
        if self.fails:
            raise ConnectionError("pub-sub is down")


def _alerts(store: _Store, engine: _Engine) -> Alerts:
    return Alerts(
        cast(MarketData, _Market()),
        cast(AlertStore, store),
        engine,
        PageTokens(b"k" * 32),
        limit=2,
        clock=lambda: NOW,
    )


async def test_create_is_idempotent_by_request_id_and_tells_the_engine_once() -> None:
    store, engine = _Store(), _Engine()
    alerts = _alerts(store, engine)
    first = await alerts.create(OWNER, _draft(), request_id="r1")
    again = await alerts.create(OWNER, _draft(), request_id="r1")
    assert again == first
    assert engine.notices == 1
    with pytest.raises(AlreadyExists) as reused:
        await alerts.create(OWNER, _draft(cooldown_seconds=600), request_id="r1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_create_checks_the_symbol_and_the_limit() -> None:
    with pytest.raises(NotFound) as missing:
        await _alerts(_Store(), _Engine()).create(OWNER, _draft(symbol="nope"), request_id=None)
    assert missing.value.reason == "SYMBOL_NOT_FOUND"
    with pytest.raises(ResourceExhausted) as full:
        await _alerts(_Store(limit_reached=True), _Engine()).create(OWNER, _draft(), request_id=None)
    assert full.value.reason == "ALERT_LIMIT_EXCEEDED"
    assert full.value.metadata == {"limit": "2"}


async def test_a_rule_is_stored_even_when_the_engine_cannot_be_told() -> None:
    store = _Store()
    created = await _alerts(store, _Engine(fails=True)).create(OWNER, _draft(), request_id="r2")
    assert store.rules["r2"] == created
