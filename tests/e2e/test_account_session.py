"""The README's grpcurl session against `bullant serve all`: register, verify the email from the logged link, log in,
call authenticated methods with the token and with an API key, make an admin with `bullant admin grant`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.platform import BULLANT, Platform, grpcurl, wait_until

pytestmark = pytest.mark.e2e

ACCOUNT = "bullant.account.v1.AccountService"
PASSWORD = "correct horse battery staple"
_LINK = re.compile(r"verify-email\?token=(?P<token>[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform("serve", "all", "--port", "0", "--metrics-port", "-1", "--grace", "3").wait_ready()
    try:
        yield running
    finally:
        running.stop()


def call(platform: Platform, method: str, body: dict[str, Any], *headers: str) -> dict[str, Any]:
    flags = [flag for header in headers for flag in ("-H", header)]
    result = grpcurl("-plaintext", *flags, "-d", json.dumps(body), platform.address, f"{ACCOUNT}/{method}")
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout or "{}")
    return reply


def test_register_verify_login_and_call_with_the_token(platform: Platform) -> None:
    registered = call(platform, "Register", {"email": "Ada@Example.com", "password": PASSWORD})
    assert registered["account"]["email"] == "ada@example.com"
    # The embedded default logs the verification link (no mail server on a laptop).
    assert wait_until(lambda: _LINK.search(platform.output()) is not None)
    match = _LINK.search(platform.output())
    assert match is not None
    verified = call(platform, "VerifyEmail", {"token": match["token"]})
    assert verified["account"]["email_verified"] is True

    login = call(platform, "Login", {"email": "ada@example.com", "password": PASSWORD, "device_name": "terminal"})
    assert login["scopes"] == ["read", "trade"]
    token = login["access_token"]
    me = call(platform, "GetAccount", {}, f"authorization: Bearer {token}")
    assert me["session_id"] == login["session_id"]
    assert PASSWORD not in platform.output()
    assert token not in platform.output()

    key = call(
        platform, "CreateApiKey", {"api_key": {"name": "bot", "scopes": ["read"]}}, f"authorization: Bearer {token}"
    )
    by_key = call(platform, "GetProfile", {}, f"x-api-key: {key['secret']}")
    assert by_key["profile"]["timezone"] == "Asia/Seoul"

    wrong = grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"email": "ada@example.com", "password": "not the password"}),
        platform.address,
        f"{ACCOUNT}/Login",
    )
    assert wrong.returncode != 0
    assert "Unauthenticated" in wrong.stderr
    assert "INVALID_CREDENTIALS" in wrong.stderr


def test_admin_grant_gives_the_admin_scope_at_next_login(platform: Platform) -> None:
    call(platform, "Register", {"email": "root@example.com", "password": PASSWORD})
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = platform.data_dir
    granted = subprocess.run(
        [BULLANT, "admin", "grant", "ROOT@example.com"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert granted.returncode == 0, granted.stderr
    assert "roles user, admin" in granted.stdout
    login = call(platform, "Login", {"email": "root@example.com", "password": PASSWORD})
    assert "admin" in login["scopes"]
    users = call(platform, "ListUsers", {"email_query": "root"}, f"authorization: Bearer {login['access_token']}")
    assert [user["email"] for user in users["users"]] == ["root@example.com"]
    revoked = subprocess.run(
        [BULLANT, "admin", "revoke", "root@example.com"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "roles user; 1 session(s) signed out" in revoked.stdout
    refresh = grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"refresh_token": login["refresh_token"]}),
        platform.address,
        f"{ACCOUNT}/Refresh",
    )
    assert refresh.returncode != 0
    assert "SESSION_REVOKED" in refresh.stderr
    missing = subprocess.run(
        [BULLANT, "admin", "grant", "nobody@example.com"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert "no account" in missing.stderr
