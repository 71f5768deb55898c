"""Tracker protocols and the default trackers on MediaPipe 0.10.21's bundled models.

A tracker turns one RGB frame into raw observations (no smoothing, no holding: that is the
pipeline's job). Each kind has a Protocol, so a user can plug in their own, e.g. a MediaPipe Tasks
face landmarker with blendshapes (see `TasksFaceTracker`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from liveavatar.types import N_FACE, N_HAND, N_POSE

__all__ = ["N_POSE", "N_FACE", "N_HAND"]   # re-exported: older imports name them from here

POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16

# Protobuf wire tags of NormalizedLandmark fields x, y, z, visibility, presence (fixed32 floats).
_FIELD_TAGS = np.array([0x0D, 0x15, 0x1D, 0x25, 0x2D], np.uint8)


@dataclass(slots=True)
class PoseObservation:
    landmarks: np.ndarray        # (33, 4) x, y, z, visibility
    confidence: float


@dataclass(slots=True)
class FaceObservation:
    landmarks: np.ndarray        # (478, 4) x, y, z, 1
    confidence: float
    #: Optional expression straight from the tracker (e.g. blendshapes), in FACE_FEATURES order,
    #: uncalibrated. When None, the pipeline derives expression from the landmarks geometrically.
    expression: np.ndarray | None = None


@dataclass(slots=True)
class HandsObservation:
    left: np.ndarray | None      # (21, 4) the subject's own left hand, or None
    right: np.ndarray | None
    left_confidence: float = 0.0
    right_confidence: float = 0.0


@runtime_checkable
class PoseTracker(Protocol):
    def process(self, image: np.ndarray) -> PoseObservation | None: ...
    def close(self) -> None: ...


@runtime_checkable
class FaceTracker(Protocol):
    def process(self, image: np.ndarray) -> FaceObservation | None: ...
    def close(self) -> None: ...


@runtime_checkable
class HandTracker(Protocol):
    def process(self, image: np.ndarray, pose: np.ndarray | None = None) -> HandsObservation: ...
    def close(self) -> None: ...


def landmarks_to_array(landmark_list: Any, n: int, with_visibility: bool) -> np.ndarray:
    """(n, 4) float32 from a MediaPipe NormalizedLandmarkList without a Python loop over points:
    the serialised protobuf of fixed-size float fields is decoded by numpy. Falls back to the
    per-point path if the layout is not the expected one (e.g. a field missing)."""
    out = np.ones((n, 4), np.float32)
    k = 4 if with_visibility else 3
    stride = 2 + 5 * k
    raw = landmark_list.SerializeToString()
    if len(raw) == n * stride:
        rows = np.frombuffer(raw, np.uint8).reshape(n, stride)
        tags = rows[:, 2::5][:, :k]
        if (rows[:, 0] == 0x0A).all() and (rows[:, 1] == stride - 2).all() and (tags == _FIELD_TAGS[:k]).all():
            floats = np.ascontiguousarray(rows[:, 2:]).reshape(n, k, 5)[:, :, 1:].copy().view("<f4")
            out[:, :k] = floats.reshape(n, k)
            return out
    pts = landmark_list.landmark  # rare fallback: field layout differs
    out[:, 0] = [p.x for p in pts]
    out[:, 1] = [p.y for p in pts]
    out[:, 2] = [p.z for p in pts]
    if with_visibility:
        out[:, 3] = [p.visibility for p in pts]
    return out


def _silence_mediapipe_logs() -> None:
    import os
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _person_box(lm: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """(centre x, centre y, size) in pixels of a pose's visible landmarks; None if too few."""
    seen = lm[:, 3] > 0.5
    if seen.sum() < 6:
        return None
    pts = lm[seen, :2] * (width, height)
    lo, hi = pts.min(0), pts.max(0)
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, max(hi[0] - lo[0], hi[1] - lo[1], 8.0)])


