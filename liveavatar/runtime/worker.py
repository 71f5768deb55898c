"""One idiom for the service's long-lived threads: a daemon thread with a halt flag.

A Worker subclass implements `run()` and checks `self.halted` (or waits on `self.halt`, an
Event) between units of work; `stop()` sets the flag, calls `wake()` so a blocked wait returns
at once, and can join. Nothing else is needed to start, stop or ask after one."""
from __future__ import annotations

import contextlib
import os
import threading


class Worker(threading.Thread):
    """A daemon thread named `name`. Subclasses: `run()`, and `wake()` when `run()` blocks on
    something other than `self.halt` (a slot, a condition) that stop() must interrupt."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()

    def start(self) -> None:
        super().start()
        name_os_thread(self)

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


def name_os_thread(thread: threading.Thread) -> None:
    """Give the OS thread the Python name (Linux, first 15 characters), so `top -H`, `ps -L`
    and /proc show which of the service's threads uses the CPU. Best effort."""
    tid = getattr(thread, "native_id", None)
    if tid is None:
        return
    with contextlib.suppress(OSError):
        with open(f"/proc/self/task/{tid}/comm", "w") as comm:
            comm.write(thread.name[:15])


def lower_thread_priority(thread: threading.Thread, nice: int) -> bool:
    """Run one thread at a lower priority (Linux: a nice value per thread), so that on a busy
    machine the work it does (tracking) slows before the avatar's frame rate does. Lowering needs
    no privilege. False where the platform cannot."""
    tid = getattr(thread, "native_id", None)
    if tid is None or not hasattr(os, "setpriority"):
        return False
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, nice))
    except OSError:
        return False
    return True
