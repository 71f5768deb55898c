"""The face of a character imported from a photo follows a real person: a real face clip goes
through real perception and conditioning, the astronaut photo's face is animated from it, and
Face Mesh reads both faces (issue 14's measure, with generous bounds; the figures are in the README
from `python -m liveavatar.bench.face_fidelity`)."""
from __future__ import annotations

from pathlib import Path

import mediapipe as mp
import numpy as np
import pytest

from liveavatar.bench.face_fidelity import face_fidelity, picture_renderer
from liveavatar.generation.mesh.face import boxes_from_landmarks
from tests.media import load_rgb

FACES = Path(__file__).resolve().parents[3] / ".." / "shared" / "media" / "faces"


@pytest.mark.slow
def test_photo_face_follows_a_real_person():
    rgb = load_rgb("astronaut.png")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        r = fm.process(rgb)
    h, w = rgb.shape[:2]
    lm = np.array([[q.x * w, q.y * h] for q in r.multi_face_landmarks[0].landmark])
    render = picture_renderer(rgb, boxes_from_landmarks(lm))
    res = face_fidelity([FACES / "d3.mp4"], render, seconds=5.0)
    clip = res["clips"]["d3.mp4"]
    assert clip["frames"] >= 140
    assert res["avatar_found"] > 0.95, res
    # the avatar draws what it is asked for...
    assert clip["mouth_corr_vs_conditioning"] > 0.5, clip
    assert clip["eye_corr_vs_conditioning"] > 0.6, clip
    # ...and so follows the person's mouth and eyes
    assert clip["mouth_corr"] > 0.3, clip
    assert clip["eye_corr"] > 0.5, clip
