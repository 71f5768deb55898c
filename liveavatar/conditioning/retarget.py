"""Retargeting: MediaPipe pose landmarks and face features -> the character's bones, root, head
and face parameters. Vectorised over bones; all buffers are allocated once.

Mirroring: with mirror=True the character is the user's mirror image, i.e. what a horizontally
flipped camera image (a selfie preview) shows: the user's right arm drives the character's left
arm (on the image's right) and every x direction is flipped.
"""
from __future__ import annotations

import numpy as np

from liveavatar.types import BONES, FACE_PARAMS, FF, N_POSE, REST_BONE_ANGLES

# MediaPipe pose landmark indices.
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
# Derived points appended after the N_POSE landmarks.
SHOULDER_MID, HIP_MID, HEAD_MID = N_POSE, N_POSE + 1, N_POSE + 2
N_POINTS = N_POSE + 3

# (start, end) landmark of every bone in BONES order, character side == subject side.
_BONES_DIRECT = np.array([
    (HIP_MID, SHOULDER_MID), (SHOULDER_MID, HEAD_MID),
    (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
    (L_HIP, L_KNEE), (L_KNEE, L_ANKLE), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE),
], np.intp)
# Mirrored: the character's left limbs follow the subject's right limbs.
_BONES_MIRRORED = _BONES_DIRECT[[0, 1, 4, 5, 2, 3, 8, 9, 6, 7]]
assert len(_BONES_DIRECT) == len(BONES)

# FACE_PARAMS taken from FACE_FEATURES; mirrored swaps left/right (gaze_x is negated separately).
_FACE_DIRECT = np.array([FF[n] for n in FACE_PARAMS], np.intp)
_FACE_MIRRORED = np.array([FF[{"blink_left": "blink_right", "blink_right": "blink_left",
                                "brow_raise_left": "brow_raise_right",
                                "brow_raise_right": "brow_raise_left",
                                "eye_wide_left": "eye_wide_right",
                                "eye_wide_right": "eye_wide_left"}.get(n, n)]
                           for n in FACE_PARAMS], np.intp)
_GAZE_X = FACE_PARAMS.index("gaze_x")
_GAZE_Y = FACE_PARAMS.index("gaze_y")
_HEAD = np.array([FF["head_yaw"], FF["head_pitch"], FF["head_roll"]], np.intp)
# Perception measures the head in the camera image with "up" positive (pitch, gaze_y) and roll
# toward the subject's left shoulder positive. The character's head is in its image plane like
# the bones: yaw + = face turns to the image's right, pitch + = looks down, roll + = the head's
# top tilts to the image's left (the bone-angle direction). Mirroring flips yaw and roll.
_HEAD_SIGN_DIRECT = np.array([1.0, -1.0, -1.0], np.float32)
_HEAD_SIGN_MIRRORED = np.array([-1.0, -1.0, 1.0], np.float32)

# Typical proportions of an adult, used to estimate body height from what is visible.
TORSO_PER_HEIGHT = 0.30      # hips centre to shoulders centre
SHOULDERS_PER_HEIGHT = 0.22  # shoulder joint to shoulder joint


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Wrap radians into (-pi, pi]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


class PoseRetargeter:
    """Pose landmarks (33x4) -> bone angles and hips/scale measurements, with preallocated
    buffers (one instance per conditioner, not thread-safe by itself)."""

    def __init__(self) -> None:
        self._pts = np.zeros((N_POINTS, 2), np.float32)
        self._vis = np.zeros(N_POINTS, np.float32)
        self.bones = REST_BONE_ANGLES.copy()
        self.bone_conf = np.zeros(len(BONES), np.float32)

    def run(self, landmarks: np.ndarray, aspect: float, mirror: bool, min_visibility: float
            ) -> tuple[float, float, float, float]:
        """Fill `self.bones` / `self.bone_conf`. Returns (hips_x, hips_y, body_height, confidence)
        with x, y in frame heights (x already scaled by the aspect ratio, not mirrored)."""
        pts, vis = self._pts, self._vis
        lm = landmarks[:N_POSE]
        finite = np.isfinite(lm).all(axis=1)
        pts[:N_POSE] = np.where(finite[:, None], lm[:, :2], 0.0)
        vis[:N_POSE] = np.where(finite, np.clip(lm[:, 3], 0.0, 1.0), 0.0)
        pts[:N_POSE, 0] *= aspect
        pts[SHOULDER_MID] = 0.5 * (pts[L_SHOULDER] + pts[R_SHOULDER])
        vis[SHOULDER_MID] = min(vis[L_SHOULDER], vis[R_SHOULDER])
        pts[HIP_MID] = 0.5 * (pts[L_HIP] + pts[R_HIP])
        vis[HIP_MID] = min(vis[L_HIP], vis[R_HIP])
        head_w = vis[[NOSE, L_EAR, R_EAR]] + 1e-6
        pts[HEAD_MID] = (pts[[NOSE, L_EAR, R_EAR]] * head_w[:, None]).sum(0) / head_w.sum()
        vis[HEAD_MID] = vis[NOSE]

        idx = _BONES_MIRRORED if mirror else _BONES_DIRECT
        vec = pts[idx[:, 1]] - pts[idx[:, 0]]
        ang = np.arctan2(vec[:, 0], vec[:, 1])
        if mirror:
            ang = -ang
        # Bones whose ends are poorly seen fall back smoothly to the rest pose.
        conf = np.minimum(vis[idx[:, 0]], vis[idx[:, 1]])
        w = np.clip((conf - (min_visibility - 0.15)) / 0.3, 0.0, 1.0)
        self.bone_conf[:] = w
        self.bones[:] = REST_BONE_ANGLES + wrap_angle(ang - REST_BONE_ANGLES) * w

        shoulders_seen = vis[SHOULDER_MID] >= min_visibility
        hips_seen = vis[HIP_MID] >= min_visibility
        if shoulders_seen and hips_seen:
            body_h = float(np.hypot(*(pts[SHOULDER_MID] - pts[HIP_MID]))) / TORSO_PER_HEIGHT
            hips = pts[HIP_MID]
            conf_all = float(min(vis[SHOULDER_MID], vis[HIP_MID]))
        elif shoulders_seen:
            # Webcam framing: hips below the frame; place them from the shoulders.
            body_h = float(np.hypot(*(pts[L_SHOULDER] - pts[R_SHOULDER]))) / SHOULDERS_PER_HEIGHT
            hips = pts[SHOULDER_MID] + np.array([0.0, TORSO_PER_HEIGHT * body_h], np.float32)
            conf_all = float(vis[SHOULDER_MID])
        else:
            return 0.0, 0.0, 0.0, 0.0
        return float(hips[0]), float(hips[1]), max(body_h, 1e-3), conf_all


def face_params(expression: np.ndarray, mirror: bool, out: np.ndarray) -> None:
    """FACE_FEATURES -> FACE_PARAMS (character sides, gaze in image directions: x + = right,
    y + = down), into `out`."""
    if mirror:
        out[:] = expression[_FACE_MIRRORED]
        out[_GAZE_X] = -out[_GAZE_X]
    else:
        out[:] = expression[_FACE_DIRECT]
    out[_GAZE_Y] = -out[_GAZE_Y]


def head_angles(expression: np.ndarray, mirror: bool, out: np.ndarray) -> None:
    """Head yaw, pitch, roll in the character's frame, into `out`."""
    out[:] = expression[_HEAD]
    out *= _HEAD_SIGN_MIRRORED if mirror else _HEAD_SIGN_DIRECT

