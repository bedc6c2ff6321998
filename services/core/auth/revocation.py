"""Revoked sessions and access tokens, shared through the cache so every replica refuses them at once."""

from __future__ import annotations

from services.core.coordination import Cache

TOKEN_PREFIX = "revoked-token:"  # noqa: S105 - a key prefix, not a secret
SESSION_PREFIX = "revoked-session:"


class RevocationList:
    """Which access tokens (by jti) and sessions (by id) were revoked before their tokens expire.

    Entries live only as long as the tokens they kill could: an access token is useless after its expiry anyway.
    The cache is the account service's namespace, shared by every service.
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def revoke_token(self, token_id: str, ttl_seconds: float) -> None:
        """Refuse one access token from now on."""
        await self._cache.set(TOKEN_PREFIX + token_id, b"1", ttl_seconds=max(ttl_seconds, 1.0))

    async def revoke_session(self, session_id: str, ttl_seconds: float) -> None:
        """Refuse every access token of a session (logout, theft detection, a disabled account)."""
        await self._cache.set(SESSION_PREFIX + session_id, b"1", ttl_seconds=max(ttl_seconds, 1.0))

    async def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        """Whether the token or its session was revoked; one round trip."""
        keys = [TOKEN_PREFIX + token_id] + ([SESSION_PREFIX + session_id] if session_id else [])
        return any(value is not None for value in await self._cache.get_many(keys))
