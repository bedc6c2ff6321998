"""This replica's identity across restarts: the jobs it runs (training, backtests) carry it, so a restarted replica
can tell its own orphans - jobs its previous run left RUNNING when it was killed - and fail them at once."""

from __future__ import annotations

import secrets
import socket

from services.core.settings import ServerSettings


def replica_identity(server: ServerSettings) -> str:
    """BULLANT_REPLICA_ID, else "<host name>:<port>": unique among live replicas (two processes cannot listen on one
    host and port) and the same after a restart. With an ephemeral port (0) there is no such identity: a fresh one
    each start, so its orphans wait for their heartbeats to lapse like any other replica's."""
    if server.replica_id:
        return server.replica_id
    suffix = str(server.port) if server.port else "ephemeral-" + secrets.token_hex(6)
    return f"{socket.gethostname()[:40]}:{suffix}"
