"""The envelope around every published payload (publisher id + sequence number) and the gap counting it enables."""

from __future__ import annotations

import struct
import uuid
from collections import OrderedDict
from dataclasses import dataclass

# Two magic bytes, 16-byte publisher id, unsigned 64-bit big-endian sequence number, then the payload.
_HEADER = struct.Struct(">2s16sQ")
_MAGIC = b"\xbb\x01"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A payload with where it came from; `publisher` is None for messages from outside Bullant (no envelope)."""

    publisher: bytes | None
    sequence: int
    data: bytes


def seal(publisher: bytes, sequence: int, data: bytes) -> bytes:
    """The wire form of `data` as message number `sequence` of `publisher` (16 bytes)."""
    return _HEADER.pack(_MAGIC, publisher, sequence) + data


def unseal(raw: bytes) -> Envelope:
    """The envelope of a received message; anything without our header is passed through as a foreign payload."""
    if len(raw) >= _HEADER.size and raw[:2] == _MAGIC:
        _, publisher, sequence = _HEADER.unpack_from(raw)
        return Envelope(publisher, sequence, raw[_HEADER.size :])
    return Envelope(None, 0, raw)


class Sequencer:
    """The publishing side: a random publisher id and a counter per channel.

    Counting per channel (not per publisher) matters: a subscriber of one channel must not see the numbers spent
    on other channels as gaps. The first message on a channel is number 1.
    """

    def __init__(self) -> None:
        self.publisher = uuid.uuid4().bytes
        self._next: dict[str, int] = {}

    def next(self, channel: str) -> int:
        """Take the next sequence number for `channel`."""
        number = self._next.get(channel, 0) + 1
        self._next[channel] = number
        return number

    def seal(self, channel: str, data: bytes) -> bytes:
        """`data` in its envelope as this publisher's next message on `channel` (what both backends publish)."""
        return seal(self.publisher, self.next(channel), bytes(data))


StreamKey = tuple[str | None, str, bytes]


class GapDetector:
    """The subscribing side: the last sequence number seen per (pattern, channel, publisher) stream.

    A stream's first message cannot reveal a gap (we do not know what came before we subscribed). Streams are
    forgotten least-recently-used beyond `max_streams`, so publishers that come and go cannot grow memory forever.
    """

    def __init__(self, max_streams: int = 10_000) -> None:
        self._last: OrderedDict[StreamKey, int] = OrderedDict()
        self._max_streams = max_streams

    def observe(self, stream: StreamKey, sequence: int) -> int | None:
        """How many messages of `stream` went missing just before `sequence`; None for a duplicate or a message
        older than one already seen (drop it)."""
        last = self._last.get(stream)
        if last is not None and sequence <= last:
            return None
        self._last[stream] = sequence
        self._last.move_to_end(stream)
        if len(self._last) > self._max_streams:
            self._last.popitem(last=False)
        return 0 if last is None else sequence - last - 1
