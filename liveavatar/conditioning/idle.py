"""Idle behaviour for when nobody is tracked: breathing, blinking, glancing and a slow sway.

A pure function of time (deterministic, so virtual-time tests and offline renders repeat), so
the output keeps moving whatever the input does.
"""
from __future__ import annotations

import numpy as np

from liveavatar.types import BONE_INDEX, FP, REST_BONE_ANGLES

BLINK_PERIOD_S = 3.7      # average time between blinks
BLINK_LENGTH_S = 0.16
GLANCE_PERIOD_S = 2.9     # gaze picks a new target about this often
# Gaze (x, y) in image directions (+ = right, down), as in Conditioning.face.
_GLANCE_TARGETS = np.array([[0.0, 0.0], [-0.35, 0.05], [0.0, 0.0], [0.3, -0.05], [0.15, 0.1],
                            [0.0, 0.0], [-0.2, -0.08]], np.float32)
_SPINE, _NECK = BONE_INDEX["spine"], BONE_INDEX["neck"]
_UPPER_ARMS = np.array([BONE_INDEX["upper_arm_l"], BONE_INDEX["upper_arm_r"]])


def _blink(t: float) -> float:
    """0..1 eyelid closure: one blink per period at a pseudo-random offset (golden-ratio jitter)."""
    k = np.floor(t / BLINK_PERIOD_S)
    start = k * BLINK_PERIOD_S + (((k + 1) * 0.618034) % 1.0) * (BLINK_PERIOD_S - BLINK_LENGTH_S)
    x = (t - start) / BLINK_LENGTH_S
    return float(np.clip(1.0 - abs(2.0 * x - 1.0), 0.0, 1.0)) if 0.0 <= x <= 1.0 else 0.0


def _glance(t: float) -> np.ndarray:
    """Gaze (x, y): holds a target, moves to the next over 0.25 s."""
    k = int(t // GLANCE_PERIOD_S)
    a = _GLANCE_TARGETS[k % len(_GLANCE_TARGETS)]
    b = _GLANCE_TARGETS[(k + 1) % len(_GLANCE_TARGETS)]
    u = np.clip((t - k * GLANCE_PERIOD_S - (GLANCE_PERIOD_S - 0.25)) / 0.25, 0.0, 1.0)
    return a + (b - a) * float(u)


def idle_pose(t: float, bones: np.ndarray, root: np.ndarray, head: np.ndarray,
              face: np.ndarray) -> None:
    """Write the idle pose at time `t` (seconds) into the given buffers."""
    breath = np.sin(2 * np.pi * 0.25 * t)
    sway = np.sin(2 * np.pi * 0.13 * t)
    bones[:] = REST_BONE_ANGLES
    bones[_SPINE] += 0.025 * sway
    bones[_NECK] += 0.04 * np.sin(2 * np.pi * 0.11 * t + 1.0)
    bones[_UPPER_ARMS] += np.array([0.02, -0.02], np.float32) * breath
    root[0] = 0.015 * np.sin(2 * np.pi * 0.07 * t)
    root[1] = -0.004 * breath
    root[2] = 1.0 + 0.006 * breath
    gaze = _glance(t)
    head[0] = 0.25 * gaze[0]
    head[1] = 0.03 * np.sin(2 * np.pi * 0.09 * t) + 0.1 * gaze[1]     # pitch, gaze_y: + = down
    head[2] = 0.03 * sway
    face[:] = 0.0
    blink = _blink(t)
    face[FP["blink_left"]] = blink
    face[FP["blink_right"]] = blink
    face[FP["gaze_x"]] = gaze[0]
    face[FP["gaze_y"]] = gaze[1]
    face[FP["mouth_width"]] = 0.5
    face[FP["smile"]] = 0.1
