"""The tests' TCP proxy: after a cut, nothing gets through, not even a connection it was still setting up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.proxy import TcpProxy


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_forwards_until_cut_and_again_after_restore(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port)
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    await proxy.cut()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await proxy.restore()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"pong")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"pong"
    writer.close()
    await proxy.stop()


async def test_a_connection_accepted_before_a_cut_does_not_outlive_it(
    echo_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy had accepted the client and was connecting upstream when the cut came: the upstream connection
    completes after the cut, and the client must still see its connection closed (once, a health probe's pooled
    connection survived an outage this way and kept answering)."""
    proxy = TcpProxy("127.0.0.1", echo_port)
    connecting = asyncio.Event()
    release = asyncio.Event()
    real_open = asyncio.open_connection

    async def slow_open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        connecting.set()
        await release.wait()
        return await real_open(host, port)

    monkeypatch.setattr(asyncio, "open_connection", slow_open)  # the proxy calls it through the module
    await proxy.start()
    reader, writer = await real_open("127.0.0.1", proxy.port)
    await asyncio.wait_for(connecting.wait(), 10)
    await proxy.cut()
    release.set()
    writer.write(b"ping")
    # Closed, not forwarded: EOF (or a reset) instead of the echo.
    try:
        answer = await asyncio.wait_for(reader.read(1024), 10)
    except ConnectionError:
        answer = b""
    assert answer == b""
    writer.close()
