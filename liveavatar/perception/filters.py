"""Smoothing without visible lag (One-Euro, vectorised over whole arrays) and the hold-and-decay
behaviour of a tracked part that is lost and found again."""
from __future__ import annotations

from typing import Any

import numpy as np

from liveavatar.types import Part


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) over an array of any shape: a low-pass whose cutoff
    rises with speed, so slow jitter is removed and fast motion passes with little lag.
    `min_cutoff`, `beta` and `d_cutoff` may be scalars or arrays broadcastable to the signal's shape."""

    __slots__ = ("min_cutoff", "beta", "d_cutoff", "_x", "_dx", "_t", "_ready")

    def __init__(self, shape: Any, min_cutoff: Any = 1.0, beta: Any = 0.0, d_cutoff: Any = 1.0) -> None:
        self.min_cutoff = np.asarray(min_cutoff, np.float32)
        self.beta = np.asarray(beta, np.float32)
        self.d_cutoff = np.asarray(d_cutoff, np.float32)
        self._x = np.zeros(shape, np.float32)
        self._dx = np.zeros(shape, np.float32)
        self._t = 0.0
        self._ready = False

    def reset(self, x: np.ndarray | None = None, t_s: float = 0.0) -> None:
        self._ready = x is not None
        if x is not None:
            self._x[...] = x
            self._dx[...] = 0
            self._t = t_s

    @property
    def value(self) -> np.ndarray:
        return self._x

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filter the sample `x` taken at time `t_s` (seconds); returns the internal state array
        (copy it if you keep it)."""
        if not self._ready:
            self.reset(x, t_s)
            return self._x
        dt = t_s - self._t
        if dt <= 0:           # same or out-of-order timestamp: take no step rather than divide by 0
            dt = 1e-3
        self._t = t_s
        a_d = _alpha(self.d_cutoff, dt)
        dx = (x - self._x) / dt
        self._dx += a_d * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x += a * (x - self._x)
        return self._x


class PartFilter:
    """One tracked part over time: smooths landmarks while seen; while lost, holds the last
    landmarks with a confidence that decays (half-life `lost_half_life_s`); when found again, eases
    from the held pose to the new one over `reacquire_s` instead of jumping."""

    __slots__ = ("n", "_filter", "_held", "_ease_from", "_ease_t0", "reacquire_s", "half_life_s",
                 "present", "confidence", "_conf_at_loss", "_t_lost", "_t_last", "seen", "passthrough")

    def __init__(self, n: int, min_cutoff: float = 1.5, beta: float = 4.0,
                 lost_half_life_s: float = 0.3, reacquire_s: float = 0.15, passthrough: bool = False) -> None:
        self.n = n
        self.passthrough = passthrough    # stills: each frame stands alone, no smoothing
        # xyz are smoothed; the visibility column is smoothed too (it drives confidence).
        self._filter = OneEuroFilter((n, 4), min_cutoff, beta)
        self._held = np.zeros((n, 4), np.float32)
        self._ease_from = np.zeros((n, 4), np.float32)
        self._ease_t0 = -1.0
        self.reacquire_s = reacquire_s
        self.half_life_s = lost_half_life_s
        self.present = False
        self.confidence = 0.0
        self._conf_at_loss = 0.0
        self._t_lost = 0.0
        self._t_last = 0.0
        self.seen = False

    def observe(self, landmarks: np.ndarray, confidence: float, t_s: float) -> None:
        if self.passthrough:
            self._held[...] = landmarks
            self.present = self.seen = True
            self.confidence = self._conf_at_loss = float(confidence)
            return
        if self.seen and not self.present:
            # Found again: start the ease from what we were holding.
            self._ease_from[...] = self._held
            self._ease_t0 = t_s
            self._filter.reset(landmarks, t_s)
        out = self._filter(landmarks, t_s)
        if self._ease_t0 >= 0:
            w = (t_s - self._ease_t0) / self.reacquire_s
            if w >= 1:
                self._ease_t0 = -1.0
                self._held[...] = out
            else:
                np.add(self._ease_from, (out - self._ease_from) * max(w, 0.0), out=self._held)
        else:
            self._held[...] = out
        self.present, self.seen = True, True
        self.confidence = float(confidence)
        self._t_last = t_s

    def lose(self, t_s: float) -> None:
        """No detection at `t_s`: hold, and let the confidence decay from the moment of loss."""
        if self.present:
            self.present = False
            self._conf_at_loss = self.confidence
            self._t_lost = t_s
            self._ease_t0 = -1.0
        if self.passthrough:
            self.confidence = 0.0
        elif self.seen:
            self.confidence = self._conf_at_loss * 0.5 ** (max(t_s - self._t_lost, 0.0) / self.half_life_s)
        self._t_last = t_s

    def part(self) -> Part:
        """A snapshot for one Cues (its own array: a consumer may keep it)."""
        lm = self._held.copy()
        if not self.present:
            lm[:, 3] *= self.confidence / max(self._conf_at_loss, 1e-6) if self.seen else 0.0
        return Part(lm, self.present, self.confidence)


class ExpressionFilter:
    """One-Euro per expression feature; blink passes faster than head angles. While the face is
    lost, features ease toward the neutral expression (time constant `lost_tau_s`); when it is
    found again they ease to the new values over `reacquire_s`."""

    __slots__ = ("_filter", "_neutral", "lost_tau_s", "reacquire_s", "_t", "_lost", "_ease_from",
                 "_ease_t0", "value", "passthrough")

    def __init__(self, min_cutoff: np.ndarray, beta: np.ndarray, neutral: np.ndarray,
                 lost_tau_s: float = 0.5, reacquire_s: float = 0.15, passthrough: bool = False,
                 d_cutoff: Any = 1.0) -> None:
        self.passthrough = passthrough
        self._filter = OneEuroFilter(neutral.shape, min_cutoff, beta, d_cutoff)
        self._neutral = neutral.astype(np.float32)
        self.lost_tau_s = lost_tau_s
        self.reacquire_s = reacquire_s
        self._t = 0.0
        self._lost = True
        self._ease_from = self._neutral.copy()
        self._ease_t0 = -1.0
        self.value = self._neutral.copy()

    def observe(self, features: np.ndarray, t_s: float) -> None:
        if self.passthrough:
            self.value[...] = features
            self._lost = False
            return
        if self._lost:
            self._ease_from[...] = self.value
            self._ease_t0 = t_s
            self._filter.reset(features, t_s)
            self._lost = False
        out = self._filter(features, t_s)
        if self._ease_t0 >= 0:
            w = (t_s - self._ease_t0) / self.reacquire_s
            if w >= 1:
                self._ease_t0 = -1.0
                self.value[...] = out
            else:
                np.add(self._ease_from, (out - self._ease_from) * max(w, 0.0), out=self.value)
        else:
            self.value[...] = out
        self._t = t_s

    def lose(self, t_s: float) -> None:
        dt = max(t_s - self._t, 0.0)
        self._t = t_s
        self._lost = True
        self._ease_t0 = -1.0
        k = np.float32(0.0 if self.passthrough else np.exp(-dt / self.lost_tau_s))
        self.value[...] = self._neutral + (self.value - self._neutral) * k
