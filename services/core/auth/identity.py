"""The authenticated caller, as handlers see it: a typed object bound to the call, never parsed from metadata."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from enum import StrEnum

from services.core.accounts import AccountRef
from services.core.errors import PermissionDenied, Unauthenticated

# Scopes an account holds only once its email address is verified.
VERIFIED_SCOPES = ("trade",)


class Credential(StrEnum):
    """How the caller proved who they are."""

    SESSION = "session"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who is calling: their account, its shard, roles and the scopes of the credential used."""

    account_id: int
    shard: int
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    credential: Credential
    # The session (refresh-token family) of a bearer token; None for API keys.
    session_id: str | None = None
    # The access token's jti, or the API key's id.
    credential_id: str = ""
    # When the credential stops being good (Unix seconds): the token's exp claim, the API key's expiry.
    expires_at: float | None = None
    # Scopes this credential would carry if the account's email address were verified (what it lacks until then).
    unverified_scopes: tuple[str, ...] = ()

    @property
    def ref(self) -> AccountRef:
        """The caller's account and shard, to route its work by (`Databases.run_for`): the shard is the one the
        platform signed into the access token, or the directory's answer for an API key."""
        return AccountRef(self.account_id, self.shard)

    @property
    def is_admin(self) -> bool:
        """Whether the account has the admin role."""
        return "admin" in self.roles


def email_not_verified(missing: tuple[str, ...] = VERIFIED_SCOPES) -> PermissionDenied:
    """The refusal of what an account may do only with a verified email address, saying how to get there."""
    return PermissionDenied(
        "verify your email address first: follow the link in the verification email, or ask for a new one with "
        "ResendVerificationEmail (POST /v1/account:resendVerificationEmail); then sign in again or refresh your "
        "access token",
        reason="EMAIL_NOT_VERIFIED",
        metadata={"missing_scopes": ",".join(missing)},
    )


_identity: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("bullant_identity", default=None)


def bind_identity(identity: Identity | None) -> None:
    """Make `identity` the caller of the RPC running in this task (the authentication interceptor does this)."""
    _identity.set(identity)


def current_identity() -> Identity | None:
    """The caller of the RPC being handled; None in public methods called without credentials."""
    return _identity.get()


def require_identity() -> Identity:
    """The caller, or Unauthenticated when the call carries no credentials."""
    identity = _identity.get()
    if identity is None:
        raise Unauthenticated("this method needs credentials", reason="CREDENTIALS_MISSING")
    return identity
