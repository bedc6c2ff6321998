"""The transactional outbox: messages written with the change that caused them (in its transaction, or keyed by a
dedup key when the change lives in another database), delivered later by the notification service."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.schema import outbox_messages


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to queue with the change that caused it. `dedup_key` (at most 64 characters) makes queueing
    idempotent: a second message with the same key is not queued."""

    account_id: int | None
    channel: str
    recipient: str
    template: str
    payload: Mapping[str, Any]
    dedup_key: str | None = None


async def add_outbox(connection: AsyncConnection, message: OutboxMessage, now: datetime) -> int:
    """Queue `message` in the caller's transaction (it is sent if and only if the change commits); its id. With a
    dedup key already queued, the id of the message queued first."""
    values = {
        "account_id": message.account_id,
        "channel": message.channel,
        "recipient": message.recipient,
        "template": message.template,
        "payload": json.dumps(dict(message.payload), sort_keys=True),
        "create_time": now,
        "dedup_key": message.dedup_key,
    }
    if message.dedup_key is not None:
        try:
            async with connection.begin_nested():
                result = await connection.execute(insert(outbox_messages).values(**values))
        except IntegrityError:
            # Queued before (a retry) or by another writer meanwhile: the first one's id.
            queued = await _queued(connection, message.dedup_key)
            if queued is None:
                raise
            return queued
        return int(result.inserted_primary_key[0])  # type: ignore[index]
    result = await connection.execute(insert(outbox_messages).values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


async def _queued(connection: AsyncConnection, dedup_key: str) -> int | None:
    found = await connection.scalar(
        select(outbox_messages.c.message_id).where(outbox_messages.c.dedup_key == dedup_key)
    )
    return None if found is None else int(found)
