"""Group commit: concurrent requests for the same kind of write share one transaction. While a batch's transaction
runs, the requests that arrive wait and go together in the next one, so a burst of N writers (every series closing
its bar at the same second) costs a few transactions instead of N, and a lone writer waits for nobody."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs `run(requests)` for batches of concurrent requests; `run` returns one result per request, in order. A
    failing batch fails each of its requests with the same error."""

    def __init__(self, run: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int = 500) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = [(request, future) for request, future in self._pending[: self._max_batch] if not future.done()]
            del self._pending[: self._max_batch]
            if not batch:
                continue
            try:
                results = await self._run([request for request, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            except asyncio.CancelledError:
                for _, future in batch + self._pending:
                    future.cancel()
                self._pending.clear()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Stop the worker (pending requests are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
