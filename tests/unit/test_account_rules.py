"""Account rules at their homes: the one sign-out rule (SessionRevocations), the admin-role use case the CLI calls
(AdminRoles), and the checks that report every problem of a request at once (Checks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from services.account.records import Account, AccountState, Session
from services.account.revocations import SessionRevocations
from services.account.roles import AdminRoles
from services.account.session_store import SessionStore
from services.account.store import AccountStore
from services.account.validation import Checks
from services.core.auth.revocation import ACCOUNT_DISABLED, SIGNED_OUT, RevocationList
from services.core.errors import InvalidArgument

NOW = datetime(2026, 1, 2, 3, 4, 5)


def _session(session_id: str) -> Session:
    return Session(
        session_id=session_id,
        account_id=7,
        device_name="",
        user_agent="",
        ip_address="",
        create_time=NOW,
        last_use_time=NOW,
        expire_time=NOW + timedelta(days=1),
    )


class _Sessions:
    def __init__(self, revoked: list[Session]) -> None:
        self.revoked = revoked
        self.calls: list[dict[str, Any]] = []

    async def revoke_sessions(self, account_id: int, **kwargs: Any) -> list[Session]:
        self.calls.append({"account_id": account_id, **kwargs})
        return self.revoked


class _Revocations:
    def __init__(self) -> None:
        self.sessions: list[tuple[str, float, bytes]] = []
        self.announced: list[int] = []

    async def revoke_session(self, session_id: str, ttl_seconds: float, *, why: bytes = SIGNED_OUT) -> None:
        self.sessions.append((session_id, ttl_seconds, why))

    async def announce(self, account_id: int) -> None:
        self.announced.append(account_id)


def _revocations(revoked: list[Session]) -> tuple[SessionRevocations, _Sessions, _Revocations]:
    sessions, published = _Sessions(revoked), _Revocations()
    part = SessionRevocations(
        sessions=cast(SessionStore, sessions),
        revocations=cast(RevocationList, published),
        access_token_ttl=timedelta(minutes=15),
        token_leeway=timedelta(seconds=5),
        clock=lambda: NOW,
    )
    return part, sessions, published


async def test_revoked_sessions_are_refused_for_the_access_token_lifetime_plus_the_leeway_and_announced() -> None:
    part, sessions, published = _revocations([_session("a"), _session("b")])
    revoked = await part.revoke(7, reason="logout", keep_session_id="c")
    assert [s.session_id for s in revoked] == ["a", "b"]
    assert sessions.calls == [
        {"account_id": 7, "now": NOW, "reason": "logout", "session_id": None, "keep_session_id": "c"}
    ]
    assert published.sessions == [("a", 905.0, SIGNED_OUT), ("b", 905.0, SIGNED_OUT)]
    assert published.announced == [7]


async def test_a_disabled_account_says_why_and_nothing_revoked_announces_nothing() -> None:
    part, _, published = _revocations([_session("a")])
    await part.revoke(7, reason="account_disabled")
    assert published.sessions == [("a", 905.0, ACCOUNT_DISABLED)]
    quiet, _, silent = _revocations([])
    assert await quiet.revoke(7, reason="logout") == []
    assert silent.announced == []


class _Accounts:
    def __init__(self, account: Account | None) -> None:
        self.account = account
        self.calls: list[tuple[str, str, bool]] = []

    async def set_role(self, email: str, role: str, *, present: bool) -> Account | None:
        self.calls.append((email, role, present))
        return self.account


def _account() -> Account:
    return Account(
        account_id=7, email="ann@example.com", roles=("user",), state=AccountState.ACTIVE, totp_enabled=False,
        create_time=NOW,
    )  # fmt: skip


async def test_revoking_the_admin_role_signs_the_account_out_with_the_service_rule() -> None:
    part, sessions, published = _revocations([_session("a")])
    store = _Accounts(_account())
    roles = AdminRoles(store=cast(AccountStore, store), revocations=part)
    assert await roles.set_admin(" Ann@Example.com ", grant=False) == (store.account, 1)
    assert store.calls == [("ann@example.com", "admin", False)]
    assert sessions.calls[0]["reason"] == "role_changed"
    assert published.sessions == [("a", 905.0, SIGNED_OUT)]


async def test_granting_the_admin_role_signs_nobody_out_and_an_unknown_email_changes_nothing() -> None:
    part, sessions, _ = _revocations([_session("a")])
    roles = AdminRoles(store=cast(AccountStore, _Accounts(_account())), revocations=part)
    assert (await roles.set_admin("ann@example.com", grant=True))[1] == 0
    nobody = AdminRoles(store=cast(AccountStore, _Accounts(None)), revocations=part)
    assert await nobody.set_admin("bob@example.com", grant=False) == (None, 0)
    assert sessions.calls == []
    with pytest.raises(InvalidArgument):
        await nobody.set_admin("not an email", grant=True)


def test_checks_report_every_problem_at_once_with_the_first_reason() -> None:
    checks = Checks()
    email = checks.email("email", "not an email")
    checks.new_password("password", "short", email)
    with pytest.raises(InvalidArgument) as refused:
        checks.done()
    assert [v.field for v in refused.value.violations] == ["email", "password"]
    assert refused.value.reason == "EMAIL_INVALID"
    fine = Checks()
    assert fine.email("email", "Ann@Example.com") == "ann@example.com"
    fine.done()
