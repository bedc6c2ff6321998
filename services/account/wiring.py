"""Builds the account domain from the platform's dependencies: stores, the typed parts each use case needs, the
service and its servicer (the only place they are put together)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from bullant.account.v1 import account_pb2_grpc
from services.account.accounts import Accounts
from services.account.credential_store import CredentialStore
from services.account.factors import TwoFactor
from services.account.keys import ApiKeys
from services.account.passwords import HashParameters, Passwords
from services.account.policy import AccountPolicy, Throttles
from services.account.revocations import SessionRevocations
from services.account.roles import AdminRoles
from services.account.service import AccountService
from services.account.servicer import SERVICE, AccountServicer
from services.account.session_store import SessionStore
from services.account.sessions import Sessions
from services.account.store import AccountStore
from services.account.throttle import Throttle, ThrottlePolicy
from services.core.auth.keys import SigningKeys, load_data_key
from services.core.auth.revocation import RevocationList
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.clock import WallClock, utc_now
from services.core.coordination import Coordination
from services.core.db.databases import Databases
from services.core.dependencies import Dependencies
from services.core.sealing import Sealer
from services.core.server import ServiceRegistration
from services.core.settings import Environment, Settings
from services.core.startup import StartupError


def build(deps: Dependencies, settings: Settings | None = None, *, clock: WallClock = utc_now) -> ServiceRegistration:
    """The account service, ready to be hosted by a GrpcServer: `deps` are the shared platform dependencies,
    `settings` the process's settings (those of `deps` when not given), `clock` (naive UTC) replaceable so tests can
    move time past token expiries. The account service signs tokens, so it needs the private key (StartupError
    without one)."""
    settings = settings or deps.settings
    service = build_service(deps, settings, clock=clock)
    servicer = AccountServicer(service, settings.account.trusted_proxies, draining=deps.lifecycle.draining)
    return ServiceRegistration(
        name="account",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: account_pb2_grpc.add_AccountServiceServicer_to_server(servicer, server),
    )


def _policy(settings: Settings) -> AccountPolicy:
    """The account section's lifetimes and links, with the access tokens' lifetime (auth) and, in the local
    environment, email links written to the log."""
    return AccountPolicy(
        access_token_ttl=timedelta(seconds=settings.auth.access_token_ttl_seconds),
        refresh_token_ttl=timedelta(seconds=settings.account.refresh_token_ttl_seconds),
        public_url=settings.account.public_url,
        log_email_links=settings.env is Environment.LOCAL,
    )


def _session_revocations(
    databases: Databases, coordination: Coordination, policy: AccountPolicy, clock: WallClock
) -> SessionRevocations:
    account = coordination.for_service("account")
    return SessionRevocations(
        sessions=SessionStore(databases),
        revocations=RevocationList(account.cache, account.pubsub),
        access_token_ttl=policy.access_token_ttl,
        token_leeway=policy.token_leeway,
        clock=clock,
    )


def build_admin_roles(databases: Databases, coordination: Coordination, settings: Settings) -> AdminRoles:
    """The admin-role use case alone, for `bullant admin` (needs no signing key): it signs sessions out with the
    same revocation rule and leeway as the service."""
    return AdminRoles(
        store=AccountStore(databases),
        revocations=_session_revocations(databases, coordination, _policy(settings), utc_now),
    )


def _signing_secret(keys: SigningKeys | None) -> tuple[SigningKeys, bytes]:
    if keys is None or keys.private_key is None:
        raise StartupError(
            "the account service issues access tokens: set BULLANT_JWT_PRIVATE_KEY_FILE to an Ed25519 private key"
        )
    raw = keys.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return keys, raw


def build_service(deps: Dependencies, settings: Settings, *, clock: WallClock) -> AccountService:
    """The account service and its parts, each given what it uses."""
    keys, raw = _signing_secret(deps.signing_keys)
    coordination = deps.coordination.for_service("account")
    throttle_policy = ThrottlePolicy.from_settings(settings.account)

    def throttle(action: str, policy: ThrottlePolicy = throttle_policy) -> Throttle:
        return Throttle(coordination.limiter, coordination.cache, policy, action=action)

    throttles = Throttles(
        login=throttle("login"),
        password_reset=throttle("reset", replace(throttle_policy, per_email_per_minute=2)),
        registration=throttle("register", replace(throttle_policy, per_email_per_minute=5, per_ip_per_minute=20)),
        verification_email=throttle("verify-email"),
    )
    policy = _policy(settings)
    store = AccountStore(deps.databases)
    credentials = CredentialStore(deps.databases)
    passwords = Passwords(HashParameters.from_settings(settings.account))
    accounts = Accounts(store=store, passwords=passwords, login_throttle=throttles.login)
    revocations = _session_revocations(deps.databases, deps.coordination, policy, clock)
    two_factor = TwoFactor(
        accounts=accounts,
        credentials=credentials,
        sealer=Sealer(load_data_key(settings)),
        pending_ttl=policy.pending_totp_ttl,
        clock=clock,
    )
    sessions = Sessions(
        accounts=accounts,
        store=store,
        sessions=SessionStore(deps.databases),
        passwords=passwords,
        login_throttle=throttles.login,
        two_factor=two_factor,
        issuer=TokenIssuer(keys, token_policy(settings.auth)),
        directory_ref=deps.databases.directory_ref,
        revocations=revocations,
        refresh_ttl=policy.refresh_token_ttl,
        pages=deps.page_tokens,
        clock=clock,
    )
    api_keys = ApiKeys(
        accounts=accounts,
        credentials=credentials,
        # Derived, not the signing key itself: one secret, two unrelated uses.
        derivation_key=hmac.new(raw, b"bullant api key derivation v1", hashlib.sha256).digest(),
        cache=coordination.cache,
        revocations=RevocationList(coordination.cache, coordination.pubsub),
        policy=policy,
        pages=deps.page_tokens,
        clock=clock,
    )
    return AccountService(
        accounts=accounts,
        store=store,
        passwords=passwords,
        throttles=throttles,
        revocations=revocations,
        policy=policy,
        two_factor=two_factor,
        sessions=sessions,
        api_keys=api_keys,
        pages=deps.page_tokens,
        clock=clock,
    )
