"""Skeleton motion for rig2d, vectorised over sessions (numpy, CPU): clamping, idle motion,
action clips played by phase, and the blend with live tracking.

Motion channels (per session): the 10 BONES angles, then hips dx, dy (body heights), body
x-scale (spin), spine length scale (bow), head yaw, pitch, roll additions.
"""
from __future__ import annotations

import numpy as np

from liveavatar.types import ACTIONS, BONE_INDEX, REST_BONE_ANGLES

N_BONES = len(REST_BONE_ANGLES)
DX, DY, XSCALE, SPINE_SCALE, YAW, PITCH, ROLL = range(N_BONES, N_BONES + 7)
N_CHANNELS = N_BONES + 7
ACTION_INDEX = {name: i for i, name in enumerate(ACTIONS)}
TWO_PI = 2.0 * np.pi

_B = BONE_INDEX
UAL, LAL, UAR, LAR = _B["upper_arm_l"], _B["lower_arm_l"], _B["upper_arm_r"], _B["lower_arm_r"]
ULL, LLL, ULR, LLR = _B["upper_leg_l"], _B["lower_leg_l"], _B["upper_leg_r"], _B["lower_leg_r"]
SPINE, NECK = _B["spine"], _B["neck"]


def wrap(a: np.ndarray) -> np.ndarray:
    """Angles to -pi..pi (so blends take the short way round)."""
    return (a + np.pi) % TWO_PI - np.pi


def rest_channels(n: int) -> np.ndarray:
    out = np.zeros((n, N_CHANNELS), np.float32)
    out[:, :N_BONES] = REST_BONE_ANGLES
    out[:, XSCALE] = 1.0
    out[:, SPINE_SCALE] = 1.0
    return out


def idle(t_s: np.ndarray) -> np.ndarray:
    """Breathing and a slow sway: what the body does with nobody tracked (n, N_CHANNELS)."""
    ch = rest_channels(len(t_s))
    breath = np.sin(TWO_PI * t_s / 3.6).astype(np.float32)
    sway = np.sin(TWO_PI * t_s / 7.0).astype(np.float32)
    ch[:, SPINE] += 0.025 * sway
    ch[:, NECK] += 0.04 * sway
    ch[:, UAL] += 0.04 * breath
    ch[:, UAR] -= 0.04 * breath
    ch[:, LAL] += 0.06 * breath
    ch[:, LAR] -= 0.06 * breath
    ch[:, DY] = -0.004 * breath
    ch[:, ROLL] = 0.04 * sway
    return ch


def breathing(t_s: np.ndarray) -> np.ndarray:
    """Small always-on offsets (n, N_CHANNELS as deltas) so a still pose still looks alive."""
    d = np.zeros((len(t_s), N_CHANNELS), np.float32)
    d[:, DY] = -0.003 * np.sin(TWO_PI * t_s / 3.6)
    d[:, SPINE_SCALE] = 0.008 * np.sin(TWO_PI * t_s / 3.6)
    return d


AUTO_BLINK_PERIOD_S, AUTO_BLINK_S = 3.7, 0.15
AUTO_BLINK_FIRST_S = 2.0     # not at t = 0: a stream or a render then opened on a blink before tracking


def auto_blink(t_s: np.ndarray) -> np.ndarray:
    """0..1 blink amount: a 150 ms blink every 3.7 s from 2 s on (used when nobody is tracked)."""
    ph = np.mod(np.asarray(t_s, np.float64) - AUTO_BLINK_FIRST_S, AUTO_BLINK_PERIOD_S)
    return np.clip(1.0 - np.abs(ph - AUTO_BLINK_S / 2) / (AUTO_BLINK_S / 2), 0.0, 1.0).astype(np.float32)


