"""The account domain's records: accounts, sessions, API keys, TOTP credentials and issued token pairs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum


class Role(StrEnum):
    """Roles of an account; every account has USER."""

    USER = "user"
    ADMIN = "admin"


class AccountState(IntEnum):
    """Stored state of an account (the numbers are bullant.account.v1.AccountState's)."""

    ACTIVE = 1
    DISABLED = 2


class ApiKeyState(IntEnum):
    """State of an API key at a given moment (bullant.account.v1.ApiKeyState's numbers)."""

    ACTIVE = 1
    EXPIRED = 2
    REVOKED = 3


class Scope(StrEnum):
    """Scopes a credential may carry (see the AccountService contract)."""

    READ = "read"
    TRADE = "trade"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """An account as the domain sees it; never holds a secret."""

    account_id: int
    email: str
    roles: tuple[str, ...]
    state: AccountState
    totp_enabled: bool
    create_time: datetime
    verify_time: datetime | None = None
    last_login_time: datetime | None = None
    disable_time: datetime | None = None
    disable_reason: str = ""

    @property
    def email_verified(self) -> bool:
        return self.verify_time is not None

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @property
    def active(self) -> bool:
        return self.state is AccountState.ACTIVE


def session_scopes(account: Account) -> tuple[str, ...]:
    """What a signed-in session of `account` may do: read; trade once verified; admin for admins."""
    scopes = [Scope.READ.value]
    if account.email_verified:
        scopes.append(Scope.TRADE.value)
    if account.is_admin:
        scopes.append(Scope.ADMIN.value)
    return tuple(scopes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One login: a refresh-token family and the device it came from."""

    session_id: str
    account_id: int
    device_name: str
    user_agent: str
    ip_address: str
    create_time: datetime
    last_use_time: datetime
    expire_time: datetime
    revoke_time: datetime | None = None
    revoke_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """An API key without its secret."""

    api_key_id: str
    account_id: int
    name: str
    scopes: tuple[str, ...]
    prefix: str
    create_time: datetime
    expire_time: datetime
    last_use_time: datetime | None = None
    revoke_time: datetime | None = None

    def state(self, now: datetime) -> ApiKeyState:
        if self.revoke_time is not None:
            return ApiKeyState.REVOKED
        if self.expire_time <= now:
            return ApiKeyState.EXPIRED
        return ApiKeyState.ACTIVE


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpCredential:
    """A TOTP secret, sealed (services.core.sealing): pending until confirmed, then active. `last_step` is the newest
    time step a code was accepted for, so a code cannot be replayed."""

    account_id: int
    sealed_secret: str
    active: bool
    create_time: datetime
    expire_time: datetime | None
    last_step: int
    recovery_salt: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    """What Login and Refresh hand out."""

    access_token: str
    access_expire_time: datetime
    refresh_token: str
    refresh_expire_time: datetime
    session_id: str
    account: Account
    scopes: tuple[str, ...]
