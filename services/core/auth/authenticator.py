"""Decides who a call comes from and whether the contract's access rule lets them in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from bullant.common.v1 import access_pb2
from services.core.access import rule_for_path
from services.core.auth.identity import VERIFIED_SCOPES, Credential, Identity, email_not_verified
from services.core.auth.revocation import RevocationList
from services.core.auth.tokens import TokenVerifier
from services.core.auth.watch import CredentialWatch, CredentialWatcher
from services.core.errors import PermissionDenied, Unauthenticated

# Infrastructure every client and probe may call without credentials.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.")
BEARER = "bearer "
# Resolves an API key's secret to its owner's identity (the account service supplies it), None when unknown; a key
# that no longer lets anyone in raises the refusal its holder should see.
ApiKeyResolver = Callable[[str], Awaitable[Identity | None]]


class Authenticator:
    """Turns a call's metadata into an Identity and enforces the method's (bullant.common.v1.access) rule.

    Failing closed: a Bullant method without a rule, or an unknown service, is refused. It also watches the
    credentials of open streams (`watch`), so it is started and stopped with the server.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        revocations: RevocationList,
        api_keys: ApiKeyResolver | None = None,
        *,
        watcher: CredentialWatcher | None = None,
    ) -> None:
        self._verifier = verifier
        self._revocations = revocations
        self._api_keys = api_keys
        self.watcher = watcher or CredentialWatcher(revocations)

    async def start(self) -> None:
        """Listen for credential announcements (revocations) for the watches of open streams."""
        await self.watcher.start()

    async def stop(self) -> None:
        await self.watcher.stop()

    def watch(self, method: str, metadata: Sequence[tuple[str, str | bytes]], identity: Identity) -> CredentialWatch:
        """A watch of the credential a call of `method` with `metadata` was let in with: it ends when that
        credential expires or a new call with it would be refused (see services.core.auth.watch)."""

        async def check() -> None:
            await self.authenticate(method, metadata)

        return self.watcher.watch(identity, check)

    async def authenticate(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Identity | None:
        """The caller of `method`, None for a public method called without credentials; raises Unauthenticated or
        PermissionDenied when the rule is not met."""
        if method.startswith(OPEN_SERVICES):
            return None
        rule = rule_for_path(method)
        if rule is None:
            raise PermissionDenied(f"{method} has no access rule", reason="ACCESS_RULE_MISSING")
        identity = await self._identify(metadata)
        if rule.public:
            return identity
        if identity is None:
            raise Unauthenticated(
                "this method needs credentials: `authorization: Bearer <access token>` or `x-api-key`",
                reason="CREDENTIALS_MISSING",
            )
        _check(rule, identity)
        return identity

    async def _identify(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity | None:
        authorization = api_key = None
        for key, value in metadata:
            if key == "authorization" and isinstance(value, str):
                authorization = value
            elif key == "x-api-key" and isinstance(value, str):
                api_key = value
        if authorization is not None:
            return await self._from_token(authorization)
        if api_key is not None:
            return await self._from_api_key(api_key)
        return None

    async def _from_token(self, authorization: str) -> Identity:
        if not authorization[: len(BEARER)].lower() == BEARER:
            raise Unauthenticated("authorization must be `Bearer <access token>`", reason="TOKEN_INVALID")
        claims = self._verifier.verify(authorization[len(BEARER) :].strip())
        refusal = await self._revocations.revocation(claims.token_id, claims.session_id)
        if refusal is not None:
            raise refusal
        return Identity(
            account_id=claims.account_id,
            shard=claims.shard,
            roles=claims.roles,
            scopes=claims.scopes,
            credential=Credential.SESSION,
            session_id=claims.session_id,
            credential_id=claims.token_id,
            expires_at=float(claims.expires_at),
            unverified_scopes=(
                tuple(scope for scope in VERIFIED_SCOPES if scope not in claims.scopes)
                if claims.email_verified is False
                else ()
            ),
        )

    async def _from_api_key(self, secret: str) -> Identity:
        identity = await self._api_keys(secret) if self._api_keys is not None and secret else None
        if identity is None:
            raise Unauthenticated("unknown, revoked or expired API key", reason="API_KEY_INVALID")
        return identity


def _check(rule: access_pb2.AccessRule, identity: Identity) -> None:
    if rule.session_only and identity.credential is not Credential.SESSION:
        raise PermissionDenied("this method needs a signed-in session, not an API key", reason="SESSION_REQUIRED")
    missing = [scope for scope in rule.scopes if scope not in identity.scopes]
    if missing and all(scope in identity.unverified_scopes for scope in missing):
        # Not a credential that lacks the scope, but an account that cannot have it yet: say how to get it.
        raise email_not_verified(tuple(missing))
    if missing:
        raise PermissionDenied(
            f"the credential lacks scope {', '.join(missing)}",
            reason="SCOPE_MISSING",
            metadata={"missing_scopes": ",".join(missing)},
        )
