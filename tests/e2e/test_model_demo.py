"""`bullant serve all` on embedded defaults (what `make run` starts) on a fresh data directory: the demo models are
trained for the live engine's 1-minute bars once the simulator's history is stored, and promoted only through the
promotion gate - Predict answers on SIM-BTC-USDT (its minute closes carry noise a model can learn) within a couple of
minutes, SIM-AAPL (a random walk) keeps a candidate that did not pass - and the first start logs no warning."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.platform import Platform, dev_token, grpcurl
from tests.signal_platform import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform("serve", "all", "--port", str(free_port()), "--metrics-port", "-1", "--grace", "3").wait_ready()
    try:
        yield running
    finally:
        running.stop()


def _call(platform: Platform, token: str, method: str, request: dict[str, Any]) -> Any:
    return grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {token}", "-d", json.dumps(request),
        platform.address, f"bullant.model.v1.ModelService/{method}",
    )  # fmt: skip


def test_demo_models_are_promoted_only_through_the_gate(platform: Platform) -> None:
    token = dev_token(platform.data_dir, "--scopes", "read")
    request = {"symbol": "SIM-BTC-USDT", "timeframe": "TIMEFRAME_1M", "horizon_bars": 5}
    deadline = time.monotonic() + 150
    result = None
    while time.monotonic() < deadline:
        result = _call(platform, token, "Predict", request)
        if result.returncode == 0:
            break
        assert "MODEL_NOT_TRAINED" in result.stderr or "Unavailable" in result.stderr, result.stderr
        time.sleep(1.0)
    assert result is not None
    assert result.returncode == 0, result.stderr + platform.output()[-3000:]
    prediction = json.loads(result.stdout)["prediction"]
    assert prediction["symbol"] == "SIM-BTC-USDT"
    assert len(prediction["points"]) == 5
    assert prediction["serving_arm"] == "SERVING_ARM_PRODUCTION"
    (btc,) = json.loads(_call(platform, token, "ListModels", {"symbol": "SIM-BTC-USDT"}).stdout)["models"]
    assert btc["status"] == "MODEL_STATUS_PRODUCTION"
    assert btc["promotion_gate"]["passed"] is True
    assert "promotion_override" not in btc

    def aapl_models() -> list[dict[str, Any]]:
        listed = _call(platform, token, "ListModels", {"symbol": "SIM-AAPL"})
        return list(json.loads(listed.stdout).get("models", []))

    deadline = time.monotonic() + 60
    while not aapl_models() and time.monotonic() < deadline:
        time.sleep(1.0)
    (aapl,) = aapl_models()
    assert (aapl["timeframe"], aapl["status"]) == ("TIMEFRAME_1M", "MODEL_STATUS_CANDIDATE")
    assert aapl["promotion_gate"].get("passed", False) is False

    warnings = [line for line in platform.lines if '"level": "WARNING"' in line or '"level": "ERROR"' in line]
    assert not warnings, warnings
