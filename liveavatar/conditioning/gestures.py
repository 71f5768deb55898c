"""Gesture recognition from landmark sequences: wave, nod, head shake, clap, hands-up cheer, point.

A fixed-size ring buffer keeps the last second or two of a few pose points and the head angles;
each push runs a handful of vectorised tests over the window. Distances are normalised by the
shoulder width, so recognition does not depend on how far the user sits from the camera.
"""
from __future__ import annotations

import numpy as np

from liveavatar.types import FF

from .retarget import L_ELBOW, L_HIP, L_SHOULDER, L_WRIST, NOSE, R_ELBOW, R_HIP, R_SHOULDER, R_WRIST

# Tracked points, in ring-buffer column order.
_POINTS = np.array([L_WRIST, R_WRIST, L_ELBOW, R_ELBOW, L_SHOULDER, R_SHOULDER, NOSE, L_HIP, R_HIP])
LW, RW, LE, RE, LS, RS, NO, LH, RH = range(len(_POINTS))
CAPACITY = 128            # samples; enough for a 2 s window at 60 fps
MIN_SAMPLES = 8
RECOGNISE_EVERY = 2       # samples; gestures last half a second or more, so 15 Hz checks suffice
VISIBLE = 0.5
MIN_SHOULDERS = 0.06      # frame heights: a person smaller than this is too far to read gestures from


def _reversals(signal: np.ndarray, min_range: float) -> int:
    """How many times `signal` swings across its middle, ignoring a dead zone around it (so
    noise does not count); 0 if its range is below `min_range`."""
    lo, hi = float(signal.min()), float(signal.max())
    if hi - lo < min_range:
        return 0
    centred = signal - 0.5 * (lo + hi)
    outside = centred[np.abs(centred) > 0.2 * (hi - lo)]
    return int(np.count_nonzero(np.diff(np.sign(outside))))


