"""The flat conditioning vector the neural network reads: its layout and a vectorised packer.

One row per session. The order below is part of the model file's contract (the manifest records
it), so a model trained today keeps working when the Conditioning dataclass grows new fields.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liveavatar.types import ACTIONS, BONES, EMOTIONS, FACE_PARAMS, VISEMES, Conditioning

#: The face parameters the network reads: the original ten. FACE_PARAMS grows by appending; the
#: shipped models' input width must not change with it (a new layout needs retraining).
NET_FACE_PARAMS: tuple[str, ...] = FACE_PARAMS[:10]

#: (name, width, low, high): every field is clamped to [low, high] after NaNs become 0; bone
#: angles are wrapped into -pi..pi instead (pi + 0.2 leans the same way as -pi + 0.2).
FIELDS: tuple[tuple[str, int, float, float], ...] = (
    ("bone_angles", len(BONES), -np.pi, np.pi),
    ("root", 3, -1.0, 2.0),
    ("head", 3, -0.8, 0.8),
    ("face", len(NET_FACE_PARAMS), -1.0, 1.0),
    ("visemes", len(VISEMES), 0.0, 1.0),
    ("emotion", len(EMOTIONS), 0.0, 1.0),
    ("emotion_intensity", 1, 0.0, 1.0),
    ("action", len(ACTIONS), 0.0, 1.0),       # one-hot of the action id
    ("action_phase", 1, 0.0, 1.0),
    ("action_weight", 1, 0.0, 1.0),
    ("speaking", 1, 0.0, 1.0),
    ("body_present", 1, 0.0, 1.0),
)
OFFSETS: dict[str, slice] = {}
_o = 0
for _name, _w, _, _ in FIELDS:
    OFFSETS[_name] = slice(_o, _o + _w)
    _o += _w
COND_DIM = _o

_LOW = np.concatenate([np.full(w, lo, np.float32) for _, w, lo, _ in FIELDS])
_HIGH = np.concatenate([np.full(w, hi, np.float32) for _, w, _, hi in FIELDS])
# root scale lives in 0.5..2 while its x, y live in -1..1
_LOW[OFFSETS["root"].start + 2] = 0.5
_HIGH[OFFSETS["root"].start:OFFSETS["root"].start + 2] = 1.0
_ACTION_INDEX = {name: i for i, name in enumerate(ACTIONS)}


def describe() -> list[dict]:
    """The layout as written into the manifest."""
    names = {"bone_angles": list(BONES), "face": list(NET_FACE_PARAMS), "visemes": list(VISEMES),
             "emotion": list(EMOTIONS), "action": list(ACTIONS), "root": ["x", "y", "scale"],
             "head": ["yaw", "pitch", "roll"]}
    return [{"name": n, "offset": OFFSETS[n].start, "width": w, "range": [float(lo), float(hi)],
             **({"items": names[n]} if n in names else {})} for n, w, lo, hi in FIELDS]


def pack(conds: Sequence[Conditioning], out: np.ndarray) -> np.ndarray:
    """Write one row per conditioning into the preallocated `out` (at least len(conds) rows) and
    return the used rows. Out-of-range values and NaNs are clamped, never passed on."""
    n = len(conds)
    rows = out[:n]
    rows.fill(0.0)
    ne = len(EMOTIONS)
    for i, c in enumerate(conds):   # one iteration per live session, not per landmark
        r = rows[i]
        r[OFFSETS["bone_angles"]] = c.bone_angles[:len(BONES)]
        r[OFFSETS["root"]] = c.root[:3]
        r[OFFSETS["head"]] = c.head[:3]
        r[OFFSETS["face"]] = c.face[:len(NET_FACE_PARAMS)]
        r[OFFSETS["visemes"]] = c.visemes[:len(VISEMES)]
        emo = OFFSETS["emotion"]
        r[emo] = c.emotion[:ne]
        if len(c.emotion) > ne:   # unknown extra emotions: their weight goes to neutral
            r[emo.start] += float(np.nansum(c.emotion[ne:]))
        r[OFFSETS["emotion_intensity"].start] = c.emotion_intensity
        r[OFFSETS["action"].start + _ACTION_INDEX.get(c.action, 0)] = 1.0
        r[OFFSETS["action_phase"].start] = c.action_phase
        r[OFFSETS["action_weight"].start] = c.action_weight
        r[OFFSETS["speaking"].start] = c.speaking
        r[OFFSETS["body_present"].start] = c.body_present
    scale = rows[:, OFFSETS["root"].start + 2]
    scale[~np.isfinite(scale)] = 1.0   # a NaN scale means "unknown", not "vanish"
    np.nan_to_num(rows, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    bones = rows[:, OFFSETS["bone_angles"]]
    rows[:, OFFSETS["bone_angles"]] = (bones + np.pi) % (2 * np.pi) - np.pi   # wrapped, not clamped
    np.clip(rows, _LOW, _HIGH, out=rows)
    return rows
