"""Looking an account up for a use case, and checking its password again before a sensitive change."""

from __future__ import annotations

from services.account.passwords import Passwords
from services.account.records import Account
from services.account.store import AccountStore
from services.account.throttle import Throttle
from services.core.errors import NotFound, PermissionDenied


class Accounts:
    """The accounts every part of the domain looks up: existing, active, or proven by their password."""

    def __init__(self, *, store: AccountStore, passwords: Passwords, login_throttle: Throttle) -> None:
        self._store = store
        self._passwords = passwords
        self._login_throttle = login_throttle

    async def account(self, account_id: int) -> Account:
        """The account, NotFound ACCOUNT_NOT_FOUND when it does not exist."""
        account = await self._store.account_by_id(account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist", reason="ACCOUNT_NOT_FOUND")
        return account

    async def active_account(self, account_id: int) -> Account:
        """The account, PERMISSION_DENIED ACCOUNT_DISABLED when an admin disabled it."""
        account = await self.account(account_id)
        if not account.active:
            raise PermissionDenied("this account is disabled", reason="ACCOUNT_DISABLED")
        return account

    async def check_password(self, account_id: int, password: str) -> Account:
        """The account when `password` is its password, else PERMISSION_DENIED INVALID_CREDENTIALS. Guarded by the
        login throttle, so a stolen access token cannot be used to guess the password either."""
        found = await self._store.credentials_by_id(account_id)
        if found is None:
            raise NotFound(f"account {account_id} does not exist", reason="ACCOUNT_NOT_FOUND")
        account, stored_hash = found
        await self._login_throttle.check(email=account.email, ip_address="")
        verification = await self._passwords.verify(stored_hash, password)
        if not verification.matched:
            await self._login_throttle.failed(account.email)
            raise PermissionDenied("wrong password", reason="INVALID_CREDENTIALS")
        if verification.new_hash is not None:
            await self._store.update_account(account_id, password_hash=verification.new_hash)
        return account
