"""The action engine: triggered actions (dance, bow, jump, ...) with a phase and blend in/out.

One action plays at a time. The generator blends the action's clip over the live body by
`action_weight`; head, face and lip sync keep tracking the user throughout (the conditioner
never replaces them), so a dancing character still looks around and talks.
Priority (mapping.TRIGGER_RANK): explicit triggers (hotkeys, studio, API, OBS) outrank spoken
keywords, which outrank recognised gestures; a lower-ranked trigger never interrupts an action
started by a higher-ranked one.
"""
from __future__ import annotations

from dataclasses import dataclass

from liveavatar.types import EventSource, TriggerMode

from .mapping import ActionSpec, Mapping, trigger_rank


@dataclass(slots=True)
class PlayingAction:
    name: str
    mode: TriggerMode
    start_s: float
    end_s: float            # inf for a toggle that is still on
    duration_s: float
    loop: bool
    blend_in_s: float
    blend_out_s: float
    intensity: float
    start_weight: float     # weight of the action it replaced, so the switch does not pop
    source: EventSource

    def phase(self, t: float) -> float:
        x = max(0.0, t - self.start_s) / self.duration_s
        return x % 1.0 if self.loop else min(x, 1.0)

    def weight(self, t: float) -> float:
        age = t - self.start_s
        w_in = 1.0 if self.blend_in_s <= 0 else min(1.0, age / self.blend_in_s)
        w_in = self.start_weight + (1.0 - self.start_weight) * max(0.0, w_in)
        w_out = 1.0 if self.blend_out_s <= 0 else min(1.0, (self.end_s - t) / self.blend_out_s)
        return self.intensity * max(0.0, min(w_in, w_out))


class ActionEngine:
    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.overrides: dict[str, ActionSpec] = {}   # imported / character actions' own timing
        self.current: PlayingAction | None = None
        self.name, self.phase, self.weight = "none", 0.0, 0.0

    def trigger(self, name: str, mode: TriggerMode, hold_s: float, intensity: float,
                source: EventSource, t: float) -> None:
        cur = self.current
        if cur is not None and t < cur.end_s:
            if trigger_rank(source) < trigger_rank(cur.source):
                return      # a word or gesture in passing never interrupts the streamer's own action
            if mode is TriggerMode.TOGGLE and cur.name == name and cur.mode is TriggerMode.TOGGLE:
                # Toggle off: play out the blend-out from now.
                cur.end_s = t + cur.blend_out_s
                return
        spec = self.overrides.get(name) or self.mapping.action_spec(name)
        if mode is TriggerMode.MOMENTARY:
            length = spec.duration_s
        elif mode is TriggerMode.HOLD:
            length = hold_s
        else:
            length = float("inf")
        start_weight = cur.weight(t) / max(cur.intensity, 1e-6) if cur is not None and t < cur.end_s else 0.0
        self.current = PlayingAction(name, mode, t, t + length, spec.duration_s, spec.loop,
                                     spec.blend_in_s, spec.blend_out_s,
                                     float(min(max(intensity, 0.0), 1.0)), min(start_weight, 1.0),
                                     source)

    def stop(self, t: float) -> None:
        if self.current is not None:
            self.current.end_s = min(self.current.end_s, t + self.current.blend_out_s)

    def update(self, t: float) -> None:
        cur = self.current
        if cur is None or t >= cur.end_s:
            self.current = None
            self.name, self.phase, self.weight = "none", 0.0, 0.0
            return
        self.name, self.phase, self.weight = cur.name, cur.phase(t), cur.weight(t)

    def state(self, t: float) -> dict:
        cur = self.current
        if cur is None or t >= cur.end_s:
            return {"name": "none", "phase": 0.0, "weight": 0.0, "remaining_s": 0.0, "mode": None}
        remaining = None if cur.end_s == float("inf") else round(max(0.0, cur.end_s - t), 3)
        return {"name": cur.name, "phase": round(cur.phase(t), 4), "weight": round(cur.weight(t), 4),
                "remaining_s": remaining, "mode": cur.mode.value, "source": cur.source.value}
