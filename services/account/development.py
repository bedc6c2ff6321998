"""Development access tokens (`bullant token`, and `bullant backtest` without a token): signed with the local
development key for an account id of the caller's choice, in BULLANT_ENV=local only."""

from __future__ import annotations

from services.core.access import SCOPES
from services.core.accounts import AccountRef
from services.core.auth.keys import load_signing_keys
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.db.databases import DatabaseConfig, Databases
from services.core.errors import NotFound
from services.core.settings import Environment, Settings

DEVELOPMENT_SESSION = "development"


class DevelopmentTokenRefused(Exception):
    """No development token: the message says why (another environment, an unknown scope)."""


async def development_token(settings: Settings, account_id: int, scopes: list[str], *, admin: bool) -> str:
    """An access token for `account_id` with `scopes` (and the admin role and scope when `admin`), claiming the shard
    the platform routes the account to. DevelopmentTokenRefused outside the local environment or for an unknown
    scope; StartupError when the signing key or the databases cannot be used."""
    if settings.env is not Environment.LOCAL:
        raise DevelopmentTokenRefused("development tokens exist only in BULLANT_ENV=local; sign in with Login")
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise DevelopmentTokenRefused(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(sorted(SCOPES))}")
    roles = ["user", "admin"] if admin else ["user"]
    scopes = [*scopes, "admin"] if admin and "admin" not in scopes else list(scopes)
    issuer = TokenIssuer(load_signing_keys(settings), token_policy(settings.auth))
    ref = await development_ref(settings, account_id)
    token, _claims = issuer.issue(
        account_id=ref.account_id, shard=ref.shard, roles=roles, scopes=scopes, session_id=DEVELOPMENT_SESSION
    )
    return token


async def development_ref(settings: Settings, account_id: int) -> AccountRef:
    """The ref a development token claims: the directory's for an existing account, else the shard a new account
    with this id would be given – so the token reaches the same data as the account's own sessions."""
    databases = Databases(DatabaseConfig.from_settings(settings))
    try:
        await databases.start()
        try:
            return await databases.directory_ref(account_id)
        except NotFound:
            return AccountRef(account_id, databases.choose_shard(account_id))
    finally:
        await databases.stop()
