"""`bullant serve` as an operator runs it: grpcurl, health, reflection, metrics, shutdown and bad configuration."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bullant.account.v1 import account_pb2
from bullant.chat.v1 import chat_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from tests.e2e.platform import BULLANT, GRPCURL, Platform, dev_token, grpcurl, wait_until

pytestmark = pytest.mark.e2e

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (account_pb2, "AccountService"),
        (market_pb2, "MarketService"),
        (signal_pb2, "SignalService"),
        (model_pb2, "ModelService"),
    )
]
# A contract without an implementation yet: not served.
CHAT = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = Platform("serve", "all", "--port", "0", "--metrics-port", "0", "--grace", "3").wait_ready()
    try:
        yield running
    finally:
        running.stop()


def test_list_shows_every_service_with_health_and_reflection(platform: Platform) -> None:
    result = grpcurl("-plaintext", platform.address, "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert {s.full_name for s in SERVICES} | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed


def test_describe_shows_every_method_and_message(platform: Platform) -> None:
    for service in SERVICES:
        described = grpcurl("-plaintext", platform.address, "describe", service.full_name)
        assert described.returncode == 0, described.stderr
        for method in service.methods:
            assert f"rpc {method.name} (" in described.stdout
    messages = {m.input_type.full_name for s in SERVICES for m in s.methods} | {
        m.output_type.full_name for s in SERVICES for m in s.methods
    }
    for message in sorted(messages):
        described = grpcurl("-plaintext", platform.address, "describe", message)
        assert described.returncode == 0, f"{message}: {described.stderr}"
        assert f"message {message.rsplit('.', 1)[1]} {{" in described.stdout


@pytest.mark.parametrize("service", ["", *(s.full_name for s in SERVICES)])
def test_health_check_is_serving_for_each_service(platform: Platform, service: str) -> None:
    result = grpcurl(
        "-plaintext", "-d", json.dumps({"service": service}), platform.address, "grpc.health.v1.Health/Check"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_unknown_health_service_is_not_found(platform: Platform) -> None:
    result = grpcurl("-plaintext", "-d", '{"service":"nope.v1.Nope"}', platform.address, "grpc.health.v1.Health/Check")
    assert result.returncode != 0
    assert "NotFound" in result.stderr


def test_calls_without_credentials_are_unauthenticated(platform: Platform) -> None:
    result = grpcurl("-plaintext", "-d", "{}", platform.address, "bullant.model.v1.ModelService/ListModels")
    assert result.returncode != 0
    assert "Unauthenticated" in result.stderr
    assert "CREDENTIALS_MISSING" in result.stderr


def test_a_service_that_is_not_built_is_not_served_and_start_up_says_so(platform: Platform) -> None:
    listed = grpcurl("-plaintext", platform.address, "list")
    assert CHAT.full_name not in listed.stdout.split()
    health = grpcurl(
        "-plaintext", "-d", json.dumps({"service": CHAT.full_name}), platform.address, "grpc.health.v1.Health/Check"
    )
    assert health.returncode != 0
    assert "NotFound" in health.stderr
    token = dev_token(platform.data_dir, "--scopes", "read")
    call = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        "{}",
        platform.address,
        f"{CHAT.full_name}/ListTools",
    )
    assert "Unimplemented" in call.stderr
    said = [line for line in platform.lines if "not serving chat" in line]
    assert len(said) == 1, platform.output()


def test_serving_a_service_that_is_not_built_is_refused(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [BULLANT, "serve", "chat", "--port", "0", "--metrics-port", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bullant: chat: not built yet (the contract is in protos/, the implementation is not), so not served; "
        "serve any of: all, account, market, signal, model"
    ]


def test_dev_tokens_exist_only_in_the_local_environment(tmp_path: Path) -> None:
    environment = {"PATH": os.environ.get("PATH", ""), "BULLANT_ENV": "prod", "BULLANT_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [BULLANT, "token"], capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "only in BULLANT_ENV=local" in result.stderr


def test_metrics_endpoint_counts_calls(platform: Platform) -> None:
    assert platform.metrics_port
    for _ in range(3):
        grpcurl("-plaintext", "-d", "{}", platform.address, "grpc.health.v1.Health/Check")
    body = httpx.get(f"http://127.0.0.1:{platform.metrics_port}/metrics", timeout=5).text
    counted = [
        line
        for line in body.splitlines()
        if line.startswith("bullant_grpc_server_handled_total{")
        and 'grpc_method="Check"' in line
        and 'grpc_code="OK"' in line
    ]
    assert counted, body
    assert float(counted[0].rsplit(" ", 1)[1]) >= 3


def test_access_log_is_json_with_method_code_and_request_id(platform: Platform) -> None:
    grpcurl(
        "-plaintext",
        "-H",
        "x-request-id: e2e-log-7",
        "-H",
        f"authorization: Bearer {dev_token(platform.data_dir)}",
        "-d",
        '{"model_id": "mdl_missing"}',
        platform.address,
        "bullant.model.v1.ModelService/GetModel",
    )
    assert wait_until(lambda: any("e2e-log-7" in line for line in platform.lines))
    entry = json.loads(next(line for line in platform.lines if "e2e-log-7" in line))
    assert entry["logger"] == "bullant.access"
    assert entry["method"] == "/bullant.model.v1.ModelService/GetModel"
    assert entry["code"] == "NOT_FOUND"
    assert entry["request_id"] == "e2e-log-7"
    assert entry["duration_ms"] >= 0


def test_sigterm_during_a_long_stream_ends_cleanly_within_grace() -> None:
    running = Platform("serve", "market", "signal", "--port", "0", "--metrics-port", "-1", "--grace", "3").wait_ready()
    try:
        watch = subprocess.Popen(
            [
                GRPCURL,
                "-plaintext",
                "-d",
                '{"service":"bullant.market.v1.MarketService"}',
                running.address,
                "grpc.health.v1.Health/Watch",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert watch.stdout is not None
        # Read raw bytes up to the end of the first message; communicate() later reads the file descriptor itself,
        # so nothing may sit in a Python-side buffer in between.
        first = b""
        while not first.endswith(b"}\n"):
            chunk = os.read(watch.stdout.fileno(), 1)
            assert chunk, "grpcurl ended before the first message"
            first += chunk
        assert json.loads(first) == {"status": "SERVING"}
        running.terminate()
        # A hang guard, not a speed check: the open stream must not hold the process past its 3 s grace, and a
        # loaded machine may still take a while to get there.
        code = running.wait(timeout=3 + 30)
        rest_bytes, error_bytes = watch.communicate(timeout=10)
        rest, watch_errors = rest_bytes.decode(), error_bytes.decode()
        assert code == 0, running.output()
        assert '"NOT_SERVING"' in rest, f"grpcurl: {watch_errors}\nserver: {running.output()}"
        assert "Traceback" not in running.output(), running.output()
        assert any("stopped" in line for line in running.lines)
    finally:
        running.stop()


def test_bad_setting_is_a_clear_error_not_a_traceback() -> None:
    result = subprocess.run(
        [BULLANT, "serve", "all"],
        env={"BULLANT_PORT": "not-a-port", "BULLANT_GRACE_SECONDS": "-3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "BULLANT_PORT='not-a-port'" in result.stderr
    assert "BULLANT_GRACE_SECONDS='-3'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _bullant(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment.update(env)
    return subprocess.run(
        [BULLANT, *args], capture_output=True, text=True, timeout=timeout, check=False, env=environment
    )


@pytest.mark.parametrize("command", [("serve", "all", "--port", "0", "--metrics-port", "-1"), ("migrate",)])
def test_an_invalid_database_url_is_a_configuration_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    result = _bullant(
        *command,
        env={"BULLANT_DATA_DIR": str(tmp_path), "BULLANT_DATABASE_URL": "mysql+asyncmy://root@127.0.0.1:notaport/x"},
    )
    assert result.returncode == 2, result.stderr
    assert "BULLANT_DATABASE_URL='mysql+asyncmy://root@127.0.0.1:notaport/x': the port must be a number" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout


def _refusing_port() -> socket.socket:
    """A loopback port bound (so nobody takes it) but not listening: connections to it are refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    return closed


