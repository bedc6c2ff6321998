"""Tick batches at the protobuf wire level: split a published TickBatch into per-tick pieces once per replica, and
join pieces into a StreamTicksResponse for each subscriber without decoding or re-encoding a single Tick.

A TickBatch is `repeated Tick ticks = 1`, so its encoding is a run of (tag 0x0a, length, Tick bytes) pieces, and
a StreamTicksResponse carrying one is (tag 0x0a, length, TickBatch bytes). Any subset of pieces, in any order, is
itself a valid TickBatch: fan-out is byte concatenation.
"""

from __future__ import annotations

from typing import Final

_FIELD_1_BYTES = 0x0A  # field number 1, wire type 2 (length-delimited)


# One encoded tick: (symbol, its bytes as an element of TickBatch.ticks, tag and length included). A plain tuple:
# one is made per tick per replica, and a tuple costs a fraction of a dataclass.
Piece = tuple[str, bytes]
SYMBOL: Final = 0
DATA: Final = 1


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def split_tick_batch(data: bytes) -> list[Piece]:
    """The ticks of an encoded TickBatch as pieces; ValueError when it is not one."""
    pieces: list[Piece] = []
    append = pieces.append
    position = 0
    size = len(data)
    while position < size:
        start = position
        if data[position] != _FIELD_1_BYTES:
            raise ValueError(f"unexpected field tag {data[position]} in a TickBatch")
        length = data[position + 1] if position + 1 < size else 0x80
        if length < 0x80:  # a tick is ~50 bytes: its length is almost always one varint byte
            position += 2
        else:
            length, position = _varint(data, position + 1)
        end = position + length
        if end > size:
            raise ValueError("truncated tick")
        # Tick.symbol is field 1 and protobuf writes fields in number order, so it comes first when set.
        if position + 1 < end and data[position] == _FIELD_1_BYTES and data[position + 1] < 0x80:
            symbol = data[position + 2 : position + 2 + data[position + 1]].decode("utf-8")
        else:
            symbol = _symbol(data, position, end)
        append((symbol, data[start:end]))
        position = end
    return pieces


def _symbol(data: bytes, position: int, end: int) -> str:
    # Tick.symbol is field 1 and protobuf writes fields in number order, so it comes first when set.
    if position < end and data[position] == _FIELD_1_BYTES:
        length, start = _varint(data, position + 1)
        return data[start : start + length].decode("utf-8")
    return ""


def tick_batch_response(pieces: list[bytes]) -> bytes:
    """An encoded StreamTicksResponse whose `ticks` holds these pieces."""
    body = b"".join(pieces)
    return bytes((_FIELD_1_BYTES,)) + encode_varint(len(body)) + body
