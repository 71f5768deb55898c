"""Random but plausible conditioning sequences: the training and held-out inputs for a teacher.

Key poses are drawn from ranges a person (or the action engine) produces, then eased between
over a few frames, so consecutive samples move like live tracking and the previous-frame input
means what it means at run time.
"""
from __future__ import annotations

import numpy as np

from liveavatar.types import ACTIONS, BONE_INDEX, EMOTIONS, FP, REST_BONE_ANGLES, VISEMES, Conditioning

# how far each bone may swing from rest (radians): arms a lot, legs a little
_SWING = np.zeros(len(REST_BONE_ANGLES), np.float32)
for _name, _s in (("spine", 0.25), ("neck", 0.3), ("upper_arm_l", 1.8), ("lower_arm_l", 2.2),
                  ("upper_arm_r", 1.8), ("lower_arm_r", 2.2), ("upper_leg_l", 0.45),
                  ("lower_leg_l", 0.5), ("upper_leg_r", 0.45), ("lower_leg_r", 0.5)):
    _SWING[BONE_INDEX[_name]] = _s
# upper arms mostly swing outwards (left arm to +x, right arm to -x): bias the centre
_BIAS = np.zeros_like(_SWING)
_BIAS[BONE_INDEX["upper_arm_l"]] = 0.9
_BIAS[BONE_INDEX["lower_arm_l"]] = 0.9
_BIAS[BONE_INDEX["upper_arm_r"]] = -0.9
_BIAS[BONE_INDEX["lower_arm_r"]] = -0.9


def _key(rng: np.random.Generator) -> dict:
    calm = rng.random() < 0.25          # some key poses stay near rest, as idling people do
    s = 0.25 if calm else 1.0
    angles = REST_BONE_ANGLES + (_BIAS * (0 if calm else rng.random()) +
                                 _SWING * s * rng.uniform(-1, 1, len(_SWING))).astype(np.float32)
    # The original ten face parameters only (the network's input, see layout.NET_FACE_PARAMS);
    # appended ones stay at rest, so the random stream and the shipped models' data are unchanged.
    face = np.zeros(len(FP), np.float32)
    face[:10] = rng.random(10)
    face[[FP["blink_left"], FP["blink_right"]]] = (rng.random() < 0.2) * rng.uniform(0.6, 1.0)
    face[FP["gaze_x"]] = rng.uniform(-1, 1)
    face[FP["gaze_y"]] = rng.uniform(-1, 1)
    vis = np.zeros(len(VISEMES), np.float32)
    vis[rng.integers(len(VISEMES))] = 1.0
    emo = np.zeros(len(EMOTIONS), np.float32)
    emo[0 if rng.random() < 0.3 else rng.integers(len(EMOTIONS))] = 1.0
    return dict(angles=angles,
                root=np.array([rng.normal(0, 0.06), rng.normal(0, 0.04), rng.uniform(0.85, 1.15)], np.float32),
                head=rng.uniform(-0.5, 0.5, 3).astype(np.float32) * (0.3 if calm else 1.0),
                face=face, visemes=vis, emotion=emo,
                intensity=float(rng.uniform(0.3, 1.0)), speaking=float(rng.random() < 0.5))


def _mix(a: dict, b: dict, t: float) -> dict:
    e = t * t * (3 - 2 * t)   # ease in and out
    return {k: a[k] * (1 - e) + b[k] * e for k in a}


def sequences(n_frames: int, seed: int, seq_len: tuple[int, int] = (24, 48),
              action_prob: float = 0.25) -> tuple[list[Conditioning], np.ndarray]:
    """`n_frames` conditionings in runs of consecutive frames; returns them and a bool array that
    is True where a frame starts a new run (its previous frame is unknown)."""
    rng = np.random.default_rng(seed)
    out: list[Conditioning] = []
    starts = np.zeros(n_frames, bool)
    while len(out) < n_frames:
        length = int(rng.integers(seq_len[0], seq_len[1] + 1))
        starts[len(out)] = True
        key_a, key_b = _key(rng), _key(rng)
        hold = int(rng.integers(8, 20))          # frames between key poses
        action = ACTIONS[1 + rng.integers(len(ACTIONS) - 1)] if rng.random() < action_prob else "none"
        phase0 = float(rng.random())
        blink_at = rng.integers(0, length) if rng.random() < 0.5 else -1
        # most runs track a person; some fade towards the idle pose (nobody in view)
        present = 1.0 if rng.random() < 0.85 else float(rng.uniform(0.0, 1.0))
        for i in range(length):
            if len(out) >= n_frames:
                break
            k = i % hold
            if k == 0 and i:
                key_a, key_b = key_b, _key(rng)
            p = _mix(key_a, key_b, k / hold)
            face = p["face"].astype(np.float32)
            if blink_at >= 0 and abs(i - blink_at) < 3:   # quick blinks happen mid-run
                face[[FP["blink_left"], FP["blink_right"]]] = 1.0
            vis = p["visemes"].astype(np.float32)
            emo = p["emotion"].astype(np.float32)
            c = Conditioning(
                seq=len(out), t_tick_ns=len(out) * 33_333_333, t_capture_ns=len(out) * 33_333_333,
                bone_angles=p["angles"].astype(np.float32), root=p["root"].astype(np.float32),
                head=p["head"].astype(np.float32), face=face, visemes=vis / vis.sum(),
                emotion=emo / emo.sum(), emotion_intensity=float(p["intensity"]),
                speaking=float(p["speaking"]), body_present=present)
            if action != "none":
                c.action = action
                c.action_phase = float((phase0 + i / 45.0) % 1.0)
                c.action_weight = float(min(1.0, i / 8.0, (length - 1 - i) / 8.0 + 0.2))
            out.append(c)
    return out, starts