class GestureRecognizer:
    """Push one landmark sample per perception result; `push` returns the gestures recognised
    just now (each one at most once per cooldown)."""

    def __init__(self, window_s: float = 1.5, cooldown_s: float = 1.5) -> None:
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._t = np.zeros(CAPACITY, np.float64)
        self._xy = np.zeros((CAPACITY, len(_POINTS), 2), np.float32)
        self._vis = np.zeros((CAPACITY, len(_POINTS)), np.float32)
        self._head = np.zeros((CAPACITY, 2), np.float32)       # yaw, pitch
        self._head_ok = np.zeros(CAPACITY, bool)
        self._n = 0
        self._i = 0
        self._pushed = 0
        self._last_fired: dict[str, float] = {}
        self.last: tuple[str, float] | None = None           # (gesture, t seconds)

    def reset(self) -> None:
        self._n = 0
        self._last_fired.clear()

    def push(self, t_s: float, pose: np.ndarray | None, aspect: float,
             expression: np.ndarray | None) -> list[str]:
        i = self._i
        self._t[i] = t_s
        if pose is not None:
            pts = pose[_POINTS]
            ok = np.isfinite(pts).all(axis=1)
            self._xy[i] = np.where(ok[:, None], pts[:, :2], 0.0)
            # A point the camera does not show is a guess, whatever its visibility says: an arm
            # below a webcam close-up must not wave.
            inside = (self._xy[i, :, 0] > 0.01) & (self._xy[i, :, 0] < 0.99) \
                & (self._xy[i, :, 1] > 0.01) & (self._xy[i, :, 1] < 0.99)
            self._xy[i, :, 0] *= aspect
            self._vis[i] = np.where(ok & inside, pts[:, 3], 0.0)
        else:
            self._vis[i] = 0.0
        if expression is not None and np.isfinite(expression[[FF["head_yaw"], FF["head_pitch"]]]).all():
            self._head[i] = expression[[FF["head_yaw"], FF["head_pitch"]]]
            self._head_ok[i] = True
        else:
            self._head_ok[i] = False
        self._i = (i + 1) % CAPACITY
        self._n = min(self._n + 1, CAPACITY)
        self._pushed += 1
        if self._pushed % RECOGNISE_EVERY:
            return []
        found = self._recognise(t_s)
        fired = []
        for g in found:
            if t_s - self._last_fired.get(g, -1e9) >= self.cooldown_s:
                self._last_fired[g] = t_s
                self.last = (g, t_s)
                fired.append(g)
        return fired

    def _window(self, t_s: float, seconds: float) -> np.ndarray:
        order = (np.arange(self._i - self._n, self._i)) % CAPACITY
        return order[self._t[order] >= t_s - seconds]

    def _recognise(self, t_s: float) -> list[str]:
        idx = self._window(t_s, self.window_s)
        if len(idx) < MIN_SAMPLES:
            return []
        xy, vis, t = self._xy[idx], self._vis[idx], self._t[idx]
        seen = vis >= VISIBLE
        shoulders = seen[:, LS] & seen[:, RS]
        if shoulders.mean() < 0.6:
            return []
        sw = float(np.median(np.linalg.norm(xy[shoulders, LS] - xy[shoulders, RS], axis=1)))
        if sw < MIN_SHOULDERS:
            return []       # far away: landmark jitter is as big as a gesture (basketball.mp4)
        found = []
        recent = t >= t_s - 0.35
        wrists_up = (seen[:, LW] & seen[:, RW] & seen[:, NO]
                     & (xy[:, LW, 1] < xy[:, NO, 1]) & (xy[:, RW, 1] < xy[:, NO, 1]))
        if recent.sum() >= 3 and wrists_up[recent].all():
            found.append("cheer")
        else:
            if self._clap(xy, seen, sw):
                found.append("clap")
            waving = self._wave(xy, seen, sw)
            if waving:
                found.append("wave")
            elif self._point(xy[recent], seen[recent], sw):
                found.append("point")
        head = self._head_motion(idx, xy, seen, sw)
        if head:
            found.append(head)
        return found

    @staticmethod
    def _wave(xy: np.ndarray, seen: np.ndarray, sw: float) -> bool:
        """A raised forearm (wrist above elbow) swinging side to side."""
        for w, e in ((LW, LE), (RW, RE)):
            up = seen[:, w] & seen[:, e] & (xy[:, w, 1] < xy[:, e, 1])
            if up.mean() < 0.6:
                continue
            swing = (xy[up, w, 0] - xy[up, e, 0]) / sw
            if _reversals(swing, 0.3) >= 3:
                return True
        return False

    @staticmethod
    def _clap(xy: np.ndarray, seen: np.ndarray, sw: float) -> bool:
        """Hands in front of the body coming together at least twice."""
        both = seen[:, LW] & seen[:, RW]
        if both.mean() < 0.6:
            return False
        gap = np.linalg.norm(xy[both, LW] - xy[both, RW], axis=1) / sw
        state = np.where(gap > 0.6, 1, np.where(gap < 0.3, -1, 0))
        state = state[state != 0]
        closings = np.count_nonzero((state[:-1] == 1) & (state[1:] == -1))
        return closings >= 2

    @staticmethod
    def _point(xy: np.ndarray, seen: np.ndarray, sw: float) -> bool:
        """One straight arm held away from the body (not both: that is a T-pose or cheer)."""
        if len(xy) < 3:
            return False
        arms = []
        for s, e, w in ((LS, LE, LW), (RS, RE, RW)):
            ok = seen[:, s] & seen[:, e] & seen[:, w]
            reach = np.linalg.norm(xy[:, w] - xy[:, s], axis=1)
            length = (np.linalg.norm(xy[:, e] - xy[:, s], axis=1)
                      + np.linalg.norm(xy[:, w] - xy[:, e], axis=1))
            straight = reach > 0.85 * length
            d = xy[:, w] - xy[:, s]
            lifted = np.abs(np.arctan2(d[:, 0], d[:, 1])) > 0.9   # > ~50 degrees from hanging
            arms.append(bool((ok & straight & lifted & (reach > 0.8 * sw)).all()))
        return arms[0] != arms[1]

    def _head_motion(self, idx: np.ndarray, xy: np.ndarray, seen: np.ndarray, sw: float) -> str | None:
        """Nod (pitch swings) or head shake (yaw swings), from face-mesh angles when available,
        else from the nose relative to the shoulders."""
        ok = self._head_ok[idx]
        if ok.mean() >= 0.8:
            yaw, pitch = self._head[idx][ok, 0], self._head[idx][ok, 1]
            yaw_range, pitch_range, nod_swings = 0.12, 0.10, 2
        else:
            use = seen[:, NO] & seen[:, LS] & seen[:, RS]
            if use.mean() < 0.8:
                return None
            # The nose in the shoulders' own frame, so leaning or a tilted camera is not a nod.
            across = xy[use, LS] - xy[use, RS]
            across /= np.linalg.norm(across, axis=1, keepdims=True) + 1e-9
            nose = xy[use, NO] - 0.5 * (xy[use, LS] + xy[use, RS])
            yaw = (nose * across).sum(1) / sw
            pitch = (nose[:, 0] * across[:, 1] - nose[:, 1] * across[:, 0]) / sw
            # Landmark noise on a moving body reaches a single slow dip: ask for a double nod.
            yaw_range, pitch_range, nod_swings = 0.12, 0.1, 3
        yaw_r, pitch_r = float(np.ptp(yaw)), float(np.ptp(pitch))
        if yaw_r > pitch_r and _reversals(yaw, yaw_range) >= 3:
            return "head_shake"
        if pitch_r > yaw_r and _reversals(pitch, pitch_range) >= nod_swings:
            return "nod"
        return None
