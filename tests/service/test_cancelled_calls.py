"""Clients that cancel their calls (a browser leaving a stream, schemathesis cutting an event stream short) must not
hurt the server: the interceptors' bookkeeping after a cancellation once read the peer from the finished call, which
crashes grpcio (SIGSEGV) and with it every service of the process. The server runs in a child process here, so that
such a crash fails this test rather than ending the test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = """
import asyncio, logging
import grpc
from grpc_health.v1 import health_pb2
from services.core.server import GrpcServer, ServiceRegistration
from tests.support import make_settings

logging.basicConfig(level=logging.INFO)  # the access log on, as in production


async def ticks(request, context):
    while True:
        yield health_pb2.HealthCheckResponse(status=1)
        await asyncio.sleep(0.001)


def add(server):
    handler = grpc.unary_stream_rpc_method_handler(
        ticks,
        request_deserializer=health_pb2.HealthCheckRequest.FromString,
        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Ticks", {"Stream": handler}),))


async def main():
    server = GrpcServer(make_settings().server, [ServiceRegistration("ticks", "test.Ticks", add)], authenticator=None)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stream = channel.unary_stream(
            "/test.Ticks/Stream",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        for _ in range(1000):
            call = stream(health_pb2.HealthCheckRequest())
            await call.read()
            call.cancel()
            await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    await server.stop(grace=0.5)
    print("survived")


asyncio.run(main())
"""


def test_a_server_survives_clients_that_cancel_their_streams() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "survived" in result.stdout
