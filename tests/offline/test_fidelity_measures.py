"""`liveavatar bench fidelity`'s face measures on a real face (d3, ../shared/media): brows and
pitch are taken in the head's own frame, so nodding does not read as a brow raise (on d3 the
picture-plane brow height followed the head's pitch, r = -0.81)."""
from __future__ import annotations

import mediapipe as mp
import numpy as np
import pytest

from liveavatar.bench import fidelity
from liveavatar.sources.file import iter_media
from liveavatar.types import CapturedFrame

if not fidelity.media_root().is_dir():
    pytest.fail(f"real media missing: {fidelity.media_root()}", pytrace=False)


@pytest.fixture(scope="module")
def real_face() -> tuple[np.ndarray, int, int]:
    """Face Mesh's landmarks (normalised x, y, z) on the first frame of d3."""
    frame = next(i for i in iter_media(fidelity.clip_path("d3"), start_ns=0, audio=False)
                 if isinstance(i, CapturedFrame))
    img = np.ascontiguousarray(frame.image)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(img)
    assert res.multi_face_landmarks
    lm = np.array([[q.x, q.y, q.z] for q in res.multi_face_landmarks[0].landmark])
    return lm, img.shape[1], img.shape[0]


def _nod(lm: np.ndarray, w: int, h: int, angle: float) -> np.ndarray:
    """The same face turned about its own centre by `angle` radians of pitch (+ = chin down),
    projected as Face Mesh reports it (x, y in the picture, z in x's scale)."""
    p = lm * (w, h, w)
    c = p.mean(0)
    cs, sn = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, cs, -sn], [0, sn, cs]])      # y down, z into the picture
    return ((p - c) @ rot.T + c) / (w, h, w)


def _brow_in_the_picture(lm: np.ndarray, w: int, h: int) -> float:
    """The old measure: brow height above the eye corners in the picture plane / face height."""
    p = lm[:, :2] * (w, h)
    face_h = np.hypot(*(p[10] - p[152]))
    return float((((p[33, 1] + p[133, 1]) / 2 - (p[105, 1] + p[66, 1]) / 2)
                  + ((p[263, 1] + p[362, 1]) / 2 - (p[334, 1] + p[296, 1]) / 2)) / 2 / face_h)


def test_a_nod_moves_the_pitch_measure_and_not_the_brows(real_face):
    lm, w, h = real_face
    k_brow, k_pitch = fidelity.FACE_MEASURES.index("brow_raise"), fidelity.FACE_MEASURES.index("head_pitch")
    rest = fidelity.face_measures(lm, w, h)
    for angle in (-0.3, 0.3):
        nod = fidelity.face_measures(_nod(lm, w, h, angle), w, h)
        assert abs(nod[k_brow] - rest[k_brow]) < 0.01 * abs(rest[k_brow]), (angle, rest[k_brow], nod[k_brow])
        assert nod[k_pitch] - rest[k_pitch] == pytest.approx(angle, abs=0.02)
        # The picture-plane measure it replaces moves with the nod.
        old_rest, old_nod = _brow_in_the_picture(lm, w, h), _brow_in_the_picture(_nod(lm, w, h, angle), w, h)
        assert abs(old_nod - old_rest) > 0.05 * abs(old_rest), (angle, old_rest, old_nod)


def test_blinks_are_timed_where_the_eye_closes():
    """A blink's frame is where it closes, not its flattest, noisiest frame."""
    eye = np.full(90, 0.3)
    eye[40:44] = [0.08, 0.05, 0.04, 0.05]          # closes at 40, lowest at 42
    eye[70] = np.nan                              # a frame without a face does not count
    assert fidelity.blink_events(eye) == [40]
