"""Expression features from the 478-point face mesh, geometrically (no blendshape model is
bundled with MediaPipe 0.10.21), and the neutral calibration that makes them personal.

Conventions (FACE_FEATURES order), for a camera image that is NOT mirrored:
- head_yaw   radians, + = the subject turns to their own left (nose moves to image right)
- head_pitch radians, + = looking up;  head_roll radians, + = head tilts toward the subject's left
  shoulder (image right)
- blink_left/right 0 open .. 1 closed (the subject's own eyes)
- gaze_x -1..1, + = eyes turned to the subject's left; gaze_y -1..1, + = up
- mouth_open 0..1; mouth_width 0..1 with 0.5 = the neutral width (0 pursed, 1 stretched)
- smile 0..1; brow_raise_left/right 0..1; brow_furrow 0..1
- eye_wide_left/right 0..1: the eye opened wider than at rest (1 = a third wider); frown 0..1: the
  mouth corners pulled down below the resting line

Everything is vectorised over a handful of landmark indices; nothing loops over points.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from liveavatar.types import FACE_FEATURES, FF

N = len(FACE_FEATURES)

# Landmark indices (MediaPipe face mesh). "R" = the subject's right (image left).
EYE_R_OUT, EYE_R_IN, EYE_L_OUT, EYE_L_IN = 33, 133, 263, 362
LID_R = np.array([[159, 145], [158, 153], [160, 144]])     # upper/lower lid pairs, right eye
LID_L = np.array([[386, 374], [385, 380], [387, 373]])
IRIS_R, IRIS_L = 468, 473
FOREHEAD, CHIN = 10, 152
LIP_UP, LIP_DOWN, MOUTH_R, MOUTH_L = 13, 14, 61, 291
BROW_R = np.array([105, 66])        # upper brow arc above the pupil, right
BROW_L = np.array([334, 296])
BROW_R_INNER, BROW_L_INNER = 107, 336

# Raw metric vector layout: the same slots as FACE_FEATURES (raw units, before calibration).
#: Neutral raw metrics of an average frontal resting face (measured on real portraits); used until
#: the user calibrates.
DEFAULT_NEUTRAL = np.zeros(N, np.float32)
DEFAULT_NEUTRAL[FF["head_pitch"]] = -0.13     # the mesh's face plane leans back a little
DEFAULT_NEUTRAL[FF["blink_left"]] = DEFAULT_NEUTRAL[FF["blink_right"]] = 0.30   # eye aspect ratio
DEFAULT_NEUTRAL[FF["mouth_open"]] = 0.02      # inner-lip gap / eye span
DEFAULT_NEUTRAL[FF["mouth_width"]] = 0.60     # mouth-corner span / eye span
DEFAULT_NEUTRAL[FF["smile"]] = 0.0            # corner lift above lip centre / eye span
DEFAULT_NEUTRAL[FF["brow_raise_left"]] = DEFAULT_NEUTRAL[FF["brow_raise_right"]] = 0.30  # brow-corners / eye span
DEFAULT_NEUTRAL[FF["brow_furrow"]] = 0.33     # inner-brow span / eye span
DEFAULT_NEUTRAL[FF["eye_wide_left"]] = DEFAULT_NEUTRAL[FF["eye_wide_right"]] = 0.30   # eye aspect ratio
DEFAULT_NEUTRAL[FF["frown"]] = 0.0            # as smile (the same raw measure, the other direction)

# feature = clip(gain * (raw - neutral) + offset, lo, hi). Blink gain depends on the neutral eye
# opening (closing is relative to the person's own open eye), set in `Calibration`.
_GAIN = np.ones(N, np.float32)
_GAIN[[FF["gaze_x"], FF["gaze_y"]]] = [2.5, 3.0]
_GAIN[FF["mouth_open"]] = 1 / 0.35
_GAIN[FF["mouth_width"]] = 1 / 0.30
_GAIN[FF["smile"]] = 1 / 0.10
_GAIN[[FF["brow_raise_left"], FF["brow_raise_right"]]] = 1 / 0.12
_GAIN[FF["brow_furrow"]] = -1 / 0.06          # inner brows come together when furrowing
_GAIN[FF["frown"]] = -1 / 0.06
_OFFSET = np.zeros(N, np.float32)
_OFFSET[FF["mouth_width"]] = 0.5
_LO = np.zeros(N, np.float32)
_HI = np.ones(N, np.float32)
_LO[:3], _HI[:3] = -np.pi, np.pi
_LO[[FF["gaze_x"], FF["gaze_y"]]] = -1.0

# Running per-user range (`Calibration.adapt`). The resting value of these channels follows a
# running median (people rest far more than they emote), at this many raw units per second:
_REST_RATE = np.zeros(N, np.float32)
# Head angles keep the default rest: following them would bend a held turn back to straight.
# Slow enough that a held smile stays a smile for many seconds.
_REST_RATE[[FF["blink_left"], FF["blink_right"], FF["eye_wide_left"], FF["eye_wide_right"]]] = 0.02
_REST_RATE[[FF["mouth_width"], FF["brow_raise_left"], FF["brow_raise_right"], FF["brow_furrow"]]] = 0.01
_REST_RATE[[FF["smile"], FF["frown"]]] = 0.004
_REST_RATE[FF["mouth_open"]] = 0.005       # tracks a low percentile: the closed mouth is its rest
# ... and the span that maps to a full 1.0 follows the person's biggest expression (a peak that
# decays over _PEAK_TAU_S), between half and one and a half times the default span, so a
# person with small expressions still reaches the avatar's extremes and a big one is not clipped.
_SPANNED = np.array([FF[n] for n in ("mouth_open", "mouth_width", "smile", "brow_raise_left", "brow_raise_right",
                                     "brow_furrow", "frown")])
_PEAK_TAU_S = 15.0
_SPAN_LO, _SPAN_HI = 0.5, 1.5
_WARM_S = 2.0                               # the rest adapts 2x faster over the first seconds


#: The expression of a resting face (what a lost face decays toward).
NEUTRAL_FEATURES = np.clip(_OFFSET, _LO, _HI).astype(np.float32)


def raw_metrics(landmarks: np.ndarray, width: int, height: int, out: np.ndarray | None = None,
                work: np.ndarray | None = None) -> np.ndarray:
    """Raw geometric measurements in FACE_FEATURES slots from (478, >=3) normalised landmarks.
    Distances are in units of the outer-eye-corner span, measured in the head's own frame so that
    head roll and moderate yaw do not leak into them. `work`: an optional (n, 3) float64 buffer."""
    out = np.empty(N, np.float32) if out is None else out
    p = np.empty((len(landmarks), 3)) if work is None or work.shape != (len(landmarks), 3) else work
    np.multiply(landmarks[:, :3], (width, height, width), out=p)   # pixels: x and z share a scale
    x_axis = p[EYE_L_OUT] - p[EYE_R_OUT]                 # subject's right eye -> left eye
    span = np.linalg.norm(x_axis) + 1e-9
    x_axis /= span
    y_axis = p[CHIN] - p[FOREHEAD]
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis) + 1e-9
    z_axis = np.cross(x_axis, y_axis)                     # into the screen: back of the head
    nose = -z_axis
    out[FF["head_yaw"]] = np.arctan2(nose[0], -nose[2])
    out[FF["head_pitch"]] = np.arctan2(-nose[1], -nose[2])
    out[FF["head_roll"]] = np.arctan2(x_axis[1], x_axis[0])

    # Head frame: rows are the axes; coordinates in eye spans.
    rot = np.stack([x_axis, y_axis, z_axis])
    q = (p - p[EYE_R_OUT]) @ rot.T / span

    def ear(lids: Any, outer: Any, inner: Any) -> Any:
        gaps = np.linalg.norm(q[lids[:, 0], :2] - q[lids[:, 1], :2], axis=1).mean()
        return gaps / (np.linalg.norm(q[outer, :2] - q[inner, :2]) + 1e-9)

    out[FF["blink_right"]] = out[FF["eye_wide_right"]] = ear(LID_R, EYE_R_OUT, EYE_R_IN)
    out[FF["blink_left"]] = out[FF["eye_wide_left"]] = ear(LID_L, EYE_L_OUT, EYE_L_IN)

    # Iris offset from each eye's centre, in half eye-widths (x) and eye heights (y).
    eye_c = (q[[EYE_R_OUT, EYE_L_OUT]] + q[[EYE_R_IN, EYE_L_IN]]) / 2
    half_w = np.abs(q[[EYE_R_OUT, EYE_L_OUT], 0] - q[[EYE_R_IN, EYE_L_IN], 0]) / 2 + 1e-9
    lid_c = (q[[LID_R[0, 0], LID_L[0, 0]], 1] + q[[LID_R[0, 1], LID_L[0, 1]], 1]) / 2
    iris = q[[IRIS_R, IRIS_L]]
    out[FF["gaze_x"]] = ((iris[:, 0] - eye_c[:, 0]) / half_w).mean()
    out[FF["gaze_y"]] = (-(iris[:, 1] - lid_c) / (2 * half_w)).mean()

    out[FF["mouth_open"]] = np.linalg.norm(q[LIP_UP] - q[LIP_DOWN])
    out[FF["mouth_width"]] = np.linalg.norm(q[MOUTH_R, :2] - q[MOUTH_L, :2])
    lip_centre_y = (q[LIP_UP, 1] + q[LIP_DOWN, 1]) / 2
    out[FF["smile"]] = out[FF["frown"]] = lip_centre_y - (q[MOUTH_R, 1] + q[MOUTH_L, 1]) / 2   # + = lifted

    # Brow height above the eye's corners, not above the upper lid: a squint lowers the lid, and
    # measured from it a scowl would read as raised brows.
    out[FF["brow_raise_right"]] = (q[EYE_R_OUT, 1] + q[EYE_R_IN, 1]) / 2 - q[BROW_R, 1].mean()
    out[FF["brow_raise_left"]] = (q[EYE_L_OUT, 1] + q[EYE_L_IN, 1]) / 2 - q[BROW_L, 1].mean()
    out[FF["brow_furrow"]] = np.linalg.norm(q[BROW_R_INNER, :2] - q[BROW_L_INNER, :2])
    return out


class Calibration:
    """Maps raw metrics to features relative to a neutral face: the defaults, or the user's own
    resting face after `set_neutral`."""

    __slots__ = ("neutral", "gain", "calibrated", "_peak", "_seen_s")

    def __init__(self) -> None:
        self.neutral = DEFAULT_NEUTRAL.copy()
        self.gain = _GAIN.copy()
        self.calibrated = False
        self._peak = np.abs(1.0 / _GAIN[_SPANNED]).astype(np.float32)   # starts at the default span
        self._seen_s = 0.0
        self._set_blink_gain()

    def adapt(self, raw: np.ndarray, dt: float) -> None:
        """Follow the user's own range from a live stream of raw metrics (`dt` s since the last):
        the resting face becomes the avatar's resting face and the user's extremes its extremes.
        After an explicit calibration (`set_neutral`) the rest is kept and only the spans adapt."""
        if not np.isfinite(raw).all() or not 0.0 < dt < 1.0:
            return
        self._seen_s += dt
        if not self.calibrated:
            warm = 1.0 + float(np.exp(-self._seen_s / _WARM_S))
            step = _REST_RATE * (dt * warm)
            up = raw > self.neutral
            # A median tracker; the mouth's rest is its 15th percentile (closed between words).
            k = FF["mouth_open"]
            step[k] *= 0.3 if up[k] else 1.7
            self.neutral += np.where(up, step, -step)
            self._set_blink_gain()
        dev = (raw[_SPANNED] - self.neutral[_SPANNED]) * np.sign(_GAIN[_SPANNED])
        self._peak = np.maximum(self._peak * np.float32(np.exp(-dt / _PEAK_TAU_S)), dev)
        default = np.abs(1.0 / _GAIN[_SPANNED])
        span = np.clip(self._peak, _SPAN_LO * default, _SPAN_HI * default)
        self.gain[_SPANNED] = np.sign(_GAIN[_SPANNED]) / span

    def _set_blink_gain(self) -> None:
        # Fully closed eyes keep ~25 % of the open aspect ratio (lashes, mesh thickness).
        for i in (FF["blink_left"], FF["blink_right"]):
            self.gain[i] = -1.0 / (0.75 * max(float(self.neutral[i]), 0.05))
        # Wide open: a third more than the resting opening is a full stare.
        for i in (FF["eye_wide_left"], FF["eye_wide_right"]):
            self.gain[i] = 1.0 / (0.33 * max(float(self.neutral[i]), 0.05))

    def set_neutral(self, raw_samples: np.ndarray) -> None:
        """`raw_samples` (k, N) raw metrics of the resting face; the median is robust to a blink."""
        self.neutral = np.median(raw_samples, axis=0).astype(np.float32)
        self.calibrated = True
        self._set_blink_gain()

    def apply(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(N, np.float32) if out is None else out
        np.subtract(raw, self.neutral, out=out)
        out *= self.gain
        out += _OFFSET
        np.clip(out, _LO, _HI, out=out)
        return out

    def apply_direct(self, features: np.ndarray, neutral_features: np.ndarray | None) -> np.ndarray:
        """For trackers that report features directly (blendshapes): only remove the resting head
        angles and gaze offset of the calibrated neutral."""
        out = features.astype(np.float32, copy=True)
        if neutral_features is not None:
            out[:7] -= neutral_features[:7]
            out[3:5] = features[3:5]          # blink is already absolute
        return np.clip(out, _LO, _HI)
