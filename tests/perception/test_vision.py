"""Real MediaPipe on real photos and video: bodies, faces, hands, expression, calibration."""
import json

import cv2
import numpy as np
import pytest

from liveavatar.perception import Perception, cues_to_json
from liveavatar.perception.trackers import POSE_LEFT_WRIST, POSE_RIGHT_WRIST
from liveavatar.types import FACE_FEATURES, FF, VISEMES, CapturedFrame
from tests.media import load_rgb

from .conftest import frame, video_frames

NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_ANKLE, R_ANKLE = 0, 11, 12, 23, 24, 27, 28


@pytest.mark.parametrize("name", ["messi5.jpg", "basketball1.png", "basketball2.png"])
def test_full_body_is_tracked_with_anatomy_in_order(still_cues, name):
    pose = still_cues[name].pose
    assert pose.present and pose.confidence > 0.6
    lm = pose.landmarks
    assert (lm[:, 3] > 0.5).sum() >= 28, "most of the 33 body landmarks are visible on a full body"
    # Upright people: head above shoulders above hips above ankles (y grows downward).
    assert lm[NOSE, 1] < lm[[L_SHOULDER, R_SHOULDER], 1].mean() < lm[[L_HIP, R_HIP], 1].mean() \
        < lm[[L_ANKLE, R_ANKLE], 1].mean()
    assert ((lm[:, :2] > -0.1) & (lm[:, :2] < 1.1)).all()


def test_hand_is_assigned_to_the_subjects_own_side(still_cues):
    cues = still_cues["messi5.jpg"]
    hands = [(h, w) for h, w in ((cues.hand_left, POSE_LEFT_WRIST), (cues.hand_right, POSE_RIGHT_WRIST))
             if h.present]
    assert hands, "messi5 shows at least one hand"
    for hand, wrist in hands:
        # The hand's wrist point lies next to the pose wrist of the same side.
        assert np.linalg.norm(hand.landmarks[0, :2] - cues.pose.landmarks[wrist, :2]) < 0.05


def test_smile_separates_smiling_astronaut_from_neutral_grace_hopper(still_cues):
    smiling = still_cues["astronaut.png"]
    neutral = still_cues["grace_hopper.jpg"]
    assert smiling.expression_present and neutral.expression_present
    assert smiling.face.present and (smiling.face.landmarks[468:, :2] > 0).all(), "iris points present"
    assert smiling.expression[FF["smile"]] > 0.5
    assert neutral.expression[FF["smile"]] < 0.2
    assert smiling.expression[FF["mouth_width"]] > neutral.expression[FF["mouth_width"]] + 0.2
    # Both look roughly at the camera with open eyes.
    for c in (smiling, neutral):
        assert abs(c.expression[FF["head_yaw"]]) < 0.3 and abs(c.expression[FF["head_roll"]]) < 0.3
        assert c.expression[FF["blink_left"]] < 0.4 and c.expression[FF["blink_right"]] < 0.4


