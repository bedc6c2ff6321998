"""Ending sessions everywhere at once: the one rule every sign-out follows (logout, a changed or reset password, a
stolen refresh token, a disabled account, a revoked admin role)."""

from __future__ import annotations

from datetime import timedelta

from services.account.records import Session
from services.account.session_store import SessionStore
from services.core.auth.revocation import ACCOUNT_DISABLED, SIGNED_OUT, RevocationList
from services.core.clock import WallClock


class SessionRevocations:
    """Revokes sessions in the database, publishes them to the shared revocation list for as long as their last
    access token can live (its lifetime plus the verifiers' clock leeway), and announces the change."""

    def __init__(
        self,
        *,
        sessions: SessionStore,
        revocations: RevocationList,
        access_token_ttl: timedelta,
        token_leeway: timedelta,
        clock: WallClock,
    ) -> None:
        self._sessions = sessions
        self._revocations = revocations
        self._ttl_seconds = (access_token_ttl + token_leeway).total_seconds()
        self._clock = clock

    async def revoke(
        self,
        account_id: int,
        *,
        reason: str,
        session_id: str | None = None,
        keep_session_id: str | None = None,
    ) -> list[Session]:
        """Revoke the account's sessions (or one, or all but one), so every service refuses their access tokens at
        once, and announce it, so streams open with them end at once. The sessions this call revoked."""
        revoked = await self._sessions.revoke_sessions(
            account_id, now=self._clock(), reason=reason, session_id=session_id, keep_session_id=keep_session_id
        )
        why = ACCOUNT_DISABLED if reason == "account_disabled" else SIGNED_OUT
        for session in revoked:
            await self._revocations.revoke_session(session.session_id, self._ttl_seconds, why=why)
        if revoked:
            await self._revocations.announce(account_id)
        return revoked
