"""One idiom for the service's long-lived threads: a daemon thread with a halt flag.

A Worker subclass implements `run()` and checks `self.halted` (or waits on `self.halt`, an
Event) between units of work; `stop()` sets the flag, calls `wake()` so a blocked wait returns
at once, and can join. Nothing else is needed to start, stop or ask after one."""
from __future__ import annotations

import threading


class Worker(threading.Thread):
    """A daemon thread named `name`. Subclasses: `run()`, and `wake()` when `run()` blocks on
    something other than `self.halt` (a slot, a condition) that stop() must interrupt."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()

    @property
    def halted(self) -> bool:
        return self.halt.is_set()

    def wake(self) -> None:
        """Unblock whatever `run()` waits on (the default waits only on `halt`)."""

    def stop(self, join_timeout: float | None = None) -> None:
        """Ask the thread to finish; with `join_timeout`, wait that long for it (never for the
        calling thread itself)."""
        self.halt.set()
        self.wake()
        if join_timeout is not None and self.is_alive() and threading.current_thread() is not self:
            self.join(join_timeout)