class PersonLock:
    """Keeps MediaPipe Pose (which follows one person of its own choosing and may hop to
    another) on the person it found first: each frame is cropped to a window around that
    person, so others outside it are not seen, and a result whose body jumps in position or
    size from one frame to the next is taken for somebody else and not reported (the pipeline
    holds, then eases to rest) until it has stayed put for `relock_frames`. After
    `lost_frames` without the person the window opens to the whole picture again."""

    def __init__(self, window: float = 2.2, relock_frames: int = 20, lost_frames: int = 45) -> None:
        self.window = window
        self.relock_frames = relock_frames
        self.lost_frames = lost_frames
        self.box: np.ndarray | None = None        # the locked person, pixels (cx, cy, size)
        self._crop: tuple[int, int, int, int] | None = None
        self._missed = 0
        self._candidate: np.ndarray | None = None
        self._candidate_n = 0
        self.jumps = 0                             # results refused as another person

    def crop(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, w, h) of the window to run the model on."""
        if self.box is None:
            self._crop = None
            return 0, 0, width, height
        cx, cy, size = self.box
        side = int(min(max(size * self.window, 0.35 * min(width, height)), width, height))
        if side >= 0.75 * min(width, height):
            # A person this big leaves little room for others: the whole picture (a square
            # window would cut off their outstretched arms). The jump check still applies.
            self._crop = None
            return 0, 0, width, height
        if self._crop is not None:
            x0, y0, w, h = self._crop
            # Keep the window while the person stays well inside it (a still window keeps
            # MediaPipe's own tracking steady); move it when they near its edge.
            if (w == side or abs(w - side) < 0.2 * side) and abs(cx - (x0 + w / 2)) < 0.2 * w \
                    and abs(cy - (y0 + h / 2)) < 0.2 * h:
                return self._crop
        x0 = int(np.clip(cx - side / 2, 0, width - side))
        y0 = int(np.clip(cy - side / 2, 0, height - side))
        self._crop = (x0, y0, side, side)
        return self._crop

    def accept(self, lm: np.ndarray | None, width: int, height: int) -> bool:
        """Whether `lm` (full-frame landmarks, or None for no result) is the locked person."""
        if lm is None:
            self._missed += 1
            if self._missed > self.lost_frames:
                self.box, self._candidate = None, None
            return False
        box = _person_box(lm, width, height)
        if box is None:
            self._missed += 1
            return False
        if self.box is None:
            self.box, self._missed = box, 0
            return True
        ref = self.box
        jump = (np.hypot(*(box[:2] - ref[:2])) > 0.5 * ref[2]
                or not 0.6 < box[2] / ref[2] < 1.6)
        if not jump:
            self.box = ref + (box - ref) * 0.5
            self._missed, self._candidate, self._candidate_n = 0, None, 0
            return True
        self.jumps += 1
        self._missed += 1
        # Somebody else; if they stay where they are (and ours is gone), follow them instead.
        if self._candidate is not None and np.hypot(*(box[:2] - self._candidate[:2])) < 0.5 * box[2]:
            self._candidate_n += 1
        else:
            self._candidate, self._candidate_n = box, 1
        self._candidate = box
        if self._candidate_n >= self.relock_frames:
            self.box, self._missed, self._candidate = box, 0, None
            return True
        return False


class MediaPipePose:
    """33 body landmarks with visibility (pose_landmark_full, the one bundled model). On video it
    stays on one person (`PersonLock`); landmarks beyond the analysed window are reported with
    no visibility (the model only guesses there)."""

    def __init__(self, static: bool = False, lock: bool = True) -> None:
        _silence_mediapipe_logs()
        import mediapipe as mp
        # complexity 1 is the only pose model in the wheel (0 and 2 would be downloaded).
        self._model = mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1,
                                             enable_segmentation=False, min_detection_confidence=0.5,
                                             min_tracking_confidence=0.5)
        self.lock = PersonLock() if lock and not static else None

    def process(self, image: np.ndarray) -> PoseObservation | None:
        h, w = image.shape[:2]
        x0, y0, cw, ch = self.lock.crop(w, h) if self.lock is not None else (0, 0, w, h)
        crop = image if (cw, ch) == (w, h) else np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw])
        res = self._model.process(crop)
        lm = None if res.pose_landmarks is None else landmarks_to_array(res.pose_landmarks, N_POSE,
                                                                        with_visibility=True)
        if lm is not None:
            outside = (lm[:, 0] < -0.02) | (lm[:, 0] > 1.02) | (lm[:, 1] < -0.02) | (lm[:, 1] > 1.02)
            lm[outside, 3] = np.minimum(lm[outside, 3], 0.05)
            if (cw, ch) != (w, h):
                lm[:, 0] = (x0 + lm[:, 0] * cw) / w
                lm[:, 1] = (y0 + lm[:, 1] * ch) / h
                lm[:, 2] *= cw / w
        if self.lock is not None and not self.lock.accept(lm, w, h):
            return None
        if lm is None:
            return None
        # Mean visibility of the torso points: a visible upper body is a confident pose.
        conf = float(lm[[11, 12, 23, 24, 0], 3].mean())
        return PoseObservation(lm, conf)

    def close(self) -> None:
        self._model.close()


class MediaPipeFaceMesh:
    """478 face landmarks (468 mesh + 10 iris)."""

    def __init__(self, static: bool = False) -> None:
        _silence_mediapipe_logs()
        import mediapipe as mp
        self._model = mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1,
                                                      refine_landmarks=True, min_detection_confidence=0.5,
                                                      min_tracking_confidence=0.5)

    def process(self, image: np.ndarray) -> FaceObservation | None:
        res = self._model.process(image)
        if not res.multi_face_landmarks:
            return None
        lm = landmarks_to_array(res.multi_face_landmarks[0], N_FACE, with_visibility=False)
        # The legacy face mesh reports no score; having passed its tracking threshold means >= 0.5.
        return FaceObservation(lm, 1.0)

    def close(self) -> None:
        self._model.close()


class MediaPipeHands:
    """Both hands, 21 landmarks each, assigned to the subject's own left/right."""

    def __init__(self, static: bool = False, complexity: int = 1) -> None:
        _silence_mediapipe_logs()
        import mediapipe as mp
        self._model = mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=2,
                                               model_complexity=complexity, min_detection_confidence=0.5,
                                               min_tracking_confidence=0.5)

    def process(self, image: np.ndarray, pose: np.ndarray | None = None) -> HandsObservation:
        res = self._model.process(image)
        out = HandsObservation(None, None)
        if not res.multi_hand_landmarks:
            return out
        hands = [landmarks_to_array(h, N_HAND, with_visibility=False) for h in res.multi_hand_landmarks]
        scores = [c.classification[0].score for c in res.multi_handedness]
        # MediaPipe labels assume a mirrored (selfie) image; camera frames here are not mirrored,
        # so its "Left" is the subject's right hand.
        is_left = [c.classification[0].label == "Right" for c in res.multi_handedness]
        if pose is not None:
            is_left = assign_hands_to_wrists(hands, pose) or is_left
        for lm, score, left in zip(hands, scores, is_left):
            lm[:, 3] = score
            if left and out.left is None:
                out.left, out.left_confidence = lm, float(score)
            elif not left and out.right is None:
                out.right, out.right_confidence = lm, float(score)
            elif out.left is None:
                out.left, out.left_confidence = lm, float(score)
            elif out.right is None:
                out.right, out.right_confidence = lm, float(score)
        return out

    def close(self) -> None:
        self._model.close()


