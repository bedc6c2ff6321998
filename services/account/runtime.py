"""What the account domain's parts share: stores, hashing, token issuing, revocations, throttles, clock and policy."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization

from services.account.credential_store import CredentialStore
from services.account.models import Account, Session
from services.account.passwords import HashParameters, Passwords
from services.account.session_store import SessionStore
from services.account.store import AccountStore
from services.account.throttle import Throttle, ThrottlePolicy
from services.core.auth.keys import load_data_key
from services.core.auth.revocation import ACCOUNT_DISABLED, SIGNED_OUT, RevocationList
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.coordination import Cache
from services.core.db.databases import Databases
from services.core.dependencies import Dependencies
from services.core.errors import NotFound, PermissionDenied
from services.core.sealing import Sealer
from services.core.settings import Environment
from services.core.startup import StartupError

log = logging.getLogger("bullant.account")


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPolicy:
    """Lifetimes and limits of the account domain."""

    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=30)
    # Clock difference tolerated by verifiers; revocations outlive the last token they kill by this much.
    token_leeway: timedelta = timedelta(seconds=5)
    verification_token_ttl: timedelta = timedelta(hours=48)
    reset_token_ttl: timedelta = timedelta(hours=1)
    pending_totp_ttl: timedelta = timedelta(minutes=15)
    api_key_default_ttl: timedelta = timedelta(days=90)
    api_key_max_ttl: timedelta = timedelta(days=365)
    max_active_api_keys: int = 25
    verification_emails_per_hour: int = 3
    # Where links in emails point (the web app).
    public_url: str = "http://localhost:8080"
    # Write email links to the log too (the embedded default has no mail server).
    log_email_links: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttles:
    """Brute-force guards per kind of attempt."""

    login: Throttle
    password_reset: Throttle
    registration: Throttle
    verification_email: Throttle


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRuntime:
    """The account domain's collaborators, built once by the servicer's registration."""

    databases: Databases
    accounts: AccountStore
    credentials: CredentialStore
    sessions: SessionStore
    passwords: Passwords
    issuer: TokenIssuer
    revocations: RevocationList
    # The account service's cache namespace (shared with every service's authenticator).
    cache: Cache
    throttles: Throttles
    policy: AccountPolicy
    # Secret for deriving the secrets of API keys created with a request id (idempotent retries).
    api_key_derivation_key: bytes
    # Encrypts the TOTP secrets kept in the database.
    sealer: Sealer
    clock: Callable[[], datetime]

    def now(self) -> datetime:
        """Now, naive UTC like the database columns."""
        return self.clock()

    async def account(self, account_id: int) -> Account:
        """The account, NotFound ACCOUNT_NOT_FOUND when it does not exist."""
        account = await self.accounts.account_by_id(account_id)
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
        found = await self.accounts.credentials_by_id(account_id)
        if found is None:
            raise NotFound(f"account {account_id} does not exist", reason="ACCOUNT_NOT_FOUND")
        account, stored_hash = found
        await self.throttles.login.check(email=account.email, ip_address="")
        verification = await self.passwords.verify(stored_hash, password)
        if not verification.matched:
            await self.throttles.login.failed(account.email)
            raise PermissionDenied("wrong password", reason="INVALID_CREDENTIALS")
        if verification.new_hash is not None:
            await self.accounts.update_account(account_id, password_hash=verification.new_hash)
        return account

    async def revoke_sessions(
        self,
        account_id: int,
        *,
        reason: str,
        session_id: str | None = None,
        keep_session_id: str | None = None,
    ) -> list[Session]:
        """Revoke sessions in the database and publish them to the revocation list, so every service refuses their
        access tokens at once, and announce it, so streams open with them end at once."""
        revoked = await self.sessions.revoke_sessions(
            account_id, now=self.now(), reason=reason, session_id=session_id, keep_session_id=keep_session_id
        )
        ttl = (self.policy.access_token_ttl + self.policy.token_leeway).total_seconds()
        why = ACCOUNT_DISABLED if reason == "account_disabled" else SIGNED_OUT
        for session in revoked:
            await self.revocations.revoke_session(session.session_id, ttl, why=why)
        if revoked:
            await self.revocations.announce(account_id)
        return revoked

    def link(self, path: str, token: str) -> str:
        """A link into the web app carrying a token."""
        return f"{self.policy.public_url.rstrip('/')}/{path}?token={token}"


def build_runtime(deps: Dependencies, *, clock: Callable[[], datetime]) -> AccountRuntime:
    """The account domain's collaborators from the platform's dependencies. The account service signs tokens, so it
    needs the private key (StartupError without one)."""
    settings = deps.settings
    keys = deps.signing_keys
    if keys is None or keys.private_key is None:
        raise StartupError(
            "the account service issues access tokens: set BULLANT_JWT_PRIVATE_KEY_FILE to an Ed25519 private key"
        )
    raw = keys.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    coordination = deps.coordination.for_service("account")
    policy_from = ThrottlePolicy.from_settings(settings)

    def throttle(action: str, policy: ThrottlePolicy = policy_from) -> Throttle:
        return Throttle(coordination.limiter, coordination.cache, policy, action=action)

    return AccountRuntime(
        databases=deps.databases,
        accounts=AccountStore(deps.databases),
        credentials=CredentialStore(deps.databases),
        sessions=SessionStore(deps.databases),
        passwords=Passwords(HashParameters.from_settings(settings)),
        issuer=TokenIssuer(keys, token_policy(settings)),
        revocations=RevocationList(coordination.cache, coordination.pubsub),
        cache=coordination.cache,
        throttles=Throttles(
            login=throttle("login"),
            password_reset=throttle("reset", replace(policy_from, per_email_per_minute=2)),
            registration=throttle("register", replace(policy_from, per_email_per_minute=5, per_ip_per_minute=20)),
            verification_email=throttle("verify-email"),
        ),
        policy=AccountPolicy(
            access_token_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_token_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            public_url=settings.public_url,
            log_email_links=settings.env is Environment.LOCAL,
        ),
        # Derived, not the signing key itself: one secret, two unrelated uses.
        api_key_derivation_key=hmac.new(raw, b"bullant api key derivation v1", hashlib.sha256).digest(),
        sealer=Sealer(load_data_key(settings)),
        clock=clock,
    )
