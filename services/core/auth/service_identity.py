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
from services.core.context import CallContext, bind_call, new_request_id, unbind_call
from services.core.errors import FailedPrecondition

SERVICE_ACCOUNT_ID = 0
SERVICE_ROLE = "service"
_RENEW_BEFORE_SECONDS = 60.0


class ServiceIdentity:
    """Mints and renews the service token and makes it the credential of onward calls within `acting()`."""

    def __init__(self, keys: SigningKeys | None, policy: TokenPolicy, service: str) -> None:
        self._issuer = TokenIssuer(keys, policy) if keys is not None and keys.private_key is not None else None
        self._service = service
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        """A valid service token (renewed a minute before it expires)."""
        if self._issuer is None:
            raise FailedPrecondition(
                f"the {self._service} service cannot call other services on its own: it needs the platform signing "
                "key (BULLANT_JWT_PRIVATE_KEY_FILE)",
                reason="SERVICE_IDENTITY_UNAVAILABLE",
            )
        now = time.time()
        if now > self._expires - _RENEW_BEFORE_SECONDS:
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