def _raise_brows(image, perception, amount=0.12):
    """Lift everything above the eyes of a real face by `amount` eye spans: a ramp from the upper
    lids (not moved) to the brows (fully moved), fading out sideways beyond the face."""
    cues = perception.process_video(frame(image, 0, 0))
    h, w = image.shape[:2]
    lm = cues.face.landmarks[:, :2] * [w, h]
    span = np.linalg.norm(lm[263] - lm[33])
    lid_y = lm[[159, 386], 1].mean()
    brow_y = lm[[105, 66, 334, 296], 1].mean()
    cx = lm[[33, 263], 0].mean()
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.clip((lid_y - ys) / (lid_y - brow_y), 0, 1)
    disp = amount * span * ramp * np.exp(-((xs - cx) / span) ** 2 / 2)
    return cv2.remap(image, xs, ys + disp, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_calibration_then_brow_raise_responds():
    grace = load_rgb("grace_hopper.jpg")
    p = Perception(static=True, pose=False, hands=False, enable_voice=False)
    try:
        slight, raised = _raise_brows(grace, p, 0.06), _raise_brows(grace, p, 0.12)
        p.start_calibration(0.3)
        assert p.calibrating
        for i in range(5):
            p.process_video(frame(grace, i, 1.0 + 0.1 * i))
        assert not p.calibrating and p.stats()["calibrated"]
        rest = p.process_video(frame(grace, 10, 2.0)).expression
        half = p.process_video(frame(slight, 11, 2.1)).expression
        up = p.process_video(frame(raised, 12, 2.2)).expression
    finally:
        p.close()
    brows = [FF["brow_raise_left"], FF["brow_raise_right"]]
    # Relative to her own resting face, the resting face reads as neutral ...
    assert np.abs(rest[brows + [FF["smile"], FF["mouth_open"]]]).max() < 0.05
    assert np.abs(rest[:3]).max() < 0.02
    # ... and lifted brows read as raised on both sides, more so the more they are lifted,
    # while the mouth does not move.
    assert (up[brows] > 0.3).all()
    assert (up[brows] > half[brows] + 0.1).all() and (half[brows] > rest[brows]).all()
    assert up[FF["mouth_open"]] < 0.1 and up[FF["smile"]] < 0.1


def test_megamind_mouth_moves_and_blinks_are_detected():
    frames = video_frames("Megamind.avi")
    p = Perception(static=False, pose=False, hands=False, enable_voice=False)
    try:
        cues = [p.process_video(frame(f, i, i / 30)) for i, f in enumerate(frames)]
    finally:
        p.close()
    present = np.array([c.expression_present for c in cues])
    expr = np.stack([c.expression for c in cues])
    assert present.mean() > 0.95
    mouth = expr[present, FF["mouth_open"]]
    assert mouth.max() - mouth.min() > 0.3 and mouth.std() > 0.05, "he talks: the mouth opens and closes"
    blink = expr[:, [FF["blink_left"], FF["blink_right"]]].min(axis=1)   # both eyes shut
    closed = blink > 0.6
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 1 <= len(onsets) <= 12, f"blinks are short closed-eye episodes, found {len(onsets)}"
    assert closed.mean() < 0.15, "eyes are open most of the time"


def test_lost_face_holds_and_decays_then_eases_back_without_jumping():
    face = load_rgb("astronaut.png")
    blank = np.full_like(face, 128)
    p = Perception(static=False, pose=False, hands=False, enable_voice=False)
    try:
        t = 0.0
        seen = [p.process_video(frame(face, i, (t := t + 1 / 30))) for i in range(10)]
        lost = [p.process_video(frame(blank, 10 + i, (t := t + 1 / 30))) for i in range(15)]
        back = [p.process_video(frame(face, 25 + i, (t := t + 1 / 30))) for i in range(10)]
    finally:
        p.close()
    held = seen[-1].face.landmarks[:, :3]
    assert all(not c.face.present for c in lost)
    assert all(np.allclose(c.face.landmarks[:, :3], held) for c in lost), "landmarks are held, not zeroed"
    conf = [c.face.confidence for c in lost]
    assert conf[0] > conf[-1] > 0 and all(a >= b for a, b in zip(conf, conf[1:])), "confidence decays"
    smile = [c.expression[FF["smile"]] for c in seen + lost + back]
    assert smile[9] > 0.5 and smile[24] < smile[9] / 2, "a lost face eases toward neutral"
    assert max(abs(a - b) for a, b in zip(smile, smile[1:])) < 0.35, "no jumps frame to frame"
    assert back[-1].face.present and back[-1].expression[FF["smile"]] > 0.5


@pytest.mark.parametrize("variant", ["gray", "rgba", "float", "odd_size", "gray_hw1", "uint16", "large"])
def test_frame_formats_still_find_the_face(still_perception, variant):
    img = load_rgb("astronaut.png")
    if variant == "gray":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif variant == "gray_hw1":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif variant == "rgba":
        img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    elif variant == "float":
        img = img.astype(np.float32) / 255
    elif variant == "uint16":
        img = img.astype(np.uint16) * 257
    elif variant == "odd_size":
        img = cv2.resize(img, (333, 251))
    elif variant == "large":
        img = cv2.resize(img, (2000, 2000))
    cues = still_perception.process_video(frame(img, 0, 0))
    assert cues.face.present and cues.expression[FF["smile"]] > 0.4
    assert cues.image_size == (img.shape[1], img.shape[0])


@pytest.mark.parametrize("bad", [np.zeros((0, 0, 3), np.uint8), np.zeros((4, 4, 3), np.uint8),
                                 np.zeros((10, 10, 10, 3), np.uint8), np.zeros((64, 64, 7), np.uint8),
                                 np.full((64, 64, 3), np.nan, np.float32), None, "not an image",
                                 np.zeros((480, 640, 3), np.complex64)],
                         ids=["empty", "tiny", "4d", "7ch", "nan", "none", "str", "complex"])
def test_bad_frames_never_raise(bad):
    p = Perception(static=False, pose=False, hands=False, enable_voice=False)
    try:
        face = load_rgb("grace_hopper.jpg")
        good = p.process_video(frame(face, 0, 0.0))
        cues = p.process_video(frame(bad, 1, 0.033))
    finally:
        p.close()
    assert good.face.present and not cues.face.present and not cues.expression_present
    assert np.isfinite(cues.expression).all() and np.isfinite(cues.face.landmarks).all()
    assert np.allclose(cues.face.landmarks[:, :3], good.face.landmarks[:, :3]), "the last face is held"


def test_cues_to_json_names_every_feature(still_cues):
    cues = still_cues["astronaut.png"]
    d = json.loads(json.dumps(cues_to_json(cues)))
    assert list(d["expression"]) == list(FACE_FEATURES)
    assert d["expression"]["smile"] == pytest.approx(float(cues.expression[FF["smile"]]), abs=1e-3)
    assert list(d["voice"]["visemes"]) == list(VISEMES)
    assert d["face"]["present"] is True and d["hand_left"]["present"] is False
    assert "landmarks" not in d["pose"]
    full = cues_to_json(cues, include_landmarks=True)
    assert len(full["face"]["landmarks"]) == 478 and len(full["pose"]["landmarks"]) == 33
    assert full["face"]["landmarks"][468][0] == pytest.approx(float(cues.face.landmarks[468, 0]), abs=1e-3)


def test_head_roll_follows_the_rotating_camera():
    # astronaut_talk.mp4 rotates the photo by 4 deg * sin(2 pi 0.4 t) counter-clockwise (see
    # tests/media.animate): her head rolls the other way, toward her right shoulder.
    frames = video_frames("astronaut_talk.mp4", limit=75)
    p = Perception(static=False, pose=False, hands=False, enable_voice=False)
    try:
        roll = np.array([p.process_video(frame(f, i, i / 30)).expression[FF["head_roll"]]
                         for i, f in enumerate(frames)])
    finally:
        p.close()
    t = np.arange(len(frames)) / 30
    applied = -np.deg2rad(4.0) * np.sin(2 * np.pi * 0.4 * t)
    assert np.corrcoef(roll, applied)[0, 1] > 0.9
    assert (roll.max() - roll.min()) == pytest.approx(np.deg2rad(8.0), rel=0.3)


def test_mirrored_face_swaps_sides_and_signs():
    # Megamind turns his head a lot; a mirrored frame must read as the opposite turn, with his
    # left and right eyes swapped.
    frames = video_frames("Megamind.avi", limit=120)[::8]
    p = Perception(static=True, pose=False, hands=False, enable_voice=False)
    try:
        pairs = [(p.process_video(frame(f, i, i)).expression,
                  p.process_video(frame(np.ascontiguousarray(f[:, ::-1]), i, i)).expression)
                 for i, f in enumerate(frames)]
    finally:
        p.close()
    e, m = (np.stack(x) for x in zip(*pairs))
    turn = np.abs(e[:, FF["head_yaw"]]) > 0.15
    assert turn.sum() >= 3
    assert (np.sign(e[turn, FF["head_yaw"]]) == -np.sign(m[turn, FF["head_yaw"]])).all()
    np.testing.assert_allclose(m[:, FF["head_yaw"]], -e[:, FF["head_yaw"]], atol=0.08)
    np.testing.assert_allclose(m[:, FF["head_roll"]], -e[:, FF["head_roll"]], atol=0.05)
    np.testing.assert_allclose(m[:, FF["blink_left"]], e[:, FF["blink_right"]], atol=0.2)


def test_broken_frame_objects_never_raise():
    p = Perception(static=False, pose=False, hands=False, enable_voice=False)
    try:
        a = p.process_video(frame(load_rgb("grace_hopper.jpg"), 0, 1.0))
        b = p.process_video(CapturedFrame(load_rgb("grace_hopper.jpg"), 1, None))   # no timestamp
        c = p.process_video(None)
    finally:
        p.close()
    assert a.face.present and b.face.present and not c.face.present
    assert b.t_capture_ns > 0 and c.seq == 0


def _small(name: str, width: int) -> np.ndarray:
    img = load_rgb(name)
    small = cv2.resize(img, (width, int(round(width * img.shape[0] / img.shape[1]))), interpolation=cv2.INTER_AREA)
    canvas = np.full((max(small.shape[0], 96), max(width, 96), 3), 128, np.uint8)
    canvas[:small.shape[0], :width] = small
    return canvas


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "astronaut.png"])
def test_a_small_face_reports_real_expression_values_or_none(still_perception, name):
    """Found on a fresh machine: a ~70 px face in a still photo was "present" with every feature 0.
    At every size the expression is either measured (finite, not all zero) or reported absent."""
    for width in (40, 60, 80, 100, 128, 150, 192, 225):
        cues = still_perception.process_video(CapturedFrame(_small(name, width), 0, 0))
        if cues.expression_present:
            assert cues.face.present
            assert np.isfinite(cues.expression).all() and np.any(cues.expression != 0), (name, width)


def test_grace_hopper_at_150x225_is_measured_and_a_tiny_face_is_absent(still_perception):
    cues = still_perception.process_video(CapturedFrame(cv2.resize(load_rgb("grace_hopper.jpg"), (150, 225),
                                                                   interpolation=cv2.INTER_AREA), 0, 0))
    assert cues.face.present and cues.expression_present
    assert abs(cues.expression[FF["head_roll"]]) > 0.01 and cues.expression[FF["mouth_width"]] > 0.1
    tiny = still_perception.process_video(CapturedFrame(_small("astronaut.png", 80), 0, 0))
    assert tiny.face.present and not tiny.expression_present, "a face 9 px between the eyes is tracked, not measured"
