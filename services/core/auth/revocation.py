"""Revoked sessions and access tokens, shared through the cache so every replica refuses them at once, and the
credential events that tell every replica's open streams to check their credentials again right away."""

from __future__ import annotations

import json
import logging

from services.core.coordination import Cache, PubSub, Subscription
from services.core.errors import DomainError, PermissionDenied, Unauthenticated

TOKEN_PREFIX = "revoked-token:"  # noqa: S105 - a key prefix, not a secret
SESSION_PREFIX = "revoked-session:"
# Published (in the account service's namespace) after any credential of an account was revoked, or the account
# disabled: {"account_id": N}.
CREDENTIALS_CHANNEL = "credentials"
# Why a session was revoked, as its cache entry records it (older entries hold b"1": signed out).
SIGNED_OUT = b"1"
ACCOUNT_DISABLED = b"account_disabled"

log = logging.getLogger("bullant.auth")


def revocation_error(why: bytes) -> DomainError:
    """What a caller whose session was revoked for `why` is told."""
    if why == ACCOUNT_DISABLED:
        return PermissionDenied("this session ended when an admin disabled the account", reason="ACCOUNT_DISABLED")
    return Unauthenticated("this session was signed out", reason="TOKEN_REVOKED")


class RevocationList:
    """Which access tokens (by jti) and sessions (by id) were revoked before their tokens expire, and the channel
    that announces revocations to every replica.

    Entries live only as long as the tokens they kill could: an access token is useless after its expiry anyway.
    The cache and the pub-sub are the account service's namespace, shared by every service.
    """

    def __init__(self, cache: Cache, events: PubSub | None = None) -> None:
        self._cache = cache
        self._events = events

    async def revoke_token(self, token_id: str, ttl_seconds: float) -> None:
        """Refuse one access token from now on."""
        await self._cache.set(TOKEN_PREFIX + token_id, SIGNED_OUT, ttl_seconds=max(ttl_seconds, 1.0))

    async def revoke_session(self, session_id: str, ttl_seconds: float, *, why: bytes = SIGNED_OUT) -> None:
        """Refuse every access token of a session (logout, theft detection, a disabled account: `why`)."""
        await self._cache.set(SESSION_PREFIX + session_id, why, ttl_seconds=max(ttl_seconds, 1.0))

    async def revocation(self, token_id: str, session_id: str | None) -> DomainError | None:
        """The refusal of a revoked token or session, None when neither was revoked; one round trip."""
        keys = [TOKEN_PREFIX + token_id] + ([SESSION_PREFIX + session_id] if session_id else [])
        found = [value for value in await self._cache.get_many(keys) if value is not None]
        if not found:
            return None
        return revocation_error(ACCOUNT_DISABLED if ACCOUNT_DISABLED in found else found[0])

    async def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        """Whether the token or its session was revoked; one round trip."""
        return await self.revocation(token_id, session_id) is not None

    async def announce(self, account_id: int) -> None:
        """Tell every replica that credentials of `account_id` changed (call it after the change is stored), so
        streams open under them check again now rather than at their next periodic check. Best effort: a lost
        announcement only delays the end of a stream until that check."""
        if self._events is None:
            return
        try:
            await self._events.publish(CREDENTIALS_CHANNEL, json.dumps({"account_id": account_id}).encode())
        except Exception:
            log.warning("could not announce a credential change of account %d", account_id, exc_info=True)

    def subscribe(self) -> Subscription | None:
        """The announcements (see `announce`), None without a pub-sub."""
        return None if self._events is None else self._events.subscribe([CREDENTIALS_CHANNEL])


def announced_account(data: bytes) -> int | None:
    """The account id of an announcement, None for anything else."""
    try:
        value = json.loads(data)
        account_id = value["account_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return account_id if type(account_id) is int else None