def clip_channels(action: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Pose of each session's action clip at its phase (n, N_CHANNELS). One pass per distinct
    action present in the batch (there are at most len(ACTIONS)), not per session."""
    n = len(action)
    out = rest_channels(n)
    for a in np.unique(action):
        rows = np.nonzero(action == a)[0]
        p = phase[rows].astype(np.float32)
        c = out[rows]
        name = ACTIONS[int(a)]
        if name == "dance":
            b = np.sin(TWO_PI * 4 * p)
            c[:, UAL], c[:, LAL] = 1.9 + 0.5 * b, 2.7 + 0.5 * b
            c[:, UAR], c[:, LAR] = -1.9 + 0.5 * b, -2.7 + 0.5 * b
            c[:, SPINE] = np.pi + 0.12 * b
            c[:, ULL], c[:, ULR] = 0.12 + 0.12 * b, -0.12 + 0.12 * b
            c[:, DX], c[:, DY] = 0.05 * b, -0.025 * np.abs(b)
            c[:, ROLL] = 0.15 * b
        elif name == "bow":
            s = np.sin(np.pi * p)
            c[:, SPINE_SCALE] = 1.0 - 0.3 * s
            c[:, PITCH] = 0.6 * s
            c[:, DY] = 0.06 * s
            c[:, UAL], c[:, UAR] = 0.25 - 0.15 * s, -0.25 + 0.15 * s
        elif name == "jump":
            air = np.clip(np.sin(np.pi * (p - 0.2) / 0.6), 0, None) * ((p > 0.2) & (p < 0.8))
            crouch = np.clip(1 - np.abs(p - 0.1) / 0.1, 0, 1) + np.clip(1 - np.abs(p - 0.9) / 0.1, 0, 1)
            c[:, DY] = -0.22 * air + 0.04 * crouch
            c[:, UAL], c[:, UAR] = 0.25 + 2.4 * air, -0.25 - 2.4 * air
            c[:, LAL], c[:, LAR] = 0.1 + 2.6 * air, -0.1 - 2.6 * air
            c[:, ULL], c[:, ULR] = 0.05 + 0.35 * crouch, -0.05 - 0.35 * crouch
            c[:, LLL], c[:, LLR] = -0.3 * crouch, 0.3 * crouch
        elif name == "wave":
            c[:, UAL] = 2.2
            c[:, LAL] = np.pi - 0.45 * np.sin(TWO_PI * 3 * p)
            c[:, ROLL] = 0.08
        elif name == "clap":
            opening = 0.5 + 0.5 * np.cos(TWO_PI * 4 * p)
            c[:, UAL], c[:, UAR] = 0.45, -0.45
            c[:, LAL], c[:, LAR] = -1.35 + 0.5 * opening, 1.35 - 0.5 * opening
        elif name == "cheer":
            w = np.sin(TWO_PI * 3 * p)
            c[:, UAL], c[:, UAR] = 2.6 + 0.1 * w, -2.6 - 0.1 * w
            c[:, LAL], c[:, LAR] = 2.9 + 0.15 * w, -2.9 - 0.15 * w
            c[:, DY] = -0.03 * np.abs(w)
            c[:, PITCH] = -0.2
        elif name == "spin":
            c[:, XSCALE] = np.cos(TWO_PI * p)
            c[:, UAL], c[:, UAR] = 0.7, -0.7
        elif name == "nod":
            c[:, PITCH] = 0.35 * np.sin(TWO_PI * 2 * p)
        elif name == "head_shake":
            c[:, YAW] = 0.5 * np.sin(TWO_PI * 2 * p)
        elif name == "point":   # raise the arm, hold it out, lower it
            e = np.clip(np.minimum(p, 1 - p) / 0.25, 0, 1)
            c[:, UAL] = c[:, UAL] + (1.5 - c[:, UAL]) * e
            c[:, LAL] = c[:, LAL] + (1.55 - c[:, LAL]) * e
        out[rows] = c
    return out


def blend(live: np.ndarray, clip: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend an action clip over live channels with per-session weight (n,)."""
    w = weight[:, None]
    out = live.copy()
    out[:, :N_BONES] = live[:, :N_BONES] + wrap(clip[:, :N_BONES] - live[:, :N_BONES]) * w
    # dx, dy and head offsets add; the scales interpolate towards the clip's.
    out[:, N_BONES:] = live[:, N_BONES:] + (clip[:, N_BONES:] - rest_channels(1)[:, N_BONES:]) * w
    return out
