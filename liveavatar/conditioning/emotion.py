"""The emotion engine: fuses the face, the voice and triggers into one distribution.

Each source gives a distribution over the emotions and a strength 0..1 (how sure it is that the
user is not neutral). Sources are layered like paint, weakest priority first:
`result = strength * source + (1 - strength) * result_so_far`, starting from neutral, so a full
strength trigger covers the face and the face covers the voice (the default priority).
Face and voice cues switch each emotion on at a threshold and off only below threshold minus
`hysteresis`, and an emotion keeps its state for at least `min_dwell_s`, so nothing flickers.
The character's emotion then follows the fused target over `blend_s` (`trigger_blend_s` while a
trigger dominates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liveavatar.types import FF, EventSource, TriggerMode, VoiceFeatures

from .mapping import Mapping, trigger_rank

EYES_SHUT = 0.6      # either eye's blink above this (a wink too): the face is not read as angry or sad

MAX_TRIGGERS = 8            # bounded: older triggers are dropped first
LAUGH_WINDOW = 32           # loudness samples (about 1 s at 30 fps) for laughter detection


@dataclass(slots=True)
class ActiveTrigger:
    emotion: int
    mode: TriggerMode
    start_s: float
    hold_s: float
    intensity: float
    source: EventSource
    released_s: float = -1.0     # toggle switched off at this time (-1: still on)

    def strength(self, t: float, decay_s: float, release_s: float) -> float:
        age = t - self.start_s
        if self.mode is TriggerMode.MOMENTARY:
            return self.intensity * max(0.0, 1.0 - age / decay_s)
        if self.mode is TriggerMode.HOLD:
            if age < self.hold_s:
                return self.intensity
            return self.intensity * max(0.0, 1.0 - (age - self.hold_s) / release_s)
        if self.released_s < 0:
            return self.intensity
        return self.intensity * max(0.0, 1.0 - (t - self.released_s) / release_s)

    def remaining_s(self, t: float, decay_s: float, release_s: float) -> float | None:
        """Seconds until this trigger has no effect (None: a toggle that is still on)."""
        if self.mode is TriggerMode.MOMENTARY:
            return max(0.0, self.start_s + decay_s - t)
        if self.mode is TriggerMode.HOLD:
            return max(0.0, self.start_s + self.hold_s + release_s - t)
        return None if self.released_s < 0 else max(0.0, self.released_s + release_s - t)


class _Schmitt:
    """Per-emotion on/off state with hysteresis and a minimum dwell time, vectorised."""

    def __init__(self, n: int) -> None:
        self.active = np.zeros(n, bool)
        self.changed_s = np.full(n, -1e9)

    def update(self, margin: np.ndarray, t: float, hysteresis: float, dwell_s: float) -> np.ndarray:
        want = np.where(self.active, margin > -hysteresis, margin >= 0.0)
        flip = (want != self.active) & (t - self.changed_s >= dwell_s)
        self.active ^= flip
        self.changed_s[flip] = t
        return self.active


class EmotionEngine:
    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.names: tuple[str, ...] = mapping.emotion.names
        n = len(self.names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._neutral = np.zeros(n, np.float32)
        self._neutral[0] = 1.0
        self.output = self._neutral.copy()
        self.target = self._neutral.copy()
        self._face_margin = np.full(n, -1.0, np.float32)
        self._voice_margin = np.full(n, -1.0, np.float32)
        self._face = _Schmitt(n)
        self._voice = _Schmitt(n)
        self.face_dist = np.zeros(n, np.float32)
        self.voice_dist = np.zeros(n, np.float32)
        self.trigger_dist = np.zeros(n, np.float32)
        self.strengths = {"trigger": 0.0, "face": 0.0, "voice": 0.0}
        self.triggers: list[ActiveTrigger] = []
        self._loudness = np.full(LAUGH_WINDOW, -120.0, np.float32)
        self._loud_i = 0
        self.laughter = 0.0
        self.dominant = 0
        self._dominant_since = -1e9
        self._fresh_trigger = False
        self._happy, self._excited = self._index.get("happy"), self._index.get("excited")

    def index(self, name: str) -> int | None:
        return self._index.get(name)

    # -- triggers ---------------------------------------------------------------------------

    def trigger(self, name: str, mode: TriggerMode, hold_s: float, intensity: float,
                source: EventSource, t: float) -> None:
        e = self.mapping.emotion
        i = self._index[name]
        rank = trigger_rank(source)
        same = [tr for tr in self.triggers if tr.emotion == i]
        if mode is TriggerMode.TOGGLE and any(tr.mode is TriggerMode.TOGGLE and tr.released_s < 0
                                              and trigger_rank(tr.source) <= rank for tr in same):
            for tr in same:
                if tr.released_s < 0 and trigger_rank(tr.source) <= rank:
                    tr.released_s = t
            return
        if any(trigger_rank(tr.source) > rank and tr.strength(t, e.decay_s, e.release_s) > 0 for tr in same):
            return       # the streamer's own trigger for this emotion stays (a word in passing does not shorten it)
        # A new trigger for an emotion replaces the old one (restarts its timer).
        self.triggers = [tr for tr in self.triggers if tr.emotion != i][-(MAX_TRIGGERS - 1):]
        self.triggers.append(ActiveTrigger(i, mode, t, hold_s, float(np.clip(intensity, 0, 1)),
                                           source))
        self._fresh_trigger = True

    def clear_triggers(self) -> None:
        self.triggers.clear()

    # -- sources ----------------------------------------------------------------------------

    def _face_margins(self, expr: np.ndarray) -> np.ndarray:
        """How far past its threshold each emotion's face condition is (>= 0: met)."""
        f = self.mapping.face
        smile, mouth = expr[FF["smile"]], expr[FF["mouth_open"]]
        brows = 0.5 * (expr[FF["brow_raise_left"]] + expr[FF["brow_raise_right"]])
        furrow, gaze_down = expr[FF["brow_furrow"]], -expr[FF["gaze_y"]]   # gaze_y: + = up
        m = self._face_margin
        m[:] = -1.0
        self._set(m, "happy", smile - f.smile_happy)
        self._set(m, "excited", min(smile - f.excited_smile, mouth - f.surprise_mouth))
        wide = 0.5 * (expr[FF["eye_wide_left"]] + expr[FF["eye_wide_right"]]) if len(expr) > FF["frown"] else 0.0
        frown = expr[FF["frown"]] if len(expr) > FF["frown"] else 0.0
        # Raised brows with wide eyes or a dropped jaw are surprise; sadness is the inner brows
        # drawn up and together or the corners pulled down, with the eyes not wide.
        self._set(m, "surprised", min(brows - f.surprise_brow,
                                      max(mouth - f.surprise_mouth, wide - f.surprise_eyes),
                                      f.smile_happy - smile))
        # Shut eyes pull the brows down and the face long: a person resting their eyes read as
        # angry or sad (d9: 0.5-0.6 of either while the eyes were closed), so neither counts then.
        open_ = EYES_SHUT - max(expr[FF["blink_left"]], expr[FF["blink_right"]])
        self._set(m, "angry", min(furrow - f.furrow_angry, f.smile_happy - smile,
                                  f.surprise_brow - brows, open_))
        self._set(m, "sad", min(max(min(brows - f.sad_brow, furrow - 0.5 * f.furrow_angry), frown - f.sad_frown),
                                f.sad_mouth - mouth, f.sad_mouth - smile, f.surprise_eyes - wide, open_))
        self._set(m, "shy", min(gaze_down - f.shy_gaze_down, smile - 0.5 * f.smile_happy))
        return m

    def _voice_margins(self, voice: VoiceFeatures, speaking: float) -> np.ndarray:
        """Margins in normalised units: 30 dB or 5 semitones count as 1.0 (like the face's 0..1)."""
        v = self.mapping.voice
        m = self._voice_margin
        m[:] = -1.0
        if not voice.present or speaking < 0.5:
            return m
        loud, dev = voice.loudness_dbfs, voice.pitch_dev
        self._set(m, "excited", min((loud - v.loud_dbfs) / 30.0, (dev - v.high_semitones) / 5.0))
        self._set(m, "sad", min((v.quiet_dbfs - loud) / 30.0, (v.low_semitones - dev) / 5.0))
        if v.laughter:
            self._set(m, "happy", self.laughter - 0.5)
        return m

    def _set(self, margins: np.ndarray, name: str, value: float) -> None:
        i = self._index.get(name)
        if i is not None and np.isfinite(value):
            margins[i] = value

    def push_loudness(self, voice: VoiceFeatures, speaking: float) -> None:
        """Feed one loudness sample per perception result (about 30 Hz) for laughter: voiced
        bursts at 4-7 Hz ("ha-ha-ha") with the pitch above the user's usual."""
        loud = voice.loudness_dbfs
        self._loudness[self._loud_i] = loud if voice.present and np.isfinite(loud) else -120.0
        self._loud_i = (self._loud_i + 1) % LAUGH_WINDOW
        if not voice.present or not speaking >= 0.5 or not voice.pitch_dev >= 0.5:
            self.laughter *= 0.8
            return
        env = np.roll(self._loudness, -self._loud_i)
        env = env - env.mean()
        power = np.abs(np.fft.rfft(env)) ** 2
        freqs = np.fft.rfftfreq(LAUGH_WINDOW, 1 / 30.0)
        band = power[(freqs >= 4.0) & (freqs <= 7.5)].sum()
        total = power[1:].sum() + 1e-6
        depth = np.ptp(env)
        self.laughter = float(np.clip(2.0 * band / total, 0, 1)) if depth > 8.0 else 0.0

    def _strength(self, margin: np.ndarray, active: np.ndarray, out: np.ndarray) -> float:
        """Active emotions -> a distribution in `out`; returns the source's strength."""
        s = np.where(active, np.clip(0.75 + 2.0 * margin, 0.7, 1.0), 0.0)
        s[0] = 0.0
        # A big open-mouthed smile also meets "happy": the more specific reading wins.
        if self._excited is not None and self._happy is not None and s[self._excited] > 0:
            s[self._happy] *= 0.25
        total = float(s.sum())
        if total <= 0:
            out[:] = 0.0
            return 0.0
        out[:] = s / total
        return float(s.max())

    # -- per tick ---------------------------------------------------------------------------

    def update(self, t: float, dt: float, expr: np.ndarray | None, face_weight: float,
               voice: VoiceFeatures, speaking: float) -> tuple[np.ndarray, float]:
        e = self.mapping.emotion
        strengths = self.strengths
        if expr is not None:
            margins = self._face_margins(expr)
        else:
            margins = self._face_margin
            margins[:] = -1.0
        active = self._face.update(margins, t, e.hysteresis, e.min_dwell_s)
        strengths["face"] = (self._strength(margins, active, self.face_dist)
                             * e.face_weight * face_weight)
        vm = self._voice_margins(voice, speaking)
        active = self._voice.update(vm, t, e.hysteresis, e.min_dwell_s)
        strengths["voice"] = self._strength(vm, active, self.voice_dist) * e.voice_weight

        # Triggers, layered by rank (explicit over keyword over gesture), newest on top within one.
        td = self.trigger_dist
        td[:] = 0.0
        cover = 0.0
        alive = []
        for tr in sorted(self.triggers, key=lambda tr: (trigger_rank(tr.source), tr.start_s)):
            s = tr.strength(t, e.decay_s, e.release_s)
            if s <= 0.0 and t > tr.start_s:
                continue
            alive.append(tr)
            td *= 1.0 - s
            td[tr.emotion] += s
            cover = 1.0 - (1.0 - cover) * (1.0 - s)
        self.triggers = alive
        if cover > 0:
            td /= td.sum()
        strengths["trigger"] = cover

        target = self.target
        target[:] = self._neutral
        dists = {"trigger": td, "face": self.face_dist, "voice": self.voice_dist}
        for source in reversed(e.priority):
            a = strengths[source]
            if a > 0:
                target *= 1.0 - a
                target += a * dists[source]

        blend = e.trigger_blend_s if cover > 0.5 or self._fresh_trigger else e.blend_s
        if self._fresh_trigger:
            dt = max(dt, 1 / 30)   # a new trigger always shows on the very next tick
            self._fresh_trigger = False
        alpha = 1.0 - np.exp(-3.0 * dt / blend)   # ~95 % of the way after `blend` seconds
        self.output += (target - self.output) * alpha
        np.clip(self.output, 0.0, 1.0, out=self.output)
        self.output /= max(float(self.output.sum()), 1e-6)

        # Dominant emotion (for state and UIs) changes only past a margin and after a dwell.
        best = int(np.argmax(self.output))
        if (best != self.dominant and self.output[best] > self.output[self.dominant] + e.hysteresis
                and t - self._dominant_since >= e.min_dwell_s):
            self.dominant = best
            self._dominant_since = t
        return self.output, float(np.clip(1.0 - self.output[0], 0.0, 1.0))
