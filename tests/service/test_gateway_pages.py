"""The links the account service mails, opened in a browser through the real gateway in front of the real account
service on loopback: the verification link verifies and says so (or why not, by the service's reasons), the reset
link shows a form without changing anything and its POST sets the password; every page is small escaped HTML with
no script, and the log line a developer looks for names the email plainly."""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from bullant.account.v1 import account_pb2
from gateway.app import create_app
from tests.account_platform import PASSWORD, AccountPlatform, account_settings, bearer, running_account_service
from tests.gateway_platform import running_uvicorn
from tests.signal_platform import free_port

pytestmark = pytest.mark.timeout(120)
NEW_PASSWORD = "a brand new passphrase for ada"


@dataclass
class Browser:
    account: AccountPlatform
    http: httpx.AsyncClient

    async def open(self, link: str) -> httpx.Response:
        """A mailed link (BULLANT_PUBLIC_URL + path) opened against this gateway."""
        parts = urllib.parse.urlsplit(link)
        return await self.http.get(f"{parts.path}?{parts.query}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with running_account_service(account_settings(gateway_requests_per_minute=0)) as account:
        settings = account_settings(default_upstream=account.server.address)
        port = free_port()
        async with (
            running_uvicorn(create_app(settings), port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as http,
        ):
            yield Browser(account, http)


async def _link(account: AccountPlatform, account_id: int, template: str) -> str:
    messages = await account.outbox(account_id, template)
    assert messages, f"no {template} email"
    return str(messages[-1]["payload"]["link"])


def _page(response: httpx.Response) -> str:
    """The HTML of a page, after checking what every page must be."""
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-request-id"]
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    assert "<script" not in text.lower()
    assert "Traceback" not in text
    return text


async def _verified(account: AccountPlatform, email: str) -> bool:
    token = (await account.login(email)).access_token
    reply = await account.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(token))
    return bool(reply.account.email_verified)


def _heading(text: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", text)
    assert found, text
    return found.group(1)


async def test_the_verification_link_verifies_and_says_so(browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    account = browser.account
    with caplog.at_level(logging.INFO, logger="bullant.account"):
        ada = await account.register("ada@example.com")
    link = await _link(account, ada.account_id, "verify_email")
    assert link.startswith("http://localhost:8080/verify-email?token=")
    # The line the README tells a developer to look for, link included.
    assert f"verification email queued: {link}" in caplog.messages
    parts = urllib.parse.urlsplit(link)
    looked_at = await browser.http.head(f"{parts.path}?{parts.query}")  # a link checker: verifies nothing
    assert looked_at.status_code == 200
    assert not await _verified(account, "ada@example.com")
    opened = await browser.open(link)
    assert opened.status_code == 200
    page = _page(opened)
    assert _heading(page) == "Your email address is verified"
    assert "ada@example.com may now sign in and trade." in page
    assert await _verified(account, "ada@example.com")
    # A second click (or a mail scanner's) is harmless.
    again = await browser.open(link)
    assert (again.status_code, _heading(_page(again))) == (200, "Your email address is verified")


async def test_the_verification_page_says_why_a_link_does_not_work(browser: Browser) -> None:
    account = browser.account
    bob = await account.register("bob@example.com")
    old = await _link(account, bob.account_id, "verify_email")
    # A newer link replaces the older one.
    await account.stub.ResendVerificationEmail(
        account_pb2.ResendVerificationEmailRequest(),
        metadata=(("authorization", f"Bearer {(await account.login('bob@example.com')).access_token}"),),
    )
    replaced = await browser.open(old)
    assert (replaced.status_code, _heading(_page(replaced))) == (400, "This verification link does not work")
    account.clock.advance(hours=49)
    expired = await browser.open(await _link(account, bob.account_id, "verify_email"))
    assert (expired.status_code, _heading(_page(expired))) == (400, "This verification link has expired")
    unknown = await browser.http.get("/verify-email", params={"token": "not-a-token"})
    assert (unknown.status_code, _heading(_page(unknown))) == (400, "This verification link does not work")
    missing = await browser.http.get("/verify-email")
    assert (missing.status_code, _heading(_page(missing))) == (400, "This link is incomplete")


async def test_the_reset_link_shows_a_form_and_only_its_post_changes_the_password(browser: Browser) -> None:
    account = browser.account
    ada = await account.register("ada@example.com")
    await account.stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email="ada@example.com"))
    link = await _link(account, ada.account_id, "reset_password")
    assert link.startswith("http://localhost:8080/reset-password?token=")
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
    for _ in range(2):  # opening it (twice, as a scanner might) changes nothing
        form = await browser.open(link)
        assert form.status_code == 200
        page = _page(form)
        assert _heading(page) == "Set a new password"
        assert '<form method="post" action="reset-password">' in page
        assert f'<input type="hidden" name="token" value="{token}">' in page
    assert "form-action 'self'" in form.headers["content-security-policy"]
    await account.login("ada@example.com")  # the old password still works

    weak = await browser.http.post("/reset-password", data={"token": token, "new_password": "short"})
    assert weak.status_code == 400
    page = _page(weak)
    assert _heading(page) == "Set a new password"
    assert "The new password was not accepted: it " in page
    assert f'name="token" value="{token}"' in page  # the form again, ready for another try

    changed = await browser.http.post("/reset-password", data={"token": token, "new_password": NEW_PASSWORD})
    assert (changed.status_code, _heading(_page(changed))) == (200, "Your password is changed")
    assert (await account.login("ada@example.com", NEW_PASSWORD)).access_token
    used = await browser.http.post("/reset-password", data={"token": token, "new_password": PASSWORD + " again"})
    assert (used.status_code, _heading(_page(used))) == (400, "This reset link does not work")


async def test_reset_pages_escape_what_they_show_and_refuse_what_a_form_never_sends(browser: Browser) -> None:
    hostile = '"><script>alert(1)</script>'
    form = await browser.http.get("/reset-password", params={"token": hostile})
    page = _page(form)
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    account = browser.account
    ada = await account.register("ada@example.com")
    await account.stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email="ada@example.com"))
    link = urllib.parse.urlsplit(await _link(account, ada.account_id, "reset_password"))
    token = urllib.parse.parse_qs(link.query)["token"][0]
    account.clock.advance(hours=2)
    expired = await browser.http.post("/reset-password", data={"token": token, "new_password": NEW_PASSWORD})
    assert (expired.status_code, _heading(_page(expired))) == (400, "This reset link has expired")
    as_json = await browser.http.post("/reset-password", json={"token": "x", "new_password": NEW_PASSWORD})
    assert as_json.status_code == 415
    assert as_json.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert as_json.headers["x-request-id"]
    missing = await browser.http.get("/reset-password")
    assert (missing.status_code, _heading(_page(missing))) == (400, "This link is incomplete")
