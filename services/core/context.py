"""Per-call context (request id, deadline, credentials to forward) carried in contextvars across awaits."""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field

REQUEST_ID_KEY = "x-request-id"
# Metadata a service forwards unchanged when it calls another service on behalf of its caller.
FORWARDED_KEYS: tuple[str, ...] = ("authorization", "x-api-key")
_MAX_REQUEST_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the server knows about the call being handled, for logs and onward calls."""

    request_id: str
    method: str = ""
    # time.monotonic() by which the caller wants an answer; None when the caller set no deadline.
    deadline: float | None = None
    forwarded: tuple[tuple[str, str], ...] = field(default=())

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("bullant_call", default=None)


def current_call() -> CallContext | None:
    """The call being handled in this task, if any."""
    return _current.get()


def current_request_id() -> str | None:
    """The request id of the call being handled in this task, if any."""
    call = _current.get()
    return call.request_id if call else None


def bind_call(call: CallContext) -> contextvars.Token[CallContext | None]:
    """Make `call` current for this task; pass the token to `unbind_call` when the call ends."""
    return _current.set(call)


def unbind_call(token: contextvars.Token[CallContext | None]) -> None:
    """Restore the context that was current before `bind_call`."""
    _current.reset(token)


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """The client's request id when it is sane (printable, bounded), else a fresh one.

    Request ids go into logs and headers, so control characters and huge values are never echoed back.
    """
    if candidate and len(candidate) <= _MAX_REQUEST_ID_LENGTH and candidate.isprintable() and " " not in candidate:
        return candidate
    return new_request_id()
