"""The access rules in the contracts: every Bullant method has one, and they say what the issues ask."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import MethodDescriptor

from bullant.account.v1 import account_pb2
from bullant.chat.v1 import chat_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.core.access import SCOPES, rule_for_path, rule_of

SERVICES = [
    account_pb2.DESCRIPTOR.services_by_name["AccountService"],
    market_pb2.DESCRIPTOR.services_by_name["MarketService"],
    signal_pb2.DESCRIPTOR.services_by_name["SignalService"],
    model_pb2.DESCRIPTOR.services_by_name["ModelService"],
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
]
METHODS = [method for service in SERVICES for method in service.methods]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name)
def test_every_method_has_a_coherent_rule(method: MethodDescriptor) -> None:
    rule = rule_of(method)
    assert rule is not None, f"{method.full_name} has no (bullant.common.v1.access) option"
    if rule.public:
        assert not rule.scopes
        assert not rule.session_only
    else:
        assert rule.scopes, "a non-public method names the scopes it needs"
        assert set(rule.scopes) <= SCOPES


def test_exactly_the_credential_issuing_methods_are_public() -> None:
    public = {m.name for m in METHODS if rule_of(m) is not None and rule_of(m).public}  # type: ignore[union-attr]
    assert public == {"Register", "VerifyEmail", "Login", "Refresh", "RequestPasswordReset", "ResetPassword"}


def test_account_takeover_paths_need_a_session() -> None:
    account = SERVICES[0]
    for name in ("ChangePassword", "EnrollTotp", "DisableTotp", "CreateApiKey", "RevokeApiKey", "RevokeSession"):
        rule = rule_of(account.methods_by_name[name])
        assert rule is not None
        assert rule.session_only, name


def test_admin_methods_need_the_admin_scope() -> None:
    for path in (
        "/bullant.account.v1.AccountService/DisableUser",
        "/bullant.account.v1.AccountService/ListUsers",
        "/bullant.market.v1.MarketService/ImportBars",
        "/bullant.model.v1.ModelService/PromoteModel",
    ):
        rule = rule_for_path(path)
        assert rule is not None
        assert list(rule.scopes) == ["admin"], path


def test_unknown_paths_have_no_rule() -> None:
    assert rule_for_path("/grpc.health.v1.Health/Check") is None
    assert rule_for_path("/bullant.market.v1.MarketService/NoSuchMethod") is None
