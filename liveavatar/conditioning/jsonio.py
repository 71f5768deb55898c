"""Conditioning as named JSON fields (for `perceive --conditioning`, the API and debugging)."""
from __future__ import annotations

from typing import Any

from liveavatar.types import BONES, EMOTIONS, FACE_PARAMS, VISEMES, Conditioning


def _named(names: Any, values: Any, digits: int = 4) -> dict:
    return {n: round(float(v), digits) for n, v in zip(names, values)}


def conditioning_to_json(c: Conditioning, emotions: Any = EMOTIONS) -> dict:
    return {
        "seq": c.seq,
        "t_tick_ns": c.t_tick_ns,
        "t_capture_ns": c.t_capture_ns,
        "bones": _named(BONES, c.bone_angles),
        "root": _named(("x", "y", "scale"), c.root),
        "head": _named(("yaw", "pitch", "roll"), c.head),
        "face": _named(FACE_PARAMS, c.face),
        "visemes": _named(VISEMES, c.visemes),
        "emotion": _named(emotions, c.emotion),
        "emotion_intensity": round(float(c.emotion_intensity), 4),
        "action": c.action,
        "action_phase": round(float(c.action_phase), 4),
        "action_weight": round(float(c.action_weight), 4),
        "speaking": round(float(c.speaking), 4),
        "body_present": round(float(c.body_present), 4),
        "face_present": round(float(c.face_present), 4),
    }
