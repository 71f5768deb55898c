"""Bounded FIFO buffers that drop the oldest item when full (and count it): for streams whose
items must stay in order (audio chunks, encoded packets), where LatestSlot's "newest only" would
lose data a consumer still needs."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldest(Generic[T]):
    """At most `capacity` items, oldest first. `put` on a full buffer drops the oldest item and
    counts it in `dropped`. Thread-safe: producers on one thread, a consumer on another (blocking
    `take`) or on the same asyncio loop (`pop`, indexing)."""

    __slots__ = ("_items", "_cond", "dropped", "put_count")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._items: deque[T] = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self.dropped = 0
        self.put_count = 0

    @property
    def capacity(self) -> int:
        maxlen = self._items.maxlen
        assert maxlen is not None
        return maxlen

    def put(self, item: T) -> bool:
        """Append; True when the oldest item was dropped to make room."""
        with self._cond:
            full = len(self._items) == self._items.maxlen
            if full:
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return full

    def pop(self) -> T | None:
        """The oldest item, removed; None when empty (never blocks)."""
        with self._cond:
            return self._items.popleft() if self._items else None

    def take(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to `timeout` s for one; None on timeout."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            return self._items.popleft() if self._items else None

    def drop_oldest(self) -> None:
        """Discard the oldest item (a consumer catching up), counted in `dropped`."""
        with self._cond:
            if self._items:
                self._items.popleft()
                self.dropped += 1

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __getitem__(self, i: int) -> T:
        return self._items[i]

    def __iter__(self) -> Iterator[T]:
        with self._cond:
            return iter(list(self._items))
