"""Waking coroutines on an asyncio loop from another thread (the render and encode threads hand
their results to the loop this way), without ever blocking the loop."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class LoopWakeup:
    """`notify_threadsafe(fn, *args)` from any thread runs `fn(*args)` on the loop (to store the
    result there), then wakes every coroutine in `wait()`. Waiters re-check their condition after
    waking, so a notify between their check and their wait is never lost."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: list[asyncio.Future[None]] = []

    def notify_threadsafe(self, fn: Callable[..., Any] | None = None, *args: Any) -> None:
        self.loop.call_soon_threadsafe(self._fire, fn, args)

    def _fire(self, fn: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        if fn is not None:
            fn(*args)
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def wait(self) -> None:
        """Until the next notify (call on the loop)."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(fut)
        await fut
