"""Ed25519 keys for access tokens: the account service signs with the private key, every service verifies with the
public one. A development key is generated under the data directory; elsewhere a key must be configured."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.core.settings import Environment, Settings
from services.core.startup import StartupError

DEV_KEY_NAME = "jwt-ed25519.pem"
DEV_DATA_KEY_NAME = "data-key.b64"
DEV_PAGE_TOKEN_KEY_NAME = "page-token-key.b64"  # noqa: S105 - a file name, not a secret
DATA_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The token keys of a process: the private key only where tokens are issued (the account service)."""

    public_key: Ed25519PublicKey
    private_key: Ed25519PrivateKey | None
    key_id: str

    @classmethod
    def from_private(cls, private_key: Ed25519PrivateKey) -> SigningKeys:
        public_key = private_key.public_key()
        return cls(public_key, private_key, key_id_of(public_key))

    @classmethod
    def from_public(cls, public_key: Ed25519PublicKey) -> SigningKeys:
        return cls(public_key, None, key_id_of(public_key))


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short stable id of a public key (the JWT `kid`), so a rotated key is told apart."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as error:
        raise StartupError(f"cannot read the token signing key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StartupError(
            f"{path} is not an Ed25519 private key (generate one with `openssl genpkey -algorithm ed25519`)"
        )
    return key


def _read_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise StartupError(f"cannot read the token verification key {path}: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StartupError(f"{path} is not an Ed25519 public key")
    return key


def _create_once(path: Path, content: bytes) -> bool:
    """Write `content` to a new owner-only file; False when the file exists already (another process won)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting together must not both write a different key.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    return True


def development_key(data_dir: Path) -> Ed25519PrivateKey:
    """The embedded default's key under `data_dir/keys/`, created (readable by the owner only) on first use."""
    path = data_dir / "keys" / DEV_KEY_NAME
    if path.exists():
        return _read_private(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key if _create_once(path, pem) else _read_private(path)


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        key = base64.b64decode(text, validate=True)
    except (OSError, ValueError) as error:
        raise StartupError(f"cannot read the key {path}: {error}") from None
    if len(key) != DATA_KEY_BYTES:
        raise StartupError(
            f"{path} must hold {DATA_KEY_BYTES} random bytes in base64 (make one with `openssl rand -base64 32`)"
        )
    return key


def _load_secret(settings: Settings, configured: Path | None, variable: str, local_name: str, use: str) -> bytes:
    """A 32-byte secret from the file `variable` names, or in the local environment one generated under the data
    directory on first use. Elsewhere a missing file stops the process: a key made up per process would differ
    between replicas."""
    if configured is not None:
        return _read_secret(configured)
    if settings.env is not Environment.LOCAL:
        raise StartupError(
            f"BULLANT_ENV={settings.env.value} needs {variable} ({use}): 32 random bytes in base64 "
            "(`openssl rand -base64 32`), the same for every replica, kept out of the database"
        )
    path = settings.data_dir / "keys" / local_name
    if not path.exists():
        _create_once(path, base64.b64encode(os.urandom(DATA_KEY_BYTES)) + b"\n")
    return _read_secret(path)


def load_data_key(settings: Settings) -> bytes:
    """The key that encrypts secrets the platform must read back (TOTP secrets): BULLANT_DATA_KEY_FILE, or in the
    local environment a key generated under the data directory. Elsewhere a missing key stops the process."""
    return _load_secret(
        settings, settings.auth.data_key_file, "BULLANT_DATA_KEY_FILE", DEV_DATA_KEY_NAME, "the key of TOTP secrets"
    )


def load_page_token_key(settings: Settings) -> bytes:
    """The key that signs page tokens (services.core.paging): BULLANT_PAGE_TOKEN_KEY_FILE, or in the local
    environment a key generated under the data directory. Every service that lists needs it, every replica the same
    one, so a page token from one replica is good on the next and after a restart."""
    return _load_secret(
        settings,
        settings.auth.page_token_key_file,
        "BULLANT_PAGE_TOKEN_KEY_FILE",
        DEV_PAGE_TOKEN_KEY_NAME,
        "the key that signs page tokens",
    )


def load_signing_keys(settings: Settings) -> SigningKeys:
    """The keys the settings name; a generated development key only in the local environment.

    Production refuses to start without a configured key: a key generated on the fly would differ per replica and
    every token from another replica would be rejected.
    """
    auth = settings.auth
    if auth.jwt_private_key_file is not None:
        return SigningKeys.from_private(_read_private(auth.jwt_private_key_file))
    if auth.jwt_public_key_file is not None:
        return SigningKeys.from_public(_read_public(auth.jwt_public_key_file))
    if settings.env is Environment.LOCAL:
        return SigningKeys.from_private(development_key(settings.data_dir))
    raise StartupError(
        f"BULLANT_ENV={settings.env.value} needs a token key: set BULLANT_JWT_PRIVATE_KEY_FILE (services that issue "
        "tokens) or BULLANT_JWT_PUBLIC_KEY_FILE (services that only verify them) to an Ed25519 PEM file"
    )
