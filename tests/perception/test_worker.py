"""The worker thread, the scheduling of concurrent models, and plugging in other trackers."""
import time

import numpy as np
import pytest

from liveavatar.perception import (
    FaceObservation,
    FaceTracker,
    HandsObservation,
    Perception,
    PerceptionWorker,
    PoseObservation,
)
from liveavatar.perception.trackers import MediaPipeFaceMesh, expression_from_blendshapes
from liveavatar.runtime import LatestSlot
from liveavatar.types import FF, CapturedFrame, Cues
from tests.media import load_rgb

from .conftest import frame, video_frames


def wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_worker_turns_real_video_into_cues():
    frames = video_frames("astronaut_talk.mp4", limit=20)
    p = Perception(static=False, enable_voice=False)
    frames_in, cues_out = LatestSlot(), LatestSlot()
    worker = PerceptionWorker(p, frames_in, cues_out).start()
    got = []
    try:
        assert worker.alive
        for i, f in enumerate(frames):
            frames_in.put(frame(f, i, i / 30))
            assert wait_for(lambda i=i: worker.processed + worker.dropped > i)
            c = cues_out.take(timeout=0.0)
            if c is not None:
                got.append(c)
        assert wait_for(lambda: worker.processed + worker.dropped == len(frames))
    finally:
        worker.stop()
        p.close()
    assert not worker.alive
    assert worker.processed > 0 and worker.processed + worker.dropped == len(frames)
    assert all(isinstance(c, Cues) for c in got)
    assert got[-1].face.present and got[-1].expression[FF["smile"]] > 0.4


class _Flaky:
    """Our own logic under test: a stand-in perception that fails on odd frames."""

    def __init__(self, delay=0.0):
        self.delay = delay

    def process_video(self, f):
        time.sleep(self.delay)
        if f.seq % 2:
            raise RuntimeError("boom")
        return f.seq


def test_worker_survives_exceptions_and_counts_drops():
    frames_in, cues_out = LatestSlot(), LatestSlot()
    worker = PerceptionWorker(_Flaky(), frames_in, cues_out).start()
    try:
        for i in range(10):
            frames_in.put(CapturedFrame(np.zeros((4, 4, 3), np.uint8), i, i))
            assert wait_for(lambda i=i: worker.processed + worker.errors == i + 1)
        assert worker.alive and worker.errors == 5 and worker.processed == 5
        assert cues_out.take(timeout=1) == 8
    finally:
        worker.stop()
    slow_in = LatestSlot()
    slow = PerceptionWorker(_Flaky(delay=0.05), slow_in, LatestSlot()).start()
    try:
        for i in range(0, 40, 2):
            slow_in.put(CapturedFrame(np.zeros((4, 4, 3), np.uint8), i, i))
        assert wait_for(lambda: slow_in.peek() is None)
    finally:
        slow.stop()
    assert slow.dropped == slow_in.dropped > 0, "frames replaced while busy are counted, not queued"
    assert slow.processed + slow.dropped == 20


def test_a_paced_worker_waits_between_frames_and_takes_the_newest():
    """The service's governor asks for a gap between frames: frames put meanwhile are dropped
    (counted) and the newest is the one taken."""
    frames_in, cues_out = LatestSlot(), LatestSlot()
    # a long gap, so that a stalled CI machine still puts the three frames inside it
    worker = PerceptionWorker(_Flaky(), frames_in, cues_out, pace=lambda: 2.0).start()
    try:
        frames_in.put(CapturedFrame(np.zeros((4, 4, 3), np.uint8), 0, 0))
        assert wait_for(lambda: worker.processed == 1)
        for seq in (2, 4, 6):              # all within the 2 s gap
            frames_in.put(CapturedFrame(np.zeros((4, 4, 3), np.uint8), seq, seq))
        time.sleep(0.1)
        assert worker.processed == 1       # still waiting out its gap
        assert wait_for(lambda: worker.processed == 2, 5)
        assert cues_out.take(timeout=1) == 6 and frames_in.dropped == 2
    finally:
        worker.stop(timeout=2)
    assert not worker.alive                # stop() cuts the gap short


class _SlowPose:
    """A pose model slower than the frame rate, with both wrists out of view."""

    def __init__(self):
        self.calls = 0

    def process(self, image):
        self.calls += 1
        time.sleep(0.1)
        lm = np.zeros((33, 4), np.float32)
        lm[:, :2], lm[:, 3] = 0.5, 0.9
        lm[[15, 16], 3] = 0.0
        return PoseObservation(lm, 0.9)

    def close(self):
        pass


class _CountingHands:
    def __init__(self):
        self.calls = 0

    def process(self, image, pose=None):
        self.calls += 1
        return HandsObservation(None, None)

    def close(self):
        pass


