"""Composition root: builds the server and the dependency graph for the requested services from settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.account import servicer as account
from services.chat import servicer as chat
from services.core.metrics import GrpcMetrics
from services.core.server import GrpcServer, Lifecycle, ServiceRegistration
from services.core.settings import SERVICE_NAMES, Settings
from services.market import servicer as market
from services.model import servicer as model
from services.signal import servicer as signal

REGISTRATIONS: dict[str, Callable[[], ServiceRegistration]] = {
    "account": account.registration,
    "market": market.registration,
    "signal": signal.registration,
    "model": model.registration,
    "chat": chat.registration,
}


def build_server(settings: Settings, names: Sequence[str] = SERVICE_NAMES) -> GrpcServer:
    """A server hosting `names` (all services by default). Nothing is opened until its start()."""
    unknown = [name for name in names if name not in REGISTRATIONS]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}")
    return GrpcServer(
        settings,
        [REGISTRATIONS[name]() for name in names],
        lifecycle=Lifecycle(),
        metrics=GrpcMetrics(),
    )
