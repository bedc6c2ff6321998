"""The declared request rules checked on parsed messages (services/core/rules.py), without a server: update masks."""

from __future__ import annotations

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.account.v1 import account_pb2
from services.core.errors import InvalidArgument
from services.core.rules import RuleBook

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
