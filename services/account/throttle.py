"""Brute-force protection: rate limits per email and per client IP, and a temporary lockout after repeated failures.

State lives in the coordination backend (Redis in production), so every replica counts the same attempts.
Unknown emails are throttled and locked exactly like real ones, so throttling reveals nothing about accounts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.core.coordination import Cache, RateLimiter
from services.core.errors import ResourceExhausted
from services.core.settings import AccountSettings

_MINUTE = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """Attempts allowed per minute per email and per IP, and the lockout after consecutive failures."""

    per_email_per_minute: int = 10
    per_ip_per_minute: int = 60
    lockout_failures: int = 10
    lockout_seconds: int = 900

    @classmethod
    def from_settings(cls, account: AccountSettings) -> ThrottlePolicy:
        return cls(
            per_email_per_minute=account.login_rate_per_email_per_minute,
            per_ip_per_minute=account.login_rate_per_ip_per_minute,
            lockout_failures=account.login_lockout_failures,
            lockout_seconds=account.login_lockout_seconds,
        )


def _subject(value: str) -> str:
    # Keys carry a digest, not the email: cache keys show up in monitoring and must not list users.
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


class Throttle:
    """Guards one kind of attempt (login, password reset, registration) identified by `action`."""

    def __init__(self, limiter: RateLimiter, cache: Cache, policy: ThrottlePolicy, *, action: str) -> None:
        self._limiter = limiter
        self._cache = cache
        self._policy = policy
        self._action = action

    async def check(self, *, email: str, ip_address: str) -> None:
        """Spend one attempt for `email` and `ip_address`; RESOURCE_EXHAUSTED RATE_LIMITED or LOGIN_LOCKED (with the
        delay) when the attempt must not go ahead."""
        locked_for = await self._cache.ttl(self._lock_key(email))
        if locked_for is not None:
            raise ResourceExhausted(
                "too many failed attempts: this account is temporarily locked",
                retry_after_seconds=max(locked_for, 1.0),
                reason="LOGIN_LOCKED",
            )
        if ip_address:
            await self._hit(f"{self._action}-ip:{ip_address}", self._policy.per_ip_per_minute)
        await self._hit(f"{self._action}-email:{_subject(email)}", self._policy.per_email_per_minute)

    async def failed(self, email: str) -> None:
        """Count a failure; the failure that reaches the threshold starts the lockout."""
        key = f"{self._action}-failures:{_subject(email)}"
        failures = await self._cache.increment(key, ttl_seconds=self._policy.lockout_seconds)
        if failures >= self._policy.lockout_failures:
            await self._cache.set(self._lock_key(email), b"1", ttl_seconds=self._policy.lockout_seconds)
            await self._cache.delete(key)

    async def succeeded(self, email: str) -> None:
        """A success resets the failure count."""
        await self._cache.delete(f"{self._action}-failures:{_subject(email)}")

    async def limit(self, key: str, per_window: int, window_seconds: float) -> None:
        """A plain rate limit on `key` (e.g. verification emails per account per hour)."""
        await self._hit(f"{self._action}:{key}", per_window, window_seconds)

    def _lock_key(self, email: str) -> str:
        return f"{self._action}-lock:{_subject(email)}"

    async def _hit(self, key: str, limit: int, window_seconds: float = _MINUTE) -> None:
        decision = await self._limiter.hit(key, limit, window_seconds)
        if not decision.allowed:
            raise ResourceExhausted(
                "too many attempts: slow down",
                retry_after_seconds=max(decision.retry_after_seconds, 0.001),
                reason="RATE_LIMITED",
            )
