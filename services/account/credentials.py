"""Secrets the account service hands out (refresh tokens, email tokens, API keys, recovery codes) and their hashes.

Every one of them carries at least 80 random bits, so a SHA-256 of it is what the database keeps: a leaked table
cannot be turned back into working credentials, and a lookup by hash stays a single indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from services.core.auth.api_keys import API_KEY_PREFIX, secret_hash

REFRESH_TOKEN_PREFIX = "brt_"  # noqa: S105 - a format marker, not a secret
# Characters of the API key shown in listings so the owner can tell keys apart ("bk_" + 8 hex digits).
API_KEY_VISIBLE_LENGTH = len(API_KEY_PREFIX) + 8
RECOVERY_CODE_COUNT = 10
# Crockford-like base32 without look-alikes: codes are read off paper and typed on phones.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_GROUPS = 4
_RECOVERY_GROUP_LENGTH = 4


def hash_secret(secret: str) -> str:
    """The stored form of a high-entropy secret: hex SHA-256 (the same as API keys' secret_hash)."""
    return secret_hash(secret)


def new_refresh_token() -> str:
    """An opaque refresh token: 256 random bits."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_email_token() -> str:
    """A single-use token for an email link (verification, password reset): 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_session_id() -> str:
    """An opaque session id (not a secret: it appears in access tokens and ListSessions)."""
    return secrets.token_hex(16)


def new_api_key_id() -> str:
    """An opaque API key id (not a secret)."""
    return secrets.token_hex(12)


def new_api_key_secret(derivation_key: bytes | None = None, *, account_id: int = 0, request_id: str = "") -> str:
    """An API key secret: "bk_" + 192 bits in hex.

    With a request id the secret is derived (HMAC) from a server-side key, the account and the request id, so a
    retried CreateApiKey can hand back the same secret without the server ever storing it.
    """
    if derivation_key is not None and request_id:
        material = hmac.new(derivation_key, f"api-key:{account_id}:{request_id}".encode(), hashlib.sha256).digest()
        return API_KEY_PREFIX + material[:24].hex()
    return API_KEY_PREFIX + secrets.token_hex(24)


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """One-time recovery codes like "k7mq-3x9p-tt4a-wcz2": 16 characters of a 31-letter alphabet (79 bits)."""
    return [
        "-".join(
            "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LENGTH))
            for _ in range(_RECOVERY_GROUPS)
        )
        for _ in range(count)
    ]


def normalize_recovery_code(code: str) -> str:
    """A recovery code as typed (any case, spaces or dashes) in its canonical form."""
    compact = "".join(ch for ch in code.lower() if ch not in " -\t")
    size = _RECOVERY_GROUP_LENGTH
    return "-".join(compact[i : i + size] for i in range(0, len(compact), size))


def hash_recovery_code(code: str, salt: str) -> str:
    """The stored form of a recovery code, salted per account."""
    return hashlib.sha256(f"{salt}:{normalize_recovery_code(code)}".encode()).hexdigest()


def new_salt() -> str:
    """A per-account salt for recovery code hashes."""
    return secrets.token_hex(16)
