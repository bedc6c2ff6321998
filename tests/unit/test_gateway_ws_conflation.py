"""A WebSocket that cannot keep up with a shared tick stream is conflated by itself: its queue keeps what it holds,
then it gets a drop report with the number of ticks skipped and the newest frame – never a backlog, and never a
frame older than one already sent. The relay writes each batch once for all its sockets and passes the market's
own drop reports on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bullant.market.v1 import market_pb2
from gateway.protojson import Memo
from gateway.relay import SharedStream, _deliverer
from gateway.websocket import QUEUE_SIZE, Connection


class _SlowSocket:
    """Records what is sent; sending waits until the test opens the gate."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)


def _frame(number: int) -> str:
    return json.dumps({"type": "event", "topic": "ticks:SIM-AAPL", "data": {"ticks": {"ticks": [{"n": number}]}}})


async def test_a_slow_socket_gets_a_drop_report_and_the_newest_frame() -> None:
    socket = _SlowSocket()
    connection = Connection(socket, clients=None, metadata=list, memo=Memo())  # type: ignore[arg-type]
    sender = asyncio.create_task(connection._send_loop())
    try:
        total = QUEUE_SIZE + 1 + 10
        for number in range(total):  # the sender holds the first frame, the queue the next QUEUE_SIZE
            connection.offer("ticks:SIM-AAPL", _frame(number), ticks=3, last_sequence=number)
            await asyncio.sleep(0)
        socket.gate.set()
        await _until(lambda: len(socket.sent) == QUEUE_SIZE + 3)
        await asyncio.sleep(0.05)
        assert len(socket.sent) == QUEUE_SIZE + 3  # nothing more comes
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    numbers = [_number(text) for text in socket.sent]
    assert numbers[: QUEUE_SIZE + 1] == list(range(QUEUE_SIZE + 1))
    report = json.loads(socket.sent[-2])
    assert report["data"]["drops"]["symbols"] == [{"symbol": "SIM-AAPL", "droppedCount": str(9 * 3)}]
    assert numbers[-1] == total - 1  # the newest frame, after the report


def _number(text: str) -> Any:
    data = json.loads(text)["data"]
    return data["ticks"]["ticks"][0]["n"] if "ticks" in data else None


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class _Recorder:
    def __init__(self) -> None:
        self.offers: list[tuple[str, str, int, int]] = []

    def offer(self, topic: str, frame: str, ticks: int, last_sequence: int) -> None:
        self.offers.append((topic, frame, ticks, last_sequence))

    def end_topic(self, topic: str, error: dict[str, object]) -> None:
        raise AssertionError("not ended")


def test_the_relay_writes_each_batch_once_and_passes_the_markets_drop_reports_on() -> None:
    stream = SharedStream("SIM-AAPL", "ticks:SIM-AAPL")
    first, second = _Recorder(), _Recorder()
    stream.subscribers.update({first, second})
    deliver = _deliverer(stream)
    batch = market_pb2.StreamTicksResponse()
    for sequence in (7, 8):
        batch.ticks.ticks.add(symbol="SIM-AAPL", price=100.0 + sequence, sequence=sequence)
    deliver(batch)
    deliver(
        market_pb2.StreamTicksResponse(
            drops=market_pb2.DropReport(symbols=[market_pb2.SymbolDropCount(symbol="SIM-AAPL", dropped_count=40)])
        )
    )
    assert first.offers == second.offers
    (topic, frame, ticks, last), (_, report, no_ticks, no_sequence) = first.offers
    assert (topic, ticks, last) == ("ticks:SIM-AAPL", 2, 8)
    assert first.offers[0][1] is second.offers[0][1]  # the same text, written once
    event = json.loads(frame)
    assert (event["type"], event["topic"]) == ("event", "ticks:SIM-AAPL")
    assert [tick["sequence"] for tick in event["data"]["ticks"]["ticks"]] == ["7", "8"]
    assert json.loads(report)["data"]["drops"]["symbols"] == [{"symbol": "SIM-AAPL", "droppedCount": "40"}]
    assert (no_ticks, no_sequence) == (0, 0)
