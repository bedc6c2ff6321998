"""Access tokens: a round trip, and every way a forged, stale or foreign token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.core.auth.keys import DEV_KEY_NAME, SigningKeys, load_signing_keys
from services.core.auth.tokens import TokenIssuer, TokenPolicy, TokenVerifier
from services.core.errors import Unauthenticated
from services.core.settings import load_settings
from services.core.startup import StartupError

POLICY = TokenPolicy(issuer="bullant", audience="bullant", ttl_seconds=900)
KEYS = SigningKeys.from_private(Ed25519PrivateKey.generate())


def _issue(**overrides: object) -> str:
    fields: dict[str, object] = {
        "account_id": 42,
        "shard": 0,
        "roles": ["user"],
        "scopes": ["read"],
        "session_id": "s-1",
    }
    fields.update(overrides)
    token, _ = TokenIssuer(KEYS, POLICY).issue(**fields)  # type: ignore[arg-type]
    return token


def _refused(token: str, verifier: TokenVerifier | None = None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        (verifier or TokenVerifier(KEYS, POLICY)).verify(token)
    return caught.value.reason


def _b64(data: Mapping[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _signed_by_us(payload: dict[str, object]) -> str:
    assert KEYS.private_key is not None
    return jwt.encode(payload, KEYS.private_key, algorithm="EdDSA", headers={"kid": KEYS.key_id})


def _valid_payload() -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": "42",
        "shard": 0,
        "roles": ["user"],
        "scopes": ["read"],
        "sid": "s-1",
        "jti": "j-1",
        "iat": now,
        "exp": now + 600,
        "iss": "bullant",
        "aud": "bullant",
    }


def test_round_trip_keeps_every_claim() -> None:
    token, issued = TokenIssuer(KEYS, POLICY).issue(
        account_id=7, shard=1, roles=["user", "admin"], scopes=["read", "trade", "admin"], session_id="sess"
    )
    verified = TokenVerifier(KEYS, POLICY).verify(token)
    assert verified == issued
    assert verified.expires_at - verified.issued_at == 900
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": KEYS.key_id, "typ": "JWT"}


def test_expired_token_is_refused_as_expired() -> None:
    assert _refused(_issue(now=time.time() - 3600)) == "TOKEN_EXPIRED"


def test_tampered_payload_is_refused() -> None:
    header, payload, signature = _issue().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scopes"] = ["read", "trade", "admin"]
    assert _refused(".".join([header, _b64(claims), signature])) == "TOKEN_INVALID"


@pytest.mark.parametrize("policy", [TokenPolicy(audience="someone-else"), TokenPolicy(issuer="evil")])
def test_wrong_audience_or_issuer_is_refused(policy: TokenPolicy) -> None:
    assert _refused(_issue(), TokenVerifier(KEYS, policy)) == "TOKEN_INVALID"


def test_alg_none_is_refused() -> None:
    unsigned = f"{_b64({'alg': 'none', 'kid': KEYS.key_id, 'typ': 'JWT'})}.{_b64(_valid_payload())}."
    assert _refused(unsigned) == "TOKEN_INVALID"


def test_hmac_keyed_with_the_public_key_is_refused() -> None:
    public_pem = KEYS.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": KEYS.key_id, "typ": "JWT"}
    signing_input = f"{_b64(header)}.{_b64(_valid_payload())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert _refused(forged) == "TOKEN_INVALID"


def test_a_token_from_another_key_is_refused_even_with_our_key_id() -> None:
    stranger = Ed25519PrivateKey.generate()
    forged = jwt.encode(_valid_payload(), stranger, algorithm="EdDSA", headers={"kid": KEYS.key_id})
    assert _refused(forged) == "TOKEN_INVALID"
    foreign_kid = jwt.encode(_valid_payload(), stranger, algorithm="EdDSA", headers={"kid": "0123456789abcdef"})
    assert _refused(foreign_kid) == "TOKEN_INVALID"


@pytest.mark.parametrize("missing", ["jti", "exp", "sub", "aud"])
def test_missing_required_claims_are_refused(missing: str) -> None:
    payload = _valid_payload()
    del payload[missing]
    assert _refused(_signed_by_us(payload)) == "TOKEN_INVALID"


@pytest.mark.parametrize(("claim", "value"), [("sub", "not-a-number"), ("scopes", "read"), ("shard", None)])
def test_malformed_claims_are_refused(claim: str, value: object) -> None:
    payload = _valid_payload()
    payload[claim] = value
    assert _refused(_signed_by_us(payload)) == "TOKEN_INVALID"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "😀.😀.😀"])
def test_garbage_is_refused(garbage: str) -> None:
    assert _refused(garbage) == "TOKEN_INVALID"


def test_a_verify_only_process_cannot_issue() -> None:
    with pytest.raises(ValueError, match="private key"):
        TokenIssuer(SigningKeys.from_public(KEYS.public_key), POLICY)


def test_local_environment_generates_one_private_development_key(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=tmp_path)
    first, second = load_signing_keys(settings), load_signing_keys(settings)
    assert first.key_id == second.key_id
    key_file = tmp_path / "keys" / DEV_KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    settings = load_settings(environ={"BULLANT_ENV": "prod"}, data_dir=tmp_path)
    with pytest.raises(StartupError, match="BULLANT_JWT_PRIVATE_KEY_FILE"):
        load_signing_keys(settings)


def test_configured_key_files_are_used(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    private_file = tmp_path / "private.pem"
    private_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signer = load_signing_keys(
        load_settings(environ={"BULLANT_ENV": "prod", "BULLANT_JWT_PRIVATE_KEY_FILE": str(private_file)})
    )
    checker = load_signing_keys(
        load_settings(environ={"BULLANT_ENV": "prod", "BULLANT_JWT_PUBLIC_KEY_FILE": str(public_file)})
    )
    assert signer.key_id == checker.key_id
    assert checker.private_key is None
    token, claims = TokenIssuer(signer, POLICY).issue(account_id=1, shard=0, roles=[], scopes=["read"], session_id="s")
    assert TokenVerifier(checker, POLICY).verify(token) == claims
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(StartupError, match="cannot read the token signing key"):
        load_signing_keys(load_settings(environ={"BULLANT_JWT_PRIVATE_KEY_FILE": str(tmp_path / "bad.pem")}))


class MovableClock:
    """Unix seconds that a test moves forward."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_still_expires() -> None:
    clock = MovableClock(time.time())
    verifier = TokenVerifier(KEYS, TokenPolicy(ttl_seconds=900, leeway_seconds=5), cache_size=2, clock=clock)
    token = _issue(now=clock.now)
    first = verifier.verify(token)
    assert verifier.verify(token) == first
    clock.now += 900 + 6
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_expiry_and_issue_time_follow_the_verifiers_clock() -> None:
    clock = MovableClock(2_000_000_000.0)
    policy = TokenPolicy(ttl_seconds=900, leeway_seconds=5)
    token, claims = TokenIssuer(KEYS, policy, clock=clock).issue(
        account_id=42, shard=0, roles=["user"], scopes=["read"], session_id="s-1", email_verified=False
    )
    assert claims.issued_at == 2_000_000_000
    assert claims.email_verified is False
    # The token lives in 2033, wall-clock time is now: only the injected clock counts.
    assert TokenVerifier(KEYS, policy, clock=clock).verify(token) == claims
    clock.now += 900 + 5
    assert TokenVerifier(KEYS, policy, clock=clock).verify(token) == claims  # within the leeway
    clock.now += 1
    assert _refused(token, TokenVerifier(KEYS, policy, clock=clock)) == "TOKEN_EXPIRED"
    clock.now = 2_000_000_000.0 - 60
    assert _refused(token, TokenVerifier(KEYS, policy, clock=clock)) == "TOKEN_INVALID"  # issued in its future


def test_the_verified_token_memory_is_bounded() -> None:
    verifier = TokenVerifier(KEYS, POLICY, cache_size=2)
    tokens = [_issue(session_id=f"s-{i}") for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 2
    assert list(verifier._verified) == tokens[-2:]
