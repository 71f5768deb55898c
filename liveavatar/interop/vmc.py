"""VMC protocol (protocol.vmc.info: OSC over UDP) out of and into a session.

Out (`VmcSender`): each output tick's Conditioning becomes a VMC Performer's frame:
/VMC/Ext/OK, /VMC/Ext/T, /VMC/Ext/Root/Pos, /VMC/Ext/Bone/Pos for the humanoid bones we drive,
/VMC/Ext/Blend/Val with the VRM expression names (plus ARKit's names we have, as an option) and
/VMC/Ext/Blend/Apply, as one OSC bundle or as single messages (some receivers take no bundles).
The render thread only copies the small arrays into a latest-wins slot; a sender thread builds
and sends, so a slow or absent receiver never holds up rendering.

In (`VmcReceiver`): a VMC stream from another tracker (a phone app, VSeeFace as Performer)
drives a session instead of MediaPipe. Datagrams arrive on an asyncio endpoint that only queues
the bytes (bounded, oldest dropped and counted); a parser thread turns each complete frame
(at /VMC/Ext/Blend/Apply, or at the end of a bundle) into the Cues a camera would have given:
pose landmarks placed by the received bone rotations, face features from the blendshapes and the
head bone, and the tracker's A/I/U/E/O as lip-sync visemes. Emotions, hotkeys and actions still
fuse on top in the conditioner. When the stream stops, no more Cues come and the avatar idles.

Coordinates: Unity's, as VMC uses them (left-handed, y up); the avatar faces +z, so its left
is -x and a camera in front sees it mirrored. Bone rotations are local (relative to the parent
bone) and, since our conditioning is in the image plane, turn about the avatar's forward axis,
except the head, which also turns and nods.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket, ParseError

from liveavatar.errors import UserError
from liveavatar.runtime import LatestSlot
from liveavatar.types import BONE_INDEX, FACE_FEATURES, FF, FP, VISEMES, Cues, Part, VoiceFeatures

log = logging.getLogger("liveavatar.interop.vmc")

#: VRM 0.x preset expression names.
VRM_BLENDSHAPES = ("Blink_L", "Blink_R", "A", "I", "U", "E", "O", "Joy", "Angry", "Sorrow", "Fun", "Surprised")
#: Our emotion -> VRM preset (what is not here is not sent: shy has no preset).
EMOTION_TO_VRM = {"happy": "Joy", "angry": "Angry", "sad": "Sorrow", "excited": "Fun", "surprised": "Surprised"}
#: ARKit's 52 names that our face parameters can fill.
ARKIT_BLENDSHAPES = (
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "browDownLeft", "browDownRight",
)

# Humanoid bones we send, with their parent (for local rotations), T-pose direction in the
# avatar's frame (x, y) and a typical local offset from the parent, metres.
_BONES: tuple[tuple[str, str | None, tuple[float, float], tuple[float, float, float]], ...] = (
    ("Hips", None, (0.0, 1.0), (0.0, 0.0, 0.0)),
    ("Spine", "Hips", (0.0, 1.0), (0.0, 0.1, 0.0)),
    ("Chest", "Spine", (0.0, 1.0), (0.0, 0.12, 0.0)),
    ("UpperChest", "Chest", (0.0, 1.0), (0.0, 0.12, 0.0)),
    ("Neck", "UpperChest", (0.0, 1.0), (0.0, 0.12, 0.0)),
    ("Head", "Neck", (0.0, 1.0), (0.0, 0.08, 0.0)),
    ("LeftUpperArm", "UpperChest", (-1.0, 0.0), (-0.18, 0.08, 0.0)),
    ("LeftLowerArm", "LeftUpperArm", (-1.0, 0.0), (-0.26, 0.0, 0.0)),
    ("RightUpperArm", "UpperChest", (1.0, 0.0), (0.18, 0.08, 0.0)),
    ("RightLowerArm", "RightUpperArm", (1.0, 0.0), (0.26, 0.0, 0.0)),
    ("LeftUpperLeg", "Hips", (0.0, -1.0), (-0.09, -0.05, 0.0)),
    ("LeftLowerLeg", "LeftUpperLeg", (0.0, -1.0), (0.0, -0.42, 0.0)),
    ("RightUpperLeg", "Hips", (0.0, -1.0), (0.09, -0.05, 0.0)),
    ("RightLowerLeg", "RightUpperLeg", (0.0, -1.0), (0.0, -0.42, 0.0)),
)
_BONE_OF = {name: (parent, rest, offset) for name, parent, rest, offset in _BONES}
# Our bones (Conditioning.bone_angles, character sides) -> the humanoid bone they set.
_OURS = {"spine": "Spine", "neck": "Neck", "upper_arm_l": "LeftUpperArm", "lower_arm_l": "LeftLowerArm",
         "upper_arm_r": "RightUpperArm", "lower_arm_r": "RightLowerArm", "upper_leg_l": "LeftUpperLeg",
         "lower_leg_l": "LeftLowerLeg", "upper_leg_r": "RightUpperLeg", "lower_leg_r": "RightLowerLeg"}
BODY_HEIGHT_M = 1.6


def parse_host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{option} {value!r}: use HOST:PORT (e.g. 127.0.0.1:39539)")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------
# Geometry: our image-plane angles <-> the avatar's frame
# ---------------------------------------------------------------------------------------------

def image_angle_to_avatar(a: float) -> float:
    """A bone angle in the character's image (atan2(dx, dy), y down) -> the direction's angle
    in the avatar's frame seen from the front (x to the avatar's left is -x, y up)."""
    return math.atan2(-math.cos(a), -math.sin(a))


def avatar_to_image_angle(x: float, y: float) -> float:
    return math.atan2(-x, -y)


def quat_z(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def quat_mul(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def quat_rotate(q: Sequence[float], v: Sequence[float]) -> tuple[float, float, float]:
    x, y, z, w = q
    vx, vy, vz = v
    # v + 2 w (q x v) + 2 q x (q x v)
    cx, cy, cz = y * vz - z * vy, z * vx - x * vz, x * vy - y * vx
    ccx, ccy, ccz = y * cz - z * cy, z * cx - x * cz, x * cy - y * cx
    return (vx + 2 * (w * cx + ccx), vy + 2 * (w * cy + ccy), vz + 2 * (w * cz + ccz))


def head_quat(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """Our head (yaw + = face to the image's right = the avatar's left, pitch + = looks down, roll
    + = top to the image's left = the avatar's right) as Unity's Euler order (z, then x, then y)."""
    qy = (0.0, math.sin(-yaw / 2), 0.0, math.cos(-yaw / 2))
    qx = (math.sin(pitch / 2), 0.0, 0.0, math.cos(pitch / 2))
    qz = quat_z(-roll)
    return quat_mul(qy, quat_mul(qx, qz))


