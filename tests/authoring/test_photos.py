"""Real photos of people (tests/media): selfie segmentation, MediaPipe Pose and Face Mesh."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.authoring.importer import import_character
from liveavatar.generation.mesh import pack
from tests.media import path as media_path

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("picture", "framing"), [("astronaut.png", "upper"), ("grace_hopper.jpg", "upper"),
                                                  ("messi5.jpg", "full")])
def test_photo_of_a_person_imports(picture: str, framing: str, data_dir) -> None:
    res = import_character(media_path(picture), "person")
    assert res.method == "photo" and res.joints_by == "pose"
    loaded = pack.load(res.folder)
    m = loaded.manifest
    assert m.framing == framing
    alpha = loaded.layers[0][..., 3]
    # The person is cut out: part of the canvas, not all of it, and one solid figure.
    assert 0.15 < (alpha > 0.5).mean() < 0.95
    w, h = m.canvas
    head = m.joint("head")
    assert head is not None and 0 <= head[0] < w and 0 <= head[1] < h
    sl, sr = m.joint("shoulder_l"), m.joint("shoulder_r")
    assert sl is not None and sr is not None and sl[0] > sr[0]   # the character's left on the image's right
    if picture != "messi5.jpg":   # a frontal face: Face Mesh places the features
        f = m.face
        assert f.present and f.detected_by == "facemesh"
        assert f.eye_l is not None and f.eye_r is not None and f.mouth is not None
        assert f.eye_l[0] > f.eye_r[0]
        assert f.mouth[1] > f.eye_l[1] and f.mouth[1] > f.eye_r[1]
        cx, cy = f.head_center
        assert np.hypot(cx - head[0], cy - head[1]) < f.head_radius
