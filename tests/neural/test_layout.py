"""Packing conditionings into the network's input rows (our own logic, no model)."""
from __future__ import annotations

import numpy as np

from liveavatar.generation.neural import layout
from liveavatar.types import ACTIONS, EMOTIONS, Conditioning


def test_pack_places_fields_and_clamps_bad_values():
    c = Conditioning.neutral()
    c.bone_angles[2] = np.nan
    c.root[:] = [5.0, -np.inf, np.nan]
    c.head[:] = [2.0, 0.1, -3.0]
    c.action, c.action_phase, c.action_weight = "wave", 0.25, 0.5
    c.emotion = np.array([0.2, 0.3, 0, 0, 0, 0, 0, 0.5], np.float32)   # one unknown extra emotion
    rows = layout.pack([c, Conditioning.neutral()], np.full((4, layout.COND_DIM), 9.0, np.float32))
    assert rows.shape == (2, layout.COND_DIM)
    r = rows[0]
    assert np.isfinite(rows).all()
    assert r[layout.OFFSETS["bone_angles"]][2] == 0.0
    # clamped, an infinity becomes neutral (0), a NaN scale becomes 1
    np.testing.assert_allclose(r[layout.OFFSETS["root"]], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(r[layout.OFFSETS["head"]], [0.8, 0.1, -0.8])
    emo = r[layout.OFFSETS["emotion"]]
    assert len(emo) == len(EMOTIONS)
    np.testing.assert_allclose(emo[:2], [0.7, 0.3])   # the extra emotion's weight went to neutral
    action = r[layout.OFFSETS["action"]]
    assert action[ACTIONS.index("wave")] == 1.0 and action.sum() == 1.0
    assert r[layout.OFFSETS["action_phase"]][0] == 0.25
    # an unknown action name counts as "none"
    c.action = "moonwalk"
    r = layout.pack([c], np.zeros((1, layout.COND_DIM), np.float32))[0]
    assert r[layout.OFFSETS["action"]][0] == 1.0


def test_layout_description_covers_every_column():
    desc = layout.describe()
    widths = sum(d["width"] for d in desc)
    assert widths == layout.COND_DIM
    assert [d["offset"] for d in desc] == sorted(d["offset"] for d in desc)
