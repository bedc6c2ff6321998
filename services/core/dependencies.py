"""The shared dependencies the composition root builds once and hands to every domain's registration."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.auth.keys import SigningKeys
from services.core.clients import ClientFactory
from services.core.coordination import Coordination
from services.core.db.databases import Databases
from services.core.health import Readiness
from services.core.paging import PageTokens
from services.core.server import Lifecycle
from services.core.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependencies:
    """Everything a domain may need from the platform; each domain takes what it uses in its constructors."""

    settings: Settings
    databases: Databases
    # The process's cache, pub-sub, locks and rate limits; a domain takes its own namespace with
    # coordination.for_service("market") (all views share one backend, so in-memory services hear each other).
    coordination: Coordination
    clients: ClientFactory
    lifecycle: Lifecycle
    readiness: Readiness
    # Signs and reads the page tokens of every List method (the same key on every replica).
    page_tokens: PageTokens
    # Access-token keys: the private key only where tokens are issued; None in tests that need no tokens.
    signing_keys: SigningKeys | None = None
