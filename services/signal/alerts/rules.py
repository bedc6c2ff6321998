"""Alert rules' domain rules: the settable fields as asked (`AlertDraft`) validated into `AlertSettings` by its
constructor (every rule the contract cannot declare, each with its reason), a new rule with the digest its request
id is deduplicated by, an update that merges the masked fields and validates the whole result again, and the
shape of alert ids."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.core.accounts import AccountRef
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.signal.alerts.store import AlertRule
from services.signal.validation import find_strategy, timeframe_of

DEFAULT_COOLDOWN = 3600
# UpdateAlert paths that may change, and the fields each one validates.
MUTABLE_PATHS = frozenset(
    {"display_name", "symbol", "timeframe", "strategy_id", "parameters", "min_grade", "channels", "cooldown_seconds",
     "enabled"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertDraft:
    """An Alert's settable fields as given (0 and "" are unset; `enabled` None when absent)."""

    display_name: str = ""
    symbol: str = ""
    timeframe: int = 0
    strategy_id: str = ""
    parameters: dict[str, ParamValue]
    min_grade: int = 0
    channels: tuple[int, ...] = ()
    cooldown_seconds: int = 0
    enabled: bool | None = None

    @classmethod
    def of_rule(cls, rule: AlertRule) -> AlertDraft:
        """A stored rule's settings, as if asked again."""
        return cls(
            display_name=rule.display_name,
            symbol=rule.symbol,
            timeframe=int(rule.timeframe),
            strategy_id=rule.strategy_id,
            parameters=dict(rule.parameters),
            min_grade=rule.min_grade,
            channels=tuple(rule.channels),
            cooldown_seconds=rule.cooldown_seconds,
            enabled=rule.enabled,
        )

    def merged(self, changes: AlertDraft, paths: Sequence[str]) -> AlertDraft:
        """These settings with the fields at `paths` taken from `changes` (an absent `enabled` is false)."""
        taken = {path: getattr(changes, path) for path in paths}
        if "enabled" in taken:
            taken["enabled"] = bool(taken["enabled"])
        return replace(self, **taken)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    """The user-settable part of a rule, validated (the symbol's existence is checked by the service)."""

    display_name: str
    symbol: str
    timeframe: Timeframe
    strategy_id: str
    parameters: dict[str, int | float | bool | str]
    min_grade: int
    channels: tuple[int, ...]
    cooldown_seconds: int
    enabled: bool

    @classmethod
    def of(cls, draft: AlertDraft, *, field: str = "alert") -> AlertSettings:
        """A draft's settings: STRATEGY_NOT_FOUND, UNKNOWN/INVALID_PARAMETER or UNSUPPORTED_TIMEFRAME. Its declared
        rules (symbol, display name, grade, channels NO_CHANNELS, cooldown INVALID_COOLDOWN) were checked before
        the handler, on the fields an update names."""
        symbol = draft.symbol.upper()
        timeframe = timeframe_of(draft.timeframe, f"{field}.timeframe")
        strategy = find_strategy(draft.strategy_id, f"{field}.strategy_id")
        parameters = strategy.resolve(draft.parameters, timeframe=timeframe, field=f"{field}.parameters")
        return cls(
            display_name=draft.display_name.strip() or f"{strategy.display_name} on {symbol}",
            symbol=symbol,
            timeframe=timeframe,
            strategy_id=strategy.strategy_id,
            parameters=parameters,
            min_grade=draft.min_grade,
            channels=tuple(dict.fromkeys(draft.channels)),
            cooldown_seconds=draft.cooldown_seconds or DEFAULT_COOLDOWN,
            enabled=draft.enabled if draft.enabled is not None else True,
        )

    def fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in AlertSettings.__dataclass_fields__}


def new_rule(
    settings: AlertSettings, *, alert_id: str, owner: AccountRef, now: datetime, request_id: str | None
) -> AlertRule:
    """A rule to create; its request digest covers every setting."""
    digest = hashlib.sha256(repr(sorted(settings.fields().items())).encode()).hexdigest()
    return AlertRule(
        alert_id=alert_id,
        owner=owner,
        create_time=now,
        update_time=now,
        request_id=request_id,
        request_digest=digest,
        **settings.fields(),  # type: ignore[arg-type]
    )


def updated(rule: AlertRule, changes: AlertDraft, paths: Sequence[str], now: datetime) -> AlertRule:
    """The rule with the masked fields taken from `changes` and the whole result validated again (a new timeframe
    must suit the strategy, a new strategy must accept the parameters)."""
    settings = AlertSettings.of(AlertDraft.of_rule(rule).merged(changes, paths))
    return replace(rule, update_time=now, **settings.fields())  # type: ignore[arg-type]


def new_alert_id() -> str:
    return "alr_" + secrets.token_hex(12)


def alert_id_of(value: str, field: str = "alert_id") -> str:
    """A requested alert id: INVALID_ARGUMENT when empty, ALERT_NOT_FOUND when it cannot be one."""
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(value) > 32 or not value.isascii() or not value.replace("_", "").isalnum():
        raise alert_not_found(value)
    return value


def alert_not_found(alert_id: str) -> NotFound:
    return NotFound(f"no alert {alert_id[:64]!r}", reason="ALERT_NOT_FOUND", metadata={"alert_id": alert_id[:64]})
