"""Granting and revoking the admin role (operators: `bullant admin grant|revoke EMAIL`)."""

from __future__ import annotations

from services.account.records import Account
from services.account.revocations import SessionRevocations
from services.account.store import AccountStore
from services.account.validation import normalize_email

ADMIN = "admin"


class AdminRoles:
    """Who is an admin. A grant applies from the account's next login or refresh; a revoke signs every session of
    the account out, because live access tokens carry the admin scope."""

    def __init__(self, *, store: AccountStore, revocations: SessionRevocations) -> None:
        self._store = store
        self._revocations = revocations

    async def set_admin(self, email: str, *, grant: bool) -> tuple[Account | None, int]:
        """The account after the change (None: no account has `email`) and how many sessions were signed out;
        INVALID_ARGUMENT EMAIL_INVALID for an email that is not one."""
        account = await self._store.set_role(normalize_email(email), ADMIN, present=grant)
        if account is None or grant:
            return account, 0
        # An admin's live tokens carry the admin scope: end the sessions instead of waiting for them to expire.
        revoked = await self._revocations.revoke(account.account_id, reason="role_changed")
        return account, len(revoked)
