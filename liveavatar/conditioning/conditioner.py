"""The Conditioner: perception cues and control events in, one Conditioning per output tick out.

Threads: `push_cues` (perception worker) and `push_event` (server / hotkeys) may be called from
any thread; `tick` from the generator's clock. A short lock guards the shared state; events wait
in a small bounded lane that the next tick drains, so a trigger shows on the very next frame.

Timing: the output rate is fixed and independent of the input rate. For each tick the pose is
sampled at `tick time - perception latency - interpolation delay` in capture time: between the
two newest perception results it interpolates, past the newest it extrapolates for at most
`max_extrapolation_ms` and then holds; after `lost_after_s` without a body or face it eases into
the idle behaviour.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from pathlib import Path

import numpy as np

from liveavatar.clock import CLOCK, Clock
from liveavatar.errors import ConfigError, UserError
from liveavatar.types import (
    ACTIONS,
    FACE_FEATURES,
    FACE_PARAMS,
    FP,
    N_POSE,
    VISEMES,
    Conditioning,
    ControlEvent,
    ControlKind,
    Cues,
    EventSource,
    TriggerMode,
    VoiceFeatures,
)

from .action_files import N_CH, NB, ActionLibrary, Take, action_names
from .actions import ActionEngine
from .emotion import EmotionEngine
from .gestures import GestureRecognizer
from .idle import idle_pose
from .mapping import ActionSpec, Mapping, TriggerSpec, load_mapping
from .retarget import PoseRetargeter, face_params, head_angles, wrap_angle

log = logging.getLogger(__name__)

# Layout of one retargeted sample (a flat vector so interpolation is one vectorised step).
NF = len(FACE_PARAMS)
S_BONES = slice(0, NB)
S_ROOT = slice(NB, NB + 3)
S_HEAD = slice(NB + 3, NB + 6)
S_FACE = slice(NB + 6, NB + 6 + NF)
SAMPLE = NB + 6 + NF
_ANGLES = np.zeros(SAMPLE, bool)
_ANGLES[S_BONES] = True          # wrap-aware arithmetic for bone directions
# Slots the extra low-pass (tracking.smoothing_s) leaves alone: perception already filters them
# and a blink lasts 3-5 frames, so smoothing showed it a frame late.
_UNSMOOTHED = np.array([S_FACE.start + FP["blink_left"], S_FACE.start + FP["blink_right"]])

HEAD_LIMIT = 0.8
DEFAULT_ASPECT = 4 / 3           # when perception did not say the frame size
BASELINE_TAU_S = 5.0             # the hips' "home" position and size adapt over this long
EVENT_LANE = 32                  # bounded: a burst of hotkeys beyond this drops the oldest
RELOAD_CHECK_S = 1.0
KEYWORD_REFRACTORY_NS = 1_000_000_000
_MOUTH_OPEN, _MOUTH_WIDTH = FP["mouth_open"], FP["mouth_width"]


# Valid range of every slot of a sample (bones are wrapped instead).
_LOW = np.full(SAMPLE, -np.inf, np.float32)
_HIGH = np.full(SAMPLE, np.inf, np.float32)
_LOW[S_ROOT], _HIGH[S_ROOT] = (-1.0, -1.0, 0.5), (1.0, 1.0, 2.0)
_LOW[S_HEAD], _HIGH[S_HEAD] = -HEAD_LIMIT, HEAD_LIMIT
_LOW[S_FACE], _HIGH[S_FACE] = 0.0, 1.0
_LOW[S_FACE.start + FP["gaze_x"]] = _LOW[S_FACE.start + FP["gaze_y"]] = -1.0


def _unit(x: float) -> float:
    """Clamp to 0..1 (NaN -> 0), cheaply for a Python scalar."""
    x = float(x)
    return 0.0 if not x > 0.0 else (1.0 if x > 1.0 else x)


def _soft_limit(x: float, limit: float) -> float:
    """x, squeezed smoothly into -limit..limit (about x itself while small)."""
    if limit <= 0 or not np.isfinite(x):
        return 0.0
    return float(limit * np.tanh(x / limit))


def _lerp_sample(a: np.ndarray, b: np.ndarray, u: float, out: np.ndarray,
                 angles: np.ndarray = _ANGLES) -> np.ndarray:
    """a + (b - a) * u, taking the short way round for angles (u may exceed 1: extrapolation)."""
    d = b - a
    d[angles] = wrap_angle(d[angles])
    np.multiply(d, u, out=d)
    np.add(a, d, out=out)
    return out


class Conditioner:
    def __init__(self, mapping: Mapping | None = None, rate_hz: float = 30.0, clock: Clock = CLOCK,
                 mapping_path: Path | None = None, actions: ActionLibrary | None = None) -> None:
        if rate_hz <= 0:
            raise UserError(f"conditioning rate must be > 0 Hz (got {rate_hz})")
        if mapping is None:
            mapping = load_mapping(mapping_path)
        self.mapping = mapping
        self.mapping_path = Path(mapping_path) if mapping_path is not None else mapping.path
        self.rate_hz = float(rate_hz)
        self.period_s = 1.0 / self.rate_hz
        self.clock = clock
        self.mirror = mapping.tracking.mirror
        # Imported / recorded / the character's own actions (ActionLibrary), played here as a
        # pose source: generators receive their bone angles like live tracking.
        self.library = actions if actions is not None else ActionLibrary()
        self._lock = threading.Lock()
        self._events: deque[ControlEvent] = deque(maxlen=EVENT_LANE)
        self.events_dropped = 0
        self._retarget = PoseRetargeter()
        self._mtime = self._stat()
        self._next_reload_check = 0.0
        self.last_reload_error: str | None = None   # shown by state() until a good file loads
        self._build_engines(mapping)
        self._sync_library()
        self._clip_pose = np.zeros(N_CH, np.float32)
        self._clip_delta = np.zeros(N_CH, np.float32)
        self._clip_ease = 0.0          # > 0 while a library clip plays (its eased weight)
        self._take: Take | None = None
        self._reset_tracking()
        self.seq = 0
        self.cues_seen = 0
        self._last_tick_s: float | None = None

    # -- setup ------------------------------------------------------------------------------

    @property
    def emotions(self) -> tuple[str, ...]:
        return self.emotion.names

    @property
    def actions(self) -> tuple[str, ...]:
        """Every action name this conditioner plays: built-ins, then imported ones."""
        return self._action_names

    def _sync_library(self) -> None:
        self._action_names = action_names(ACTIONS, self.library)
        self.action.overrides = {
            c.name: ActionSpec(duration_s=c.duration_s, loop=c.loop, blend_in_s=c.blend_in_s,
                               blend_out_s=c.blend_out_s) for c in self.library.clips.values()}

    def reload_actions(self, character_folder: Path | None | bool = False) -> None:
        """Re-read the action folders now (after an import, a recording, a character switch:
        `character_folder` is the new character's actions folder, None for none). Thread-safe."""
        lib = self.library
        if character_folder is not False:
            lib.set_character_folder(character_folder if isinstance(character_folder, Path) else None)
        lib.refresh(force=True)
        with self._lock:
            self._sync_library()

    def start_take(self, seconds: float) -> Take:
        """Record the next `seconds` of output motion (bones and root) as a take. Thread-safe."""
        take = Take(seconds, self.rate_hz)
        with self._lock:
            self._take = take
        return take

    def _build_engines(self, mapping: Mapping) -> None:
        self.emotion = EmotionEngine(mapping)
        self.action = ActionEngine(mapping)
        g = mapping.gestures
        self.gestures = GestureRecognizer(g.window_s, g.cooldown_s)

    def _reset_tracking(self) -> None:
        # The two newest retargeted samples (capture time, vector), for interpolation.
        self._prev = np.zeros(SAMPLE, np.float32)
        self._last = np.zeros(SAMPLE, np.float32)
        self._t_prev: float | None = None
        self._t_last: float | None = None
        self._live = np.zeros(SAMPLE, np.float32)
        self._smooth = np.zeros(SAMPLE, np.float32)
        self._smooth_init = False
        self._idle = np.zeros(SAMPLE, np.float32)
        self._out = np.zeros(SAMPLE, np.float32)
        self._sample = np.zeros(SAMPLE, np.float32)
        self._body_seen_s = -1e9     # clock time of the newest cues with a body / a face
        self._face_seen_s = -1e9
        self.body_present = 0.0
        self.face_present = 0.0
        self._home: np.ndarray | None = None   # (hips x, hips y, body height) baseline, frame heights
        self._latency_s = 0.0
        self._t_capture_ns = 0
        self._expr: np.ndarray | None = None
        self._expr_buf: np.ndarray | None = None
        self._voice = VoiceFeatures()
        self._voice_t_s = -1e9
        self._visemes = np.zeros(len(VISEMES), np.float32)
        self._visemes[0] = 1.0
        self._vis_face = np.zeros(len(VISEMES), np.float32)
        self._vis_out = np.zeros(len(VISEMES), np.float32)
        self._speaking = 0.0
        self._keyword_seen: dict[str, int] = {}
        #: The newest gestures recognised, (name, capture time s), for the studio and benchmarks.
        self.gesture_log: deque[tuple[str, float]] = deque(maxlen=256)

    def _stat(self) -> tuple[float, int] | None:
        if self.mapping_path is None:
            return None
        try:
            st = os.stat(self.mapping_path)
            return st.st_mtime, st.st_size
        except OSError:
            return None

    # -- inputs -----------------------------------------------------------------------------

    def push_cues(self, cues: Cues) -> None:
        """Take one perception result (newest wins). Thread-safe."""
        with self._lock:
            self._push_cues(cues)

    def _push_cues(self, cues: Cues) -> None:
        now = self.clock.now_ns()
        now_s = now / 1e9
        t_cap = cues.t_capture_ns
        if self._t_last is not None and t_cap / 1e9 <= self._t_last:
            return  # out of order or repeated: the newer result is already in
        self.cues_seen += 1
        if t_cap > 0 and now >= t_cap:
            # Perception latency, smoothed: where in capture time "now" is.
            lat = (now - t_cap) / 1e9
            self._latency_s += (lat - self._latency_s) * (0.1 if self.cues_seen > 1 else 1.0)
        self._t_capture_ns = max(self._t_capture_ns, t_cap)
        t_s = t_cap / 1e9
        tr = self.mapping.tracking
        w, h = cues.image_size
        aspect = w / h if w > 0 and h > 0 else DEFAULT_ASPECT

        s = self._sample
        s[:] = self._last if self._t_last is not None else self._idle_now(t_s)
        body_conf = 0.0
        pose = cues.pose
        pose_ok = pose.present and pose.landmarks.ndim == 2 and pose.landmarks.shape[0] >= N_POSE \
            and pose.landmarks.shape[1] >= 4
        if pose_ok:
            hx, hy, body_h, body_conf = self._retarget.run(pose.landmarks, aspect, self.mirror,
                                                           tr.min_visibility)
            if body_conf > 0:
                s[S_BONES] = self._retarget.bones
                s[S_ROOT] = self._root(hx, hy, body_h, t_s)
                self._body_seen_s = now_s
        expr = cues.expression
        expr_ok = (cues.expression_present and expr.ndim == 1 and expr.shape[0] >= len(FACE_FEATURES)
                   and bool(np.isfinite(expr).all()))
        if expr_ok:
            head_angles(expr, self.mirror, s[S_HEAD])
            face_params(expr, self.mirror, s[S_FACE])
            self._face_seen_s = now_s
            if self._expr_buf is None or self._expr_buf.shape != expr.shape:
                self._expr_buf = np.zeros_like(expr, dtype=np.float32)
            self._expr_buf[:] = expr
            self._expr = self._expr_buf
        else:
            self._expr = None

        self._prev, self._last = self._last, self._prev
        self._last[:] = s
        if self._t_last is None:
            self._prev[:] = s
        self._t_prev, self._t_last = (self._t_last if self._t_last is not None else t_s), t_s

        v = cues.voice
        if v.present:
            self._voice = v
            self._voice_t_s = now_s
        self.emotion.push_loudness(v, v.speaking_prob)

        # Gestures and keywords become events on the same lane as hotkeys.
        for g in self.gestures.push(t_s, pose.landmarks if pose_ok else None, aspect,
                                    expr if expr_ok else None):
            self.gesture_log.append((g, t_s))
            spec = self.mapping.gestures.trigger_for(g)
            if spec is not None:
                self._queue_spec(spec, EventSource.GESTURE, now)
        # One utterance can carry several words, decoded together: apply them in spoken order.
        hits = cues.keywords if len(cues.keywords) < 2 else sorted(cues.keywords, key=lambda k: k.t_ns)
        for hit in hits:
            word = hit.word.lower()
            spec = self.mapping.keywords.get(word)
            # Perception may report one utterance in several cues: one trigger per word a second.
            if spec is None or hit.t_ns - self._keyword_seen.get(word, -(1 << 62)) < KEYWORD_REFRACTORY_NS:
                continue
            self._keyword_seen[word] = hit.t_ns
            self._queue_spec(spec, EventSource.VOICE, now)

    def _root(self, hx: float, hy: float, body_h: float, t_s: float) -> np.ndarray:
        """Hips offset from their slowly adapting home position, in body heights, and scale,
        bounded by the framing mode (see default_mapping.toml [tracking] framing): the offset is
        compressed smoothly (tanh) into +-sway (centre) or +-follow_range (follow), the scale into
        1 +- scale_range, so a person crossing the picture or leaning in never carries the
        character off its canvas or doubles its size."""
        if self._home is None:
            self._home = np.array([hx, hy, body_h], np.float64)
        else:
            dt = max(0.0, t_s - (self._t_last or t_s))
            self._home += (np.array([hx, hy, body_h]) - self._home) * min(1.0, dt / BASELINE_TAU_S)
        x = (hx - self._home[0]) / self._home[2]
        y = (hy - self._home[1]) / self._home[2]
        scale = body_h / self._home[2]
        tr = self.mapping.tracking
        reach = {"centre": tr.sway, "follow": tr.follow_range}.get(tr.framing, 1.0)
        x, y = _soft_limit(x, reach), _soft_limit(y, reach)
        scale = 1.0 + _soft_limit(scale - 1.0, tr.scale_range)
        return np.array([-x if self.mirror else x, y, scale], np.float32)

    def _queue_spec(self, spec: TriggerSpec, source: EventSource, t_ns: int,
                    intensity: float = 1.0) -> None:
        for ev in self._events_for(spec, source, t_ns, intensity):
            self._enqueue(ev)

    def _events_for(self, spec: TriggerSpec, source: EventSource, t_ns: int = 0,
                    intensity: float = 1.0) -> list[ControlEvent]:
        hold = spec.hold_s if spec.hold_s is not None else self.mapping.emotion.hold_s
        out = []
        if spec.action is not None:
            out.append(ControlEvent(ControlKind.ACTION, spec.action, source, spec.mode, hold,
                                    spec.intensity * intensity, t_ns))
        if spec.emotion is not None:
            out.append(ControlEvent(ControlKind.EMOTION, spec.emotion, source, spec.mode, hold,
                                    spec.intensity * intensity, t_ns))
        return out

    def _enqueue(self, ev: ControlEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append(ev)

    def push_event(self, ev: ControlEvent) -> None:
        """A control event on the priority lane; the very next tick reflects it. Unknown emotion
        or action names raise UserError (the caller's mistake). Thread-safe."""
        if ev.kind is ControlKind.EMOTION and self.emotion.index(ev.name) is None:
            raise UserError(f"unknown emotion {ev.name!r} (known: {', '.join(self.emotions)})")
        if ev.kind is ControlKind.ACTION and ev.name not in self._action_names:
            raise UserError(f"unknown action {ev.name!r} (known: {', '.join(self._action_names)})")
        if not np.isfinite(ev.hold_s) or ev.hold_s <= 0 or ev.hold_s > 3600:
            raise UserError(f"hold_s must be between 0 and 3600 seconds (got {ev.hold_s})")
        if not np.isfinite(ev.intensity) or not 0.0 <= ev.intensity <= 1.0:
            raise UserError(f"intensity must be between 0 and 1 (got {ev.intensity})")
        with self._lock:
            self._enqueue(ev)

    def hotkey(self, name: str) -> ControlEvent | None:
        """The event a hotkey name stands for: a key of the mapping's [hotkeys] (e.g. "F2"), or
        "liveavatar.emotion.<emotion>" (hold for the mapping's `emotion.hold_s`) /
        "liveavatar.action.<action>" (looping actions toggle, others play once). A hotkey that sets both an
        action and an emotion yields the action here; `hotkey_events` gives both."""
        evs = self.hotkey_events(name)
        return evs[0] if evs else None

    def hotkey_events(self, name: str) -> list[ControlEvent]:
        hotkeys = self.mapping.hotkeys
        spec = hotkeys.get(name)
        if spec is None:
            folded = {k.lower(): v for k, v in hotkeys.items()}
            spec = folded.get(name.lower())
        if spec is not None:
            return self._events_for(spec, EventSource.HOTKEY)
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "liveavatar":
            if parts[1] == "emotion" and self.emotion.index(parts[2]) is not None:
                return [ControlEvent(ControlKind.EMOTION, parts[2], EventSource.HOTKEY,
                                     TriggerMode.HOLD, self.mapping.emotion.hold_s)]
            if parts[1] == "action" and parts[2] in self._action_names[1:]:
                # A looping action (dance) runs until pressed again; others play once.
                clip = self.library.clips.get(parts[2])
                loop = clip.loop if clip is not None else self.mapping.action_spec(parts[2]).loop
                return [ControlEvent(ControlKind.ACTION, parts[2], EventSource.HOTKEY,
                                     TriggerMode.TOGGLE if loop else TriggerMode.MOMENTARY)]
        return []

    def set_mirror(self, mirror: bool) -> None:
        with self._lock:
            if bool(mirror) != self.mirror:
                self.mirror = bool(mirror)
                self._home = None
                # Older samples were retargeted with the other handedness: keep only the newest
                # once it is re-made, i.e. hold until the next cues arrive.
                self._prev[:] = self._last

    # -- hot reload -------------------------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Re-read `mapping_path` if it changed. A bad file keeps the old mapping and logs the
        one-line error. Returns True when a new mapping was applied."""
        st = self._stat()
        if st is None or st == self._mtime:
            return False
        self._mtime = st
        try:
            mapping = load_mapping(self.mapping_path, actions=self._action_names)
        except ConfigError as e:
            log.error("mapping not reloaded, keeping the previous one: %s", e)
            self.last_reload_error = str(e)
            return False
        with self._lock:
            self._apply_mapping(mapping)
        self.last_reload_error = None
        log.info("mapping reloaded from %s", self.mapping_path)
        return True

    def _apply_mapping(self, mapping: Mapping) -> None:
        old = self.mapping
        self.mapping = mapping
        if mapping.emotion.names != old.emotion.names:
            self.emotion = EmotionEngine(mapping)
        else:
            self.emotion.mapping = mapping
        self.action.mapping = mapping
        self.gestures.window_s = mapping.gestures.window_s
        self.gestures.cooldown_s = mapping.gestures.cooldown_s
        if mapping.tracking.mirror != old.tracking.mirror:
            self.mirror = mapping.tracking.mirror
            self._home = None

    # -- output -----------------------------------------------------------------------------

    def _idle_now(self, t_s: float) -> np.ndarray:
        i = self._idle
        idle_pose(t_s, i[S_BONES], i[S_ROOT], i[S_HEAD], i[S_FACE])
        return i

    def _apply_event(self, ev: ControlEvent, t_s: float) -> None:
        # The event happened between the previous tick and this one: count it from there, so the
        # very next tick already shows it partly blended in.
        start = t_s - self.period_s
        intensity = _unit(ev.intensity)
        if ev.kind is ControlKind.EMOTION:
            if self.emotion.index(ev.name) is not None:
                self.emotion.trigger(ev.name, ev.mode, ev.hold_s, intensity, ev.source, start)
        elif ev.kind is ControlKind.ACTION:
            if ev.name == "none":
                self.action.stop(t_s)
            elif ev.name in ACTIONS or ev.name in self.library.clips:
                self.action.trigger(ev.name, ev.mode, ev.hold_s, intensity, ev.source, start)
        elif ev.kind is ControlKind.CALIBRATE:
            self._home = None   # the current position becomes the new home

    def _drain_events(self, t_s: float) -> None:
        while self._events:
            self._apply_event(self._events.popleft(), t_s)

    def tick(self, t_ns: int | None = None) -> Conditioning:
        """The conditioning for the output frame at `t_ns` (default: now)."""
        if t_ns is None:
            t_ns = self.clock.now_ns()
        t_s = t_ns / 1e9
        if t_s >= self._next_reload_check:
            self._next_reload_check = t_s + RELOAD_CHECK_S
            if self.mapping_path is not None:
                self.reload_if_changed()
            if self.library.refresh():      # an action imported / recorded / removed meanwhile
                with self._lock:
                    self._sync_library()
        with self._lock:
            return self._tick(t_ns, t_s)

    def _tick(self, t_ns: int, t_s: float) -> Conditioning:
        dt = 0.0 if self._last_tick_s is None else min(max(t_s - self._last_tick_s, 0.0), 0.5)
        self._last_tick_s = t_s
        self._drain_events(t_s)
        tr = self.mapping.tracking

        idle = self._idle_now(t_s)
        live = self._live
        if self._t_last is None:
            live[:] = idle
        else:
            # Where in capture time this tick looks.
            tau = t_s - self._latency_s - tr.interpolation_delay_ms / 1e3
            t_last = self._t_last
            t_prev = t_last if self._t_prev is None else self._t_prev
            span = t_last - t_prev
            if tau >= t_last:
                ahead = min(tau - t_last, tr.max_extrapolation_ms / 1e3)
                u = 1.0 + ahead / span if 0 < span < 0.5 else 1.0
            elif tau <= t_prev or span <= 0:
                u = 0.0 if tau <= t_prev else 1.0
            else:
                u = (tau - t_prev) / span
            _lerp_sample(self._prev, self._last, u, live)
            if tr.smoothing_s > 0 and self._smooth_init:
                a = 1.0 - np.exp(-dt / tr.smoothing_s) if dt > 0 else 1.0
                _lerp_sample(self._smooth, live, a, self._smooth)
                self._smooth[_UNSMOOTHED] = live[_UNSMOOTHED]
            else:
                self._smooth[:] = live
                self._smooth_init = True
            live = self._smooth

        # Presence eases in and out, so losing the user drifts into idle instead of snapping;
        # being found again eases in faster, since every frame of the ease is a frame that does
        # not follow the person (basketball: 49 of 140 frames, most of the limb-angle error).
        up, down = dt / tr.appear_blend_s, dt / tr.idle_blend_s
        # A short detection dropout (a frame or two) holds the last pose rather than idling.
        body_target = 1.0 if t_s - self._body_seen_s < tr.lost_after_s else 0.0
        face_target = 1.0 if t_s - self._face_seen_s < tr.lost_after_s else 0.0
        if self._t_last is None:
            body_target = face_target = 0.0
        self.body_present = _unit(self.body_present + min(max(body_target - self.body_present, -down), up))
        self.face_present = _unit(self.face_present + min(max(face_target - self.face_present, -down), up))

        out = self._out
        out[:] = idle
        body, head = slice(0, S_HEAD.start), slice(S_HEAD.start, SAMPLE)
        _lerp_sample(idle[body], live[body], self.body_present, out[body], _ANGLES[body])
        _lerp_sample(idle[head], live[head], self.face_present, out[head], _ANGLES[head])

        # Voice: speaking and visemes follow the newest voice features, fading when audio stops.
        voice = self._voice
        voice_live = voice.present and t_s - self._voice_t_s < tr.lost_after_s
        speak_target = _unit(voice.speaking_prob) if voice_live else 0.0
        k = 1.0 - np.exp(-dt / (0.03 if speak_target > self._speaking else 0.15)) if dt > 0 else 0.0
        self._speaking += (speak_target - self._speaking) * k
        vis = self._visemes
        vis_target = voice.visemes if voice_live and voice.visemes.shape == vis.shape else None
        kv = 1.0 - np.exp(-dt / 0.04) if dt > 0 else 0.0
        if vis_target is not None and np.isfinite(vis_target).all():
            vis += (np.clip(vis_target, 0, None) - vis) * kv
        else:
            vis *= 1.0 - kv
            vis[0] += kv
        vis_sum = float(vis.sum())
        if not np.isfinite(vis_sum) or vis_sum <= 1e-6:
            vis[:] = 0.0
            vis[0] = 1.0
        else:
            vis /= vis_sum
        # Lip sync without a tracked face: open the mouth from the visemes.
        face = out[S_FACE]
        mouth_from_voice = (1.0 - vis[0]) * 0.7
        face[_MOUTH_OPEN] += (1.0 - self.face_present) * (mouth_from_voice - face[_MOUTH_OPEN])
        vis = self._blend_face_visemes(face, vis)

        emo, intensity = self.emotion.update(t_s, dt, self._expr, self.face_present, voice,
                                             self._speaking)
        self.action.update(t_s)
        self._play_clip(out)
        self.seq += 1
        cond = self._build(t_ns, out, vis, emo, intensity)
        if self._take is not None:          # recording: the pose as sent (finite, clamped)
            self._take.add(t_s, out[:N_CH])
            if self._take.done:
                self._take = None
        return cond

    def _play_clip(self, out: np.ndarray) -> None:
        """Blend a playing library clip over bones and root, by its part mask, eased in/out
        (head, face and voice are untouched: tracking and lip sync continue)."""
        w = self.action.weight
        clip = self.library.clips.get(self.action.name) if w > 0.0 else None
        if clip is None:
            self._clip_ease = 0.0
            return
        e = w * w * (3.0 - 2.0 * w)
        pose = clip.sample(self.action.phase, self._clip_pose)
        seg = out[:N_CH]
        d = np.subtract(pose, seg, out=self._clip_delta)
        d[:NB] = wrap_angle(d[:NB])
        d *= clip.mask_f
        d *= e
        seg += d
        self._clip_ease = max(e, 1e-6)

    def _blend_face_visemes(self, face: np.ndarray, voice_vis: np.ndarray) -> np.ndarray:
        """The mouth shape: the voice's visemes while speaking, the face's own otherwise (pursed
        lips round to U/O, stretched ones flat to I/E, an open jaw A), blended by how sure the
        voice is of speech; so a silent open mouth opens and speech still lip-syncs."""
        w = self.face_present
        out = self._vis_out
        if w <= 0.0:
            out[:] = voice_vis
            return out
        opening = _unit(face[_MOUTH_OPEN])
        width = _unit(face[_MOUTH_WIDTH])
        purse = _unit((0.4 - width) / 0.3)
        stretch = _unit((width - 0.6) / 0.3)
        # Pursed lips with a gap between them read as a small round U/O; pursed lips that are
        # closed stay closed (a generator reads 1 - rest as a jaw drop): a pout's opening of
        # 0.05 (lips touching, d9) drew an open "o" at 0.19.
        amount = max(opening, 0.3 * purse * _unit((opening - 0.04) / 0.06))
        wide_open = _unit(opening / 0.5)
        parted = _unit(opening / 0.12)
        fv = self._vis_face
        # Shapes: stretched lips barely apart are I (a grimace, teeth together); once they part
        # the opening is A, which generators widen by mouth_width: the speech shapes I and E are
        # drawn nearly shut, and cross-fading them in read as a closed mouth on a wide-open smile
        # (nova: an open smile with 40 % E measured 0.02 instead of A's 0.06). No E from the face.
        fv[1] = max(0.0, 1.0 - purse - stretch) + stretch * parted            # A
        fv[2] = stretch * (1.0 - parted)                                      # I
        fv[3] = purse * (1.0 - wide_open)                                     # U
        fv[4] = 0.0                                                           # E
        fv[5] = purse * wide_open                                             # O
        fv[1:] *= amount / max(float(fv[1:].sum()), 1e-6)
        fv[0] = 1.0 - amount
        speech = self._speaking
        out[:] = speech * voice_vis + (1.0 - speech) * fv
        out[:] = w * out + (1.0 - w) * voice_vis
        return out

    def _build(self, t_ns: int, out: np.ndarray, vis: np.ndarray, emo: np.ndarray,
               intensity: float) -> Conditioning:
        bad = ~np.isfinite(out)
        if bad.any():                      # never pass NaN on: fall back to the idle pose there
            out[bad] = self._idle[bad]
        np.clip(out, _LOW, _HIGH, out=out)
        out[S_BONES] = wrap_angle(out[S_BONES])
        emotion = emo.astype(np.float32)   # fresh arrays: the Conditioning goes to another thread
        total = float(emotion.sum())
        if not np.isfinite(total) or total <= 1e-6:
            emotion[:] = 0.0
            emotion[0] = 1.0
        else:
            emotion /= total
        return Conditioning(
            seq=self.seq, t_tick_ns=int(t_ns), t_capture_ns=int(self._t_capture_ns),
            bone_angles=out[S_BONES].copy(), root=out[S_ROOT].copy(), head=out[S_HEAD].copy(),
            face=out[S_FACE].copy(), visemes=vis.copy(), emotion=emotion,
            emotion_intensity=_unit(intensity), action=self.action.name,
            action_phase=_unit(self.action.phase),
            # A library clip is already in the bones: generators have nothing left to blend, and
            # must show those bones even with nobody tracked.
            action_weight=0.0 if self._clip_ease > 0 else _unit(self.action.weight),
            speaking=_unit(self._speaking),
            body_present=_unit(max(self.body_present, self._clip_ease)),
            face_present=_unit(self.face_present))

    # -- introspection ----------------------------------------------------------------------

    def state(self) -> dict:
        """What the conditioner is doing now, JSON-able (for the HTTP API and the studio)."""
        with self._lock:
            t = self._last_tick_s if self._last_tick_s is not None else self.clock.now_ns() / 1e9
            # Events still waiting for the next tick show here already, as that tick will see them.
            self._drain_events(t + self.period_s)
            e = self.mapping.emotion
            names = self.emotion.names
            dist = {n: round(float(w), 4) for n, w in zip(names, self.emotion.output)}
            triggers = [{"emotion": names[tr.emotion], "mode": tr.mode.value,
                         "source": tr.source.value,
                         "strength": round(tr.strength(t, e.decay_s, e.release_s), 4),
                         "remaining_s": (None if (r := tr.remaining_s(t, e.decay_s, e.release_s)) is None
                                         else round(r, 3))}
                        for tr in self.emotion.triggers]
            last = self.gestures.last
            return {
                "emotion": {"dominant": names[self.emotion.dominant], "distribution": dist,
                            "sources": {k: round(v, 4) for k, v in self.emotion.strengths.items()}},
                "triggers": triggers,
                "action": self.action.state(t),
                "gesture": None if last is None else {"name": last[0],
                                                      "age_s": round(max(0.0, t - last[1]), 3)},
                "mirror": self.mirror,
                "body_present": round(self.body_present, 4),
                "face_present": round(self.face_present, 4),
                "speaking": round(self._speaking, 4),
                "latency_ms": round(self._latency_s * 1e3, 2),
                "ticks": self.seq,
                "cues": self.cues_seen,
                "events_dropped": self.events_dropped,
                "mapping": str(self.mapping_path) if self.mapping_path else "default",
                "mapping_error": self.last_reload_error,
            }

