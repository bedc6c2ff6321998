"""`bullant serve all` on embedded defaults (what `make run` starts) seeds forecasting models for the demo symbols:
Predict answers over grpcurl within a minute of start-up, from a version promoted by the demo bootstrap."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

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


def test_demo_symbols_have_production_models(platform: Platform) -> None:
    token = dev_token(platform.data_dir, "--scopes", "read")
    request = json.dumps({"symbol": "SIM-AAPL", "timeframe": "TIMEFRAME_1D", "horizon_bars": 5})
    deadline = time.monotonic() + 90
    result = None
    while time.monotonic() < deadline:
        result = grpcurl(
            "-plaintext", "-H", f"authorization: Bearer {token}", "-d", request,
            platform.address, "bullant.model.v1.ModelService/Predict",
        )  # fmt: skip
        if result.returncode == 0:
            break
        assert "MODEL_NOT_TRAINED" in result.stderr or "Unavailable" in result.stderr, result.stderr
        time.sleep(1.0)
    assert result is not None
    assert result.returncode == 0, result.stderr + platform.output()[-3000:]
    prediction = json.loads(result.stdout)["prediction"]
    assert prediction["symbol"] == "SIM-AAPL"
    assert len(prediction["points"]) == 5
    assert prediction["serving_arm"] == "SERVING_ARM_PRODUCTION"
    listed = grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {token}", "-d", '{"symbol": "SIM-AAPL"}',
        platform.address, "bullant.model.v1.ModelService/ListModels",
    )  # fmt: skip
    assert "demo bootstrap" in listed.stdout
