"""The declared request rules checked on parsed messages (services/core/rules.py), without a server: update masks,
required oneofs, map keys and values."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.account.v1 import account_pb2
from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.errors import InvalidArgument
from services.core.rulebook import RuleBook

RULES = RuleBook()


def _mask_error(paths: list[str]) -> str:
    request = account_pb2.UpdateProfileRequest(profile=account_pb2.Profile(), update_mask=FieldMask(paths=paths))
    with pytest.raises(InvalidArgument) as caught:
        RULES.check(request)
    assert caught.value.reason == "UPDATE_MASK_INVALID"
    assert [v.field for v in caught.value.violations] == ["update_mask"]
    return caught.value.violations[0].description


@pytest.mark.parametrize(
    ("paths", "fragment"),
    [
        ([], "is required"),
        (["nickname"], "not nickname"),
        (["notification_preferences.pager"], "not notification_preferences.pager"),
        (["notification_preferences.email.address.local"], "not notification_preferences.email.address.local"),
        (["display_name.first"], "not display_name.first"),
        ([""], "name some of"),
        (["update_time"], "not update_time"),
        (["Display_Name"], "not Display_Name"),
        (["*", "display_name"], "must be the only path"),
        (["display_name", "*"], "must be the only path"),
        (["*", "*"], "must be the only path"),
    ],
)
def test_an_update_mask_names_settable_fields_or_star_alone(paths: list[str], fragment: str) -> None:
    assert fragment in _mask_error(paths)


def test_a_long_path_is_not_echoed_in_full() -> None:
    assert len(_mask_error(["x" * 10_000])) < 300


@pytest.mark.parametrize(
    "paths", [["*"], ["display_name"], ["display_name", "display_name"], ["notification_preferences.sms.enabled"]]
)
def test_masks_the_contract_admits(paths: list[str]) -> None:
    RULES.check(account_pb2.UpdateProfileRequest(profile=account_pb2.Profile(), update_mask=FieldMask(paths=paths)))


def _violations(message: Any) -> list[tuple[str, str, str]]:
    return [(reason, v.field, v.description) for reason, v in RULES.violations(message)]


def test_a_required_oneof_needs_one_member() -> None:
    # At the top of a request the violation names the oneof's first member.
    assert _violations(account_pb2.DisableTotpRequest(password="pw")) == [
        ("INVALID_ARGUMENT", "totp_code", "set one of totp_code, recovery_code")
    ]
    assert _violations(account_pb2.DisableTotpRequest(password="pw", recovery_code="")) == []
    # Inside a message, the message that holds it, with the oneof's own reason.
    config = signal_pb2.BacktestConfig(sizing=signal_pb2.PositionSizing())
    found = [item for item in _violations(signal_pb2.RunBacktestRequest(config=config)) if "sizing" in item[1]]
    assert found == [
        ("INVALID_SIZING", "config.sizing", "set one of fixed_fraction, fixed_quantity, volatility_target")
    ]


def test_the_values_of_a_map_are_checked_under_their_key() -> None:
    request = signal_pb2.EvaluateStrategyRequest(
        parameters={"period": common_pb2.ParameterValue(), "mode": common_pb2.ParameterValue(string_value="x" * 257)}
    )
    found = {(reason, field): words for reason, field, words in _violations(request) if "parameters" in field}
    assert found == {
        ("INVALID_PARAMETER", "parameters.period"): "set one of int_value, double_value, bool_value, string_value",
        ("INVALID_ARGUMENT", "parameters.mode.string_value"): "must be at most 256 characters, got 257",
    }


def test_a_parameter_name_no_strategy_can_have_is_unknown() -> None:
    request = signal_pb2.EvaluateStrategyRequest(parameters={"Not A Name": common_pb2.ParameterValue(int_value=1)})
    found = [item for item in _violations(request) if "parameters" in item[1]]
    assert found == [("UNKNOWN_PARAMETER", "parameters.Not A Name", "a parameter name (lower_snake_case)")]
