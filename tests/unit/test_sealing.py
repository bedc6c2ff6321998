"""Sealed secrets open only with their key and the row they were sealed for; data keys load or refuse clearly."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from services.core.auth.keys import load_data_key
from services.core.sealing import Sealer, SealError
from services.core.settings import load_settings
from services.core.startup import StartupError


def test_a_sealed_value_opens_only_with_its_key_and_context() -> None:
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal("JBSWY3DPEHPK3PXP", context="totp:1")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert sealed != sealer.seal("JBSWY3DPEHPK3PXP", context="totp:1")  # a fresh nonce each time
    assert sealer.open(sealed, context="totp:1") == "JBSWY3DPEHPK3PXP"
    other = Sealer(os.urandom(32))
    for opener, value, context in (
        (sealer, sealed, "totp:2"),
        (other, sealed, "totp:1"),
        (sealer, sealed[:-4] + "AAAA", "totp:1"),
        (sealer, "JBSWY3DPEHPK3PXP", "totp:1"),
        (sealer, "v1.%%%", "totp:1"),
    ):
        with pytest.raises(SealError):
            opener.open(value, context=context)


def test_data_keys_are_generated_in_local_and_required_elsewhere(tmp_path: Path) -> None:
    local = load_settings(environ={}, data_dir=tmp_path)
    key = load_data_key(local)
    assert len(key) == 32
    assert load_data_key(local) == key  # the same key on the next start
    assert (tmp_path / "keys" / "data-key.b64").stat().st_mode & 0o077 == 0
    with pytest.raises(StartupError, match="BULLANT_DATA_KEY_FILE"):
        load_data_key(load_settings(environ={"BULLANT_ENV": "prod"}, data_dir=tmp_path))
    short = tmp_path / "short.b64"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(StartupError, match="32 random bytes"):
        load_data_key(load_settings(environ={}, data_key_file=short))
    configured = tmp_path / "configured.b64"
    configured.write_text(base64.b64encode(b"k" * 32).decode() + "\n")
    assert load_data_key(load_settings(environ={"BULLANT_ENV": "prod"}, data_key_file=configured)) == b"k" * 32
