"""Capacity-1 latest-wins slots: the only way frames move between hot-path stages."""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item. `put` replaces an untaken item and counts it as dropped, so a slow
    consumer sees the newest data and latency stays bounded. Thread-safe; usable from asyncio via
    `put` (non-blocking) and from worker threads via `take(timeout)`."""

    __slots__ = ("_item", "_has", "_cond", "dropped", "put_count", "_closed")

    def __init__(self) -> None:
        self._item: T | None = None
        self._has = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.put_count = 0
        self._closed = False

    def put(self, item: T) -> None:
        with self._cond:
            if self._has:
                self.dropped += 1
            self._item = item
            self._has = True
            self.put_count += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """Remove and return the newest item, waiting up to `timeout` s; None on timeout/close."""
        with self._cond:
            if not self._has and not self._closed:
                self._cond.wait_for(lambda: self._has or self._closed, timeout)
            if not self._has:
                return None
            item, self._item, self._has = self._item, None, False
            return item

    def take_nowait(self) -> T | None:
        return self.take(0)

    def peek(self) -> T | None:
        """The newest item without consuming it (for readers that re-use the latest value)."""
        with self._cond:
            return self._item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
