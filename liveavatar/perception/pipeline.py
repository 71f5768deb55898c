"""The perception stage: camera frames -> Cues (pose, face, hands, expression), microphone audio ->
voice features and keyword hits.

Scheduling (2 CPU cores, 640x480): the face mesh runs on the calling thread for every frame; pose
and hands each run on their own thread, concurrently, always on the newest frame (latest-wins
slots that count what they skip). `process_video` waits for them up to a deadline and otherwise
carries their latest (held) result, so latency stays bounded when the machine cannot keep up.
MediaPipe's graphs release the GIL, so threads are enough. Hands are skipped while the pose shows
both wrists out of view. In `sync` mode (stills, offline rendering) it waits for every model.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from liveavatar.clock import CLOCK, Clock
from liveavatar.perception.expression import EYE_L_OUT, EYE_R_OUT, NEUTRAL_FEATURES, Calibration, raw_metrics
from liveavatar.perception.filters import ExpressionFilter, PartFilter
from liveavatar.perception.trackers import (
    POSE_LEFT_WRIST,
    POSE_RIGHT_WRIST,
    FaceTracker,
    HandsObservation,
    HandTracker,
    PoseTracker,
    assign_hands_to_wrists,
)
from liveavatar.runtime import LatestSlot, StageTimer, name_os_thread
from liveavatar.types import (
    FACE_FEATURES,
    FF,
    N_FACE,
    N_HAND,
    N_POSE,
    AudioChunk,
    CapturedFrame,
    Cues,
    KeywordHit,
    VoiceFeatures,
)

log = logging.getLogger(__name__)

MIN_SIDE = 32          # smaller frames carry no usable detail
#: A face whose outer eye corners are closer than this (pixels of the analysed image; a face about
#: 45 px wide) is tracked, but its expression is reported absent: at that size the mesh's lids,
#: lips and brows are guesses (a 40 px Grace Hopper reads as blinking).
MIN_EYE_SPAN_PX = 20.0

# Per-feature One-Euro settings: angles and gaze smooth harder; blink and mouth must pass fast.
_EXPR_MIN_CUTOFF = np.full(len(FACE_FEATURES), 2.0, np.float32)
_EXPR_BETA = np.full(len(FACE_FEATURES), 1.0, np.float32)
_EXPR_D_CUTOFF = np.full(len(FACE_FEATURES), 1.0, np.float32)
for _name in ("blink_left", "blink_right", "mouth_open"):
    _EXPR_MIN_CUTOFF[FF[_name]], _EXPR_BETA[FF[_name]] = 6.0, 5.0
# A blink is over in 3-5 frames: its speed estimate must see the drop at once (d_cutoff), or the
# closing shows a frame or two late (d3: the filtered blink bottomed out 1-2 frames after the
# person's; frame-to-frame jitter of the eye opening 0.0069 -> 0.0073).
for _name in ("blink_left", "blink_right"):
    _EXPR_MIN_CUTOFF[FF[_name]], _EXPR_BETA[FF[_name]], _EXPR_D_CUTOFF[FF[_name]] = 8.0, 8.0, 3.0
for _name in ("head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y"):
    _EXPR_MIN_CUTOFF[FF[_name]], _EXPR_BETA[FF[_name]] = 1.2, 2.0


def prepare_image(image: Any, max_side: int) -> np.ndarray | None:
    """HxWx3 uint8 RGB, C-contiguous, long side <= max_side; None if unusable. Accepts grayscale,
    RGBA, single-channel, float (0..1) and 16-bit images."""
    import cv2
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or a.size == 0 or min(a.shape[:2]) < MIN_SIDE:
        return None
    if a.ndim == 3 and a.shape[2] not in (3, 4):
        return None
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
            a = (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        elif a.dtype == np.uint16:
            a = (a >> 8).astype(np.uint8)
        elif a.dtype.kind in "iub":
            a = np.clip(a, 0, 255).astype(np.uint8)
        else:
            return None
    if a.ndim == 2:
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    elif a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)
    h, w = a.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        a = cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(a)


HAND_SEARCH_EVERY = 3     # live: with no hand tracked, run the hand model on every 3rd frame


class _ModelThread:
    """Runs one model on its own thread over the newest submitted frame; results are tagged with
    the submission number so the caller can wait for "this frame or later"."""

    def __init__(self, name: str, fn: Callable[[np.ndarray, Any], Any], timer: StageTimer) -> None:
        self.name = name
        self._fn = fn
        self._timer = timer
        self._slot: LatestSlot[tuple[int, float, np.ndarray, Any]] = LatestSlot()
        self._cond = threading.Condition()
        self.result: Any = None
        self.result_n = -1          # submission number of `result`
        self.result_t = 0.0         # capture time (s) of the frame `result` came from
        self.errors = 0
        self.busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"perception-{name}", daemon=True)
        self._thread.start()

    @property
    def skipped(self) -> int:
        return self._slot.dropped

    def submit(self, n: int, t_s: float, image: np.ndarray, hint: Any = None) -> None:
        self._slot.put((n, t_s, image, hint))

    def wait(self, n: int, timeout: float | None) -> None:
        """Until the result of submission `n` (or a later one) is in, or `timeout` s pass."""
        with self._cond:
            if self.result_n < n:
                self._cond.wait_for(lambda: self.result_n >= n or self._stop, timeout)

    def _run(self) -> None:
        while not self._stop:
            item = self._slot.take(timeout=0.25)
            if item is None:
                continue
            n, t_s, image, hint = item
            self.busy = True
            t0 = time.perf_counter()
            try:
                res = self._fn(image, hint)
            except Exception:
                self.errors += 1
                log.warning("perception: %s failed on a frame", self.name, exc_info=self.errors <= 3)
                res = None
            self._timer.record(self.name, (time.perf_counter() - t0) * 1e3)
            with self._cond:
                self.result, self.result_n, self.result_t = res, n, t_s
                self.busy = False
                self._cond.notify_all()

    def close(self) -> None:
        self._stop = True
        self._slot.close()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2.0)


class Perception:
    """See the module docstring. `process_video` is called from one thread; `process_audio` from
    anywhere (it only enqueues, except in sync mode).

    static: stills (MediaPipe static mode, no smoothing). sync: wait for every model and analyse
    audio inline, in order (default: same as static; use it for files). pose/face/hands: turn a
    model off. *_tracker: your own tracker (see trackers.py Protocols). deadline_ms: how long a live
    frame waits for pose and hands before using their latest result. max_side: larger frames are
    downscaled first. keywords: phrases to spot, each optionally "phrase/threshold".
    audio_queue: chunks buffered for the voice thread (the oldest is dropped beyond this)."""

    def __init__(self, static: bool = False, keywords: Sequence[str] = (), enable_voice: bool = True,
                 clock: Clock = CLOCK, *, sync: bool | None = None, pose: bool = True, face: bool = True,
                 hands: bool = True, pose_tracker: PoseTracker | None = None,
                 face_tracker: FaceTracker | None = None, hand_tracker: HandTracker | None = None,
                 deadline_ms: float = 30.0, max_side: int = 960, keyword_threshold: float = 1e-20,
                 audio_queue: int = 100, hand_complexity: int | None = None) -> None:
        self.static = static
        self.sync = static if sync is None else sync
        self.clock = clock
        self.deadline_s = deadline_ms / 1e3
        self.max_side = max_side
        self.timer = StageTimer(window=600)
        self.calibration = Calibration()

        # Voice first: a bad keyword list is a ConfigError before any model thread exists.
        self.voice_analyzer = None
        self._voice_inline = self.sync      # offline: analyse audio in order, on the caller's thread
        if enable_voice:
            from liveavatar.perception.voice import VoiceAnalyzer
            self.voice_analyzer = VoiceAnalyzer(keywords, keyword_threshold)

        from liveavatar.perception import trackers as tr
        self._pose = pose_tracker or (tr.MediaPipePose(static) if pose else None)
        self._face = face_tracker or (tr.MediaPipeFaceMesh(static) if face else None)
        # Live: the lite hand model (about a third cheaper, keeps up better); files/stills: the full one.
        complexity = (1 if self.sync else 0) if hand_complexity is None else hand_complexity
        self._hands = hand_tracker or (tr.MediaPipeHands(static, complexity) if hands else None)
        pose_model, hands_model = self._pose, self._hands
        self._pose_thread = _ModelThread("pose", lambda img, _: pose_model.process(img), self.timer) \
            if pose_model is not None else None
        self._hands_thread = _ModelThread("hands", lambda img, hint: hands_model.process(img, hint),
                                          self.timer) if hands_model is not None else None

        self._last_pose_raw: np.ndarray | None = None
        self._new_filters()
        self._raw = np.zeros(len(FACE_FEATURES), np.float32)
        self._work = np.zeros((N_FACE, 3), np.float64)
        self._features = np.zeros(len(FACE_FEATURES), np.float32)
        self._expr_measured = True        # False while the tracked face is too small to measure
        self._face_t_s = 0.0          # capture time of the previous face (for the running range)
        self._pose_used_n = -1
        self._hands_used_n = -1
        self._n = 0

        # Calibration: set from any thread, consumed by the video thread.
        self._calib_lock = threading.Lock()
        self._calib_request: float | None = None
        self._calib_until = 0.0
        self._calib_samples: list[np.ndarray] = []
        self._neutral_direct: np.ndarray | None = None
        self._calib_direct = False        # samples are tracker features (blendshapes), not raw metrics
        self.calibration_result = ""      # "", "ok (N frames)" or why it failed

        self.frames = 0
        self.bad_frames = 0
        self.errors = 0
        self.hands_gated = 0
        self.pose_updates = 0         # new pose results used (the rate pose keeps up at)
        self.hands_updates = 0
        self._frame_times: deque[float] = deque(maxlen=61)
        self._keyword_hits: deque[KeywordHit] = deque(maxlen=32)

        # Voice: its own thread behind a bounded queue that drops the oldest chunk when full.
        self.audio_dropped = 0
        self._last_audio_ns = 0
        self._audio_q: queue.Queue = queue.Queue(maxsize=audio_queue)
        self._voice_thread = None
        if enable_voice and not self._voice_inline:
            self._voice_thread = threading.Thread(target=self._voice_loop, name="perception-voice",
                                                  daemon=True)
            self._voice_thread.start()
            name_os_thread(self._voice_thread)
        self._inline_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # Video
    # ------------------------------------------------------------------------------------------
    def process_video(self, frame: CapturedFrame) -> Cues:
        t_start = time.perf_counter()
        seq, t_ns = getattr(frame, "seq", 0), getattr(frame, "t_capture_ns", None)
        image: Any = getattr(frame, "image", None)
        if not isinstance(t_ns, (int, np.integer)) or isinstance(t_ns, bool):
            t_ns = self.clock.now_ns()          # a broken timestamp must not break the stage
        t_s = float(t_ns / 1e9)
        size = (0, 0)
        try:
            shape = np.shape(image)
            size = (int(shape[1]), int(shape[0])) if len(shape) >= 2 else (0, 0)
            img = prepare_image(image, self.max_side)
            if img is None:
                self.bad_frames += 1
                self._lose_all(t_s)
            else:
                self._track(img, t_s, t_start)
        except Exception:
            self.errors += 1
            log.warning("perception: frame %s failed", seq, exc_info=self.errors <= 3)
            self._lose_all(t_s)
        cues = Cues(seq=seq, t_capture_ns=int(t_ns), pose=self._pose_f.part(),
                    face=self._face_f.part(), hand_left=self._left_f.part(), hand_right=self._right_f.part(),
                    expression=self._expr_f.value.copy(),
                    expression_present=self._face_f.present and self._expr_measured,
                    voice=self.voice(), keywords=self._drain_hits(), image_size=size)
        self.frames += 1
        self._frame_times.append(time.perf_counter())
        self.timer.record("frame", (time.perf_counter() - t_start) * 1e3)
        return cues

    def _track(self, img: np.ndarray, t_s: float, t_start: float) -> None:
        self._n += 1
        n = self._n
        if self._pose_thread:
            self._pose_thread.submit(n, t_s, img)
        # With no hand in view, look for one on every few frames only: the hand model's palm
        # search over the whole frame is most of its cost, and on a 2-core machine that CPU
        # is latency for everything else. A hand that appears is found within ~100 ms.
        searching = not (self._left_f.present or self._right_f.present)
        run_hands = (self._hands_thread is not None and not self._wrists_out_of_view()
                     and (self.static or not searching or n % HAND_SEARCH_EVERY == 1))
        if run_hands and self._hands_thread is not None:
            self._hands_thread.submit(n, t_s, img, self._last_pose_raw)
        elif self._hands_thread is not None:
            self.hands_gated += 1
            self._left_f.lose(t_s)
            self._right_f.lose(t_s)

        if self._face is not None:
            t0 = time.perf_counter()
            obs = self._face.process(img)
            self.timer.record("face", (time.perf_counter() - t0) * 1e3)
            self._update_face(obs, img, t_s)

        deadline = None if self.sync else t_start + self.deadline_s
        if self._pose_thread:
            self._pose_thread.wait(n, None if deadline is None else max(0.0, deadline - time.perf_counter()))
            self._update_pose()
        if run_hands and self._hands_thread is not None:
            self._hands_thread.wait(n, None if deadline is None else max(0.0, deadline - time.perf_counter()))
            self._update_hands()

    def _wrists_out_of_view(self) -> bool:
        if not self._pose_f.present or self._last_pose_raw is None:
            return False
        wrists = self._last_pose_raw[[POSE_LEFT_WRIST, POSE_RIGHT_WRIST]]
        inside = (wrists[:, 0] > -0.05) & (wrists[:, 0] < 1.05) & (wrists[:, 1] > -0.05) & (wrists[:, 1] < 1.05)
        return not bool(((wrists[:, 3] > 0.2) & inside).any())

    def _update_pose(self) -> None:
        th = self._pose_thread
        assert th is not None
        with th._cond:
            res, n, t = th.result, th.result_n, th.result_t
        if n <= self._pose_used_n:
            return                      # nothing new: keep holding
        self._pose_used_n = n
        self.pose_updates += 1
        if res is None:
            self._pose_f.lose(t)
        else:
            self._last_pose_raw = res.landmarks
            self._pose_f.observe(res.landmarks, res.confidence, t)

    def _update_hands(self) -> None:
        th = self._hands_thread
        assert th is not None
        with th._cond:
            res, n, t = th.result, th.result_n, th.result_t
        if n <= self._hands_used_n:
            return
        self._hands_used_n = n
        self.hands_updates += 1
        res = res if isinstance(res, HandsObservation) else HandsObservation(None, None)
        res = self._assign_sides(res)
        for f, lm, conf in ((self._left_f, res.left, res.left_confidence),
                            (self._right_f, res.right, res.right_confidence)):
            if lm is None:
                f.lose(t)
            else:
                f.observe(lm, conf, t)

    def _assign_sides(self, obs: HandsObservation) -> HandsObservation:
        """Side by the pose's wrists (the hand model's own left/right guess is near chance on
        unmirrored frames), using the pose of this frame when it was waited for. Without visible
        wrists (a webcam close-up), by the body's midline: on an unmirrored camera the subject's
        left hand is on the image's right of their nose."""
        hands = [h for h in (obs.left, obs.right) if h is not None]
        if not hands:
            return obs
        pose = self._last_pose_raw
        sides = assign_hands_to_wrists(hands, pose) if pose is not None and self._pose_f.present else None
        if sides is None:
            midline = self._midline_x()
            if midline is None:
                return obs
            sides = [bool(h[0, 0] > midline) for h in hands]
            if len(hands) == 2 and sides[0] == sides[1]:      # both on one side: keep them apart
                sides = [bool(hands[0][0, 0] > hands[1][0, 0]), bool(hands[0][0, 0] <= hands[1][0, 0])]
        confs = [c for h, c in ((obs.left, obs.left_confidence), (obs.right, obs.right_confidence)) if h is not None]
        out = HandsObservation(None, None)
        for h, c, is_left in zip(hands, confs, sides):
            if is_left:
                out.left, out.left_confidence = h, c
            else:
                out.right, out.right_confidence = h, c
        return out

    def _midline_x(self) -> float | None:
        if self._face_f.present:
            return float(self._face_f._held[1, 0])           # face-mesh nose tip
        pose = self._last_pose_raw
        if pose is not None and self._pose_f.present and pose[0, 3] > 0.5:
            return float(pose[0, 0])                          # pose nose
        return None

    def _update_face(self, obs: Any, img: np.ndarray, t_s: float) -> None:
        if obs is None:
            self._face_f.lose(t_s)
            self._expr_f.lose(t_s)
            self._calibration_step(None, t_s)
            return
        self._face_f.observe(obs.landmarks, obs.confidence, t_s)
        self._calib_direct = obs.expression is not None
        if self._calib_direct:
            sample = np.asarray(obs.expression, np.float32)
            feats = self.calibration.apply_direct(sample, self._neutral_direct)
        else:
            sample = raw_metrics(obs.landmarks, img.shape[1], img.shape[0], out=self._raw, work=self._work)
            if not self.static:     # stills have no stream to learn the user's range from
                self.calibration.adapt(sample, t_s - self._face_t_s)
            self._face_t_s = t_s
            feats = self.calibration.apply(sample, out=self._features)
        # Real values or absent, never "present" with made-up ones: a face too small to measure,
        # or a measurement that came out non-finite or all zeros (no real face reads exactly 0 on
        # every feature, head angles included), reports no expression.
        eye = obs.landmarks[[EYE_L_OUT, EYE_R_OUT], :2] * (img.shape[1], img.shape[0])
        self._expr_measured = bool(np.linalg.norm(eye[0] - eye[1]) >= MIN_EYE_SPAN_PX
                                   and np.isfinite(feats).all() and np.any(feats != 0))
        if not self._expr_measured:
            self._expr_f.lose(t_s)
            self._calibration_step(None, t_s)
            return
        self._calibration_step(sample, t_s)
        self._expr_f.observe(feats, t_s)

    def _lose_all(self, t_s: float) -> None:
        for f in (self._pose_f, self._face_f, self._left_f, self._right_f):
            f.lose(t_s)
        self._expr_f.lose(t_s)
        self._calibration_step(None, t_s)

    def _new_filters(self) -> None:
        static = self.static
        self._pose_f = PartFilter(N_POSE, passthrough=static)
        self._face_f = PartFilter(N_FACE, min_cutoff=2.0, beta=6.0, passthrough=static)
        self._left_f = PartFilter(N_HAND, min_cutoff=2.0, beta=6.0, passthrough=static)
        self._right_f = PartFilter(N_HAND, min_cutoff=2.0, beta=6.0, passthrough=static)
        self._expr_f = ExpressionFilter(_EXPR_MIN_CUTOFF, _EXPR_BETA, NEUTRAL_FEATURES, passthrough=static,
                                       d_cutoff=_EXPR_D_CUTOFF)
        self._last_pose_raw = None

    def warmup(self, size: tuple[int, int] = (640, 480)) -> None:
        """Run every model once on a blank frame (their first call builds graphs and delegates,
        hundreds of ms) so the first real frame is not slow. Call before admitting a session."""
        blank = np.full((size[1], size[0], 3), 127, np.uint8)
        sync, self.sync = self.sync, True
        try:
            self._track(blank, 0.0, time.perf_counter())
        except Exception:
            log.warning("perception warm-up failed", exc_info=True)
        finally:
            self.sync = sync
        # Forget the warm-up: tracked state and counters start clean.
        self._new_filters()
        self.pose_updates = self.hands_updates = self.hands_gated = 0
        self.timer = StageTimer(window=600)
        for th in (self._pose_thread, self._hands_thread):
            if th:
                th._timer = self.timer

    # ------------------------------------------------------------------------------------------
    # Calibration
    # ------------------------------------------------------------------------------------------
    def start_calibration(self, seconds: float = 3.0) -> None:
        """Collect the user's resting face over the next `seconds` of video (by capture time);
        expression is then measured relative to it."""
        with self._calib_lock:
            self._calib_request = max(0.2, float(seconds))

    @property
    def calibrating(self) -> bool:
        return self._calib_request is not None or self._calib_until > 0

    def _calibration_step(self, sample: np.ndarray | None, t_s: float) -> None:
        if self._calib_request is not None:
            with self._calib_lock:
                self._calib_until = t_s + self._calib_request
                self._calib_request = None
                self._calib_samples = []
        if self._calib_until <= 0:
            return
        if sample is not None and len(self._calib_samples) < 1000:
            self._calib_samples.append(sample.copy())
        if t_s >= self._calib_until:
            self._calib_until = 0.0
            k = len(self._calib_samples)
            if k >= 3:
                samples = np.stack(self._calib_samples)
                if self._calib_direct:
                    self._neutral_direct = np.median(samples, axis=0).astype(np.float32)
                else:
                    self.calibration.set_neutral(samples)
                self.calibration_result = f"ok ({k} frames)"
            else:
                self.calibration_result = "failed: no face seen during calibration"
            self._calib_samples = []

    # ------------------------------------------------------------------------------------------
    # Audio
    # ------------------------------------------------------------------------------------------
    def process_audio(self, chunk: AudioChunk) -> None:
        """Thread-safe and non-blocking: enqueue for the voice thread (drops the oldest when full).
        In sync mode (offline) the chunk is analysed right here, in order."""
        if self.voice_analyzer is None or self._closed:
            return
        samples = getattr(chunk, "samples", None)
        if samples is None:
            self.voice_analyzer.bad_chunks += 1
            return
        self._last_audio_ns = self.clock.now_ns()
        if self._voice_inline:
            with self._inline_lock:
                t0 = time.perf_counter()
                self.voice_analyzer.feed(samples, getattr(chunk, "sample_rate", 0),
                                         getattr(chunk, "t_capture_ns", 0) or 0)
                self.timer.record("voice", (time.perf_counter() - t0) * 1e3)
                self._collect_hits()
            return
        item = (samples, getattr(chunk, "sample_rate", 0), getattr(chunk, "t_capture_ns", 0) or 0)
        try:
            self._audio_q.put_nowait(item)
        except queue.Full:
            try:
                self._audio_q.get_nowait()
                self.audio_dropped += 1
            except queue.Empty:
                pass
            try:
                self._audio_q.put_nowait(item)
            except queue.Full:
                self.audio_dropped += 1

    def _voice_loop(self) -> None:
        va = self.voice_analyzer
        assert va is not None
        while True:
            item = self._audio_q.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                va.flush()
                self._collect_hits()
                item.set()
                continue
            samples, rate, t_ns = item
            t0 = time.perf_counter()
            va.feed(samples, rate, t_ns)
            self.timer.record("voice", (time.perf_counter() - t0) * 1e3)
            self._collect_hits()

    def _collect_hits(self) -> None:
        if self.voice_analyzer is None:
            return
        for hit in self.voice_analyzer.drain_hits():
            self._keyword_hits.append(hit)

    def _drain_hits(self) -> tuple[KeywordHit, ...]:
        out = []
        while self._keyword_hits:
            try:
                out.append(self._keyword_hits.popleft())
            except IndexError:
                break
        return tuple(out)

    def flush_audio(self, timeout: float = 10.0) -> bool:
        """Wait until every queued chunk is analysed and any utterance in progress is decoded
        (end of a file, tests). True if done within `timeout`."""
        if self._voice_thread is None:
            if self.voice_analyzer is not None:
                with self._inline_lock:
                    self.voice_analyzer.flush()
                    self._collect_hits()
            return True
        done = threading.Event()
        try:
            self._audio_q.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def voice(self) -> VoiceFeatures:
        """The latest voice features; `present` is False when no audio came for a second."""
        if self.voice_analyzer is None:
            return VoiceFeatures()
        with self.voice_analyzer._lock:
            v = self.voice_analyzer.latest
        if v.present and self.clock.now_ns() - self._last_audio_ns > 1_000_000_000:
            return VoiceFeatures(v.speaking_prob, v.loudness_dbfs, v.pitch_hz, v.pitch_dev, v.visemes, False)
        return v

    # ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        ft = self._frame_times
        fps = (len(ft) - 1) / (ft[-1] - ft[0]) if len(ft) > 1 and ft[-1] > ft[0] else 0.0
        ms = {k: round(v["median_ms"], 2) for k, v in self.timer.summary().items()}
        out = {"fps": round(fps, 2), "frames": self.frames, "pose_updates": self.pose_updates,
               "hands_updates": self.hands_updates, "ms": ms,
               "p95_ms": {k: round(v["p95_ms"], 2) for k, v in self.timer.summary().items()},
               "dropped": {"pose_skipped": self._pose_thread.skipped if self._pose_thread else 0,
                           "hands_skipped": self._hands_thread.skipped if self._hands_thread else 0,
                           "hands_gated": self.hands_gated, "audio_chunks": self.audio_dropped},
               "bad_frames": self.bad_frames,
               "errors": self.errors + sum(t.errors for t in (self._pose_thread, self._hands_thread) if t),
               "calibrated": self.calibration.calibrated or self._neutral_direct is not None,
               "calibration": self.calibration_result}
        if self.voice_analyzer is not None:
            out["voice_cpu_fraction"] = round(self.voice_analyzer.cpu_fraction(), 4)
            out["bad_audio_chunks"] = self.voice_analyzer.bad_chunks
            out["voice_vad_providers"] = self.voice_analyzer.vad.providers
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for th in (self._pose_thread, self._hands_thread):
            if th:
                th.close()
        if self._voice_thread is not None:
            while True:
                try:
                    self._audio_q.put(None, timeout=1.0)
                    break
                except queue.Full:
                    try:
                        self._audio_q.get_nowait()
                    except queue.Empty:
                        pass
            self._voice_thread.join(timeout=2.0)
        if self.voice_analyzer is not None:
            self.voice_analyzer.close()
        for m in (self._pose, self._face, self._hands):
            if m is not None:
                try:
                    m.close()
                except Exception:
                    log.debug("closing a tracker failed", exc_info=True)

    def __enter__(self) -> Perception:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
