"""Tracking gives way to the avatar: when the render loop misses its frames, perception slows.

On a slow or busy CPU (a game and OBS on the streamer's PC) every stage competes for the same
cores. The avatar's frame rate is what viewers see; tracking at 10 fps instead of 30 costs a
little smoothness of motion. So the render loop reports each output tick (on time or late) and
each perception worker waits `min_interval_s()` between frames: the tracking rate falls
multiplicatively while ticks are late and climbs back slowly once they are on time again
(additive-increase/multiplicative-decrease, as congestion control does, so it settles instead of
oscillating)."""
from __future__ import annotations

import math
import threading

LATE_SHARE = 0.05      # over this share of a second's ticks late: slow tracking down
DECREASE = 0.7         # the cap's factor per bad second
INCREASE_FPS = 2.5     # ... and what it gains back per good second, after ON_TIME_S of them
ON_TIME_S = 2


class TrackingGovernor:
    """`tick(late)` from the render thread once per output tick; `min_interval_s()` from any
    perception worker before it takes its next frame. Uncapped while the avatar keeps time."""

    def __init__(self, output_fps: float, max_fps: float = 30.0, min_fps: float = 5.0) -> None:
        self.ticks_per_check = max(1, round(output_fps))      # judge once a second
        self.max_fps, self.min_fps = float(max_fps), float(min_fps)
        self.cap_fps = math.inf
        self.slowdowns = 0            # seconds in which tracking was slowed (stats)
        self._ticks = self._late = self._good_s = 0
        self._lock = threading.Lock()

    def tick(self, late: bool) -> None:
        with self._lock:
            self._ticks += 1
            self._late += bool(late)
            if self._ticks < self.ticks_per_check:
                return
            share = self._late / self._ticks
            self._ticks = self._late = 0
            if share > LATE_SHARE:
                self._good_s = 0
                self.slowdowns += 1
                start = self.max_fps if math.isinf(self.cap_fps) else self.cap_fps
                self.cap_fps = max(self.min_fps, start * DECREASE)
                return
            self._good_s += 1
            if self._good_s >= ON_TIME_S and not math.isinf(self.cap_fps):
                self.cap_fps += INCREASE_FPS
                if self.cap_fps >= self.max_fps:
                    self.cap_fps = math.inf          # back to the camera's own rate

    def min_interval_s(self) -> float:
        cap = self.cap_fps
        return 0.0 if math.isinf(cap) else 1.0 / cap

    def stats(self) -> dict:
        cap = self.cap_fps
        return {"tracking_cap_fps": None if math.isinf(cap) else round(cap, 1),
                "tracking_slowdowns": self.slowdowns}
