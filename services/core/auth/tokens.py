"""Short-lived access tokens (JWT, EdDSA): issued by the account service, verified locally by every service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from services.core.auth.keys import SigningKeys
from services.core.clock import EpochClock
from services.core.errors import Unauthenticated
from services.core.settings import AuthSettings

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("sub", "iat", "exp", "iss", "aud", "jti")


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessClaims:
    """What a verified access token says about its bearer."""

    account_id: int
    shard: int
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int
    # Whether the account's email address was verified when the token was issued; None when the token does not say
    # (service tokens).
    email_verified: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPolicy:
    """Who issues tokens for whom, and for how long."""

    issuer: str = "bullant"
    audience: str = "bullant"
    ttl_seconds: int = 900
    # Clock difference tolerated between the issuing and the verifying replica.
    leeway_seconds: int = 5


def token_policy(auth: AuthSettings) -> TokenPolicy:
    """Issuer, audience and lifetime of access tokens from the auth settings."""
    return TokenPolicy(issuer=auth.jwt_issuer, audience=auth.jwt_audience, ttl_seconds=auth.access_token_ttl_seconds)


class TokenIssuer:
    """Signs access tokens; only a process holding the private key can."""

    def __init__(self, keys: SigningKeys, policy: TokenPolicy, *, clock: EpochClock = time.time) -> None:
        if keys.private_key is None:
            raise ValueError("issuing tokens needs the private key")
        self._private_key = keys.private_key
        self._key_id = keys.key_id
        self._policy = policy
        self._clock = clock

    def issue(
        self,
        *,
        account_id: int,
        shard: int,
        roles: Sequence[str],
        scopes: Sequence[str],
        session_id: str,
        now: float | None = None,
        email_verified: bool | None = None,
    ) -> tuple[str, AccessClaims]:
        """A signed token and the claims in it; valid from `now` (default: the issuer's clock) for the policy's
        TTL."""
        issued_at = int(now if now is not None else self._clock())
        claims = AccessClaims(
            account_id=account_id,
            shard=shard,
            roles=tuple(roles),
            scopes=tuple(scopes),
            session_id=session_id,
            token_id=uuid.uuid4().hex,
            issued_at=issued_at,
            expires_at=issued_at + self._policy.ttl_seconds,
            email_verified=email_verified,
        )
        payload: dict[str, Any] = {
            "sub": str(account_id),
            "shard": shard,
            "roles": list(claims.roles),
            "scopes": list(claims.scopes),
            "sid": session_id,
            "jti": claims.token_id,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "iss": self._policy.issuer,
            "aud": self._policy.audience,
        }
        if email_verified is not None:
            # The OpenID Connect claim: tells a refusal for want of the "trade" scope that verifying the email is
            # the way to get it.
            payload["email_verified"] = email_verified
        token = jwt.encode(payload, self._private_key, algorithm=ALGORITHM, headers={"kid": self._key_id})
        return token, claims


class TokenVerifier:
    """Checks a token's signature, algorithm, key id, expiry, issuer, audience and claim types, with no network
    call; anything wrong is Unauthenticated with reason TOKEN_EXPIRED or TOKEN_INVALID.

    A client sends the same token with every call for its whole life, and checking the signature is the dearest
    part (about 0.25 ms), so tokens that passed are remembered (bounded) and only their expiry is checked again.
    """

    def __init__(
        self, keys: SigningKeys, policy: TokenPolicy, *, cache_size: int = 10_000, clock: EpochClock = time.time
    ) -> None:
        self._keys = keys
        self._policy = policy
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[str, AccessClaims] = {}

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token."""
        claims = self._verified.get(token)
        if claims is not None:
            if self._clock() <= claims.expires_at + self._policy.leeway_seconds:
                return claims
            del self._verified[token]
            raise Unauthenticated("access token expired: refresh it", reason="TOKEN_EXPIRED")
        claims = self._verify_signed(token)
        now = self._clock()
        if now > claims.expires_at + self._policy.leeway_seconds:
            raise Unauthenticated("access token expired: refresh it", reason="TOKEN_EXPIRED")
        if claims.issued_at > now + self._policy.leeway_seconds:
            raise _invalid("the token was issued in the future")
        if len(self._verified) >= self._cache_size:
            # Dicts keep insertion order: drop the oldest entry.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = claims
        return claims

    def _verify_signed(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            # Only our algorithm and our key: no "none", no HMAC keyed with the public key, no foreign key.
            if header.get("alg") != ALGORITHM or header.get("kid") != self._keys.key_id:
                raise _invalid("token was not signed by this platform's key")
            # Expiry and issue time are checked on the verifier's clock (in verify), not on PyJWT's wall clock.
            payload = jwt.decode(
                token,
                self._keys.public_key,
                algorithms=[ALGORITHM],
                audience=self._policy.audience,
                issuer=self._policy.issuer,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as error:
            raise _invalid(str(error)) from None
        return _claims(payload)


def _optional_bool(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError("email_verified must be a boolean")


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated(f"invalid access token: {why}", reason="TOKEN_INVALID")


def _claims(payload: dict[str, Any]) -> AccessClaims:
    try:
        roles, scopes = payload.get("roles", []), payload.get("scopes", [])
        if not (isinstance(roles, list) and isinstance(scopes, list)):
            raise TypeError("roles and scopes must be lists")
        return AccessClaims(
            account_id=int(payload["sub"]),
            shard=int(payload["shard"]),
            roles=tuple(str(role) for role in roles),
            scopes=tuple(str(scope) for scope in scopes),
            session_id=str(payload["sid"]),
            token_id=str(payload["jti"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
            email_verified=_optional_bool(payload.get("email_verified")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise _invalid(f"malformed claims ({error})") from None
