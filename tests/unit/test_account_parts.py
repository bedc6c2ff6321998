"""Small parts of the account domain: client addresses behind proxies, page tokens, secrets and their hashes, TOTP
step matching, and the throttle on the in-memory backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from bullant.account.v1 import account_pb2
from services.account.client import client_address, parse_networks, peer_address
from services.account.credentials import (
    hash_recovery_code,
    new_api_key_secret,
    new_recovery_codes,
    normalize_recovery_code,
)
from services.account.factors import matching_step
from services.account.throttle import Throttle, ThrottlePolicy
from services.core.auth.api_keys import allowed_scopes, looks_like_api_key
from services.core.coordination import KeySpace, MemoryBackend
from services.core.errors import InvalidArgument, ResourceExhausted
from services.core.paging import page_size
from services.core.rulebook import RuleBook

LOOPBACK = parse_networks(["127.0.0.1/32", "::1/128", "10.0.0.0/8"])


def test_peer_addresses_of_both_families() -> None:
    assert str(peer_address("ipv4:10.1.2.3:5555")) == "10.1.2.3"
    assert str(peer_address("ipv6:[::1]:5555")) == "::1"
    assert str(peer_address("ipv6:[fe80::1%eth0]:80")) == "fe80::1"
    assert peer_address("unix:/tmp/socket") is None
    assert peer_address("ipv4:not-an-ip:1") is None


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    # A direct client cannot pick its own address.
    assert client_address("ipv4:203.0.113.9:4000", "1.2.3.4", LOOPBACK) == "203.0.113.9"
    # Through the gateway: the right-most address the proxies did not add themselves.
    assert client_address("ipv4:127.0.0.1:4000", "1.2.3.4, 198.51.100.7", LOOPBACK) == "198.51.100.7"
    assert client_address("ipv4:127.0.0.1:4000", "198.51.100.7, 10.0.0.5", LOOPBACK) == "198.51.100.7"
    # A forged left-most entry is ignored; garbage stops the walk at the last good hop.
    assert client_address("ipv4:127.0.0.1:4000", "evil, 10.0.0.5", LOOPBACK) == "10.0.0.5"
    assert client_address("ipv4:127.0.0.1:4000", "", LOOPBACK) == "127.0.0.1"


def test_page_sizes_default_and_clamp_and_the_contract_refuses_negatives() -> None:
    assert page_size(0) == 50
    assert page_size(5000) == 1000
    with pytest.raises(InvalidArgument):
        RuleBook().check(account_pb2.ListApiKeysRequest(page_size=-1))


def test_recovery_codes_are_distinct_and_match_however_they_are_typed() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    assert all(len(code) == 19 and code.count("-") == 3 for code in codes)
    salt = "s1"
    typed = codes[0].upper().replace("-", " ")
    assert normalize_recovery_code(typed) == codes[0]
    assert hash_recovery_code(typed, salt) == hash_recovery_code(codes[0], salt)
    assert hash_recovery_code(codes[0], "s2") != hash_recovery_code(codes[0], salt)


def test_api_key_secrets_are_random_or_derived_per_account_and_request() -> None:
    key = b"k" * 32
    assert looks_like_api_key(new_api_key_secret())
    assert new_api_key_secret() != new_api_key_secret()
    derived = new_api_key_secret(key, account_id=1, request_id="r")
    assert derived == new_api_key_secret(key, account_id=1, request_id="r")
    assert derived != new_api_key_secret(key, account_id=2, request_id="r")
    assert derived != new_api_key_secret(b"x" * 32, account_id=1, request_id="r")
    assert not looks_like_api_key("bk_" + "z" * 48)
    assert not looks_like_api_key(derived[:-1])


def test_key_scopes_never_exceed_what_the_owner_may_hold() -> None:
    assert allowed_scopes(("user",), False) == {"read"}
    assert allowed_scopes(("user",), True) == {"read", "trade"}
    assert allowed_scopes(("user", "admin"), True) == {"read", "trade", "admin"}


def test_totp_codes_match_within_one_step_of_drift_only() -> None:
    secret = pyotp.random_base32()
    now = datetime(2026, 11, 22, 12, 0, 10)
    totp = pyotp.TOTP(secret)
    step = int(now.replace(tzinfo=UTC).timestamp()) // 30
    assert matching_step(secret, totp.generate_otp(step), now) == step
    assert matching_step(secret, totp.generate_otp(step + 1), now) == step + 1
    assert matching_step(secret, totp.generate_otp(step - 1), now) == step - 1
    assert matching_step(secret, totp.generate_otp(step + 2), now) is None
    assert matching_step(secret, "12345", now) is None
    assert matching_step(secret, "١٢٣٤٥٦", now) is None  # non-ASCII digits
    assert matching_step(secret, totp.generate_otp(step), now + timedelta(minutes=5)) is None


async def test_throttle_locks_after_failures_and_limits_per_key() -> None:
    backend = MemoryBackend()
    await backend.start()
    keyspace = KeySpace("bullant", "test", "account")
    policy = ThrottlePolicy(per_email_per_minute=100, per_ip_per_minute=3, lockout_failures=2, lockout_seconds=60)
    throttle = Throttle(backend.limiter(keyspace), backend.cache(keyspace), policy, action="login")
    try:
        await throttle.check(email="a@example.com", ip_address="1.1.1.1")
        await throttle.failed("a@example.com")
        await throttle.succeeded("a@example.com")
        await throttle.failed("a@example.com")
        await throttle.check(email="a@example.com", ip_address="2.2.2.2")  # one failure since the success
        await throttle.failed("a@example.com")
        with pytest.raises(ResourceExhausted) as locked:
            await throttle.check(email="a@example.com", ip_address="3.3.3.3")
        assert locked.value.reason == "LOGIN_LOCKED"
        assert locked.value.retry_after_seconds is not None
        assert 0 < locked.value.retry_after_seconds <= 60
        for _ in range(2):
            await throttle.check(email="b@example.com", ip_address="1.1.1.1")
        with pytest.raises(ResourceExhausted) as limited:
            await throttle.check(email="c@example.com", ip_address="1.1.1.1")
        assert limited.value.reason == "RATE_LIMITED"
        # Emails are not stored in the keys.
        assert not any("example.com" in key for key in backend.live_keys())
    finally:
        await backend.stop()