@pytest.mark.parametrize(
    "command",
    [("serve", "all", "--gateway", "--port", "0", "--metrics-port", "-1"), ("gateway", "--port", "0")],
    ids=["serve-all", "gateway-alone"],
)
def test_an_unreachable_redis_is_waited_for_within_the_bound_then_a_clear_exit(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    with _refusing_port() as closed:
        url = f"redis://:hunter2@127.0.0.1:{closed.getsockname()[1]}/0"
        result = _bullant(
            *command,
            env={
                "BULLANT_DATA_DIR": str(tmp_path),
                "BULLANT_GATEWAY_PORT": "0",
                "BULLANT_REDIS_URL": url,
                "BULLANT_STARTUP_WAIT_SECONDS": "2",
                "BULLANT_LOG_FORMAT": "text",
            },
        )
    assert result.returncode == 69, result.stderr
    lines = result.stderr.strip().splitlines()
    waits = [line for line in lines if "WARNING" in line and "waiting for redis" in line]
    assert waits, result.stderr
    assert all("giving up in" in line for line in waits)
    assert lines[-1].startswith("bullant: redis did not answer within 2s: ")
    assert "Check BULLANT_REDIS_URL (redis://:***@127.0.0.1:" in lines[-1]
    assert "Traceback" not in result.stderr
    assert not [line for line in lines if " ERROR " in line], result.stderr
    assert "hunter2" not in result.stderr


def test_sigterm_while_waiting_for_a_dependency_stops_the_start_up(tmp_path: Path) -> None:
    with _refusing_port() as closed:
        waiting = Platform(
            "serve",
            "all",
            "--port",
            "0",
            "--metrics-port",
            "-1",
            env={"BULLANT_REDIS_URL": f"redis://127.0.0.1:{closed.getsockname()[1]}/0", "BULLANT_LOG_FORMAT": "text"},
        )
        try:
            assert wait_until(lambda: any("waiting for redis" in line for line in waiting.lines), timeout=60), (
                waiting.output()
            )
            waiting.terminate()
            code = waiting.wait(timeout=30)
        finally:
            waiting.stop()
    assert code == 0, waiting.output()
    assert any("received SIGTERM while starting" in line for line in waiting.lines), waiting.output()
    assert "Traceback" not in waiting.output()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment["BULLANT_DATA_DIR"] = str(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [BULLANT, "serve", "market", "--port", str(port), "--metrics-port", "-1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=environment,
        )
    assert result.returncode == 1
    # Only the clear line: no gRPC C-core log line ("E1204 ... add_port.cc:83] Failed to add port"), no traceback.
    assert result.stderr.strip().splitlines() == [
        f"bullant: cannot listen on 127.0.0.1:{port}: the address is in use; is another process using it? "
        "Set BULLANT_PORT or --port."
    ]


def test_unknown_service_name_is_refused_with_serves_usage() -> None:
    result = subprocess.run([BULLANT, "serve", "trading"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: bullant serve "), result.stderr
    assert "SERVICE [SERVICE ...]" in result.stderr
    assert "unknown service trading; the services are account, market, signal, model, chat" in result.stderr


def test_version_as_a_command_and_as_an_option() -> None:
    command = subprocess.run([BULLANT, "version"], capture_output=True, text=True, timeout=60, check=False)
    option = subprocess.run([BULLANT, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (command.returncode, option.returncode) == (0, 0), option.stderr
    assert command.stdout.startswith("bullant 0.1.0 (grpcio ")
    assert option.stdout == command.stdout
