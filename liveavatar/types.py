"""Hot-path data types shared by every stage.

Stages (source, perception, conditioning, generation, sinks) import only this module, the clock
and liveavatar.runtime; never each other. Arrays are numpy, float32 unless noted; there are no
per-frame dicts. Timestamps are `time.monotonic_ns()` values (see liveavatar.clock).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------------------------
# Vocabularies. Index order is part of the contract: arrays below are laid out in these orders.
# ---------------------------------------------------------------------------------------------

#: Landmark counts of the Part arrays in Cues: MediaPipe pose, face mesh with iris, one hand.
N_POSE, N_FACE, N_HAND = 33, 478, 21

#: Sample rate of live voice audio (WebRTC ingest resamples to it; the viewers' Opus voice is sent at it).
VOICE_RATE = 48000

#: Expression features derived from the face mesh, in `Cues.expression` order.
#: Angles are radians (yaw: + = head turned to the subject's left as seen in the image... see
#: perception docs); blink/mouth/smile/brow are 0..1; gaze is -1..1.
FACE_FEATURES: tuple[str, ...] = (
    "head_yaw", "head_pitch", "head_roll",
    "blink_left", "blink_right",
    "gaze_x", "gaze_y",
    "mouth_open", "mouth_width", "smile",
    "brow_raise_left", "brow_raise_right", "brow_furrow",
    # Appended (never reorder): eyes opened wider than at rest (0..1), mouth corners pulled down.
    "eye_wide_left", "eye_wide_right", "frown",
)
FF = {name: i for i, name in enumerate(FACE_FEATURES)}

#: Viseme (mouth shape) classes for lip sync, in `VoiceFeatures.visemes` order.
VISEMES: tuple[str, ...] = ("closed", "A", "I", "U", "E", "O")

#: The default emotion set. A mapping file may extend it; generators must handle unknown extra
#: emotions by ignoring them (their weight goes to neutral).
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "surprised", "excited", "shy")

#: Actions a generator must be able to play (triggered) and gestures perception may recognise.
ACTIONS: tuple[str, ...] = ("none", "dance", "bow", "jump", "wave", "clap", "cheer", "spin", "nod",
                            "head_shake", "point")

#: Character skeleton bones, in `Conditioning.bone_angles` order. Each angle is the bone's
#: direction in the image plane of the *character* (after mirroring), radians, measured as
#: atan2(dx, dy) with x right and y down: 0 = bone points straight down, +pi/2 = points to the
#: image's right, -pi/2 = to the image's left, +-pi = straight up.
BONES: tuple[str, ...] = (
    "spine",                 # hips centre -> shoulders centre (rest: pi, pointing up)
    "neck",                  # shoulders centre -> head centre (rest: pi)
    "upper_arm_l", "lower_arm_l",   # character's left arm (appears on the image's right)
    "upper_arm_r", "lower_arm_r",
    "upper_leg_l", "lower_leg_l",
    "upper_leg_r", "lower_leg_r",
)
BONE_INDEX = {name: i for i, name in enumerate(BONES)}

#: Rest pose for BONES (A-pose-ish: arms down and slightly out, legs straight down).
REST_BONE_ANGLES = np.array(
    [np.pi, np.pi, 0.25, 0.1, -0.25, -0.1, 0.05, 0.0, -0.05, 0.0], dtype=np.float32)

#: Face parameters a generator draws, in `Conditioning.face` order. 0..1 except gaze (-1..1).
#: Sides are the character's own (left eye on the image's right); gaze is in image directions:
#: gaze_x + = looks to the image's right, gaze_y + = looks down. mouth_width 0.5 = neutral.
FACE_PARAMS: tuple[str, ...] = (
    "blink_left", "blink_right", "gaze_x", "gaze_y", "mouth_open", "mouth_width", "smile",
    "brow_raise_left", "brow_raise_right", "brow_furrow",
    # Appended (never reorder; the shipped neural models read only the first 10, see
    # generation/neural/layout.py): eyes wider than at rest (surprise), corners pulled down.
    "eye_wide_left", "eye_wide_right", "frown",
)
FP = {name: i for i, name in enumerate(FACE_PARAMS)}


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class CapturedFrame:
    """One camera frame. `image` is HxWx3 uint8 RGB (sources convert)."""
    image: np.ndarray
    seq: int
    t_capture_ns: int


@dataclass(slots=True)
class AudioChunk:
    """Microphone samples: float32 in -1..1, shape (n,) mono or (n, channels), any rate."""
    samples: np.ndarray
    sample_rate: int
    seq: int
    t_capture_ns: int


# ---------------------------------------------------------------------------------------------
# Perception output
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Part:
    """One tracked body part. `landmarks` are in normalised image coords (x, y in 0..1, z
    relative depth) plus a 4th column of per-landmark visibility/confidence 0..1.
    A lost part keeps its last landmarks (held, decaying confidence) and `present=False`."""
    landmarks: np.ndarray
    present: bool = False
    confidence: float = 0.0

    @classmethod
    def empty(cls, n: int) -> Part:
        return cls(np.zeros((n, 4), np.float32), False, 0.0)


@dataclass(slots=True)
class KeywordHit:
    word: str
    t_ns: int          # monotonic time the word ended
    confidence: float  # 0..1


@dataclass(slots=True)
class VoiceFeatures:
    speaking_prob: float = 0.0      # silero-vad, 0..1
    loudness_dbfs: float = -120.0   # RMS level, dBFS
    pitch_hz: float = 0.0           # F0, 0 when unvoiced
    pitch_dev: float = 0.0          # semitones above (+) / below (-) the user's running baseline
    visemes: np.ndarray = field(default_factory=lambda: np.array([1, 0, 0, 0, 0, 0], np.float32))
    present: bool = False           # audio has been received recently


@dataclass(slots=True)
class Cues:
    """What perception saw at one instant (the capture time of the video frame)."""
    seq: int
    t_capture_ns: int
    pose: Part                      # N_POSE (33) MediaPipe pose landmarks
    face: Part                      # N_FACE (478) face-mesh landmarks (with iris)
    hand_left: Part                 # N_HAND (21) landmarks, the subject's left hand
    hand_right: Part
    expression: np.ndarray          # (len(FACE_FEATURES),) float32, calibrated, smoothed
    expression_present: bool
    voice: VoiceFeatures
    keywords: tuple[KeywordHit, ...] = ()
    image_size: tuple[int, int] = (0, 0)   # (width, height) of the analysed frame


# ---------------------------------------------------------------------------------------------
# Control (priority lane)
# ---------------------------------------------------------------------------------------------

class ControlKind(str, enum.Enum):
    EMOTION = "emotion"
    ACTION = "action"
    CHARACTER = "character"
    CALIBRATE = "calibrate"


class TriggerMode(str, enum.Enum):
    MOMENTARY = "momentary"   # full strength now, decays over the mapping's decay time
    TOGGLE = "toggle"         # on until toggled off (the same event again)
    HOLD = "hold"             # on for `hold_s` seconds, then eases back


class EventSource(str, enum.Enum):
    HOTKEY = "hotkey"
    STUDIO = "studio"
    API = "api"
    VOICE = "voice"
    OBS = "obs"
    GESTURE = "gesture"


@dataclass(slots=True)
class ControlEvent:
    kind: ControlKind
    name: str                 # emotion / action / character name ("" for calibrate)
    source: EventSource = EventSource.API
    mode: TriggerMode = TriggerMode.MOMENTARY
    hold_s: float = 3.0
    intensity: float = 1.0
    t_ns: int = 0


# ---------------------------------------------------------------------------------------------
# Conditioning (one per output tick)
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Conditioning:
    """Everything a generator needs for one output frame, in the character's terms.
    All values are finite and in range (the conditioner guarantees it; generators clamp anyway)."""
    seq: int
    t_tick_ns: int
    t_capture_ns: int                # capture time of the newest input used (0: none yet)
    bone_angles: np.ndarray          # (len(BONES),) radians, see BONES
    root: np.ndarray                 # (3,) x, y offset of the hips in body heights (-1..1), scale (0.5..2)
    #                                  (x + = image right, y + = down; relative to the user's home)
    head: np.ndarray                 # (3,) yaw, pitch, roll radians (clamped to +-0.8), in the
    #                                  image plane: yaw + = face turns to the image's right, pitch
    #                                  + = looks down, roll + = top of the head tilts to the image's
    #                                  left (the bone-angle direction)
    face: np.ndarray                 # (len(FACE_PARAMS),)
    visemes: np.ndarray              # (len(VISEMES),) weights summing to 1
    emotion: np.ndarray              # (len(emotions),) distribution summing to 1
    emotion_intensity: float         # 0..1
    action: str = "none"            # one of ACTIONS
    action_phase: float = 0.0        # 0..1 through the clip
    action_weight: float = 0.0       # 0..1 blend over live tracking
    speaking: float = 0.0            # 0..1
    body_present: float = 0.0        # 0..1: 0 = nobody tracked (idle pose), 1 = live tracking
    face_present: float = 0.0        # 0..1: how much `head` and `face` come from a tracked face
    #                                  (the conditioner already blends its own idle head in; a
    #                                  generator adds no idle head motion of its own over it)

    @classmethod
    def neutral(cls, seq: int = 0, t_tick_ns: int = 0, n_emotions: int = len(EMOTIONS)) -> Conditioning:
        emo = np.zeros(n_emotions, np.float32)
        emo[0] = 1.0
        vis = np.zeros(len(VISEMES), np.float32)
        vis[0] = 1.0
        return cls(seq=seq, t_tick_ns=t_tick_ns, t_capture_ns=0,
                   bone_angles=REST_BONE_ANGLES.copy(),
                   root=np.array([0.0, 0.0, 1.0], np.float32),
                   head=np.zeros(3, np.float32),
                   face=np.zeros(len(FACE_PARAMS), np.float32),
                   visemes=vis, emotion=emo, emotion_intensity=0.0)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class RenderedFrame:
    """One avatar frame: HxWx4 uint8 RGBA, straight (not premultiplied) alpha."""
    rgba: np.ndarray
    seq: int
    t_capture_ns: int
    t_rendered_ns: int
