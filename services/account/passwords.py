"""Password hashing with argon2id, off the event loop, with equal work for accounts that do not exist."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.core.settings import AccountSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class HashParameters:
    """argon2id cost: time (passes), memory in KiB and lanes."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4

    @classmethod
    def from_settings(cls, account: AccountSettings) -> HashParameters:
        return cls(
            time_cost=account.password_hash_time_cost,
            memory_kib=account.password_hash_memory_kib,
            parallelism=account.password_hash_parallelism,
        )


@dataclass(frozen=True, slots=True)
class Verification:
    """Whether a password matched, and the new hash to store when the stored one used older parameters."""

    matched: bool
    new_hash: str | None = None


class Passwords:
    """Hashes and checks passwords. argon2 is deliberately slow (tens of milliseconds), so it runs in a worker thread
    (the C code releases the GIL) and the server keeps serving while it works."""

    def __init__(self, parameters: HashParameters) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        # Made now, not on the first unknown email: that first answer would otherwise take twice as long.
        self._dummy_hash = self._hasher.hash("not the password of any account")

    async def hash(self, password: str) -> str:
        """A new argon2id hash of `password` with a fresh salt."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check `password` against `stored_hash`. With no stored hash (unknown account) a dummy hash is checked
        instead, so that the answer takes as long as for a real account and timing tells nothing."""
        if stored_hash is None:
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return Verification(False)
        if not await asyncio.to_thread(self._verify, stored_hash, password):
            return Verification(False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(True, await self.hash(password))
        return Verification(True)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