def head_angles_from_quat(q: Sequence[float]) -> tuple[float, float, float]:
    """Inverse of head_quat (yaw, pitch, roll in our convention)."""
    x, y, z, w = q
    # Unity ZXY Euler: pitch = asin(-m12), yaw = atan2(m02, m22), roll = atan2(m10, m11)
    m12 = 2 * (y * z - w * x)
    pitch = math.asin(max(-1.0, min(1.0, -m12)))
    yaw_u = math.atan2(2 * (x * z + w * y), 1 - 2 * (x * x + y * y))
    roll_u = math.atan2(2 * (x * y + w * z), 1 - 2 * (x * x + z * z))
    return -yaw_u, pitch, -roll_u


# ---------------------------------------------------------------------------------------------
# Out: Conditioning -> VMC
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class VmcFrame:
    """What one tick sends: copied on the render thread (small), used on the sender thread."""
    t_s: float
    bone_angles: np.ndarray
    root: np.ndarray
    head: np.ndarray
    face: np.ndarray
    visemes: np.ndarray
    emotion: dict[str, float]
    tracking: bool


def frame_from_conditioning(cond: Any, emotions: Sequence[str], t_s: float) -> VmcFrame:
    emo = {name: float(cond.emotion[i]) for i, name in enumerate(emotions) if name in EMOTION_TO_VRM
           and i < len(cond.emotion)}
    return VmcFrame(t_s, cond.bone_angles.copy(), cond.root.copy(), cond.head.copy(), cond.face.copy(),
                    cond.visemes.copy(), emo, float(cond.body_present) > 0.5)


