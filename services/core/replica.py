"""This replica's identity across restarts: the jobs it runs (training, backtests) carry it, so a restarted replica
can tell its own orphans - jobs its previous run left RUNNING when it was killed - and fail them at once."""

from __future__ import annotations

import secrets
import socket

from services.core.settings import Settings


def replica_identity(settings: Settings) -> str:
    """BULLANT_REPLICA_ID, else "<host name>:<port>": unique among live replicas (two processes cannot listen on one
    host and port) and the same after a restart. With an ephemeral port (0) there is no such identity: a fresh one
    each start, so its orphans wait for their heartbeats to lapse like any other replica's."""
    if settings.server.replica_id:
        return settings.server.replica_id
    suffix = str(settings.server.port) if settings.server.port else "ephemeral-" + secrets.token_hex(6)
    return f"{socket.gethostname()[:40]}:{suffix}"
