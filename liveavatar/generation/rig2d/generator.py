"""rig2d: a layered 2D character on a skeleton, rendered with torch on CPU or GPU.

Per batch (all sessions drawing the same character together):
1. Conditionings -> clamped numpy arrays; idle motion, action clips and live tracking blended;
   forward kinematics gives joints and one affine per part (numpy, vectorised over sessions).
2. The face is composed in head space: emotion-weighted eyes/brows/mouths/extras are one matmul
   each; blinks, gaze, brow raise, mouth opening and head turn are small grid_samples.
3. Every body part of every session is sampled in ONE grid_sample from the character's atlas
   into a fixed-size tile (tiles of all parts are flattened into one long row), the head in one
   more from the per-session face canvas; tiles are composited in depth order.
Tiles only cover the part, so cost scales with the character's area, not the canvas.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from liveavatar.errors import UserError
from liveavatar.generation import characters as packs
from liveavatar.generation.batching import render_by_character
from liveavatar.generation.rig2d import motion
from liveavatar.types import BONE_INDEX, EMOTIONS, FACE_PARAMS, FP, VISEMES, Conditioning

log = logging.getLogger(__name__)

N_E, N_V, N_F = len(EMOTIONS), len(VISEMES), len(FACE_PARAMS)
HAPPY, SAD = EMOTIONS.index("happy"), EMOTIONS.index("sad")
JOINT_INDEX = {name: i for i, name in enumerate(packs.JOINTS)}
HEAD_BONE = len(BONE_INDEX)   # pseudo-bone index for parts that turn with the head
ATLAS_BORDER = 3     # transparent px around each part in the atlas; sampling is clamped into it
TILE_ROUND = 2       # tile sides stay even (small batches are split in halves for two cores)
YAW_SHIFT, PITCH_SHIFT = 24.0, 36.0   # face-canvas px the face centre moves at 1 rad of yaw/pitch (Face Mesh
#                                       reads nova's pitch at ~1:1 with 36)
# Brow travel (px) at raise / furrow 1: Face Mesh follows a drawn brow up by about 5 px of nova's
# face canvas; raised further it places the brow by its own prior again (near the eyes).
BROW_RAISE_PX, BROW_FURROW_PX = 4.5, 4.0
LID_FROM = 0.55                        # eye opening below which the closed-lid line fades in
EYE_SHUT = 0.12                        # the opening of a closed eye (a sliver under the lid line)
EYE_WIDE = 0.35                        # extra eye opening at eye_wide 1 (a surprised stare)
MOUTH_MIX_SHARPNESS = 12.0             # power on the emotions' mouth weights (see _face)
GAZE_X, GAZE_Y = 5.0, 3.0              # pupil travel (px) at gaze +-1


# How far (reference px at scale 1) each joint's parts reach beyond it: hair above the head,
# hands past the wrists, feet past the ankles, limb half-widths elsewhere (for _keep_on_canvas).
_JOINT_PAD = np.array([{"head": 58.0, "wrist_l": 44.0, "wrist_r": 44.0, "ankle_l": 24.0, "ankle_r": 24.0,
                        "shoulder_l": 22.0, "shoulder_r": 22.0}.get(j, 18.0) for j in packs.JOINTS], np.float32)


@dataclass
class _Part:
    name: str
    joint: int
    bone: int           # index into BONES, or HEAD_BONE
    pivot: np.ndarray   # (2,) texture px
    centre: np.ndarray  # (2,) texture centre px
    rest: float
    diag: float         # texture diagonal (px)
    slot: np.ndarray    # (2,) texture top-left inside the atlas (body parts)
    is_head: bool
    stretch: bool       # follows the spine length (bow)
    wh: np.ndarray      # (2,) texture width, height


class _Character:
    """A pack turned into device tensors: body atlas, face stacks, rig numbers."""

    def __init__(self, pack: packs.CharacterPack, device: torch.device):
        m = pack.manifest
        self.name = pack.name
        rig = m.rig
        self.ref = float(rig.reference_size)
        self.hips = np.array(rig.hips, np.float32)
        self.body_height = float(rig.body_height)
        self.sw, self.hw = float(rig.shoulder_half_width), float(rig.hip_half_width)
        L = rig.bone_lengths
        self.lengths = L
        parts: list[_Part] = []
        slots, x_cursor, atlas_h = [], 0, 0
        for spec in sorted(m.parts, key=lambda p: p.depth):
            is_head = spec.joint == "head"
            img = pack.head if is_head else pack.part_images[spec.name]
            h, w = img.shape[1:]
            diag = math.hypot(w, h)
            slot = np.array([x_cursor + ATLAS_BORDER, ATLAS_BORDER], np.float32)
            if not is_head:
                slots.append((img, int(slot[0]), int(slot[1])))
                x_cursor += w + 2 * ATLAS_BORDER
                atlas_h = max(atlas_h, h + 2 * ATLAS_BORDER)
            parts.append(_Part(spec.name, JOINT_INDEX[spec.joint],
                               HEAD_BONE if spec.bone == "head" else BONE_INDEX[spec.bone],
                               np.array(spec.pivot, np.float32), np.array([w / 2, h / 2], np.float32),
                               float(spec.rest_angle), diag, slot, is_head, spec.bone == "spine",
                               np.array([w, h], np.float32)))
        self.parts = parts
        self.body_parts = [p for p in parts if not p.is_head]
        atlas = np.zeros((4, max(atlas_h, 1), max(x_cursor, 1)), np.float32)
        for img, x, y in slots:
            atlas[:, y:y + img.shape[1], x:x + img.shape[2]] = img
        self.atlas = torch.from_numpy(atlas)[None].to(device)
        self.atlas_wh = np.array([atlas.shape[2], atlas.shape[1]], np.float32)
        # Per-part tables (P,), so the per-frame affine math is vectorised over parts.
        self.p_bone = np.array([p.bone for p in parts])
        self.p_rest = np.array([p.rest for p in parts], np.float32)
        self.p_head = np.array([p.bone == HEAD_BONE for p in parts])
        self.p_stretch = np.array([p.stretch for p in parts])
        self.p_joint = np.array([p.joint for p in parts])
        self.p_pivot = np.stack([p.pivot for p in parts]).astype(np.float32)
        self.p_centre = np.stack([p.centre for p in parts]).astype(np.float32)
        self.p_wh = np.stack([p.wh for p in parts]).astype(np.float32)
        self.p_norm = np.stack([np.full(2, 2.0 / pack.manifest.face.canvas, np.float32) if p.is_head
                                else 2.0 / self.atlas_wh for p in parts]).astype(np.float32)
        self.p_shift = np.stack([np.zeros(2, np.float32) if p.is_head else p.slot for p in parts]).astype(np.float32)

        f = m.face
        self.F = f.canvas
        self.face_pivot = np.array(f.pivot, np.float32)
        self.eyes_box, self.brows_box, self.mouth_box = f.eyes_box, f.brows_box, f.mouth_box
        ex = [pack.expressions[e] for e in EMOTIONS]

        def stack(arrays: Any) -> Any:
            return torch.from_numpy(np.stack([a.reshape(-1) for a in arrays])).to(device)

        self.head = torch.from_numpy(pack.head).to(device)
        self.pupils = torch.from_numpy(pack.pupils).to(device)
        self.eyes = stack([e.eyes for e in ex])
        self.eye_mask = stack([e.eye_mask for e in ex])
        self.brows = stack([e.brows for e in ex])
        # Closed-eye lid lines, drawn in as an eye shuts (a bare-skin eye reads to Face Mesh as an
        # open eye, or as no face at all), faded by how much of the emotion's eye is drawn open
        # (a happy ^ ^ eye is already closed).
        neutral = pack.expressions["neutral"]
        self.lid_line = torch.from_numpy(_lid_lines(neutral.eyes, neutral.eye_mask)).to(device)
        # how much less of the head turn's shift the brows take than the eyes (see Rig2DGenerator._face)
        turn = parallax_weight(f.canvas, *f.pivot)
        self.brow_lag = (_mean_in_box(turn, neutral.eye_mask[0], f.eyes_box)
                         - _mean_in_box(turn, neutral.brows[3], f.brows_box))
        # How far each emotion's brows are drawn above neutral's (px, + = lower): while a face is
        # tracked the person's raise sets their height, so this offset is taken back out (nova's
        # happy brows sit 3 px up, surprised 6: a smiling person read as raising their brows, and
        # a surprised one's raised brows went past where Face Mesh follows them).
        heights = np.array([_alpha_centre_y(e.brows) for e in ex], np.float32)
        self.brow_dy = heights - heights[0]
        area = np.array([float(e.eye_mask.sum()) for e in ex], np.float32)
        self.eye_area = np.clip(area / max(float(neutral.eye_mask.sum()), 1e-6), 0.0, 1.0)
        self.mouth_closed = stack([e.mouth["closed"] for e in ex])
        # Resting mouths drawn open (nova's excited grin, surprised "o": a dark interior) give way
        # to the neutral one while a face is tracked: the person's own mouth rules then.
        dark = np.array([_dark_share(e.mouth["closed"]) for e in ex], np.float32)
        self.rest_mouth_open = (dark > dark[0] + 0.1).astype(np.float32)
        self.mouth_open = stack([e.mouth[v] for e in ex for v in VISEMES[1:]])   # (E*5, ...)
        # Head + extras per emotion, precomposited: "over" is linear in the emotion weights, so the
        # face base of any emotion mix is one matmul.
        bases = []
        for e in ex:
            base = e.extras_back + pack.head * (1.0 - e.extras_back[3:4])
            bases.append(e.extras_front + base * (1.0 - e.extras_front[3:4]))
        self.face_base = stack(bases)
        # Sampling bounds per body part (atlas-normalised): the part plus half its border, so
        # tile pixels beyond the part land on transparent texels, never on a neighbour.
        lo = np.stack([(p.slot - ATLAS_BORDER / 2) for p in self.body_parts]) * 2 / self.atlas_wh - 1
        hi = np.stack([(p.slot + p.wh + ATLAS_BORDER / 2) for p in self.body_parts]) * 2 / self.atlas_wh - 1
        self.clamp_lo = torch.from_numpy(lo.astype(np.float32)).to(device)
        self.clamp_hi = torch.from_numpy(hi.astype(np.float32)).to(device)


class Rig2DGenerator:
    """The built-in layered 2D generator (see module doc)."""

    name = "rig2d"

    def __init__(self, device: str = "cpu", size: int = 512, default_character: str = "nova"):
        if device not in ("cpu", "cuda"):
            raise UserError(f"rig2d: unknown device {device!r}; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("rig2d: --device cuda asked for, but torch sees no CUDA GPU")
        if not 64 <= int(size) <= 2048:
            raise UserError(f"rig2d: size {size} out of range (64..2048)")
        self.device = device
        self.size = int(size)
        self.default_character = default_character
        self._dev = torch.device(device)
        self._chars: dict[str, _Character] = {}
        self._lock = threading.Lock()          # guards loading; renders read a stable dict
        self._render_lock = threading.Lock()   # scratch buffers are shared: one render at a time
        self._canvas: dict[tuple[int, int], torch.Tensor] = {}
        self._face_grids: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # (face canvas size, pivot) -> parallax weight (F, F): characters differ in both
        self._parallax: dict[tuple[int, float, float], torch.Tensor] = {}
        self._ramp_cache: torch.Tensor | None = None

    # ------------------------------------------------------------------ protocol: setup
    def load(self) -> None:
        self.prepare_character(self.default_character)

    def warmup(self) -> None:
        if not self._chars:
            self.load()
        name = next(iter(self._chars))
        conds = [Conditioning.neutral(seq=i, t_tick_ns=i * 33_000_000) for i in range(2)]
        for n in (1, 2):
            self.render(conds[:n], [name] * n)

    def characters(self) -> list[str]:
        return packs.list_characters()

    def prepare_character(self, name: str) -> None:
        if name in self._chars:
            return
        with self._lock:
            if name in self._chars:
                return
            char = _Character(packs.load_pack(name), self._dev)
            # Publish a new dict: renders in flight keep iterating the old one untouched.
            self._chars = {**self._chars, name: char}

    def reset(self) -> None:
        """rig2d keeps no temporal state between frames (motion is a function of the tick)."""

    def info(self) -> dict:
        return {"generator": self.name, "device": self.device, "size": self.size,
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "characters_loaded": sorted(self._chars), "characters_dir": str(packs.characters_dir())}

    # ------------------------------------------------------------------ protocol: render
    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        return render_by_character(self.name, self.size, conds, characters, lambda: self._chars,
                                   self.prepare_character, self._render_group, self._render_lock)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _gather(conds: Sequence[Conditioning]) -> dict[str, np.ndarray]:
        """Conditionings -> clamped arrays (one row per session). NaN/inf become neutral values."""
        n = len(conds)
        bones = np.empty((n, len(BONE_INDEX)), np.float32)
        root = np.empty((n, 3), np.float32)
        head = np.empty((n, 3), np.float32)
        face = np.zeros((n, N_F), np.float32)
        vis = np.zeros((n, N_V), np.float32)
        emo = np.zeros((n, N_E), np.float32)
        scal = np.empty((n, 6), np.float64)    # phase, weight, body_present, t_s, speaking, face_present
        action = np.zeros(n, np.int64)
        for i, c in enumerate(conds):
            bones[i] = _fit(c.bone_angles, len(BONE_INDEX))
            root[i] = _fit(c.root, 3)
            head[i] = _fit(c.head, 3)
            face[i] = _fit(c.face, N_F)
            vis[i] = _fit(c.visemes, N_V)
            e = np.asarray(c.emotion, np.float32).reshape(-1)
            e = np.nan_to_num(e, nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
            emo[i, :min(N_E, e.size)] = e[:N_E]
            emo[i, 0] += e[N_E:].sum()          # unknown extra emotions count as neutral
            action[i] = motion.ACTION_INDEX.get(c.action, 0)
            scal[i] = (c.action_phase, c.action_weight, c.body_present, c.t_tick_ns * 1e-9, c.speaking,
                       c.face_present)
        scal = np.nan_to_num(scal, nan=0.0, posinf=1.0, neginf=0.0)
        bad = ~np.isfinite(bones)
        bones[bad] = np.broadcast_to(motion.REST_BONE_ANGLES, bones.shape)[bad]
        root[:, :2] = np.nan_to_num(root[:, :2], nan=0.0, posinf=1.0, neginf=-1.0).clip(-1, 1)
        root[:, 2] = np.nan_to_num(root[:, 2], nan=1.0, posinf=2.0, neginf=0.5).clip(0.5, 2.0)
        head = np.nan_to_num(head, nan=0.0, posinf=0.8, neginf=-0.8).clip(-0.8, 0.8)
        lo = np.zeros(N_F, np.float32)
        lo[[FP["gaze_x"], FP["gaze_y"]]] = -1.0       # gaze is -1..1, the rest 0..1
        face = np.clip(np.nan_to_num(face, nan=0.0, posinf=1.0, neginf=-1.0), lo, 1.0)
        vis = np.nan_to_num(vis, nan=0.0, posinf=1.0, neginf=0.0).clip(0, None)
        vsum = vis.sum(1, keepdims=True)
        vis = np.where(vsum > 1e-6, vis / np.maximum(vsum, 1e-6), np.eye(N_V, dtype=np.float32)[0])
        esum = emo.sum(1, keepdims=True)
        emo = np.where(esum > 1e-6, emo / np.maximum(esum, 1e-6), np.eye(N_E, dtype=np.float32)[0])
        return {"bones": motion.wrap(bones), "root": root, "head": head, "face": face, "vis": vis,
                "emo": emo.astype(np.float32), "action": action,
                "phase": np.mod(scal[:, 0], 1.0), "weight": scal[:, 1].clip(0, 1),
                "present": scal[:, 2].clip(0, 1), "t": scal[:, 3], "speaking": scal[:, 4].clip(0, 1),
                "face_present": scal[:, 5].clip(0, 1)}

    def _pose(self, g: dict) -> np.ndarray:
        """Motion channels (n, N_CHANNELS): idle <- live (by body_present) <- clip (by weight)."""
        n = len(g["t"])
        live = motion.rest_channels(n)
        live[:, :motion.N_BONES] = g["bones"]
        live[:, motion.YAW:motion.ROLL + 1] = g["head"]
        idle = motion.idle(g["t"])
        # A tracked face turns the head as measured: the idle sway fades out under it (the
        # conditioner's head already carries its own idle motion while no face is seen).
        idle[:, motion.YAW:motion.ROLL + 1] *= (1.0 - g["face_present"])[:, None]
        idle[:, motion.YAW:motion.ROLL + 1] += g["head"]
        pres = g["present"]
        ch = motion.blend(idle, live, pres)  # live acts as the "clip" over idle here
        nb = motion.N_BONES
        ch[:, nb:] = idle[:, nb:] + (live[:, nb:] - idle[:, nb:]) * pres[:, None]
        ch = motion.blend(ch, motion.clip_channels(g["action"], g["phase"]), g["weight"])
        ch += motion.breathing(g["t"])
        return ch

    def _skeleton(self, ch: np.ndarray, root: np.ndarray, c: _Character) -> Any:
        """Joint positions (n, J, 2) in reference px and per-part 2x2 maps texture->output px."""
        n = ch.shape[0]
        ang = ch[:, :motion.N_BONES]
        d = np.stack([np.sin(ang), np.cos(ang)], -1)            # (n, bones, 2) unit directions
        s = root[:, 2:3]
        L = c.lengths
        J = np.zeros((n, len(JOINT_INDEX), 2), np.float32)
        ji = JOINT_INDEX
        hips = c.hips + (root[:, :2] + ch[:, [motion.DX, motion.DY]]) * c.body_height
        spine_len = L.spine * np.clip(ch[:, motion.SPINE_SCALE:motion.SPINE_SCALE + 1], 0.3, 1.5)
        J[:, ji["hips"]] = hips
        sh = hips + s * spine_len * d[:, 0]
        J[:, ji["shoulders"]] = sh
        perp = np.stack([-d[:, 0, 1], d[:, 0, 0]], -1)          # character's left, across the chest
        B = BONE_INDEX
        for side, sgn in (("l", 1.0), ("r", -1.0)):
            shoulder = sh + sgn * s * c.sw * perp
            elbow = shoulder + s * L.upper_arm * d[:, B[f"upper_arm_{side}"]]
            hip = hips + np.array([sgn * c.hw, 0.0], np.float32) * s
            knee = hip + s * L.upper_leg * d[:, B[f"upper_leg_{side}"]]
            J[:, ji[f"shoulder_{side}"]], J[:, ji[f"elbow_{side}"]] = shoulder, elbow
            J[:, ji[f"wrist_{side}"]] = elbow + s * L.lower_arm * d[:, B[f"lower_arm_{side}"]]
            J[:, ji[f"hip_{side}"]], J[:, ji[f"knee_{side}"]] = hip, knee
            J[:, ji[f"ankle_{side}"]] = knee + s * L.lower_leg * d[:, B[f"lower_leg_{side}"]]
        J[:, ji["head"]] = sh + s * L.neck * d[:, B["neck"]]
        xs = ch[:, motion.XSCALE]
        xs = np.where(np.abs(xs) < 0.05, np.where(xs < 0, -0.05, 0.05), xs).astype(np.float32)
        J[..., 0] = hips[:, None, 0] + (J[..., 0] - hips[:, None, 0]) * xs[:, None]
        return J, xs

    def _keep_on_canvas(self, J: np.ndarray, root: np.ndarray, ch: np.ndarray, c: _Character) -> np.ndarray:
        """Root (n, 3) adjusted so the whole character (joints plus the parts around them) lies
        inside the canvas: shrunk about its own centre when it is too big (arms up, big scale),
        then pushed in from an edge. Continuous in the pose, so it never jumps; a no-op for a
        character that already fits."""
        s = root[:, 2:3, None]
        pad = _JOINT_PAD[None, :, None] * s                     # (n, J, 1) reference px
        lo, hi = (J - pad).min(1), (J + pad).max(1)              # (n, 2)
        margin = 0.01 * c.ref
        avail = c.ref - 2 * margin
        f = np.minimum(1.0, avail / np.maximum(hi - lo, 1e-3).max(1))     # (n,)
        need = (f < 1.0) | (lo < margin).any(1) | (hi > c.ref - margin).any(1)
        if not need.any():
            return root
        centre = (lo + hi) / 2
        lo2, hi2 = centre + (lo - centre) * f[:, None], centre + (hi - centre) * f[:, None]
        shift = np.maximum(0.0, margin - lo2) - np.maximum(0.0, hi2 - (c.ref - margin))
        hips = c.hips + (root[:, :2] + ch[:, [motion.DX, motion.DY]]) * c.body_height
        hips2 = centre + (hips - centre) * f[:, None] + shift
        out = root.copy()      # only the sessions that need it: a batch renders as its sessions alone
        out[need, :2] = ((hips2 - c.hips) / c.body_height - ch[:, [motion.DX, motion.DY]])[need]
        out[need, 2] = (root[:, 2] * f)[need]
        return out.astype(np.float32)

    def _render_group(self, c: _Character, conds: Sequence[Conditioning]) -> np.ndarray:
        n, S, dev = len(conds), self.size, self._dev
        g = self._gather(conds)
        ch = self._pose(g)
        root = g["root"]
        J, xs = self._skeleton(ch, root, c)
        # Live tracking is kept on the canvas; a triggered action (a jump) may still leave it.
        fitted = self._keep_on_canvas(J, root, ch, c)
        live = (1.0 - g["weight"] * (g["action"] > 0)).astype(np.float32)[:, None]
        root = np.where(live >= 1.0, fitted, root + (fitted - root) * live).astype(np.float32)
        J, xs = self._skeleton(ch, root, c)
        k = S / c.ref
        scale = root[:, 2]

        # ---- per-part affine: output = joint + M (tex - pivot); M = k s X R(delta) diag(sx, sy)
        # A tracked head's roll is its tilt in the picture, as measured. Not plus the neck bone:
        # tracked, that bone points at the nose, which swings sideways as the head turns (yaw
        # leaking into roll). Idle and action clips tilt the head with the torso.
        follow_torso = np.maximum(1.0 - g["present"], g["weight"] * (g["action"] > 0))
        head_angle = (ch[:, BONE_INDEX["spine"]] - np.pi) * follow_torso + ch[:, motion.ROLL]
        yaw = np.clip(ch[:, motion.YAW], -0.8, 0.8)
        pitch = np.clip(ch[:, motion.PITCH], -0.8, 0.8)
        spine_scale = np.clip(ch[:, motion.SPINE_SCALE], 0.3, 1.5)
        P = len(c.parts)
        # All parts of all sessions at once: arrays are (n, P).
        delta = np.concatenate([ch[:, :motion.N_BONES], head_angle[:, None]], 1)[:, c.p_bone] - c.p_rest
        # Turning away narrows the head, nodding shortens it; the torso follows the spine length.
        sx = np.where(c.p_head, (1.0 - 0.15 * np.abs(yaw))[:, None], 1.0)
        sy = np.where(c.p_head, (1.0 - 0.12 * np.abs(pitch))[:, None],
                      np.where(c.p_stretch, spine_scale[:, None], 1.0))
        cs, sn = np.cos(delta), np.sin(delta)
        ks = (k * scale)[:, None]
        m00, m01 = ks * xs[:, None] * cs * sx, ks * xs[:, None] * sn * sy
        m10, m11 = -ks * sn * sx, ks * cs * sy
        det = m00 * m11 - m01 * m10
        joint = J[:, c.p_joint] * k                                    # (n, P, 2)
        joint[:, c.p_head, 1] += (8.0 * k * scale * pitch)[:, None]    # the head dips as it nods
        off = c.p_centre - c.p_pivot
        centre = joint + np.stack([m00 * off[:, 0] + m01 * off[:, 1], m10 * off[:, 0] + m11 * off[:, 1]], -1)
        # Each tile is the rotated texture's bounding box (largest over the batch, rounded up).
        bw = np.abs(m00) * c.p_wh[:, 0] + np.abs(m01) * c.p_wh[:, 1]
        bh = np.abs(m10) * c.p_wh[:, 0] + np.abs(m11) * c.p_wh[:, 1]
        tile_wh = (np.ceil((np.stack([bw.max(0), bh.max(0)], -1) + 4) / TILE_ROUND) * TILE_ROUND).astype(np.int64)
        origin = np.floor(centre - tile_wh[None] / 2).astype(np.int64)
        # tex = pivot + Minv (origin + local - joint); Minv = [[m11, -m01], [-m10, m00]] / det
        i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
        rel = (origin - joint).astype(np.float32)
        tex0 = c.p_pivot[:, 0] + i00 * rel[..., 0] + i01 * rel[..., 1]
        tex1 = c.p_pivot[:, 1] + i10 * rel[..., 0] + i11 * rel[..., 1]
        norm, shift = c.p_norm, c.p_shift
        A = np.empty((n, P, 2, 2), np.float32)       # normalised source coords = local @ A + bvec
        A[..., 0, 0], A[..., 0, 1] = i00 * norm[:, 0], i10 * norm[:, 1]   # d(source)/d(local x)
        A[..., 1, 0], A[..., 1, 1] = i01 * norm[:, 0], i11 * norm[:, 1]   # d(source)/d(local y)
        bvec = np.stack([(tex0 + shift[:, 0]) * norm[:, 0] - 1.0, (tex1 + shift[:, 1]) * norm[:, 1] - 1.0], -1)
        bvec = bvec.astype(np.float32)
        A_t = torch.from_numpy(A).to(dev)
        b_t = torch.from_numpy(bvec).to(dev)
        ramp = self._ramp(int(tile_wh.max()) + 1)

        body_idx = [i for i, p in enumerate(c.parts) if not p.is_head]
        head_idx = [i for i, p in enumerate(c.parts) if p.is_head][0]
        sizes = [int(tile_wh[i, 0] * tile_wh[i, 1]) for i in range(P)]
        total_body = sum(sizes[i] for i in body_idx)
        grid = torch.empty((n, total_body, 2), device=dev)
        body_slices = {}
        start = 0
        for j, i in enumerate(body_idx):
            end = start + sizes[i]
            self._tile_grid(grid[:, start:end], A_t[:, i], b_t[:, i], tile_wh[i], ramp)
            grid[:, start:end].clamp_(min=c.clamp_lo[j], max=c.clamp_hi[j])
            body_slices[i] = (start, end)
            start = end
        body = _sample(c.atlas.expand(n, -1, -1, -1), grid)

        face = self._face(c, g, ch)
        hgrid = torch.empty((n, sizes[head_idx], 2), device=dev)
        self._tile_grid(hgrid, A_t[:, head_idx], b_t[:, head_idx], tile_wh[head_idx], ramp)
        head = _sample(face, hgrid)

        # ---- composite tiles in depth order (premultiplied "over"). Planar (NCHW) so the per-pixel
        # alpha broadcasts over whole rows; each session touches only its tiles' bounding box.
        canvas = self._canvas.get((n, S))
        if canvas is None:
            canvas = self._canvas[(n, S)] = torch.empty((n, 4, S, S), device=dev)
        org = origin.tolist()
        lo = np.clip(origin.min(axis=1), 0, S)
        hi = np.clip((origin + tile_wh[None]).max(axis=1), 0, S)
        boxes = np.concatenate([lo, hi], 1).tolist()            # (n, [x0, y0, x1, y1])
        for b, (x0, y0, x1, y1) in enumerate(boxes):
            canvas[b, :, y0:y1, x0:x1].zero_()                  # nothing outside is ever read
        body_keep = 1.0 - body[:, 3:4]                           # (1 - alpha) of every tile, one op
        head_keep = 1.0 - head[:, 3:4]
        for pi_ in range(P):
            tw, th = int(tile_wh[pi_, 0]), int(tile_wh[pi_, 1])
            if pi_ == head_idx:
                tiles, keep = head.view(n, 4, th, tw), head_keep.view(n, 1, th, tw)
            else:
                s0, s1 = body_slices[pi_]
                tiles = body[:, :, s0:s1].view(n, 4, th, tw)
                keep = body_keep[:, :, s0:s1].view(n, 1, th, tw)
            for b in range(n):
                ox, oy = org[b][pi_]
                x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + tw, S), min(oy + th, S)
                if x0 >= x1 or y0 >= y1:
                    continue
                ty, tx = slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)
                canvas[b, :, y0:y1, x0:x1].mul_(keep[b, :, ty, tx]).add_(tiles[b, :, ty, tx])
        # ---- straight alpha uint8, channels last. Premultiplied rgb <= alpha survives bilinear
        # sampling and "over", so rgb * 255 / alpha stays <= 255 and needs no clamp.
        out = torch.zeros((n, S, S, 4), dtype=torch.uint8)
        for b, (x0, y0, x1, y1) in enumerate(boxes):
            if x0 >= x1 or y0 >= y1:
                continue
            region = canvas[b, :, y0:y1, x0:x1]
            unpremult = 255.0 / region[3].clamp(min=1e-4)
            if dev.type == "cpu":      # each plane straight into its interleaved uint8 channel
                dst = out[b, y0:y1, x0:x1]
                for ch_i in range(3):
                    dst[..., ch_i] = region[ch_i].mul_(unpremult).add_(0.5)
                dst[..., 3] = region[3].mul_(255.0).add_(0.5)
            else:                      # on the GPU: convert there, copy bytes once
                region[:3].mul_(unpremult)
                region[3].mul_(255.0)
                out[b, y0:y1, x0:x1] = region.add_(0.5).to(torch.uint8).permute(1, 2, 0).cpu()
        return out.numpy()

    def _ramp(self, length: int) -> torch.Tensor:
        """Pixel centres 0.5, 1.5, ... (cached, grown on demand)."""
        r = self._ramp_cache
        if r is None or r.numel() < length:
            r = self._ramp_cache = torch.arange(max(length, 512), dtype=torch.float32, device=self._dev) + 0.5
        return r

    @staticmethod
    def _tile_grid(out: torch.Tensor, A: torch.Tensor, b: torch.Tensor, wh: Any, ramp: torch.Tensor) -> None:
        """Fill `out` (n, h*w, 2) with b + x A[0] + y A[1] for the tile's pixel centres; the affine
        is separable, so it is one (n, w, 2) row plus one (n, h, 2) column, broadcast-added."""
        n, (w, h) = A.shape[0], (int(wh[0]), int(wh[1]))
        row = ramp[:w, None] * A[:, None, 0, :]                  # (n, w, 2)
        col = ramp[:h, None] * A[:, None, 1, :] + b[:, None, :]  # (n, h, 2)
        torch.add(col[:, :, None, :], row[:, None, :, :], out=out.view(n, h, w, 2))

    def _face_base(self, key: str, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates (x of width w, y of height h) for a face box (cached)."""
        t = self._face_grids.get(key)
        if t is None:
            t = self._face_grids[key] = (torch.arange(w, dtype=torch.float32, device=self._dev) + 0.5,
                                         torch.arange(h, dtype=torch.float32, device=self._dev) + 0.5)
        return t

    def _face(self, c: _Character, g: dict, ch: np.ndarray) -> torch.Tensor:
        """Compose each session's face canvas (n, 4, F, F) premultiplied."""
        n, dev, Fc = len(g["t"]), self._dev, c.F
        face = g["face"]
        emo = torch.from_numpy(g["emo"]).to(dev)
        # Blinks: tracked, or automatic while nobody is tracked.
        # Blinks of its own only while no face is tracked (a tracked face blinks for itself).
        auto = motion.auto_blink(g["t"]) * (1.0 - np.maximum(g["present"], g["face_present"]))
        blink_l = np.maximum(face[:, FP["blink_left"]], auto)
        blink_r = np.maximum(face[:, FP["blink_right"]], auto)
        # Wide eyes open past the drawn rest (a stare); blinks and squints close them.
        wide_l, wide_r = EYE_WIDE * face[:, FP["eye_wide_left"]], EYE_WIDE * face[:, FP["eye_wide_right"]]
        open_l = np.clip(1.0 - blink_l + wide_l, EYE_SHUT, 1.0 + EYE_WIDE).astype(np.float32)
        open_r = np.clip(1.0 - blink_r + wide_r, EYE_SHUT, 1.0 + EYE_WIDE).astype(np.float32)
        shx = (np.clip(ch[:, motion.YAW], -0.8, 0.8) * YAW_SHIFT).astype(np.float32)
        shy = (np.clip(ch[:, motion.PITCH], -0.8, 0.8) * PITCH_SHIFT).astype(np.float32)
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)  # noqa: E731

        # ---- eyes: blended eyes + mask squashed by blink; pupils moved by gaze, masked
        ex, ey, ew, eh = c.eyes_box
        xs, ys = self._face_base(f"e{ew}x{eh}", eh, ew)
        eyes = (emo @ c.eyes).view(n, 4, eh, ew)
        mask = (emo @ c.eye_mask).view(n, 1, eh, ew)
        opening = torch.where(xs[None, None, :] < ew / 2, T(open_r)[:, None, None], T(open_l)[:, None, None])
        cy = eh / 2
        gy = cy + (ys[None, :, None] - cy) / opening
        gx = xs[None, None, :].expand(n, eh, ew)
        gaze_x = T(face[:, FP["gaze_x"]] * GAZE_X)[:, None, None]
        gaze_y = T(face[:, FP["gaze_y"]] * GAZE_Y)[:, None, None]
        grid = torch.stack([torch.stack([gx, gy], -1),
                            torch.stack([gx - gaze_x, gy - gaze_y / opening], -1)], 0)
        grid = grid.view(2 * n, eh, ew, 2) * torch.tensor([2.0 / ew, 2.0 / eh], device=dev) - 1.0
        src = torch.cat([torch.cat([eyes, mask], 1),
                         torch.cat([c.pupils.expand(n, -1, -1, -1), torch.zeros((n, 1, eh, ew), device=dev)], 1)], 0)
        both = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        eyes_w, pupils_w = both[:n, :4], both[n:, :4] * both[:n, 4:5]
        eye_layer = pupils_w + eyes_w * (1.0 - pupils_w[:, 3:4])
        # The lid line comes in over the last part of a closing eye.
        drawn = g["emo"] @ c.eye_area
        shut_l = np.clip((LID_FROM - open_l) / (LID_FROM - EYE_SHUT), 0.0, 1.0) * drawn
        shut_r = np.clip((LID_FROM - open_r) / (LID_FROM - EYE_SHUT), 0.0, 1.0) * drawn
        shut = torch.where(xs[None, None, :] < ew / 2, T(shut_r)[:, None, None], T(shut_l)[:, None, None])
        lid = c.lid_line[None] * shut[:, None]
        eye_layer = lid + eye_layer * (1.0 - lid[:, 3:4])

        # ---- brows: raise (per side) and furrow move them
        bx, by, bw, bh = c.brows_box
        xs_b, ys_b = self._face_base(f"b{bw}x{bh}", bh, bw)
        raise_ = torch.where(xs_b[None, None, :] < bw / 2, T(face[:, FP["brow_raise_right"]])[:, None, None],
                             T(face[:, FP["brow_raise_left"]])[:, None, None])
        furrow = T(face[:, FP["brow_furrow"]])[:, None, None]
        # The turn's parallax warp moves the brows less than the eyes (they sit farther from the
        # face's centre): shifting them by the difference first keeps them riding with the eyes, so a
        # nod does not read as a brow raise (a +-0.4 rad nod read as 3x a full raise on Face Mesh).
        # Up and down only: the same sideways with yaw made MediaPipe Pose lose nova mid-wave.
        lag_y = T(shy * c.brow_lag)[:, None, None]
        tracked_y = T(g["face_present"] * (g["emo"] @ c.brow_dy))[:, None, None]
        gy_b = ys_b[None, :, None] + BROW_RAISE_PX * raise_ - BROW_FURROW_PX * furrow - lag_y + tracked_y
        # Furrowing draws the brows together as well as down.
        gx_b = (bw / 2 + (xs_b[None, None, :] - bw / 2) * (1.0 + 0.12 * furrow)).expand(n, bh, bw)
        grid_b = torch.stack([gx_b, gy_b.expand(n, bh, bw)], -1) * torch.tensor([2.0 / bw, 2.0 / bh], device=dev) - 1.0
        brows = F.grid_sample((emo @ c.brows).view(n, 4, bh, bw), grid_b, mode="bilinear",
                              padding_mode="zeros", align_corners=False)

        # ---- mouth: emotion's resting mouth cross-fades into viseme shapes opened by the jaw
        mx, my, mw, mh = c.mouth_box
        xs_m, ys_m = self._face_base(f"m{mw}x{mh}", mh, mw)
        vis = g["vis"]
        smile = face[:, FP["smile"]][:, None]
        # Tracked smiles and frowns draw the happy / sad mouth over the emotion's own.
        frown = face[:, FP["frown"]][:, None] * (1.0 - smile)
        emo_m = (g["emo"] * (1.0 - smile - frown) + smile * np.eye(N_E, dtype=np.float32)[HAPPY]
                 + frown * np.eye(N_E, dtype=np.float32)[SAD])
        yielded = emo_m * (g["face_present"][:, None] * c.rest_mouth_open[None]).astype(np.float32)
        emo_closed = emo_m - yielded
        emo_closed[:, 0] += yielded.sum(1)
        # Two mouths cross-faded draw two lip lines, which Face Mesh reads as parted lips (nova half
        # neutral, half sad: 0.074, a wide-open A is 0.064); sharpen the mix so one mouth leads.
        emo_m, emo_closed = (_sharpen(w) for w in (emo_m, emo_closed))
        jaw = np.clip(np.maximum(face[:, FP["mouth_open"]], 1.0 - vis[:, 0]), 0.0, 1.0)
        shapes = vis[:, 1:]
        ssum = shapes.sum(1, keepdims=True)
        shapes = np.where(ssum > 1e-4, shapes / np.maximum(ssum, 1e-4), np.eye(N_V - 1, dtype=np.float32)[0])
        w_open = (emo_m[:, :, None] * shapes[:, None, :]).reshape(n, -1)
        closed = (T(emo_closed) @ c.mouth_closed).view(n, 4, mh, mw)
        opened = (T(w_open) @ c.mouth_open).view(n, 4, mh, mw)
        # The opening grows from a slit at once (no dead zone: a slightly parted mouth shows).
        jaw_t = T(0.15 + 0.85 * jaw)[:, None, None]
        width = T(0.75 + 0.5 * face[:, FP["mouth_width"]])[:, None, None]
        mcx, mcy = mw / 2, mh / 2
        gx_c = xs_m[None, None, :].expand(n, mh, mw)
        gy_c = ys_m[None, :, None].expand(n, mh, mw)
        gx_o = mcx + (xs_m[None, None, :] - mcx) / width
        gy_o = mcy + (ys_m[None, :, None] - mcy) / jaw_t
        grid_m = torch.cat([torch.stack([gx_c, gy_c], -1),
                            torch.stack([gx_o.expand(n, mh, mw), gy_o.expand(n, mh, mw)], -1)], 0)
        grid_m = grid_m * torch.tensor([2.0 / mw, 2.0 / mh], device=dev) - 1.0
        mouths = F.grid_sample(torch.cat([closed, opened], 0), grid_m, mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        a_open = T(np.clip(5.0 * jaw - 0.1, 0, 1))[:, None, None, None]
        o_layer = mouths[n:] * a_open
        mouth_layer = o_layer + mouths[:n] * (1.0 - a_open) * (1.0 - o_layer[:, 3:4])

        # ---- canvas: head with the emotion extras, then the features on top
        fc = (emo @ c.face_base).view(n, 4, Fc, Fc)
        for layer, (x, y, w, h) in ((eye_layer, c.eyes_box), (brows, c.brows_box), (mouth_layer, c.mouth_box)):
            dst = fc[:, :, y:y + h, x:x + w]
            dst.mul_(1.0 - layer[:, 3:4]).add_(layer)
        return self._turn(c, fc, shx, shy)

    def _turn(self, c: _Character, fc: torch.Tensor, shx: np.ndarray, shy: np.ndarray) -> torch.Tensor:
        """Head yaw and pitch as a parallax warp of the face canvas: the face's centre (nose, eyes,
        mouth) moves by (shx, shy) px, the outline stays, so the face turns rather than slides."""
        if not (np.any(shx) or np.any(shy)):
            return fc
        Fc, dev = c.F, self._dev
        px, py = float(c.face_pivot[0]), float(c.face_pivot[1])
        w = self._parallax.get((Fc, px, py))
        if w is None:
            w = self._parallax[(Fc, px, py)] = torch.from_numpy(parallax_weight(Fc, px, py)).to(dev)
        xs, ys = self._face_base(f"c{Fc}", Fc, Fc)
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)  # noqa: E731
        gx = xs[None, None, :] - T(shx)[:, None, None] * w[None]
        gy = ys[None, :, None] - T(shy)[:, None, None] * w[None]
        grid = torch.stack([gx, gy], -1) * (2.0 / Fc) - 1.0
        return F.grid_sample(fc, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _sharpen(weights: np.ndarray) -> np.ndarray:
    """Mix weights (n, k) raised to MOUTH_MIX_SHARPNESS and renormalised: the largest leads."""
    w = weights ** MOUTH_MIX_SHARPNESS
    return w / np.maximum(w.sum(1, keepdims=True), 1e-12)


def _alpha_centre_y(layer: np.ndarray) -> float:
    """Alpha-weighted mean row of an RGBA (4, H, W) layer."""
    alpha = layer[3].astype(np.float64)
    return float((alpha.sum(1) * np.arange(alpha.shape[0])).sum() / max(alpha.sum(), 1e-6))


def _dark_share(layer: np.ndarray) -> float:
    """Share of a premultiplied RGBA layer's opaque pixels that are dark (a drawn mouth interior)."""
    alpha = layer[3]
    solid = alpha > 0.5
    dark = solid & (layer[:3].mean(0) < 0.35 * alpha)
    return float(dark.sum()) / max(float(solid.sum()), 1.0)


def parallax_weight(size: int, px: float, py: float) -> np.ndarray:
    """(size, size) share of the head turn's shift each face-canvas pixel takes: 1 at the face's
    centre (px, py), falling to 0 at the outline, which stays put."""
    c = np.arange(size, dtype=np.float32) + 0.5
    r2 = ((c[None, :] - px) / (0.30 * size)) ** 2 + ((c[:, None] - py) / (0.34 * size)) ** 2
    return (np.clip(1.0 - r2, 0.0, None) ** 1.5).astype(np.float32)


def _mean_in_box(w: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean of w over a layer's drawn pixels (its alpha), the layer placed at box (x, y, w, h)."""
    x, y, bw, bh = box
    a = alpha[:bh, :bw]
    region = w[y:y + a.shape[0], x:x + a.shape[1]]
    a = a[:region.shape[0], :region.shape[1]]
    return float((region * a).sum() / a.sum()) if a.sum() > 0 else 0.0


def _lid_lines(eyes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Premultiplied (4, H, W) closed-eye lines for an eyes box: one gentle downward arc across
    each eye (each half of the box) where its mask is, 2.4 px thick, in the eyes' darkest
    outline colour, at the height an eye squashes to (the box's middle)."""
    _, h, w = eyes.shape
    a = eyes[3]
    dark = a > 0.9
    if dark.any():
        rgb = eyes[:3, dark] / a[dark]
        lum = rgb.mean(0)
        colour = rgb[:, lum <= np.quantile(lum, 0.1)].mean(1)
    else:
        colour = np.zeros(3, np.float32)
    out = np.zeros((4, h, w), np.float32)
    cols = mask[0].max(0) > 0.5
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    for lo, hi in ((0, w // 2), (w // 2, w)):
        xs_in = np.nonzero(cols[lo:hi])[0]
        if xs_in.size == 0:
            continue
        x0, x1 = lo + xs_in[0], lo + xs_in[-1] + 1
        xc, hw = (x0 + x1) / 2, (x1 - x0) / 2 + 2.0      # the mask is inset from the outline
        x = np.arange(lo, hi, dtype=np.float32) + 0.5
        u = (x - xc) / hw
        line_y = h / 2 + 0.2 * hw * (1.0 - np.clip(u, -1, 1) ** 2)
        alpha = np.clip(1.7 - np.abs(ys - line_y[None]), 0.0, 1.0) * np.clip((1.0 - np.abs(u)) * 4, 0, 1)[None]
        out[3, :, lo:hi] = np.maximum(out[3, :, lo:hi], alpha)
    out[:3] = colour[:, None, None] * out[3:4]
    return out.astype(np.float32)


def _sample(src: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (n, C, N) of src (n, C, H, W) at a flat grid (n, N, 2). torch's CPU
    grid_sample spreads work across threads by batch entry only, so a small batch is cut into
    halves along N (sharing the source, no copy) to keep both cores busy."""
    n, N = grid.shape[0], grid.shape[1]
    k = 2 if n == 1 and N % 2 == 0 and src.device.type == "cpu" and torch.get_num_threads() > 1 else 1
    out = F.grid_sample(src.expand(n * k, -1, -1, -1) if k > 1 else src, grid.view(n * k, 1, N // k, 2),
                        mode="bilinear", padding_mode="zeros", align_corners=False)
    if k == 1:
        return out[:, :, 0]
    return out[:, :, 0].permute(1, 0, 2).reshape(1, src.shape[1], N)


def _fit(a: Any, n: int) -> np.ndarray:
    """Any array-ish to exactly n float32 values (missing -> NaN, so the caller's fallback applies)."""
    v = np.asarray(a, np.float32).reshape(-1)
    if v.size == n:
        return v
    out = np.full(n, np.nan, np.float32)
    out[:min(n, v.size)] = v[:n]
    return out
