"""schemathesis hooks of the gateway's run (tests/e2e/test_gateway.py), loaded through SCHEMATHESIS_HOOKS.

The OpenAPI document declares every constraint a schema can say (lengths, patterns, ranges, counts, required fields);
what it cannot say, it names: a string `format` for a value only the server can judge (an IANA time zone, a strong
password, a page token it issued), and for the rest the operation's semantic refusals listed here, each with the
ErrorInfo reason the service documents. Valid data generated from the document must then be accepted, except for
exactly those refusals: `documented_refusals_only` fails on any other 400, so a declared constraint the server does not
keep (or a constraint the document is missing) is still found.
"""

from __future__ import annotations

import json
import zoneinfo
from typing import Any

import schemathesis
from hypothesis import strategies as st

# Values of the formats the document names (gateway/schemas.py, _FORMAT_DESCRIPTIONS), as a client would get them.
_WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp")
FORMATS: dict[str, st.SearchStrategy[str]] = {
    # Only the server issues page tokens: a client starts without one.
    "page-token": st.just(""),
    "iana-time-zone": st.sampled_from(sorted(zoneinfo.available_timezones())),
    "trading-calendar": st.sampled_from(["XNYS", "XNAS", "XKRX", "XLON", "XTKS", "24/7", "FX"]),
    # Letters, marks, digits, punctuation and symbols of any script, and the space; at least one that is not a space.
    "printable": st.text(
        st.characters(categories=("L", "M", "N", "P", "S")) | st.just(" "), min_size=1, max_size=40
    ).filter(str.strip),
    "webhook-url": st.builds(
        lambda host, path: f"https://{host}.example.com/{path}",
        st.sampled_from(_WORDS),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789-_/", max_size=20),
    ),
    # A passphrase of unrelated words and a number: what the strength policy asks for.
    "password": st.builds(
        lambda words, number: "-".join(words) + f"-{number}",
        st.lists(st.sampled_from(_WORDS), min_size=3, max_size=5, unique=True),
        st.integers(min_value=10, max_value=9999),
    ),
}
for _name, _strategy in FORMATS.items():
    schemathesis.openapi.format(_name, _strategy)

# Refusals of valid data that no schema can express, by operation: state the generated request cannot know (no
# production model, no stored bars, no TOTP enrolment), rules across fields (a range's order, one of two fields),
# names only a strategy or algorithm knows, and tokens only the server issues. Each is the reason the service
# documents for it.
_PARAMETERS = {
    "UNKNOWN_PARAMETER": "a parameter name the strategy, indicator or algorithm does not have",
    "INVALID_PARAMETER": "a value outside that parameter's own type, range or choices (see its ParameterSpec)",
}
_RANGE = {"INVALID_RANGE": "across fields: a range's start_time before its end_time"}
SEMANTIC_REFUSALS: dict[str, dict[str, str]] = {
    "AccountService_ConfirmTotp": {"TOTP_NOT_ENROLLED": "state: no TOTP enrolment is pending for this account"},
    "AccountService_ResetPassword": {"RESET_TOKEN_INVALID": "only the server issues reset tokens (by email)"},
    "AccountService_VerifyEmail": {"VERIFICATION_TOKEN_INVALID": "only the server issues verification tokens"},
    "AccountService_UpdateProfile": {"CHANNEL_ADDRESS_REQUIRED": "across fields: an enabled channel needs its address"},
    "MarketService_ListBars": {"TIME_RANGE_INVALID": _RANGE["INVALID_RANGE"]},
    "ModelService_GetModelPerformance": {
        "MISSING_MODEL_SELECTOR": "across fields: a model_id, or a symbol and a timeframe",
        "MODEL_NOT_TRAINED": "state: no production model of that symbol and timeframe",
    },
    "AccountService_CreateApiKey": {"EXPIRE_TIME_INVALID": "relative to now: in the future, at most 365 days ahead"},
    "ModelService_Predict": {
        "MODEL_NOT_TRAINED": "state: no production model of that symbol and timeframe",
        "MODEL_MISMATCH": "across fields and state: the model_id forecasts another symbol or timeframe",
        "MODEL_SELECTOR_CONFLICT": "across fields: require_passed_gate with a model_id",
    },
    "ModelService_TrainModel": {**_PARAMETERS, **_RANGE},
    "SignalService_ComputeIndicators": {
        **_PARAMETERS,
        "UNKNOWN_OUTPUT": "an output the indicator does not have",
        **_RANGE,
    },
    "SignalService_CreateAlert": _PARAMETERS,
    "SignalService_UpdateAlert": _PARAMETERS,
    "SignalService_ListSignals": _RANGE,
    "SignalService_GetSignalPerformance": _RANGE,
    "SignalService_StreamSignals": {
        "REPLAY_WINDOW_EXCEEDED": "relative to now: a replay starts at most 24 hours back",
        **_RANGE,
    },
    "SignalService_EvaluateStrategy": {
        **_PARAMETERS,
        **_RANGE,
        "NO_BARS": "state: no stored bars of the symbol in the range",
    },
    "SignalService_RunBacktest": {
        **_PARAMETERS,
        **_RANGE,
        "DUPLICATE_SYMBOL": "across elements: a symbol listed twice (symbols compare in upper case)",
    },
}


def _reasons(response: Any) -> set[str]:
    try:
        details = json.loads(response.content)["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return set()
    return {
        str(detail.get("reason"))
        for detail in details
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo")
    }


@schemathesis.check
def documented_refusals_only(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 400 to valid data must be one of the operation's documented semantic refusals."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    operation = str(case.operation.definition.raw.get("operationId", ""))
    allowed = SEMANTIC_REFUSALS.get(operation, {})
    reasons = _reasons(response)
    if not reasons & set(allowed):
        raise AssertionError(
            f"{operation} refused valid data with 400 {sorted(reasons) or 'without a reason'}; documented semantic "
            f"refusals: {sorted(allowed) or 'none'}\n{response.content[:600]!r}"
        )
    return None
