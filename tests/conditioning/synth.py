"""Synthetic perception results for unit tests of the conditioner's own logic: a stick person in
MediaPipe's 33-landmark layout posed by bone angles, and Cues built around it."""
from __future__ import annotations

import numpy as np

from liveavatar.types import FACE_FEATURES, FF, Cues, KeywordHit, Part, VoiceFeatures

W, H = 640, 480
ASPECT = W / H


def direction(angle: float) -> np.ndarray:
    """Unit vector of an image-plane angle (0 = down, +pi/2 = image right)."""
    return np.array([np.sin(angle), np.cos(angle)])


def person(upper_l: float = 0.3, lower_l: float = 0.1, upper_r: float = -0.3,
           lower_r: float = -0.1, hips=(0.5, 0.78), height: float = 0.9, nose_dx: float = 0.0,
           nose_dy: float = 0.0, legs_visible: bool = True) -> np.ndarray:
    """(33, 4) landmarks of someone facing the camera, angles as seen in the camera image: the
    subject's left side is on the image's right. `hips` in normalised image coords."""
    hm = np.array([hips[0] * ASPECT, hips[1]])          # work in frame heights
    sm = hm + [0.0, -0.30 * height]
    p = np.zeros((33, 2))
    p[11], p[12] = sm + [0.11 * height, 0], sm - [0.11 * height, 0]
    p[23], p[24] = hm + [0.09 * height, 0], hm - [0.09 * height, 0]
    p[13] = p[11] + 0.17 * height * direction(upper_l)
    p[15] = p[13] + 0.15 * height * direction(lower_l)
    p[14] = p[12] + 0.17 * height * direction(upper_r)
    p[16] = p[14] + 0.15 * height * direction(lower_r)
    for hip, knee, ankle, a in ((23, 25, 27, 0.03), (24, 26, 28, -0.03)):
        p[knee] = p[hip] + 0.23 * height * direction(a)
        p[ankle] = p[knee] + 0.23 * height * direction(0.0)
    nose = sm + [nose_dx * height, -0.13 * height + nose_dy * height]
    p[0] = nose
    p[1:7] = nose + [0, -0.02 * height]                    # eyes
    p[7], p[8] = nose + [0.05 * height, -0.01], nose - [0.05 * height, 0.01]   # ears
    p[9], p[10] = nose + [0.02 * height, 0.03 * height], nose + [-0.02 * height, 0.03 * height]
    p[[17, 19, 21]] = p[15]
    p[[18, 20, 22]] = p[16]
    p[[29, 31]] = p[27]
    p[[30, 32]] = p[28]
    lm = np.zeros((33, 4), np.float32)
    lm[:, 0] = p[:, 0] / ASPECT
    lm[:, 1] = p[:, 1]
    lm[:, 3] = 1.0
    if not legs_visible:
        lm[25:33, 3] = 0.05
    return lm


def expression(**features: float) -> np.ndarray:
    e = np.zeros(len(FACE_FEATURES), np.float32)
    for k, v in features.items():
        e[FF[k]] = v
    return e


def cues(t_s: float, pose: np.ndarray | None = None, expr: np.ndarray | None = None,
         voice: VoiceFeatures | None = None, keywords: tuple[str, ...] = (), seq: int = 0) -> Cues:
    t_ns = int(round(t_s * 1e9))
    pose_part = Part(pose.astype(np.float32), True, 1.0) if pose is not None else Part.empty(33)
    return Cues(seq=seq, t_capture_ns=t_ns, pose=pose_part, face=Part.empty(478),
                hand_left=Part.empty(21), hand_right=Part.empty(21),
                expression=expr if expr is not None else np.zeros(len(FACE_FEATURES), np.float32),
                expression_present=expr is not None, voice=voice or VoiceFeatures(),
                keywords=tuple(KeywordHit(w, t_ns, 0.9) for w in keywords), image_size=(W, H))


def speaking(loudness_dbfs: float = -25.0, pitch_dev: float = 0.0) -> VoiceFeatures:
    vis = np.array([0.1, 0.6, 0.1, 0.1, 0.05, 0.05], np.float32)
    return VoiceFeatures(speaking_prob=0.95, loudness_dbfs=loudness_dbfs, pitch_hz=180.0,
                         pitch_dev=pitch_dev, visemes=vis, present=True)


class Driver:
    """Runs a conditioner on virtual time: cues at `input_hz`, ticks at the output rate."""

    def __init__(self, conditioner, clock, input_hz: float = 30.0) -> None:
        self.c, self.clock, self.input_hz = conditioner, clock, input_hz
        self.t = clock.now_ns() / 1e9
        self._next_input = self.t
        self.out = []

    def run(self, seconds: float, make_cues=None):
        """Advance `seconds`; `make_cues(t)` gives the Cues for input time t (None: no input)."""
        period = self.c.period_s
        end = self.t + seconds
        ticks = []
        while self.t < end - 1e-9:
            while make_cues is not None and self._next_input <= self.t + 1e-9:
                cu = make_cues(self._next_input)
                if cu is not None:
                    self.c.push_cues(cu)
                self._next_input += 1.0 / self.input_hz
            if make_cues is None:
                self._next_input = self.t
            ticks.append(self.c.tick(int(round(self.t * 1e9))))
            self.t += period
            self.clock.sleep_until(int(round(self.t * 1e9)))
        self.out.extend(ticks)
        return ticks