def assign_hands_to_wrists(hands: list[np.ndarray], pose: np.ndarray, min_vis: float = 0.3) -> list[bool] | None:
    """Which detected hands are the subject's left, by nearness of each hand's wrist to the pose's
    wrists (pose knows anatomy; the hand model only guesses from one hand). None if the pose's
    wrists are not visible enough to decide."""
    wl, wr = pose[POSE_LEFT_WRIST], pose[POSE_RIGHT_WRIST]
    if min(wl[3], wr[3]) < min_vis or not hands:
        return None
    wrists = np.stack([h[0, :2] for h in hands])            # (k, 2): at most two hands
    d_left = np.linalg.norm(wrists - wl[:2], axis=1)
    d_right = np.linalg.norm(wrists - wr[:2], axis=1)
    if len(hands) == 1:
        return [bool(d_left[0] < d_right[0])]
    # Two hands: the pairing with the smaller total distance.
    first_is_left = d_left[0] + d_right[1] <= d_right[0] + d_left[1]
    return [bool(first_is_left), not first_is_left]


# ARKit-style blendshape names (as MediaPipe Tasks reports them) -> FACE_FEATURES.
def expression_from_blendshapes(names: list[str], scores: np.ndarray,
                                matrix: np.ndarray | None = None) -> np.ndarray:
    """Map MediaPipe Tasks face blendshapes (and its 4x4 facial transformation matrix, for head
    angles) to FACE_FEATURES order. Missing names count as 0."""
    from liveavatar.types import FACE_FEATURES
    s = dict(zip(names, np.asarray(scores, np.float32).tolist()))
    g = s.get
    out = np.zeros(len(FACE_FEATURES), np.float32)
    if matrix is not None:
        r = np.asarray(matrix, np.float64)[:3, :3]
        out[0] = np.arctan2(r[0, 2], r[2, 2])      # yaw
        out[1] = np.arctan2(-r[1, 2], np.hypot(r[0, 2], r[2, 2]))  # pitch
        out[2] = np.arctan2(r[1, 0], r[0, 0])      # roll
    # Blendshape "Left" is the subject's left.
    out[3] = g("eyeBlinkLeft", 0.0)
    out[4] = g("eyeBlinkRight", 0.0)
    out[5] = (g("eyeLookOutLeft", 0.0) - g("eyeLookInLeft", 0.0)
              + g("eyeLookInRight", 0.0) - g("eyeLookOutRight", 0.0)) / 2
    out[6] = (g("eyeLookUpLeft", 0.0) + g("eyeLookUpRight", 0.0)
              - g("eyeLookDownLeft", 0.0) - g("eyeLookDownRight", 0.0)) / 2
    out[7] = g("jawOpen", 0.0)
    out[8] = np.clip(0.5 + 0.5 * (g("mouthStretchLeft", 0.0) + g("mouthStretchRight", 0.0)) / 2
                     - 0.5 * g("mouthPucker", 0.0), 0, 1)
    out[9] = (g("mouthSmileLeft", 0.0) + g("mouthSmileRight", 0.0)) / 2
    inner = g("browInnerUp", 0.0)
    out[10] = max(g("browOuterUpLeft", 0.0), inner)
    out[11] = max(g("browOuterUpRight", 0.0), inner)
    out[12] = (g("browDownLeft", 0.0) + g("browDownRight", 0.0)) / 2
    out[13] = g("eyeWideLeft", 0.0)
    out[14] = g("eyeWideRight", 0.0)
    out[15] = (g("mouthFrownLeft", 0.0) + g("mouthFrownRight", 0.0)) / 2
    return out


