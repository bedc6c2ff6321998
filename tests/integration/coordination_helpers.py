"""Fakes and helpers for the coordination tests: a severable Locks, a singleton-job recorder, a private redis-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.core.coordination import Holder, KeySpace, Lease, Locks, RedisOptions
from services.core.errors import Unavailable

# Short timeouts and backoff, so outages are noticed and healed within a test's patience.
FAST_REDIS = RedisOptions(
    connect_timeout_seconds=1.0,
    command_timeout_seconds=1.0,
    health_check_interval_seconds=1.0,
    reconnect_initial_backoff_seconds=0.02,
    reconnect_max_backoff_seconds=0.2,
)


def fresh_keyspace(service: str = "coord") -> KeySpace:
    """A namespace of its own for one test, so runs never collide and leftovers are easy to find."""
    return KeySpace("bullant-test", uuid.uuid4().hex[:16], service)


def environment_pattern(keyspace: KeySpace) -> str:
    """A glob for every service's keys in `keyspace`'s app and environment."""
    return f"{keyspace.app}:{keyspace.env}:*"


async def redis_leftovers(url: str, pattern: str) -> dict[str, float]:
    """Keys matching the glob `pattern` in the Redis at `url`, with seconds to live (-1: never expires)."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=500)]
        ttls = [await client.pttl(key) for key in keys]
        # -2: expired between SCAN and PTTL, so not left behind after all.
        pairs = zip(keys, ttls, strict=True)
        return {key.decode(): (ttl / 1000 if ttl >= 0 else float(ttl)) for key, ttl in pairs if ttl != -2}
    finally:
        await client.aclose()


async def redis_delete_all(url: str, pattern: str) -> None:
    """Remove every key matching the glob `pattern`."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        async for key in client.scan_iter(match=pattern, count=500):
            await client.delete(key)
    finally:
        await client.aclose()


class SeverableLocks(Locks):
    """Real locks that can be cut off: once severed, every call fails as if the store were unreachable, which is
    what a leader on the wrong side of a partition (or a frozen process) sees."""

    def __init__(self, inner: Locks) -> None:
        self.inner = inner
        self.clock = inner.clock
        self.severed = False

    def _check(self) -> None:
        if self.severed:
            raise Unavailable("severed from the lock store")

    async def acquire(self, name: str, ttl_seconds: float, owner: str | None = None) -> Lease | None:
        self._check()
        return await self.inner.acquire(name, ttl_seconds, owner)

    async def renew(self, lease: Lease, ttl_seconds: float | None = None) -> Lease | None:
        self._check()
        return await self.inner.renew(lease, ttl_seconds)

    async def release(self, lease: Lease) -> bool:
        self._check()
        return await self.inner.release(lease)

    async def holder(self, name: str) -> Holder | None:
        self._check()
        return await self.inner.holder(name)


class SingletonJob:
    """A job that runs until cancelled and records who ran it, counting any moment two ran at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.overlaps = 0
        self.leases: list[Lease] = []

    async def __call__(self, lease: Lease) -> None:
        if self.running:
            self.overlaps += 1
        self.running.add(lease.owner)
        self.leases.append(lease)
        try:
            await asyncio.Event().wait()
        finally:
            self.running.discard(lease.owner)

    @property
    def runner(self) -> str | None:
        """The one owner running the job now, or None."""
        return next(iter(self.running)) if len(self.running) == 1 else None


def _require_backends() -> bool:
    return os.environ.get("BULLANT_TEST_REQUIRE_BACKENDS", "") not in ("", "0", "false")


def redis_server_binary() -> str:
    """Path of redis-server, or skip (locally) / fail (in CI) when it is not installed."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    if _require_backends():
        pytest.fail("redis-server is not on PATH but BULLANT_TEST_REQUIRE_BACKENDS=1")
    pytest.skip("redis-server is not on PATH")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on an ephemeral loopback port, without persistence, to kill and restart."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        log = (self.directory / f"redis-{self.starts}.log").open("wb")
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen([*command, "--dir", str(self.directory)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}; see {self.directory}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients; everything in memory is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    async def restart(self) -> None:
        """Start again on the same port, without blocking the event loop while waiting for it."""
        await asyncio.to_thread(self.start)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False
