"""Resolves `x-api-key` secrets to identities in every service: a hash lookup in the global database, remembered
briefly in the shared cache, evicted by the account service the moment a key is revoked."""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.auth.identity import VERIFIED_SCOPES, Credential, Identity
from services.core.clock import utc_now
from services.core.coordination import Cache
from services.core.db.databases import Databases
from services.core.db.schema import accounts, api_keys
from services.core.errors import DomainError, PermissionDenied, Unauthenticated

API_KEY_PREFIX = "bk_"
API_KEY_BODY_LENGTH = 48
CACHE_PREFIX = "api-key:"
# How long a resolved key is remembered; a revocation evicts it at once, so this bounds only last_use_time's lag.
CACHE_SECONDS = 60.0
# Unknown secrets are remembered too, so a client hammering with a bad key costs no database reads.
NEGATIVE_CACHE_SECONDS = 30.0
_UNKNOWN = b"-"
_ACTIVE = 1
# Keys that exist but no longer let anyone in, remembered like unknown ones, with what their holder is told.
_REFUSALS: dict[bytes, DomainError] = {
    b"revoked": Unauthenticated("this API key was revoked: create a new one", reason="API_KEY_INVALID"),
    b"expired": Unauthenticated("this API key expired: create a new one", reason="API_KEY_INVALID"),
    b"disabled": PermissionDenied("this account is disabled", reason="ACCOUNT_DISABLED"),
}


def looks_like_api_key(secret: str) -> bool:
    """Whether `secret` has the shape of a Bullant API key ("bk_" + 48 hex digits)."""
    body = secret[len(API_KEY_PREFIX) :]
    return (
        secret.startswith(API_KEY_PREFIX)
        and len(body) == API_KEY_BODY_LENGTH
        and all(c in string.hexdigits for c in body)
    )


def secret_hash(secret: str) -> str:
    """The stored form of an API key secret (SHA-256 hex)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def allowed_scopes(roles: tuple[str, ...], email_verified: bool) -> set[str]:
    """Scopes an account may hold right now: what its session would get."""
    scopes = {"read"}
    if email_verified:
        scopes.update(VERIFIED_SCOPES)
    if "admin" in roles:
        scopes.add("admin")
    return scopes


class ApiKeyResolver:
    """The Authenticator's port for API keys (an async callable: secret → Identity, None for a secret that is no
    key; a revoked or expired key, or one of a disabled account, raises the refusal its holder should see)."""

    def __init__(self, databases: Databases, cache: Cache) -> None:
        self._databases = databases
        self._cache = cache

    async def __call__(self, secret: str) -> Identity | None:
        if not looks_like_api_key(secret):
            return None
        digest = secret_hash(secret)
        cached = await self._cache.get(CACHE_PREFIX + digest)
        if cached == _UNKNOWN:
            return None
        if cached is not None and cached in _REFUSALS:
            raise _REFUSALS[cached]
        if cached is not None:
            identity = _decode(cached)
            if identity is not None:
                return identity
        return await self._load(digest)

    async def _load(self, digest: str) -> Identity | None:
        now = utc_now()

        async def work(connection: AsyncConnection) -> tuple[Identity, datetime] | bytes:
            row = (
                await connection.execute(
                    select(
                        api_keys.c.api_key_id,
                        api_keys.c.account_id,
                        api_keys.c.scopes,
                        api_keys.c.expire_time,
                        api_keys.c.last_use_time,
                        api_keys.c.revoke_time,
                        accounts.c.roles,
                        accounts.c.verify_time,
                        accounts.c.state,
                    )
                    .select_from(api_keys.join(accounts, accounts.c.account_id == api_keys.c.account_id))
                    .where(api_keys.c.secret_hash == digest)
                )
            ).first()
            if row is None:
                return _UNKNOWN
            if row.state != _ACTIVE:
                return b"disabled"
            if row.revoke_time is not None:
                return b"revoked"
            if row.expire_time <= now:
                return b"expired"
            if row.last_use_time is None or now - row.last_use_time >= timedelta(seconds=CACHE_SECONDS):
                await connection.execute(
                    update(api_keys).where(api_keys.c.api_key_id == row.api_key_id).values(last_use_time=now)
                )
            roles = tuple(role for role in str(row.roles).split(",") if role)
            granted = allowed_scopes(roles, row.verify_time is not None)
            chosen = [scope for scope in str(row.scopes).split(",") if scope]
            identity = Identity(
                account_id=int(row.account_id),
                shard=0,
                roles=roles,
                scopes=tuple(scope for scope in chosen if scope in granted),
                credential=Credential.API_KEY,
                credential_id=str(row.api_key_id),
                expires_at=row.expire_time.replace(tzinfo=UTC).timestamp(),
                unverified_scopes=tuple(scope for scope in chosen if scope not in granted and scope in VERIFIED_SCOPES),
            )
            return identity, row.expire_time

        found = await self._databases.run_global(work)
        if isinstance(found, bytes):
            await self._cache.set(CACHE_PREFIX + digest, found, ttl_seconds=NEGATIVE_CACHE_SECONDS)
            if found in _REFUSALS:
                raise _REFUSALS[found]
            return None
        identity, expire_time = found
        # No signed claim names an API key's shard: the directory's answer goes into the identity (and is cached
        # with it), so the key's requests route by `Identity.ref` like a session's.
        identity = replace(identity, shard=(await self._databases.directory_ref(identity.account_id)).shard)
        ttl = min(CACHE_SECONDS, (expire_time - now).total_seconds())
        if ttl > 0:
            await self._cache.set(CACHE_PREFIX + digest, _encode(identity), ttl_seconds=ttl)
        return identity


async def evict_api_keys(cache: Cache, secret_hashes: list[str]) -> None:
    """Forget cached lookups of these keys (after a revocation), in every replica sharing the cache."""
    for digest in secret_hashes:
        await cache.delete(CACHE_PREFIX + digest)


def _encode(identity: Identity) -> bytes:
    return json.dumps(
        {
            "account_id": identity.account_id,
            "shard": identity.shard,
            "roles": list(identity.roles),
            "scopes": list(identity.scopes),
            "key": identity.credential_id,
            "expires_at": identity.expires_at,
            "unverified_scopes": list(identity.unverified_scopes),
        }
    ).encode()


def _decode(raw: bytes) -> Identity | None:
    try:
        value = json.loads(raw)
        return Identity(
            account_id=int(value["account_id"]),
            shard=int(value["shard"]),
            roles=tuple(str(role) for role in value["roles"]),
            scopes=tuple(str(scope) for scope in value["scopes"]),
            credential=Credential.API_KEY,
            credential_id=str(value["key"]),
            expires_at=float(value["expires_at"]),
            unverified_scopes=tuple(str(scope) for scope in value["unverified_scopes"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
