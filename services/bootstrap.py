"""Composition root: builds the shared dependencies once from settings, then the server for the requested services."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.account import wiring as account
from services.chat import wiring as chat
from services.core.auth.api_keys import ApiKeyResolver
from services.core.auth.authenticator import Authenticator
from services.core.auth.keys import load_page_token_key, load_signing_keys
from services.core.auth.revocation import RevocationList
from services.core.auth.tokens import TokenVerifier, token_policy
from services.core.clients import ClientFactory
from services.core.coordination import Coordination, build_backend, keyspace_for
from services.core.db.databases import DatabaseConfig, Databases
from services.core.dependencies import Dependencies
from services.core.health import DependencyMonitor, Readiness
from services.core.metrics import GrpcMetrics
from services.core.paging import PageTokens
from services.core.server import GrpcServer, Lifecycle, ServiceRegistration
from services.core.settings import BUILT_SERVICES, Settings
from services.core.startup import ConfigurationError
from services.core.urls import redact_url
from services.market import wiring as market
from services.model import wiring as model
from services.signal import wiring as signal

# Every service with a contract; only those in BUILT_SERVICES are served.
REGISTRATIONS: dict[str, Callable[[Dependencies], ServiceRegistration]] = {
    "account": account.build,
    "market": market.build,
    "signal": signal.build,
    "model": model.build,
    "chat": chat.build,
}


def build_dependencies(settings: Settings) -> Dependencies:
    """The shared dependency graph. Nothing is opened here: each part opens in its start() (the signing
    and page-token keys are read now, so a missing key stops the process before it binds its port)."""
    return Dependencies(
        settings=settings,
        databases=Databases(DatabaseConfig.from_settings(settings)),
        coordination=Coordination(build_backend(settings.coordination.redis_url), keyspace_for(settings, "platform")),
        clients=ClientFactory(settings.calls, settings.server),
        lifecycle=Lifecycle(),
        readiness=Readiness(),
        page_tokens=PageTokens(load_page_token_key(settings)),
        signing_keys=load_signing_keys(settings),
    )


def build_authenticator(deps: Dependencies) -> Authenticator:
    """Local token verification, revocations shared through the account service's cache namespace (and announced
    on its pub-sub, so open streams end at once), and API keys resolved from the global database (cached in the
    same namespace, evicted by the account service on revoke)."""
    assert deps.signing_keys is not None
    account = deps.coordination.for_service("account")
    return Authenticator(
        TokenVerifier(deps.signing_keys, token_policy(deps.settings.auth)),
        RevocationList(account.cache, account.pubsub),
        ApiKeyResolver(deps.databases, account.cache),
    )


def build_server(settings: Settings, names: Sequence[str] = BUILT_SERVICES) -> GrpcServer:
    """A server hosting `names` (every built service by default) with its dependencies. Nothing opens until start().
    A service with a contract but no implementation yet is refused (ConfigurationError)."""
    unknown = [name for name in names if name not in REGISTRATIONS]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}")
    unbuilt = [name for name in names if name not in BUILT_SERVICES]
    if unbuilt:
        raise ConfigurationError(
            f"{', '.join(unbuilt)}: not built yet (the contract is in protos/, the implementation is not), so not "
            f"served; serve any of: all, {', '.join(BUILT_SERVICES)}"
        )
    deps = build_dependencies(settings)
    interval = settings.database.db_health_interval_seconds
    database_monitor = DependencyMonitor(
        "database",
        deps.databases.problem,
        deps.readiness,
        interval_seconds=interval,
        timeout_seconds=settings.database.db_connect_timeout_seconds,
    )
    coordination_monitor = DependencyMonitor(
        deps.coordination.backend.name,
        deps.coordination.problem,
        deps.readiness,
        interval_seconds=interval,
        # The databases wait for their servers in their own start(); the coordination backend connects lazily, so
        # its monitor waits for it before any service starts on it.
        startup_wait_seconds=settings.server.startup_wait_seconds,
        startup_hint=f"Check BULLANT_REDIS_URL ({redact_url(settings.coordination.redis_url)}) and that Redis is up "
        "(BULLANT_STARTUP_WAIT_SECONDS sets how long to wait).",
    )
    return GrpcServer(
        settings.server,
        [REGISTRATIONS[name](deps) for name in names],
        lifecycle=deps.lifecycle,
        metrics=GrpcMetrics(),
        # Started in this order and stopped in reverse, each monitor after what it watches.
        components=(deps.databases, database_monitor, deps.coordination, coordination_monitor, deps.clients),
        readiness=deps.readiness,
        authenticator=build_authenticator(deps),
        on_bound=(deps.clients.listening_on,),
    )
