"""API keys: created with chosen scopes and an expiry, shown once, kept as hashes, revoked at once everywhere."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime

from services.account.accounts import Accounts
from services.account.credential_store import CredentialStore
from services.account.credentials import hash_secret, new_api_key_id, new_api_key_secret
from services.account.policy import AccountPolicy
from services.account.records import ApiKey, Scope
from services.core.auth.api_keys import evict_api_keys
from services.core.auth.revocation import RevocationList
from services.core.clock import WallClock
from services.core.coordination import Cache
from services.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from services.core.paging import Page, PageTokens, keyset_after, keyset_cursor, keyset_page

MAX_NAME_LENGTH = 64
KNOWN_SCOPES = tuple(scope.value for scope in Scope)
# What ListApiKeys' page tokens hold.
_API_KEYS_CURSOR = keyset_cursor("account.ListApiKeys")

log = logging.getLogger("bullant.account")


def _fingerprint(name: str, scopes: Sequence[str], expire_time: datetime | None) -> str:
    text = json.dumps([name, sorted(scopes), expire_time.isoformat() if expire_time else "default"])
    return hashlib.sha256(text.encode()).hexdigest()


def check_name(name: str) -> str:
    """A key's label: 1 to 64 printable characters."""
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_NAME_LENGTH or not stripped.isprintable():
        raise InvalidArgument.field("api_key.name", f"must be 1 to {MAX_NAME_LENGTH} printable characters")
    return stripped


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """Known scopes, at least one, without repeats (in the canonical order)."""
    unknown = [scope for scope in scopes if scope not in KNOWN_SCOPES]
    if unknown:
        raise InvalidArgument(
            FieldViolation("api_key.scopes", f"unknown scope(s) {', '.join(unknown[:5])!r}; use read, trade, admin"),
            reason="SCOPE_INVALID",
        )
    if not scopes:
        raise InvalidArgument(FieldViolation("api_key.scopes", "name at least one scope"), reason="SCOPE_INVALID")
    return tuple(scope for scope in KNOWN_SCOPES if scope in scopes)