def vmc_bones(frame: VmcFrame) -> list[tuple[str, tuple[float, float, float], tuple[float, float, float, float]]]:
    """(humanoid bone, local position, local rotation) for every bone we drive."""
    world: dict[str, float] = {"Hips": 0.0}   # world rotation about the forward axis
    local: dict[str, tuple[float, float, float, float]] = {}
    for ours, bone in _OURS.items():
        parent, rest, _ = _BONE_OF[bone]
        phi = image_angle_to_avatar(float(frame.bone_angles[BONE_INDEX[ours]])) - math.atan2(rest[1], rest[0])
        world[bone] = phi
    # Chest and UpperChest follow the spine; the arms hang from UpperChest.
    world["Chest"] = world["UpperChest"] = world["Spine"]
    out = []
    for name, parent, _, offset in _BONES:
        if name == "Head":
            q = head_quat(*(float(v) for v in frame.head))
        elif name in ("Chest", "UpperChest", "Hips"):
            q = (0.0, 0.0, 0.0, 1.0)
        else:
            q = quat_z(_wrap(world[name] - world[parent or "Hips"]))
        local[name] = q
        out.append((name, offset, q))
    return out


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


def vowels(frame_visemes: np.ndarray, mouth_open: float) -> np.ndarray:
    """A, I, U, E, O weights: the voice's visemes, opened as wide as the camera's mouth when
    that is wider; the camera's mouth alone (as A) when nobody speaks."""
    v = np.clip(frame_visemes[1:6].astype(np.float64), 0.0, 1.0)
    peak = float(v.max())
    if peak < 1e-3:
        v = np.zeros(5)
        v[0] = mouth_open
        return v
    return v * (max(peak, mouth_open) / peak)


def vmc_blendshapes(frame: VmcFrame, arkit: bool = False) -> list[tuple[str, float]]:
    f = frame.face
    mouth_open = float(f[FP["mouth_open"]])
    a, i, u, e, o = vowels(frame.visemes, mouth_open)
    out = [("Blink_L", float(f[FP["blink_left"]])), ("Blink_R", float(f[FP["blink_right"]])),
           ("A", a), ("I", i), ("U", u), ("E", e), ("O", o)]
    sent = {v: 0.0 for v in ("Joy", "Angry", "Sorrow", "Fun", "Surprised")}
    for name, w in frame.emotion.items():
        sent[EMOTION_TO_VRM[name]] = w
    out += list(sent.items())
    if arkit:
        gx, gy = float(f[FP["gaze_x"]]), float(f[FP["gaze_y"]])
        smile, width = float(f[FP["smile"]]), float(f[FP["mouth_width"]])
        bl, br, furrow = float(f[FP["brow_raise_left"]]), float(f[FP["brow_raise_right"]]), float(f[FP["brow_furrow"]])
        # Gaze in image directions: + x = the image's right = the avatar's left.
        look_left, look_right = max(0.0, gx), max(0.0, -gx)
        out += [("eyeBlinkLeft", float(f[FP["blink_left"]])), ("eyeBlinkRight", float(f[FP["blink_right"]])),
                ("eyeLookUpLeft", max(0.0, -gy)), ("eyeLookUpRight", max(0.0, -gy)),
                ("eyeLookDownLeft", max(0.0, gy)), ("eyeLookDownRight", max(0.0, gy)),
                ("eyeLookInLeft", look_right), ("eyeLookInRight", look_left),
                ("eyeLookOutLeft", look_left), ("eyeLookOutRight", look_right),
                ("jawOpen", mouth_open), ("mouthClose", 0.0), ("mouthFunnel", float(o)), ("mouthPucker", float(u)),
                ("mouthSmileLeft", smile), ("mouthSmileRight", smile),
                ("mouthStretchLeft", max(0.0, 2 * width - 1)), ("mouthStretchRight", max(0.0, 2 * width - 1)),
                ("browInnerUp", 0.5 * (bl + br)), ("browOuterUpLeft", bl), ("browOuterUpRight", br),
                ("browDownLeft", furrow), ("browDownRight", furrow)]
    return [(n, float(min(1.0, max(0.0, v)))) for n, v in out]


