"""The shared runtime primitives: a drop-oldest buffer, the worker-thread idiom, the thread-to-
loop wake-up (unit tests of our own logic)."""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from liveavatar.runtime import DropOldest, LatestSlot, LoopWakeup, Worker, lower_thread_priority


def test_drop_oldest_keeps_order_and_counts_what_it_drops():
    buf: DropOldest[int] = DropOldest(3)
    assert [buf.put(i) for i in range(5)] == [False, False, False, True, True]
    assert buf.dropped == 2 and buf.put_count == 5 and len(buf) == 3 and buf[0] == 2
    assert [buf.pop(), buf.pop(), buf.pop(), buf.pop()] == [2, 3, 4, None]
    buf.put(7)
    buf.drop_oldest()
    assert not buf and buf.dropped == 3
    with pytest.raises(ValueError):
        DropOldest(0)


def test_drop_oldest_take_waits_for_a_producer_thread():
    buf: DropOldest[int] = DropOldest(100)
    got: list[int] = []

    def consume() -> None:
        while len(got) < 50:
            item = buf.take(timeout=5)
            assert item is not None
            got.append(item)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        buf.put(i)
    t.join(10)
    assert got == list(range(50)) and buf.take(timeout=0.01) is None


class _Counter(Worker):
    def __init__(self) -> None:
        super().__init__("counter")
        self.slot: LatestSlot[int] = LatestSlot()
        self.seen: list[int] = []

    def wake(self) -> None:
        self.slot.close()

    def run(self) -> None:
        while not self.halted:
            item = self.slot.take(timeout=30)     # only wake() ends this wait early
            if item is not None:
                self.seen.append(item)


def test_worker_stop_wakes_a_blocked_thread_and_joins():
    w = _Counter()
    w.start()
    w.slot.put(1)
    deadline = time.monotonic() + 5
    while not w.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    w.stop(join_timeout=5)
    assert not w.is_alive() and w.halted and w.seen == [1]
    assert time.monotonic() - t0 < 5, "stop() had to wait for the 30 s take"


async def test_loop_wakeup_runs_the_callback_on_the_loop_and_wakes_waiters():
    loop = asyncio.get_running_loop()
    wakeup = LoopWakeup(loop)
    values: list[tuple[int, bool]] = []
    loop_thread = threading.current_thread()

    def store(v: int) -> None:
        values.append((v, threading.current_thread() is loop_thread))

    async def waiter() -> int:
        while not values:
            await wakeup.wait()
        return values[0][0]

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    threading.Thread(target=wakeup.notify_threadsafe, args=(store, 42)).start()
    assert await asyncio.wait_for(task, 5) == 42
    assert values == [(42, True)], "the callback ran on the loop's thread"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread names and nice values are Linux's")
def test_a_worker_names_its_os_thread_and_one_thread_can_be_lowered_alone():
    class Idle(Worker):
        def run(self) -> None:
            self.halt.wait()

    w = Idle("render-test-worker-long-name")
    w.start()
    try:
        assert open(f"/proc/self/task/{w.native_id}/comm").read().strip() == "render-test-wor"
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert lower_thread_priority(w, before + 3)
        assert os.getpriority(os.PRIO_PROCESS, w.native_id) == before + 3
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before   # only that thread
        assert lower_thread_priority(w, before)           # never raises a thread back up
        assert os.getpriority(os.PRIO_PROCESS, w.native_id) == before + 3
    finally:
        w.stop(join_timeout=2)
