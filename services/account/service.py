"""The account domain: registration, email verification, passwords, profile and admin user management."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.account.accounts import Accounts
from services.account.credentials import hash_secret, new_email_token
from services.account.factors import TwoFactor
from services.account.keys import ApiKeys
from services.account.passwords import Passwords
from services.account.policy import AccountPolicy, Throttles
from services.account.profile import (
    Profile,
    apply_update,
    default_profile,
    finalize_profile,
    profile_from_json,
    profile_to_json,
    validate_profile,
)
from services.account.records import Account, AccountState, Role
from services.account.revocations import SessionRevocations
from services.account.sessions import Sessions
from services.account.store import AccountStore, Purpose
from services.account.validation import Checks, check_password
from services.core.accounts import AccountRef
from services.core.clock import WallClock
from services.core.db.outbox import OutboxMessage
from services.core.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument
from services.core.links import RESET_PASSWORD_PATH, VERIFY_EMAIL_PATH
from services.core.paging import COUNT, Cursor, Page, PageTokens, keyset_page

EMAIL = "email"
# What ListUsers' page tokens hold.
_USERS_CURSOR = Cursor.of("account.ListUsers", after=COUNT)

log = logging.getLogger("bullant.account")


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """What Register needs besides the normalised email and the password."""

    display_name: str = ""
    timezone: str = ""
    locale: str = ""
    request_id: str = ""
    ip_address: str = ""


class AccountService:
    """The account domain's entry point; the servicer calls only this (and its parts)."""

    def __init__(
        self,
        *,
        accounts: Accounts,
        store: AccountStore,
        passwords: Passwords,
        throttles: Throttles,
        revocations: SessionRevocations,
        policy: AccountPolicy,
        two_factor: TwoFactor,
        sessions: Sessions,
        api_keys: ApiKeys,
        pages: PageTokens,
        clock: WallClock,
    ) -> None:
        self._accounts = accounts
        self._store = store
        self._passwords = passwords
        self._throttles = throttles
        self._revocations = revocations
        self._policy = policy
        self._pages = pages
        self._clock = clock
        # The use cases of sessions, second factors and API keys, called by the servicer through these facades.
        self.two_factor = two_factor
        self.sessions = sessions
        self.api_keys = api_keys

    def now(self) -> datetime:
        """Now, naive UTC like the database columns."""
        return self._clock()

    async def account(self, account_id: int) -> Account:
        """The account, NotFound ACCOUNT_NOT_FOUND when it does not exist."""
        return await self._accounts.account(account_id)

    # -- registration and verification -----------------------------------------------------------------------------

    async def register(self, email: str, password: str, details: Registration) -> Account:
        """Create an account and queue its verification email. A retry with the same request id and credentials
        returns the account the first call created. Every problem with the email, the password and the initial
        profile is reported at once, named by the request's fields."""
        checks = Checks()
        email = checks.email("email", email)
        checks.new_password("password", password, email)
        checks.done()
        try:
            return await self._register(email, password, details)
        except InvalidArgument as error:
            # The initial profile is validated as a profile; name the request's own fields.
            renamed = [FieldViolation(v.field.removeprefix("profile."), v.description) for v in error.violations]
            raise InvalidArgument(renamed, reason=error.reason) from None

    async def _register(self, email: str, password: str, details: Registration) -> Account:
        password = check_password(password, email=email)
        initial = validate_profile(
            finalize_profile(
                Profile(display_name=details.display_name, timezone=details.timezone, locale=details.locale), email
            )
        )
        if details.request_id:
            earlier = await self._store.account_by_register_request(details.request_id)
            if earlier is not None:
                return await self._earlier_registration(earlier, email, password)
        await self._throttles.registration.check(email=email, ip_address=details.ip_address)
        password_hash = await self._passwords.hash(password)
        try:
            account, ref = await self._store.create_account(
                email=email, password_hash=password_hash, request_id=details.request_id or None, now=self._clock()
            )
        except AlreadyExists as error:
            if error.reason == "REQUEST_ID_TAKEN":
                earlier = await self._store.account_by_register_request(details.request_id)
                if earlier is not None:
                    return await self._earlier_registration(earlier, email, password)
            raise
        await self._store.save_profile_document(ref, profile_to_json(initial), self._clock())
        await self._send_verification(account)
        log.info("account registered", extra={"account_id": account.account_id})
        return account

    async def _earlier_registration(self, earlier: tuple[Account, str], email: str, password: str) -> Account:
        account, stored_hash = earlier
        if account.email != email or not (await self._passwords.verify(stored_hash, password)).matched:
            raise AlreadyExists("this request id was used for a different request", reason="REQUEST_ID_REUSED")
        return account

    async def _send_verification(self, account: Account) -> None:
        ttl = self._policy.verification_token_ttl
        await self._email_link(
            account,
            Purpose.VERIFY_EMAIL,
            VERIFY_EMAIL_PATH,
            ttl,
            "verification",
            expire_hours=int(ttl.total_seconds() // 3600),
        )

    async def _email_link(
        self, account: Account, purpose: str, path: str, ttl: timedelta, kind: str, **payload: object
    ) -> None:
        """Store a single-use token for `purpose` and queue the email carrying its link, in one transaction; `kind`
        names the email in the log ("verification", "password reset")."""
        token = new_email_token()
        now = self._clock()
        link = self._link(path, token)
        await self._store.issue_email_token(
            account_id=account.account_id,
            purpose=purpose,
            token_hash=hash_secret(token),
            now=now,
            expire_time=now + ttl,
            message=OutboxMessage(
                account_id=account.account_id,
                channel=EMAIL,
                recipient=account.email,
                template=purpose,
                payload={"link": link, **payload},
            ),
        )
        if self._policy.log_email_links:
            # The embedded default has no mail server: the developer follows the link from the log.
            log.info("%s email queued: %s", kind, link, extra={"account_id": account.account_id})

    def _link(self, path: str, token: str) -> str:
        """A link into the web app carrying a token."""
        return f"{self._policy.public_url.rstrip('/')}/{path}?token={token}"

    async def verify_email(self, token: str) -> Account:
        """Verify the email of the token's account. Presenting a token that already verified its account again
        succeeds, so a double-clicked link is harmless."""
        token_hash = hash_secret(token)
        stored = await self._store.email_token(token_hash, Purpose.VERIFY_EMAIL)
        if stored is None or stored.supersede_time is not None:
            raise InvalidArgument.field("token", "unknown or superseded token", reason="VERIFICATION_TOKEN_INVALID")
        if stored.use_time is not None:
            account = await self._accounts.account(stored.account_id)
            if account.email_verified:
                return account
            raise InvalidArgument.field("token", "this token was used already", reason="VERIFICATION_TOKEN_INVALID")
        now = self._clock()
        if stored.expire_time <= now:
            raise FailedPrecondition(
                "this verification link expired: ask for a new one", reason="VERIFICATION_TOKEN_EXPIRED"
            )
        account = await self._accounts.account(stored.account_id)
        values = {} if account.email_verified else {"verify_time": now}
        verified = await self._store.use_email_token(token_hash, now, **values)
        if verified is None:
            # A concurrent click used it first.
            return await self._accounts.account(stored.account_id)
        log.info("email verified", extra={"account_id": verified.account_id})
        return verified

    async def resend_verification(self, account_id: int) -> datetime:
        """Issue a new verification token (older ones stop working); a few per hour at most. When it expires."""
        account = await self._accounts.active_account(account_id)
        if account.email_verified:
            raise FailedPrecondition("the email is already verified", reason="EMAIL_ALREADY_VERIFIED")
        await self._throttles.verification_email.limit(
            str(account_id), self._policy.verification_emails_per_hour, 3600.0
        )
        await self._send_verification(account)
        return self._clock() + self._policy.verification_token_ttl

    # -- passwords --------------------------------------------------------------------------------------------------

    async def request_password_reset(self, email: str, ip_address: str) -> None:
        """Queue a reset link when the email has an account; the answer is the same either way."""
        checks = Checks()
        email = checks.email("email", email)
        checks.done()
        await self._throttles.password_reset.check(email=email, ip_address=ip_address)
        found = await self._store.credentials_by_email(email)
        if found is None or not found[0].active:
            return
        ttl = self._policy.reset_token_ttl
        await self._email_link(
            found[0],
            Purpose.RESET_PASSWORD,
            RESET_PASSWORD_PATH,
            ttl,
            "password reset",
            expire_minutes=int(ttl.total_seconds() // 60),
        )

    async def reset_password(self, token: str, new_password: str) -> None:
        """Set a new password with a reset token; every session and API key of the account is revoked."""
        token_hash = hash_secret(token)
        stored = await self._store.email_token(token_hash, Purpose.RESET_PASSWORD)
        if stored is None or stored.supersede_time is not None or stored.use_time is not None:
            raise InvalidArgument.field("token", "unknown, used or superseded token", reason="RESET_TOKEN_INVALID")
        now = self._clock()
        if stored.expire_time <= now:
            raise FailedPrecondition("this reset link expired: ask for a new one", reason="RESET_TOKEN_EXPIRED")
        account = await self._accounts.account(stored.account_id)
        password = check_password(new_password, email=account.email, field="new_password")
        password_hash = await self._passwords.hash(password)
        if await self._store.use_email_token(token_hash, now, password_hash=password_hash) is None:
            raise InvalidArgument.field("token", "this token was used already", reason="RESET_TOKEN_INVALID")
        await self._revocations.revoke(account.account_id, reason="password_reset")
        await self.api_keys.revoke_all(account.account_id, reason="password_reset")
        log.info("password reset", extra={"account_id": account.account_id})

    async def change_password(self, account_id: int, session_id: str, current: str, new: str) -> int:
        """Replace the password; every other session is revoked. How many sessions were revoked."""
        account = await self._accounts.check_password(account_id, current)
        password = check_password(new, email=account.email, field="new_password")
        if password == current:
            raise InvalidArgument.field(
                "new_password", "must differ from the current password", reason="PASSWORD_UNCHANGED"
            )
        await self._store.update_account(account_id, password_hash=await self._passwords.hash(password))
        revoked = await self._revocations.revoke(account_id, reason="password_changed", keep_session_id=session_id)
        log.info("password changed", extra={"account_id": account_id})
        return len(revoked)

    # -- profile ----------------------------------------------------------------------------------------------------

    async def profile(self, ref: AccountRef) -> Profile:
        """The stored profile (in the account's shard) with defaults filled in."""
        account = await self._accounts.account(ref.account_id)
        stored = await self._store.profile_document(ref)
        if stored is None:
            return default_profile(account.email)
        document, update_time = stored
        return finalize_profile(profile_from_json(document, update_time=update_time), account.email)

    async def update_profile(self, ref: AccountRef, incoming: Profile, paths: Sequence[str]) -> Profile:
        """Change the named fields; the whole profile after the change."""
        account = await self._accounts.account(ref.account_id)
        current = await self.profile(ref)
        updated = validate_profile(finalize_profile(apply_update(current, incoming, paths), account.email))
        await self._store.save_profile_document(ref, profile_to_json(updated), self._clock())
        return await self.profile(ref)

    # -- admin ------------------------------------------------------------------------------------------------------

    async def list_users(
        self, *, email_query: str, role: Role | None, state: AccountState | None, size: int, page_token: str
    ) -> Page[Account]:
        """Accounts matching the filters in account id order, a page at a time."""
        return await keyset_page(
            self._pages,
            _USERS_CURSOR,
            page_token,
            query=f"{email_query}|{role.value if role else ''}|{int(state) if state else 0}",
            size=size,
            fetch=lambda after, limit: self._store.list_accounts(
                after_id=after["after"] if after else 0,
                limit=limit,
                email_query=email_query.strip(),
                role=role.value if role else None,
                state=state,
            ),
            position=lambda account: {"after": account.account_id},
        )

    async def disable_user(self, admin_id: int, account_id: int, reason: str) -> tuple[Account, int, int]:
        """Disable an account and revoke its sessions and keys; (account, sessions revoked, keys revoked)."""
        if admin_id == account_id:
            raise FailedPrecondition("an admin cannot disable their own account", reason="CANNOT_DISABLE_SELF")
        reason = reason.strip()
        account = await self._accounts.account(account_id)
        if account.active:
            updated = await self._store.update_account(
                account_id, state=int(AccountState.DISABLED), disable_time=self._clock(), disable_reason=reason
            )
            assert updated is not None
            account = updated
            log.warning("account disabled", extra={"account_id": account_id, "admin_id": admin_id})
        # Revoke even when it was disabled already: a retry after a partial failure finishes the job.
        sessions = await self._revocations.revoke(account_id, reason="account_disabled")
        keys = await self.api_keys.revoke_all(account_id, reason="account_disabled")
        return account, len(sessions), keys

    async def enable_user(self, admin_id: int, account_id: int) -> Account:
        account = await self._accounts.account(account_id)
        if account.active:
            return account
        updated = await self._store.update_account(
            account_id, state=int(AccountState.ACTIVE), disable_time=None, disable_reason=""
        )
        assert updated is not None
        log.warning("account enabled", extra={"account_id": account_id, "admin_id": admin_id})
        return updated
