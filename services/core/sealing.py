"""Encryption at rest for the few secrets the platform must read back (TOTP secrets): AES-256-GCM, bound to the
row they belong to, so a database dump alone reveals nothing and a sealed value cannot be moved to another row."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1."
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value is malformed, or was sealed with another key or for another row."""


class Sealer:
    """Seals and opens short strings with one 256-bit key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, context: str) -> str:
        """`plaintext` encrypted; `context` (e.g. "totp:42") must be given again to open it."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return VERSION + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, *, context: str) -> str:
        """The plaintext of a value sealed with this key and `context`; SealError otherwise."""
        if not sealed.startswith(VERSION):
            raise SealError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(VERSION) :])
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
        except (binascii.Error, ValueError, InvalidTag):
            raise SealError("cannot open the sealed value: wrong key or context, or damaged") from None
        return plain.decode("utf-8")
