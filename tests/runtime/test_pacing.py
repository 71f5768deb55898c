"""The tracking governor: perception slows when the avatar's output ticks run late, and comes back
when they are on time again (its own logic, ticks given by hand)."""
from __future__ import annotations

import math

from liveavatar.runtime import TrackingGovernor


def _second(g: TrackingGovernor, late_ticks: int, fps: int = 30) -> None:
    for i in range(fps):
        g.tick(i < late_ticks)


def test_tracking_is_uncapped_while_the_avatar_keeps_time() -> None:
    g = TrackingGovernor(30)
    for _ in range(10):
        _second(g, 1)                      # one lost frame a second: within the 5 % allowed
    assert g.min_interval_s() == 0.0 and g.stats() == {"tracking_cap_fps": None, "tracking_slowdowns": 0}


def test_late_seconds_slow_tracking_down_to_the_floor_and_no_further() -> None:
    g = TrackingGovernor(30, max_fps=30, min_fps=5)
    _second(g, 6)
    assert math.isclose(g.cap_fps, 21.0)                  # 30 x 0.7
    caps = []
    for _ in range(10):
        _second(g, 6)
        caps.append(g.cap_fps)
    assert caps == sorted(caps, reverse=True) and caps[-1] == 5.0
    assert math.isclose(g.min_interval_s(), 0.2) and g.stats()["tracking_slowdowns"] == 11


def test_tracking_climbs_back_slowly_once_on_time_and_is_uncapped_again() -> None:
    g = TrackingGovernor(30, max_fps=30, min_fps=5)
    for _ in range(6):
        _second(g, 10)
    assert g.cap_fps == 5.0
    _second(g, 0)
    assert g.cap_fps == 5.0                                # one good second is not enough
    _second(g, 0)
    assert g.cap_fps == 7.5                                # after two: +2.5 fps
    seconds = 2
    while not math.isinf(g.cap_fps):
        _second(g, 0)
        seconds += 1
        assert seconds < 30
    assert g.min_interval_s() == 0.0 and seconds == 2 + 9   # +2.5 per good second up to 30
    _second(g, 10)                                         # late again: down from the ceiling
    assert math.isclose(g.cap_fps, 21.0)