def _osc_string(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\0" * (4 - len(raw) % 4)


def osc_message(address: str, *args: str | int | float) -> bytes:
    """One OSC message (strings, int32, float32). Written with struct: python-osc's builder
    took ~100 us a message, 6.7 ms a frame with the ARKit names; this takes a few us."""
    tags = ","
    payload = []
    for arg in args:
        if isinstance(arg, str):
            tags += "s"
            payload.append(_osc_string(arg))
        elif isinstance(arg, int):
            tags += "i"
            payload.append(struct.pack(">i", arg))
        else:
            tags += "f"
            payload.append(struct.pack(">f", arg))
    return _osc_string(address) + _osc_string(tags) + b"".join(payload)


_BUNDLE_HEAD = _osc_string("#bundle") + struct.pack(">Q", 1)  # time tag 1: "immediately"


def osc_bundle(messages: Sequence[bytes]) -> bytes:
    return _BUNDLE_HEAD + b"".join(struct.pack(">i", len(m)) + m for m in messages)


def vmc_messages(frame: VmcFrame, arkit: bool = False) -> list[bytes]:
    """One Performer frame, in the order receivers expect (Apply last)."""
    msgs = [osc_message("/VMC/Ext/OK", 1, 3, 0, 1 if frame.tracking else 0), osc_message("/VMC/Ext/T", frame.t_s)]
    rx, ry, scale = (float(v) for v in frame.root)
    # Root: x + = the image's right = the avatar's left (-x); y + = down.
    msgs.append(osc_message("/VMC/Ext/Root/Pos", "root", -rx * BODY_HEIGHT_M, -ry * BODY_HEIGHT_M, 0.0,
                         0.0, 0.0, 0.0, 1.0))
    for name, (px, py, pz), (qx, qy, qz, qw) in vmc_bones(frame):
        msgs.append(osc_message("/VMC/Ext/Bone/Pos", name, px, py, pz, qx, qy, qz, qw))
    for name, value in vmc_blendshapes(frame, arkit):
        msgs.append(osc_message("/VMC/Ext/Blend/Val", name, value))
    msgs.append(osc_message("/VMC/Ext/Blend/Apply"))
    return msgs


class VmcSender:
    """Sends a session's conditioning to a VMC receiver at the output rate."""

    def __init__(self, host: str, port: int, bundle: bool = True, arkit: bool = False,
                 emotions: Callable[[], Sequence[str]] = lambda: ()) -> None:
        self.addr = (host, port)
        self.bundle, self.arkit = bundle, arkit
        self._emotions = emotions
        self._slot: LatestSlot[VmcFrame] = LatestSlot()
        self._t0 = time.monotonic()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.frames_sent = 0
        self.send_errors = 0
        self.offer_errors = 0
        self.build_us: collections.deque[float] = collections.deque(maxlen=600)  # build + send, per frame

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def start(self) -> VmcSender:
        try:
            family = socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            self._sock.connect(self.addr)
        except OSError as e:
            raise UserError(f"--vmc-out {self.addr[0]}:{self.addr[1]}: {e.strerror or e}") from None
        self._thread = threading.Thread(target=self._run, name="vmc-out", daemon=True)
        self._thread.start()
        return self

    def offer(self, cond: Any) -> None:
        """Render thread: hand over this tick (copies ~60 floats; never waits, never raises: a
        VMC problem must not cost the avatar a frame)."""
        try:
            self._slot.put(frame_from_conditioning(cond, self._emotions(), time.monotonic() - self._t0))
        except Exception:
            self.offer_errors += 1
            if self.offer_errors == 1:
                log.exception("VMC out: this tick could not be sent")

    def encode(self, frame: VmcFrame) -> list[bytes]:
        msgs = vmc_messages(frame, self.arkit)
        return [osc_bundle(msgs)] if self.bundle else msgs

    def _run(self) -> None:
        while True:
            frame = self._slot.take(0.5)
            if frame is None:
                if self._slot.closed:
                    return
                continue
            t0 = time.perf_counter()
            try:
                for p in self.encode(frame):
                    self._sock.send(p)  # type: ignore[union-attr]
                self.frames_sent += 1
            except OSError:  # nobody listening (ICMP refused), buffer full: the next tick retries
                self.send_errors += 1
            self.build_us.append((time.perf_counter() - t0) * 1e6)

    def stop(self) -> None:
        self._slot.close()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()


# ---------------------------------------------------------------------------------------------
# In: VMC -> Cues
# ---------------------------------------------------------------------------------------------

# Where our pose landmarks come from: MediaPipe indices of the joints a camera would report.
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
# Segment lengths in body heights (typical adult proportions).
_TORSO, _NECK, _UPPER_ARM, _LOWER_ARM, _UPPER_LEG, _LOWER_LEG = 0.30, 0.12, 0.17, 0.15, 0.24, 0.24
_HALF_SHOULDERS, _HALF_HIPS = 0.11, 0.06


@dataclass
class VmcState:
    bones: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    blend: dict[str, float] = field(default_factory=dict)
    root: tuple[float, float] = (0.0, 0.0)
    frames: int = 0


def _world_rotations(bones: dict[str, tuple[float, float, float, float]]) -> dict[str, tuple[float, ...]]:
    world: dict[str, tuple[float, ...]] = {}
    chain = {"Hips": None, "Spine": "Hips", "Chest": "Spine", "UpperChest": "Chest", "Neck": "UpperChest",
             "Head": "Neck", "LeftShoulder": "UpperChest", "LeftUpperArm": "LeftShoulder",
             "LeftLowerArm": "LeftUpperArm", "RightShoulder": "UpperChest", "RightUpperArm": "RightShoulder",
             "RightLowerArm": "RightUpperArm", "LeftUpperLeg": "Hips", "LeftLowerLeg": "LeftUpperLeg",
             "RightUpperLeg": "Hips", "RightLowerLeg": "RightUpperLeg"}
    for name, parent in chain.items():  # parents come first in this order
        q = bones.get(name, (0.0, 0.0, 0.0, 1.0))
        world[name] = quat_mul(world[parent], q) if parent else q
    return world


def cues_from_vmc(state: VmcState, seq: int, t_capture_ns: int, mirror: bool) -> Cues:
    """The Cues a camera + MediaPipe would have reported for this VMC pose: the conditioner then
    retargets them as it does a camera's (mirroring included)."""
    world = _world_rotations(state.bones)

    def image_dir(bone: str, rest: tuple[float, float, float]) -> np.ndarray:
        x, y, _ = quat_rotate(world[bone], rest)
        a = avatar_to_image_angle(x, y)
        return np.array([math.sin(a), math.cos(a)])  # image direction, y down

    up, left, right, down = (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)
    rx, ry = state.root
    hips = np.array([0.5 - rx / BODY_HEIGHT_M * 0.5, 0.72 - ry / BODY_HEIGHT_M * 0.5])
    h = 0.5  # body height in frame heights
    spine = image_dir("UpperChest", up)
    across = np.array([spine[1], -spine[0]])  # perpendicular: toward the character's left (image right)
    shoulders = hips + spine * _TORSO * h
    head = shoulders + image_dir("Neck", up) * _NECK * h
    pts: dict[str, np.ndarray] = {
        "hip_l": hips + across * _HALF_HIPS * h, "hip_r": hips - across * _HALF_HIPS * h,
        "shoulder_l": shoulders + across * _HALF_SHOULDERS * h,
        "shoulder_r": shoulders - across * _HALF_SHOULDERS * h, "head": head,
    }
    pts["elbow_l"] = pts["shoulder_l"] + image_dir("LeftUpperArm", left) * _UPPER_ARM * h
    pts["wrist_l"] = pts["elbow_l"] + image_dir("LeftLowerArm", left) * _LOWER_ARM * h
    pts["elbow_r"] = pts["shoulder_r"] + image_dir("RightUpperArm", right) * _UPPER_ARM * h
    pts["wrist_r"] = pts["elbow_r"] + image_dir("RightLowerArm", right) * _LOWER_ARM * h
    pts["knee_l"] = pts["hip_l"] + image_dir("LeftUpperLeg", down) * _UPPER_LEG * h
    pts["ankle_l"] = pts["knee_l"] + image_dir("LeftLowerLeg", down) * _LOWER_LEG * h
    pts["knee_r"] = pts["hip_r"] + image_dir("RightUpperLeg", down) * _UPPER_LEG * h
    pts["ankle_r"] = pts["knee_r"] + image_dir("RightLowerLeg", down) * _LOWER_LEG * h

    # The character's image is what a mirrored camera shows; undo that for a mirroring
    # conditioner: flip x, and the character's left limbs become the subject's right ones.
    index = {"shoulder": (L_SHOULDER, R_SHOULDER), "elbow": (L_ELBOW, R_ELBOW), "wrist": (L_WRIST, R_WRIST),
             "hip": (L_HIP, R_HIP), "knee": (L_KNEE, R_KNEE), "ankle": (L_ANKLE, R_ANKLE)}
    lm = np.zeros((33, 4), np.float32)
    for joint, (li, ri) in index.items():
        for side, idx in (("l", ri if mirror else li), ("r", li if mirror else ri)):
            p = pts[f"{joint}_{side}"]
            lm[idx, :2] = (1.0 - p[0], p[1]) if mirror else p
            lm[idx, 3] = 1.0
    hp = pts["head"]
    for idx in (NOSE, L_EAR, R_EAR):
        lm[idx, :2] = (1.0 - hp[0], hp[1]) if mirror else hp
        lm[idx, 3] = 1.0
    pose = Part(lm, True, 1.0)

    expression, have_face = _expression(state, world, mirror)
    b = state.blend
    vis = np.array([0.0] + [b.get(v, 0.0) for v in ("A", "I", "U", "E", "O")], np.float32)
    talking = float(vis.max())
    vis[0] = max(0.0, 1.0 - float(vis[1:].sum()))
    vis /= max(1e-6, float(vis.sum()))
    voice = VoiceFeatures(speaking_prob=min(1.0, 2 * talking), visemes=vis, present=talking > 0.0)
    return Cues(seq, t_capture_ns, pose, Part.empty(478), Part.empty(21), Part.empty(21), expression,
                have_face, voice, (), (1000, 1000))


def _expression(state: VmcState, world: dict[str, tuple[float, ...]], mirror: bool) -> tuple[np.ndarray, bool]:
    """FACE_FEATURES as perception reports them (camera frame; see conditioning.retarget for the
    signs), from the head bone and VRM / ARKit blendshapes."""
    b = state.blend
    e = np.zeros(len(FACE_FEATURES), np.float32)
    e[FF["mouth_width"]] = 0.5
    yaw, pitch, roll = head_angles_from_quat(state.bones.get("Head", (0.0, 0.0, 0.0, 1.0)))
    # Perception's head angles -> ours: direct (+1, -1, -1), mirrored (-1, -1, +1).
    e[FF["head_yaw"]] = -yaw if mirror else yaw
    e[FF["head_pitch"]] = -pitch
    e[FF["head_roll"]] = roll if mirror else -roll

    def val(*names: str) -> float:
        return max((b.get(n, 0.0) for n in names), default=0.0)

    blink_l, blink_r = val("Blink_L", "eyeBlinkLeft"), val("Blink_R", "eyeBlinkRight")
    brow_l, brow_r = val("browOuterUpLeft", "browInnerUp"), val("browOuterUpRight", "browInnerUp")
    gaze_x = val("eyeLookOutLeft", "eyeLookInRight") - val("eyeLookInLeft", "eyeLookOutRight")
    gaze_y = val("eyeLookDownLeft", "eyeLookDownRight") - val("eyeLookUpLeft", "eyeLookUpRight")
    # Character sides -> the camera's subject (mirroring swaps sides and flips x).
    e[FF["blink_left"]], e[FF["blink_right"]] = (blink_r, blink_l) if mirror else (blink_l, blink_r)
    e[FF["brow_raise_left"]], e[FF["brow_raise_right"]] = (brow_r, brow_l) if mirror else (brow_l, brow_r)
    e[FF["gaze_x"]] = -gaze_x if mirror else gaze_x
    e[FF["gaze_y"]] = -gaze_y                  # perception: up positive
    e[FF["mouth_open"]] = max(val("jawOpen"), *(b.get(v, 0.0) for v in ("A", "I", "U", "E", "O")))
    e[FF["smile"]] = max(val("Joy", "Fun"), 0.5 * (b.get("mouthSmileLeft", 0.0) + b.get("mouthSmileRight", 0.0)))
    e[FF["brow_furrow"]] = max(val("Angry"), 0.5 * (b.get("browDownLeft", 0.0) + b.get("browDownRight", 0.0)))
    stretch = 0.5 * (b.get("mouthStretchLeft", 0.0) + b.get("mouthStretchRight", 0.0))
    e[FF["mouth_width"]] = 0.5 + 0.5 * stretch - 0.3 * max(b.get("U", 0.0), b.get("mouthPucker", 0.0))
    np.clip(e, -1.0, 1.0, out=e)
    return e, bool(b) or "Head" in state.bones


class VmcReceiver(asyncio.DatagramProtocol):
    """`serve --vmc-in PORT`: a VMC stream as a session's source. `deliver(cues)` is called on
    the parser thread for each complete frame (the session puts it where perception would)."""

    def __init__(self, deliver: Callable[[Cues], None], mirror: Callable[[], bool],
                 max_queued: int = 256) -> None:
        self.deliver, self.mirror = deliver, mirror
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=max_queued)
        self._wake = threading.Event()
        self._halt = False
        self.state = VmcState()
        self.datagrams = 0
        self.dropped = 0
        self.bad_packets = 0
        self.frames = 0
        self.last_frame_t = 0.0           # monotonic seconds of the last complete frame
        self.last_arrival_ns = 0          # arrival of the datagram that completed it
        self.transport: asyncio.DatagramTransport | None = None
        self._thread = threading.Thread(target=self._run, name="vmc-in", daemon=True)

    # -- loop side: only queue the bytes -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((data, time.monotonic_ns()))
        self.datagrams += 1
        self._wake.set()

    @property
    def live(self) -> bool:
        return self.frames > 0 and time.monotonic() - self.last_frame_t < 1.0

    # -- parser thread -------------------------------------------------------------------------
    def start_thread(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt = True
        self._wake.set()
        if self.transport is not None:
            self.transport.close()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._halt:
            self._wake.wait(0.25)
            self._wake.clear()
            while self._queue and not self._halt:
                data, t_arrival = self._queue.popleft()
                self.handle_datagram(data, t_arrival)

    def handle_datagram(self, data: bytes, t_arrival_ns: int) -> None:
        try:
            packet = OscPacket(data)
        except ParseError:
            self.bad_packets += 1
            return
        applied = False
        for timed in packet.messages:
            applied |= self._apply(timed.message)
        # A bundle is a whole frame even without Blend/Apply (some senders omit it).
        if applied or (OscBundle.dgram_is_bundle(data) and self.state.bones):
            self._emit(t_arrival_ns)

    def _apply(self, msg: OscMessage) -> bool:
        addr, args = msg.address, msg.params
        try:
            if addr == "/VMC/Ext/Bone/Pos" and len(args) >= 8:
                q = tuple(float(v) for v in args[4:8])
                n = math.sqrt(sum(c * c for c in q))
                if n > 1e-6 and math.isfinite(n):
                    self.state.bones[str(args[0])] = tuple(c / n for c in q)  # type: ignore[assignment]
            elif addr == "/VMC/Ext/Blend/Val" and len(args) >= 2:
                v = float(args[1])
                if math.isfinite(v):
                    self.state.blend[str(args[0])] = min(1.0, max(0.0, v))
            elif addr == "/VMC/Ext/Root/Pos" and len(args) >= 4:
                x, y = float(args[1]), float(args[2])
                if math.isfinite(x) and math.isfinite(y):
                    self.state.root = (-x, -y)  # the avatar's -x is the image's right
            elif addr == "/VMC/Ext/Blend/Apply":
                return True
        except (TypeError, ValueError):
            self.bad_packets += 1
        return False

    def _emit(self, t_arrival_ns: int) -> None:
        self.frames += 1
        self.last_frame_t = time.monotonic()
        self.last_arrival_ns = t_arrival_ns
        try:
            self.deliver(cues_from_vmc(self.state, self.frames, t_arrival_ns, self.mirror()))
        except Exception:  # one odd frame must not stop the stream
            log.exception("VMC frame could not be used")

    def stats(self) -> dict[str, Any]:
        return {"datagrams": self.datagrams, "frames": self.frames, "dropped": self.dropped,
                "bad_packets": self.bad_packets, "live": self.live}


async def open_receiver(port: int, deliver: Callable[[Cues], None], mirror: Callable[[], bool],
                        host: str = "127.0.0.1") -> VmcReceiver:
    loop = asyncio.get_running_loop()
    try:
        _, proto = await loop.create_datagram_endpoint(lambda: VmcReceiver(deliver, mirror),
                                                       local_addr=(host, port))
    except OSError as e:
        raise UserError(f"--vmc-in {port}: cannot listen on UDP {host}:{port} ({e.strerror or e})") from None
    proto.start_thread()
    return proto


__all__ = ["ARKIT_BLENDSHAPES", "VISEMES", "VRM_BLENDSHAPES", "VmcReceiver", "VmcSender", "cues_from_vmc",
           "open_receiver", "parse_host_port", "vmc_blendshapes", "vmc_bones", "vmc_messages"]