class TasksFaceTracker:
    """A MediaPipe Tasks FaceLandmarker (.task file the user already has, e.g.
    face_landmarker.task): 478 landmarks plus blendshapes, which replace the geometric
    expression estimate. Nothing is downloaded: the file path must exist."""

    def __init__(self, model_path: str, static: bool = False) -> None:
        from pathlib import Path

        from liveavatar.errors import NotFoundError
        if not Path(model_path).is_file():
            raise NotFoundError(f"face landmarker model not found: {model_path}")
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
        mode = vision.RunningMode.IMAGE if static else vision.RunningMode.VIDEO
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)), running_mode=mode, num_faces=1,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        self._mp = mp
        self._static = static
        self._model = vision.FaceLandmarker.create_from_options(opts)
        self._t_ms = 0

    def process(self, image: np.ndarray) -> FaceObservation | None:
        img = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image)
        if self._static:
            res = self._model.detect(img)
        else:
            self._t_ms += 33  # VIDEO mode needs increasing timestamps, not real ones
            res = self._model.detect_for_video(img, self._t_ms)
        if not res.face_landmarks:
            return None
        pts = res.face_landmarks[0]
        lm = np.ones((len(pts), 4), np.float32)
        lm[:, :3] = np.array([(p.x, p.y, p.z) for p in pts], np.float32)  # Tasks gives a Python list
        expr = None
        if res.face_blendshapes:
            cats = res.face_blendshapes[0]
            expr = expression_from_blendshapes([c.category_name for c in cats],
                                               np.array([c.score for c in cats]),
                                               res.facial_transformation_matrixes[0]
                                               if res.facial_transformation_matrixes else None)
        return FaceObservation(lm[:N_FACE], 1.0, expr)

    def close(self) -> None:
        self._model.close()
