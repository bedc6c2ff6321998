"""Signing in and staying signed in: login with the second factor, refresh-token rotation with theft detection,
logout, and the session list."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.account.accounts import Accounts
from services.account.credentials import hash_secret, new_refresh_token, new_session_id
from services.account.factors import SecondFactor, TwoFactor
from services.account.passwords import Passwords
from services.account.records import Account, Session, TokenPair, session_scopes
from services.account.revocations import SessionRevocations
from services.account.session_store import SessionStore
from services.account.store import AccountStore
from services.account.throttle import Throttle
from services.account.validation import Checks
from services.core.accounts import AccountRef
from services.core.auth.tokens import TokenIssuer
from services.core.clock import WallClock
from services.core.errors import NotFound, PermissionDenied, Unauthenticated
from services.core.paging import Page, PageTokens, keyset_after, keyset_cursor, keyset_page

log = logging.getLogger("bullant.account")

INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
# What ListSessions' page tokens hold.
_SESSIONS_CURSOR = keyset_cursor("account.ListSessions")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """Where a login or refresh comes from (taken from the transport, never from request fields)."""

    ip_address: str = ""
    user_agent: str = ""
    device_name: str = ""


class Sessions:
    """Login, Refresh, Logout, ListSessions and RevokeSession."""

    def __init__(
        self,
        *,
        accounts: Accounts,
        store: AccountStore,
        sessions: SessionStore,
        passwords: Passwords,
        login_throttle: Throttle,
        two_factor: TwoFactor,
        issuer: TokenIssuer,
        directory_ref: Callable[[int], Awaitable[AccountRef]],
        revocations: SessionRevocations,
        refresh_ttl: timedelta,
        pages: PageTokens,
        clock: WallClock,
    ) -> None:
        self._accounts = accounts
        self._store = store
        self._sessions = sessions
        self._passwords = passwords
        self._login_throttle = login_throttle
        self._two_factor = two_factor
        self._issuer = issuer
        # The account's ref from the shard directory (a login or refresh has no identity yet): its shard becomes the
        # access token's signed shard claim, which every later request routes by.
        self._directory_ref = directory_ref
        self._revocations = revocations
        self._refresh_ttl = refresh_ttl
        self._pages = pages
        self._clock = clock

    async def login(
        self, email: str, password: str, second_factor: SecondFactor | None, client: ClientInfo
    ) -> TokenPair:
        """Check the credentials and start a session. Unknown emails cost the same work and give the same answer as
        wrong passwords; failures count towards the lockout of the email, known or not."""
        checks = Checks()
        email = checks.email("email", email)
        checks.done()
        throttle = self._login_throttle
        await throttle.check(email=email, ip_address=client.ip_address)
        found = await self._store.credentials_by_email(email)
        verification = await self._passwords.verify(found[1] if found else None, password)
        if found is None or not verification.matched:
            await throttle.failed(email)
            raise Unauthenticated("wrong email or password", reason=INVALID_CREDENTIALS)
        account = found[0]
        if not account.active:
            raise PermissionDenied("this account is disabled", reason="ACCOUNT_DISABLED")
        if account.totp_enabled:
            try:
                await self._two_factor.check(account.account_id, second_factor, login=True)
            except (Unauthenticated, PermissionDenied) as error:
                if error.reason != "TOTP_REQUIRED":
                    await throttle.failed(email)
                raise
        await throttle.succeeded(email)
        now = self._clock()
        login_values: dict[str, object] = {"last_login_time": now}
        if verification.new_hash is not None:
            # The hashing parameters were raised since this password was stored.
            login_values["password_hash"] = verification.new_hash
        session = Session(
            session_id=new_session_id(),
            account_id=account.account_id,
            device_name=client.device_name,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
            create_time=now,
            last_use_time=now,
            expire_time=now + self._refresh_ttl,
        )
        refresh_token = new_refresh_token()
        await self._sessions.start_session(session, hash_secret(refresh_token), login_values=login_values)
        log.info(
            "login",
            extra={"account_id": account.account_id, "session_id": session.session_id, "ip": client.ip_address},
        )
        account = await self._accounts.account(account.account_id)
        return await self._pair(account, session.session_id, refresh_token, session.expire_time, now)

    async def refresh(self, refresh_token: str, client: ClientInfo) -> TokenPair:
        """Rotate a refresh token. A token presented a second time means two parties hold it: the whole session is
        revoked, so the thief's copy and the victim's both stop working."""
        old_hash = hash_secret(refresh_token)
        record = await self._sessions.refresh_record(old_hash)
        if record is None:
            raise Unauthenticated("unknown refresh token", reason="REFRESH_TOKEN_INVALID")
        session = record.session
        if session.revoke_time is not None:
            raise Unauthenticated("this session was signed out", reason="SESSION_REVOKED")
        if record.rotate_time is not None:
            await self._reused(session)
        now = self._clock()
        if record.expire_time <= now:
            raise Unauthenticated("refresh token expired: sign in again", reason="REFRESH_TOKEN_EXPIRED")
        account = await self._accounts.active_account(session.account_id)
        new_token = new_refresh_token()
        expire_time = now + self._refresh_ttl
        rotated = await self._sessions.rotate(
            old_hash=old_hash,
            new_hash=hash_secret(new_token),
            session_id=session.session_id,
            now=now,
            expire_time=expire_time,
            ip_address=client.ip_address or session.ip_address,
        )
        if not rotated:
            # Another call exchanged the same token between our read and our write.
            await self._reused(session)
        return await self._pair(account, session.session_id, new_token, expire_time, now)

    async def _reused(self, session: Session) -> None:
        await self._revocations.revoke(session.account_id, reason="refresh_token_reused", session_id=session.session_id)
        log.warning(
            "refresh token reused: session revoked",
            extra={"account_id": session.account_id, "session_id": session.session_id},
        )
        raise Unauthenticated(
            "this refresh token was already used: the session has been revoked", reason="REFRESH_TOKEN_REUSED"
        )

    async def logout(self, account_id: int, session_id: str, *, all_sessions: bool) -> int:
        """Revoke the current session, or every session of the account; how many this call revoked."""
        revoked = await self._revocations.revoke(
            account_id, reason="logout", session_id=None if all_sessions else session_id
        )
        return len(revoked)

    async def list(self, account_id: int, *, size: int, page_token: str) -> Page[Session]:
        """Active sessions, most recently used first, a page at a time."""
        return await keyset_page(
            self._pages,
            _SESSIONS_CURSOR,
            page_token,
            size=size,
            fetch=lambda after, limit: self._sessions.list_sessions(
                account_id, now=self._clock(), after=keyset_after(after), limit=limit
            ),
            position=lambda session: {"t": session.last_use_time, "id": session.session_id},
        )

    async def revoke(self, account_id: int, session_id: str) -> None:
        """Revoke one of the caller's sessions; another account's session is NotFound, like an unknown one."""
        session = await self._sessions.session(session_id)
        if session is None or session.account_id != account_id:
            raise NotFound("no such session", reason="SESSION_NOT_FOUND")
        await self._revocations.revoke(account_id, reason="revoked", session_id=session_id)

    async def _pair(
        self, account: Account, session_id: str, refresh_token: str, refresh_expire: datetime, now: datetime
    ) -> TokenPair:
        scopes = session_scopes(account)
        ref = await self._directory_ref(account.account_id)
        access_token, claims = self._issuer.issue(
            account_id=ref.account_id,
            shard=ref.shard,
            roles=account.roles,
            scopes=scopes,
            session_id=session_id,
            now=now.replace(tzinfo=UTC).timestamp(),
            email_verified=account.email_verified,
        )
        return TokenPair(
            access_token=access_token,
            access_expire_time=datetime.fromtimestamp(claims.expires_at, UTC).replace(tzinfo=None),
            refresh_token=refresh_token,
            refresh_expire_time=refresh_expire,
            session_id=session_id,
            account=account,
            scopes=scopes,
        )
