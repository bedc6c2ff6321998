"""How a request reaches an account's data: the account and the shard its rows live in, as one value.

An `AccountRef` is made once, at the edge, and every unit of work on the account's shard goes through
`Databases.run_for(ref, work)`. Where the caller is authenticated it is `Identity.ref` – the shard claim the platform
signed into the access token (or, for an API key, the shard directory's answer read when the key was resolved).
Where no identity of the account exists yet – sign-up, login, refresh, an email link, an admin acting on another
account – it is `Databases.directory_ref(account_id)`, the shard directory's answer. Both agree, because a shard
assignment is written once and never changes (docs/architecture.md, "Shards").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account and the shard that holds its rows (backtests, alert rules and firings, the profile)."""

    account_id: int
    shard: int
