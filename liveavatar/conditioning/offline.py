"""Conditioning over a recorded sequence of cues (offline render, `perceive --conditioning`):
the clock is the capture time, so output ticks fall at a fixed rate between the inputs exactly
as they would live, with no perception latency."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from liveavatar.clock import VirtualClock
from liveavatar.types import Conditioning, ControlEvent, Cues

from .conditioner import Conditioner
from .mapping import Mapping


def conditioning_over(cues: Iterable[Cues], mapping: Mapping | None = None, rate_hz: float = 30.0,
                      mapping_path: Path | None = None,
                      events: Iterable[tuple[int, ControlEvent]] = ()) -> Iterator[Conditioning]:
    """Yield one Conditioning per output tick from the first cue's capture time to the last's.
    `events` are (t_ns, event) pairs applied at their time (e.g. `--emotion sad` at t=0)."""
    clock = VirtualClock()
    cond: Conditioner | None = None
    pending = sorted(events, key=lambda p: p[0])
    period = int(1e9 / rate_hz)
    next_tick = 0
    for c in cues:
        if cond is None:
            clock.sleep_until(c.t_capture_ns)
            cond = Conditioner(mapping, rate_hz=rate_hz, clock=clock, mapping_path=mapping_path)
            next_tick = c.t_capture_ns
        # Ticks due before this input see only the earlier inputs.
        while next_tick < c.t_capture_ns:
            yield from _tick(cond, clock, next_tick, pending)
            next_tick += period
        clock.sleep_until(c.t_capture_ns)
        cond.push_cues(c)
    if cond is not None:
        yield from _tick(cond, clock, next_tick, pending)


def _tick(cond: Conditioner, clock: VirtualClock, t_ns: int, pending: list) -> Iterator[Conditioning]:
    clock.sleep_until(t_ns)
    while pending and pending[0][0] <= t_ns:
        cond.push_event(pending.pop(0)[1])
    yield cond.tick(t_ns)
