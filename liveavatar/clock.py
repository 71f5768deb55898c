"""Monotonic clock, a virtual clock for deterministic tests, and a fixed-rate ticker."""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def sleep_until(self, t_ns: int) -> None: ...


class MonotonicClock:
    """Real time. All timestamps in the project come from here (time.monotonic_ns)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, t_ns: int) -> None:
        delay = (t_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """Time that moves only when told to; `sleep_until` jumps there. For tests."""

    def __init__(self, start_ns: int = 0) -> None:
        self._t = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._t

    def advance(self, seconds: float) -> int:
        with self._lock:
            self._t += int(seconds * 1e9)
            return self._t

    def sleep_until(self, t_ns: int) -> None:
        with self._lock:
            self._t = max(self._t, t_ns)


CLOCK = MonotonicClock()


class Ticker:
    """Fixed-rate deadlines. `next()` returns the next tick time; if we fell behind by more than
    one period, it skips the missed ticks (counting them) instead of bursting to catch up."""

    def __init__(self, rate_hz: float, clock: Clock = CLOCK, start_ns: int | None = None) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.period_ns = int(1e9 / rate_hz)
        self.clock = clock
        self._next = clock.now_ns() if start_ns is None else start_ns
        self.skipped = 0

    def next(self) -> int:
        now = self.clock.now_ns()
        if now - self._next > self.period_ns:
            missed = (now - self._next) // self.period_ns
            self.skipped += int(missed)
            self._next += missed * self.period_ns
        t = self._next
        self._next += self.period_ns
        return t

    def wait(self) -> int:
        t = self.next()
        self.clock.sleep_until(t)
        return t
