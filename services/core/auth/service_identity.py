"""The identity a service's background work (leader jobs, schedulers) uses to call other services when there is no
caller to act for: a short-lived access token of account 0 with the role "service" and the "read" scope, signed
with the platform key. Only processes that hold the private key (BULLANT_JWT_PRIVATE_KEY_FILE, generated in
local) can act as a service; elsewhere the background work that needs it fails with a clear message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from services.core.auth.keys import SigningKeys
from services.core.auth.tokens import TokenIssuer, TokenPolicy
from services.core.clock import EpochClock
from services.core.context import CallContext, bind_call, new_request_id, unbind_call
from services.core.errors import FailedPrecondition

SERVICE_ACCOUNT_ID = 0
SERVICE_ROLE = "service"
_RENEW_BEFORE_SECONDS = 60.0


class ServiceIdentity:
    """Mints and renews the service token and makes it the credential of onward calls within `acting()`.

    Like any credential, a token ends the streams opened with it when it expires (services.core.auth.watch): a
    long-lived stream opened with it is replaced before then by one opened with a newer token, the new one live
    before the old one is let go (`renew_time` says when).
    """

    def __init__(
        self, keys: SigningKeys | None, policy: TokenPolicy, service: str, *, clock: EpochClock = time.time
    ) -> None:
        self._issuer = TokenIssuer(keys, policy) if keys is not None and keys.private_key is not None else None
        self._service = service
        self._clock = clock
        self._token = ""
        self._expires = 0.0
        # Renew this long before expiry, at most half the token's life.
        self._renew_before = min(_RENEW_BEFORE_SECONDS, policy.ttl_seconds / 2)

    @property
    def expires_at(self) -> float:
        """When the token `token()` last gave expires (Unix seconds on this identity's clock)."""
        return self._expires

    def renew_time(self, expires_at: float) -> float:
        """When a stream opened with a token expiring at `expires_at` should be replaced: once `token()` gives a
        newer token, with time left to open the replacement before the old token ends. Seconds from now."""
        return max(0.0, expires_at - self._renew_before * 0.75 - self._clock())

    def token(self) -> str:
        """A valid service token (renewed a minute before it expires)."""
        if self._issuer is None:
            raise FailedPrecondition(
                f"the {self._service} service cannot call other services on its own: it needs the platform signing "
                "key (BULLANT_JWT_PRIVATE_KEY_FILE)",
                reason="SERVICE_IDENTITY_UNAVAILABLE",
            )
        now = self._clock()
        if now > self._expires - self._renew_before:
            self._token, claims = self._issuer.issue(
                account_id=SERVICE_ACCOUNT_ID,
                shard=0,
                roles=(SERVICE_ROLE,),
                scopes=("read",),
                session_id=f"service:{self._service}",
                now=now,
            )
            self._expires = float(claims.expires_at)
        return self._token

    @contextmanager
    def acting(self) -> Iterator[None]:
        """Within this block, calls through the client factory carry the service token."""
        call = CallContext(request_id=new_request_id(), forwarded=(("authorization", f"Bearer {self.token()}"),))
        token = bind_call(call)
        try:
            yield
        finally:
            unbind_call(token)
