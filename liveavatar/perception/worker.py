"""The perception worker thread: newest frame in, Cues out, never stops on an error."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from liveavatar.runtime import LatestSlot, Worker
from liveavatar.types import CapturedFrame, Cues

log = logging.getLogger(__name__)


class PerceptionWorker:
    """Daemon thread: takes the newest frame from `frames_in` (older untaken ones were dropped by
    the slot and are counted there), runs `perception.process_video`, puts Cues in `cues_out`.
    Exceptions from perception are counted and skipped; the thread keeps going.
    `pace`: the least time between two frames' starts, asked before each (the service's
    TrackingGovernor slows tracking when the avatar misses frames); frames that arrive meanwhile
    are dropped by the slot, counted, and the newest is taken."""

    def __init__(self, perception: Any, frames_in: LatestSlot[CapturedFrame], cues_out: LatestSlot[Cues],
                 pace: Callable[[], float] | None = None) -> None:
        self.perception = perception
        self.pace = pace
        self.frames_in = frames_in
        self.cues_out = cues_out
        self.processed = 0
        self.errors = 0
        self._thread: Worker | None = None

    @property
    def dropped(self) -> int:
        return self.frames_in.dropped

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PerceptionWorker:
        if not self.alive:
            self._thread = _Loop(self)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.stop(join_timeout=timeout)

    def _run(self, thread: Worker) -> None:
        started = 0.0
        while not thread.halted:
            if self.pace is not None:
                rest = started + self.pace() - time.monotonic()
                if rest > 0 and thread.halt.wait(rest):    # stop() sets halt: the gap ends at once
                    return
            frame = self.frames_in.take(timeout=0.1)
            if frame is None:
                if self.frames_in.closed:
                    return
                continue
            started = time.monotonic()
            try:
                cues = self.perception.process_video(frame)
            except Exception:
                self.errors += 1
                log.warning("perception worker: frame %s failed", getattr(frame, "seq", "?"),
                            exc_info=self.errors <= 3)
                continue
            self.cues_out.put(cues)
            self.processed += 1


class _Loop(Worker):
    def __init__(self, owner: PerceptionWorker) -> None:
        super().__init__("perception-worker")
        self.owner = owner

    def run(self) -> None:
        self.owner._run(self)