class ApiKeys:
    """CreateApiKey, ListApiKeys and RevokeApiKey."""

    def __init__(
        self,
        *,
        accounts: Accounts,
        credentials: CredentialStore,
        derivation_key: bytes,
        cache: Cache,
        revocations: RevocationList,
        policy: AccountPolicy,
        pages: PageTokens,
        clock: WallClock,
    ) -> None:
        self._accounts = accounts
        self._credentials = credentials
        # Secret for deriving the secrets of API keys created with a request id (idempotent retries).
        self._derivation_key = derivation_key
        # The account service's cache namespace (shared with every service's authenticator), evicted on revoke.
        self._cache = cache
        self._revocations = revocations
        self._policy = policy
        self._pages = pages
        self._clock = clock

    async def create(
        self,
        account_id: int,
        *,
        name: str,
        scopes: Sequence[str],
        expire_time: datetime | None,
        request_id: str | None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret is known). With a request id a retry returns the first
        key and the same secret; the same request id with a different request is REQUEST_ID_REUSED."""
        name, chosen = check_name(name), check_scopes(scopes)
        now = self._clock()
        policy = self._policy
        if expire_time is not None and not now < expire_time <= now + policy.api_key_max_ttl:
            raise InvalidArgument(
                FieldViolation(
                    "api_key.expire_time", f"must be in the future and at most {policy.api_key_max_ttl.days} days ahead"
                ),
                reason="EXPIRE_TIME_INVALID",
            )
        account = await self._accounts.active_account(account_id)
        if not account.email_verified:
            raise FailedPrecondition(
                "verify your email address before creating API keys: follow the link in the verification email, or "
                "ask for a new one with ResendVerificationEmail (POST /v1/account:resendVerificationEmail)",
                reason="EMAIL_NOT_VERIFIED",
            )
        if Scope.ADMIN in chosen and not account.is_admin:
            raise PermissionDenied("only admins may create keys with the admin scope", reason="SCOPE_NOT_ALLOWED")
        fingerprint = _fingerprint(name, chosen, expire_time) if request_id else None
        if request_id:
            earlier = await self._earlier(account_id, request_id, fingerprint)
            if earlier is not None:
                return earlier
        if await self._credentials.count_active_api_keys(account_id, now) >= policy.max_active_api_keys:
            raise ResourceExhausted(
                f"an account may have at most {policy.max_active_api_keys} active API keys: revoke one first",
                reason="API_KEY_LIMIT_REACHED",
            )
        secret = new_api_key_secret(self._derivation_key, account_id=account_id, request_id=request_id or "")
        key = ApiKey(
            api_key_id=new_api_key_id(),
            account_id=account_id,
            name=name,
            scopes=chosen,
            prefix=secret[:11],
            create_time=now,
            expire_time=expire_time or now + policy.api_key_default_ttl,
        )
        stored = await self._credentials.create_api_key(
            key, secret_hash=hash_secret(secret), request_id=request_id, fingerprint=fingerprint
        )
        if not stored:
            # A concurrent call with the same request id won; answer like its retry.
            earlier = await self._earlier(account_id, request_id or "", fingerprint)
            if earlier is None:
                raise AlreadyExists("request id already used", reason="REQUEST_ID_REUSED")
            return earlier
        log.info("api key created", extra={"account_id": account_id, "api_key_id": key.api_key_id})
        return key, secret

    async def _earlier(self, account_id: int, request_id: str, fingerprint: str | None) -> tuple[ApiKey, str] | None:
        found = await self._credentials.api_key_by_request(account_id, request_id)
        if found is None:
            return None
        key, stored_hash, stored_fingerprint = found
        secret = new_api_key_secret(self._derivation_key, account_id=account_id, request_id=request_id)
        if stored_fingerprint != fingerprint or hash_secret(secret) != stored_hash:
            raise AlreadyExists("this request id was used for a different request", reason="REQUEST_ID_REUSED")
        return key, secret

    async def list(self, account_id: int, *, show_revoked: bool, size: int, page_token: str) -> Page[ApiKey]:
        """Keys newest first, a page at a time."""
        return await keyset_page(
            self._pages,
            _API_KEYS_CURSOR,
            page_token,
            query=f"revoked={show_revoked}",
            size=size,
            fetch=lambda after, limit: self._credentials.list_api_keys(
                account_id, show_revoked=show_revoked, after=keyset_after(after), limit=limit
            ),
            position=lambda key: {"t": key.create_time, "id": key.api_key_id},
        )

    async def revoke(self, account_id: int, api_key_id: str) -> ApiKey:
        """Revoke one of the caller's keys; another account's key is NotFound, like an unknown one."""
        key = await self._credentials.api_key(account_id, api_key_id)
        if key is None:
            raise NotFound("no such API key", reason="API_KEY_NOT_FOUND")
        if key.revoke_time is None:
            await self.revoke_all(account_id, reason="revoked", api_key_id=api_key_id)
        revoked = await self._credentials.api_key(account_id, api_key_id)
        assert revoked is not None
        return revoked

    async def revoke_all(self, account_id: int, *, reason: str, api_key_id: str | None = None) -> int:
        """Revoke the account's keys (or one) in the database and evict them from every replica's cache."""
        revoked, hashes = await self._credentials.revoke_api_keys(
            account_id, now=self._clock(), reason=reason, api_key_id=api_key_id
        )
        await evict_api_keys(self._cache, hashes)
        if revoked:
            # Streams open with these keys end now (their watches check again and find the keys revoked).
            await self._revocations.announce(account_id)
            log.info("api keys revoked", extra={"account_id": account_id, "count": len(revoked), "reason": reason})
        return len(revoked)
