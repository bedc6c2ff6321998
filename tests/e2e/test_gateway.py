"""`bullant serve all --gateway` (what `make run` starts) as a browser developer uses it: readiness, register and log
in with plain HTTP, a REST call with the token, live ticks as newline-delimited JSON, and one SIGTERM ending both
the gRPC server and the gateway."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.platform import BIN, Platform, dev_token, wait_until
from tests.signal_platform import free_port

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def platform() -> Iterator[tuple[Platform, str]]:
    port = free_port()
    running = Platform(
        "serve", "all", "--gateway", "--port", "0", "--metrics-port", "-1", "--grace", "3",
        env={"BULLANT_GATEWAY_PORT": str(port), "BULLANT_GATEWAY_REQUESTS_PER_MINUTE": "0"},
    ).wait_ready()  # fmt: skip
    try:
        yield running, f"http://127.0.0.1:{port}"
    finally:
        running.stop()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_schemathesis_finds_no_server_error_and_no_schema_violation(platform: tuple[Platform, str]) -> None:
    """Generated requests for every REST operation (bounded), checked against the gateway's own /openapi.json.
    Server streams are left out (they never end); so is chat, whose methods are not built yet (501)."""
    process, base = platform
    assert wait_until(lambda: _ready(base), timeout=60), process.output()
    token = dev_token(process.data_dir, "--scopes", "read,trade")
    result = subprocess.run(
        [
            str(BIN / "st"), "run", f"{base}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,response_schema_conformance",
            "--phases", "examples,fuzzing",
            "--max-examples", "8",
            "--generation-deterministic",
            "--exclude-path-regex", r"(:(stream|watch|converse|run|backfill)$|conversations|/v1/tools)",
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=process.data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_log_in_call_and_stream_ticks_over_http(platform: tuple[Platform, str]) -> None:
    process, base = platform
    assert wait_until(lambda: f"bullant: gateway on {base}" in process.output(), timeout=10), process.output()
    assert wait_until(lambda: _ready(base), timeout=60), process.output()
    with httpx.Client(base_url=base, timeout=30) as http:
        registered = http.post("/v1/auth:register", json={"email": "grace@example.com", "password": PASSWORD})
        assert registered.status_code == 200, registered.text
        login = http.post("/v1/auth:login", json={"email": "grace@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"authorization": f"Bearer {login.json()['accessToken']}"}
        instrument = http.get("/v1/instruments/SIM-AAPL", headers=headers)
        assert instrument.status_code == 200, instrument.text
        assert instrument.json()["instrument"]["symbol"] == "SIM-AAPL"
        with http.stream("GET", "/v1/ticks:stream", params={"symbols": "SIM-AAPL"}, headers=headers) as stream:
            assert stream.status_code == 200
            kinds = []
            for line in stream.iter_lines():
                if line.strip():
                    kinds.append(next(iter(json.loads(line)["result"])))
                if "ticks" in kinds:
                    break
            assert kinds[0] == "snapshot"
    process.terminate()
    assert process.wait(30) == 0
