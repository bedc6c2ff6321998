"""Who owns what the signal domain stores for an account: the account and the shard its rows live in."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.auth.identity import require_identity


@dataclass(frozen=True, slots=True)
class Owner:
    """The account a backtest, an alert rule or a firing belongs to, and its shard (from the caller's credentials)."""

    account_id: int
    shard: int


def caller() -> Owner:
    """The calling account, which owns what it creates here."""
    identity = require_identity()
    return Owner(identity.account_id, identity.shard)