def test_slow_pose_is_held_on_every_frame_and_hands_skip_when_wrists_are_out_of_view():
    pose, hands = _SlowPose(), _CountingHands()
    p = Perception(static=False, face=False, enable_voice=False, pose_tracker=pose, hand_tracker=hands,
                   deadline_ms=30)
    img = np.zeros((64, 64, 3), np.uint8)
    try:
        first = p.process_video(frame(img, 0, 0.0))     # waits up to the deadline only
        assert wait_for(lambda: pose.calls >= 1 and p._pose_thread.result_n >= 1)
        cues = [p.process_video(frame(img, i, i / 30)) for i in range(1, 25)]
        stats = p.stats()
    finally:
        p.close()
    assert not first.pose.present, "the first frame did not wait for the slow model"
    assert all(c.pose.present and c.pose.landmarks[0, 3] > 0.5 for c in cues), "held on every frame"
    assert stats["dropped"]["pose_skipped"] > 0 and pose.calls < 25
    assert stats["dropped"]["hands_gated"] > 0 and hands.calls < 25


class _BlendshapeFace:
    """A user's tracker: real MediaPipe landmarks plus blendshapes (as Tasks would report)."""

    def __init__(self):
        self.mesh = MediaPipeFaceMesh(static=True)

    def process(self, image):
        obs = self.mesh.process(image)
        names = ["mouthSmileLeft", "mouthSmileRight", "jawOpen", "eyeBlinkLeft", "browInnerUp"]
        yaw = np.deg2rad(20)
        matrix = np.eye(4)
        matrix[:3, :3] = [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
        expr = expression_from_blendshapes(names, np.array([0.8, 0.6, 0.3, 1.0, 0.5]), matrix)
        return FaceObservation(obs.landmarks, obs.confidence, expr)

    def close(self):
        self.mesh.close()


def test_a_blendshape_face_tracker_plugs_in():
    tracker = _BlendshapeFace()
    assert isinstance(tracker, FaceTracker)
    p = Perception(static=True, pose=False, hands=False, enable_voice=False, face_tracker=tracker)
    try:
        cues = p.process_video(frame(load_rgb("grace_hopper.jpg"), 0, 0))
    finally:
        p.close()
    e = cues.expression
    assert cues.face.present and cues.face.landmarks.shape == (478, 4)
    np.testing.assert_allclose(e[[FF["smile"], FF["mouth_open"], FF["blink_left"], FF["blink_right"],
                                  FF["brow_raise_left"], FF["brow_raise_right"], FF["head_yaw"]]],
                               [0.7, 0.3, 1.0, 0.0, 0.5, 0.5, np.deg2rad(20)], atol=1e-5)


class _HandsAt:
    """Two hands at fixed image positions, labelled the 'wrong' way round by the model."""

    def process(self, image, pose=None):
        left_of_image = np.zeros((21, 4), np.float32)
        left_of_image[:, :2] = (0.2, 0.6)
        right_of_image = np.zeros((21, 4), np.float32)
        right_of_image[:, :2] = (0.8, 0.6)
        return HandsObservation(left=left_of_image, right=right_of_image, left_confidence=0.9,
                                right_confidence=0.8)

    def close(self):
        pass


def test_without_visible_wrists_hands_are_sided_by_the_face_midline():
    # A webcam close-up: real face (no wrists in view); the subject's left hand is the one on the
    # image's right of the nose (unmirrored camera).
    p = Perception(static=True, pose=False, enable_voice=False, hand_tracker=_HandsAt())
    try:
        cues = p.process_video(frame(load_rgb("grace_hopper.jpg"), 0, 0))
    finally:
        p.close()
    assert cues.face.present
    assert cues.hand_left.present and cues.hand_left.landmarks[0, 0] == pytest.approx(0.8)
    assert cues.hand_right.present and cues.hand_right.landmarks[0, 0] == pytest.approx(0.2)
    assert cues.hand_left.confidence == pytest.approx(0.8)


def test_a_missing_tasks_model_file_is_a_clear_error(tmp_path):
    from liveavatar.errors import NotFoundError
    from liveavatar.perception import TasksFaceTracker
    with pytest.raises(NotFoundError, match="face_landmarker.task"):
        TasksFaceTracker(str(tmp_path / "face_landmarker.task"))


def test_warmup_runs_every_model_once_and_leaves_no_trace():
    pose, hands = _SlowPose(), _CountingHands()
    p = Perception(static=False, face=False, enable_voice=False, pose_tracker=pose, hand_tracker=hands)
    try:
        p.warmup()
        stats = p.stats()
        warm_calls = (pose.calls, hands.calls)
        cues = p.process_video(frame(np.zeros((64, 64, 3), np.uint8), 0, 1.0))
    finally:
        p.close()
    assert warm_calls == (1, 1)
    assert stats["pose_updates"] == 0 and stats["ms"] == {} and stats["frames"] == 0
    assert not cues.hand_left.present and not cues.pose.present, "the warm-up pose is forgotten"
