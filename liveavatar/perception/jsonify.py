"""JSON-able per-frame summary of Cues, for `liveavatar perceive --json` and debugging."""
from __future__ import annotations

from liveavatar.types import FACE_FEATURES, VISEMES, Cues, Part


def _part(p: Part, include_landmarks: bool) -> dict:
    d = {"present": bool(p.present), "confidence": round(float(p.confidence), 3)}
    if include_landmarks:
        d["landmarks"] = p.landmarks.round(4).tolist()
    return d


def cues_to_json(cues: Cues, include_landmarks: bool = False) -> dict:
    v = cues.voice
    return {
        "seq": cues.seq,
        "t_capture_ns": cues.t_capture_ns,
        "image_size": list(cues.image_size),
        "pose": _part(cues.pose, include_landmarks),
        "face": _part(cues.face, include_landmarks),
        "hand_left": _part(cues.hand_left, include_landmarks),
        "hand_right": _part(cues.hand_right, include_landmarks),
        "expression_present": bool(cues.expression_present),
        "expression": {name: round(float(x), 4) for name, x in zip(FACE_FEATURES, cues.expression)},
        "voice": {"present": bool(v.present), "speaking_prob": round(float(v.speaking_prob), 3),
                  "loudness_dbfs": round(float(v.loudness_dbfs), 1), "pitch_hz": round(float(v.pitch_hz), 1),
                  "pitch_dev": round(float(v.pitch_dev), 2),
                  "visemes": {name: round(float(x), 3) for name, x in zip(VISEMES, v.visemes)}},
        "keywords": [{"word": k.word, "t_ns": k.t_ns, "confidence": round(float(k.confidence), 3)}
                     for k in cues.keywords],
    }
