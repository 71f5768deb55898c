"""mesh: an imported character (one picture or PSD layers) as a skinned triangle mesh, rendered
with torch on CPU or GPU, all sessions of a character in one batched pass.

prepare_character (once per character): mesh of every layer's silhouette (constrained Delaunay),
skinning weights from geodesic distance to the bones (rig.py), a premultiplied texture atlas at
the output's scale, per-vertex texture coordinates, framing (like nova: the figure fits the canvas).

render (per batch):
1. Conditionings -> clamped arrays and motion channels (the same idle, action clips and live
   blend as rig2d; the idle keeps the limbs as drawn), forward kinematics -> one affine per bone.
2. Linear blend skinning of all vertices of all sessions (one matmul); secondary motion
   (physics.py) moves hair/skirt vertices; the face (face.py) rewrites the head texture.
3. Rasterisation in torch: every triangle tests the pixels of its bounding tile (tiles of all
   triangles of all sessions in one tensor), writes texture coordinates into its layer's grid,
   one grid_sample fetches every layer, layers are composited in per-session draw order.
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

from liveavatar.errors import NotFoundError, UserError
from liveavatar.generation import characters as catalog
from liveavatar.generation.batching import render_by_character
from liveavatar.generation.mesh import pack as mesh_pack
from liveavatar.generation.mesh import rig as mesh_rig
from liveavatar.generation.mesh.raster import CpuRaster
from liveavatar.generation.mesh.skinning import DQS, METHODS, Skinning, dqs_torch
from liveavatar.generation.rig2d import motion
from liveavatar.generation.rig2d.generator import Rig2DGenerator
from liveavatar.types import REST_BONE_ANGLES, Conditioning

log = logging.getLogger(__name__)

try:   # hooks written by the face+physics work; the renderer runs without them
    from liveavatar.generation.mesh import face as _face
except ImportError:  # pragma: no cover - only while face.py does not exist
    _face = None  # type: ignore[assignment]
try:
    from liveavatar.generation.mesh import physics as _physics
except ImportError:  # pragma: no cover
    _physics = None  # type: ignore[assignment]

BI = mesh_rig.BI
NB = len(mesh_rig.BONES)
LIMBS = [b for b in mesh_rig.BONES if b.startswith(("upper_", "lower_"))]
#: motion channel of each limb bone (types.BONES order is spine, neck, then the limbs).
LIMB_CH = {b: i + 2 for i, b in enumerate(LIMBS)}
LEG_CH = np.array([LIMB_CH[b] for b in LIMBS if "leg" in b])


def _animated_channels() -> np.ndarray:
    """(len(ACTIONS), N_CHANNELS) bool: the channels each action clip ever moves from rest."""
    phases = np.linspace(0.0, 1.0, 41, dtype=np.float32)
    out = np.zeros((len(motion.ACTION_INDEX), motion.N_CHANNELS), bool)
    rest = motion.rest_channels(1)
    for i in range(len(out)):
        clip = motion.clip_channels(np.full(len(phases), i), phases)
        out[i] = (np.abs(clip - rest) > 1e-6).any(0)
    return out


_ANIMATED = _animated_channels()
ROW_BUCKETS = (4, 8, 16, 32, 64)   # scanline bucket heights (rows)
MAX_TILE = 64          # px: a triangle's bounding tile never exceeds this per side
OUTSIDE = -4.0         # grid value that samples nothing (zeros padding)
FULL_HEIGHT, UPPER_HEIGHT, MAX_WIDTH = 0.77, 0.86, 0.92   # figure size as a fraction of the frame


@dataclass
class _Char:
    name: str
    folder: Any                    # pathlib.Path of the pack
    mtime: float                   # character.json's mtime when loaded (a rig edit reloads it)
    manifest: mesh_pack.MeshManifest
    rig: mesh_rig.Rig
    k: float                       # output px per canvas px at root scale 1
    offset: np.ndarray             # (2,) output px of canvas (0, 0) at rest
    body_height: float             # canvas px that root offsets are measured in
    art_rest: np.ndarray           # (10,) types.BONES angles of the art as drawn
    tex: torch.Tensor              # (1, 4, Ht, Wa) premultiplied atlas
    uv0: torch.Tensor              # (T, 2) grid_sample coords of each triangle's first vertex
    duv1: torch.Tensor             # (T, 2) second minus first
    duv2: torch.Tensor             # (T, 2) third minus first
    rest: torch.Tensor             # (V, 2) canvas px
    weights: torch.Tensor          # (V, NB)
    tris: torch.Tensor             # (T, 3) long
    tri_layer: torch.Tensor        # (T,) long
    layer_z: np.ndarray            # (L,) rest draw order
    layer_arm: list[str]           # "l"/"r" for arm layers, "" otherwise
    n_mesh: int                    # vertices of the mesh proper (physics sees these)
    n_tris: int                    # triangles of the mesh proper (the face overlay quad follows)
    face: Any = None               # face.FaceAnimator or None
    face_slot: tuple[int, int] = (0, 0)      # atlas px of the face layer's texture origin
    overlay_slot: tuple[int, int] | None = None
    physics: Any = None            # physics.SecondaryMotion or None
    physics_bones: np.ndarray | None = None  # (R,) bone index of each region's anchor
    rows: int = 0                  # batch size last rendered (physics state is per row)
    raster: CpuRaster | None = None           # the CPU rasteriser (device cpu)
    tex_u8: np.ndarray | None = None          # (Ht, Wa, 4) premultiplied uint8 atlas (device cpu)
    tex_rows: np.ndarray | None = None        # (n, Ht, Wa, 4) per-session atlases (the face rewrites them)
    skin: Skinning | None = None              # the compiled skinning (device cpu)
    pivot: torch.Tensor | None = None         # (V,) each vertex's heaviest bone (torch DQS)
    bone_start: torch.Tensor | None = None    # (NB, 2) rest canvas px of each bone's start (torch DQS)


@dataclass
class _Pose:
    """One batch's bone transforms split as skinning.py takes them (see Skinning.apply)."""
    rot: np.ndarray                # (n, NB) rad
    scale: np.ndarray              # (n, NB, 2, 2) about each bone's rest start
    pos: np.ndarray                # (n, NB, 2) posed bone start, canvas px
    glob: np.ndarray               # (n, 2, 3) canvas -> output px


class MeshGenerator:
    """Imported characters, deformed as skinned meshes (see module doc)."""

    name = "mesh"

    def __init__(self, device: str = "cpu", size: int = 512, default_character: str | None = None,
                 skinning: str = DQS):
        if skinning not in METHODS:
            raise UserError(f"mesh: unknown skinning {skinning!r}; use one of {', '.join(METHODS)}")
        if device not in ("cpu", "cuda"):
            raise UserError(f"mesh: unknown device {device!r}; use cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("mesh: --device cuda asked for, but torch sees no CUDA GPU")
        if not 64 <= int(size) <= 2048:
            raise UserError(f"mesh: size {size} out of range (64..2048)")
        self.device = device
        self.size = int(size)
        self.default_character = default_character
        self.skinning = skinning         # see skinning.py
        self._dev = torch.device(device)
        self._chars: dict[str, _Char] = {}
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._offsets: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ protocol: setup
    def load(self) -> None:
        names = self.characters()
        name = self.default_character or (names[0] if names else None)
        if name is not None:
            self.prepare_character(name)

    def warmup(self) -> None:
        if not self._chars:
            self.load()
        if not self._chars:
            return     # no mesh character installed yet: nothing to warm
        name = next(iter(self._chars))
        conds = [Conditioning.neutral(seq=i, t_tick_ns=i * 33_000_000) for i in range(2)]
        for n in (1, 2):
            self.render(conds[:n], [name] * n)
        self.reset()

    def characters(self) -> list[str]:
        return sorted(n for n, e in catalog.catalog().items() if e.kind == "mesh")

    def prepare_character(self, name: str) -> None:
        """Load (or, after a rig edit changed character.json, reload) `name`. Renders in flight
        keep the previous version until the new one is published."""
        old = self._chars.get(name)
        if old is not None and _mtime(old.folder) == old.mtime:
            return
        with self._lock:
            old = self._chars.get(name)
            if old is not None and _mtime(old.folder) == old.mtime:
                return
            entry = catalog.catalog().get(name)
            if entry is None or entry.kind != "mesh":
                known = ", ".join(self.characters()) or "none"
                shown = " ".join(repr(name).split())[:80]
                raise NotFoundError(f"mesh: unknown character {shown}; available: {known}")
            char = self._build(mesh_pack.load(entry.folder))
            self._chars = {**self._chars, name: char}     # renders in flight keep the old dict

    def reset(self) -> None:
        for c in self._chars.values():
            if c.physics is not None:
                c.physics.reset()

    def info(self) -> dict:
        return {"generator": self.name, "device": self.device, "size": self.size,
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "characters_loaded": sorted(self._chars),
                "face": _face is not None, "physics": _physics is not None,
                "triangles": {n: int(c.tris.shape[0]) for n, c in self._chars.items()}}

    def rest_conditioning(self, name: str) -> Conditioning:
        """The pose the art is drawn in (limbs at their drawn angles): renders the art as is."""
        self.prepare_character(name)
        c = Conditioning.neutral()
        c.bone_angles = self._chars[name].art_rest.copy()
        c.bone_angles[LEG_CH] = REST_BONE_ANGLES[LEG_CH]     # legs count from the drawn legs
        c.body_present = 1.0
        return c

    def rest_reference(self, name: str) -> np.ndarray:
        """The art itself (layers composited by z) placed in the output frame as the rest pose
        places it: (size, size, 4) uint8 straight RGBA. What a rest render should reproduce."""
        self.prepare_character(name)
        c = self._chars[name]
        p = mesh_pack.load(c.folder)
        H, W = p.layers[0].shape[:2]
        acc: np.ndarray = np.zeros((H, W, 4), np.float32)
        for i in sorted(range(len(p.layers)), key=lambda i: p.manifest.layers[i].z):
            la = p.layers[i].copy()
            la[..., :3] *= la[..., 3:4]
            acc = la + acc * (1.0 - la[..., 3:4])
        t = torch.from_numpy(acc).permute(2, 0, 1)[None]
        tw, th = max(1, round(W * c.k)), max(1, round(H * c.k))
        t = F.interpolate(t, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)[0]
        S = self.size
        out = torch.zeros((4, S, S))
        ox, oy = int(round(float(c.offset[0]))), int(round(float(c.offset[1])))
        x0, y0, x1, y1 = max(0, ox), max(0, oy), min(S, ox + tw), min(S, oy + th)
        out[:, y0:y1, x0:x1] = t[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        a = out[3:4].clamp(0, 1)
        rgb = out[:3] / a.clamp(min=1e-4)
        return torch.cat([rgb, a]).clamp(0, 1).mul(255).add(0.5).to(torch.uint8).permute(1, 2, 0).numpy()

    # ------------------------------------------------------------------ prepare
    def _build(self, p: mesh_pack.MeshPack) -> _Char:
        m = p.manifest
        r = mesh_rig.build(m, [la[..., 3] for la in p.layers])
        S = float(self.size)
        x0, y0, x1, y1 = r.bbox
        fw, fh = x1 - x0, y1 - y0
        if m.framing == "upper":
            k = min(UPPER_HEIGHT * S / fh, MAX_WIDTH * S / fw)
            offset = np.array([S / 2 - k * (x0 + x1) / 2, S - k * y1], np.float32)
            body_height = fh            # root offsets count in the figure as drawn
        else:
            k = min(FULL_HEIGHT * S / fh, MAX_WIDTH * S / fw)
            offset = np.array([S / 2 - k * (x0 + x1) / 2, 0.545 * S - k * (y0 + y1) / 2], np.float32)
            body_height = fh
        # Whole output px at canvas (0, 0): at rest, texel centres land on pixel centres (no blur).
        offset = np.round(offset).astype(np.float32)
        # Art rest angles in Conditioning terms: limbs as drawn; spine and neck keep the drawn lean
        # and follow the conditioning relative to upright (pi).
        art_rest = REST_BONE_ANGLES.copy()
        for b in LIMBS:
            if r.bone_present[BI[b]]:
                art_rest[LIMB_CH[b]] = r.rest_angle[BI[b]]

        # Texture atlas: every source layer at scale ts (whole canvas: the face animator works in
        # canvas px times ts), side by side.
        ts = min(1.0, k)
        cx0, cy0 = 0, 0
        cw, ch = m.canvas
        tw, th = max(2, math.ceil(cw * ts)), max(2, math.ceil(ch * ts))
        pad = 4
        n_src = len(p.layers)
        face_src = self._face_source(m)
        anim = None
        overlay_wh = (0, 0)
        textures = []
        for rgba in p.layers:
            textures.append(self._texture(rgba, cx0, cy0, cw, ch, tw, th))
        if _face is not None and face_src is not None and m.face.present:
            try:
                anim = _face.FaceAnimator(textures[face_src].numpy(), m.face, self._dev,
                                          scale=ts)
            except (UserError, ValueError) as e:
                log.warning("mesh: %s: face animation off (%s)", m.name, e)
                anim = None
            box = getattr(anim, "overlay_box", None)
            if box is not None:
                overlay_wh = (int(box[2] - box[0]), int(box[3] - box[1]))
        atlas_w = n_src * (tw + pad) + (overlay_wh[0] + pad if overlay_wh[0] > 0 else 0)
        atlas_h = max(th, overlay_wh[1]) + pad
        atlas = torch.zeros((1, 4, atlas_h, atlas_w))
        for li, t in enumerate(textures):
            atlas[0, :, :th, li * (tw + pad):li * (tw + pad) + tw] = t
        atlas_wh = np.array([atlas_w, atlas_h], np.float32)

        verts = r.vertices
        src_x = r.vertex_layer.astype(np.float32) * (tw + pad)
        tex_px = np.stack([(verts[:, 0] - cx0) * (tw / cw) + src_x, (verts[:, 1] - cy0) * (th / ch)], 1)
        uv = tex_px * (2.0 / atlas_wh) - 1.0
        tris = np.concatenate([la.triangles for la in r.layers])
        tri_layer = np.concatenate([np.full(len(la.triangles), i) for i, la in enumerate(r.layers)])
        layer_z = np.array([la.z for la in r.layers], np.float32)
        layer_arm = [la.part[-1] if la.part.startswith(("arm_", "upper_arm", "lower_arm", "hand_")) else ""
                     for la in r.layers]
        weights = r.weights
        n_mesh, n_tris = len(verts), len(tris)

        overlay_slot = None
        if anim is not None and overlay_wh[0] > 0 and face_src is not None:
            # The overlay (sparkles, anger mark: outside the silhouette) is a head-bound quad on top.
            ox0, oy0, ox1, oy1 = (float(v) for v in anim.overlay_box)
            corners_tex = np.array([[ox0, oy0], [ox1, oy0], [ox1, oy1], [ox0, oy1]], np.float32)
            corners = corners_tex / np.array([tw / cw, th / ch], np.float32) + np.array([cx0, cy0], np.float32)
            slot_x = n_src * (tw + pad)
            overlay_slot = (slot_x, 0)
            q_uv = (np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32) * np.array(overlay_wh, np.float32)
                    + np.array([slot_x, 0], np.float32)) * (2.0 / atlas_wh) - 1.0
            base = len(verts)
            verts = np.concatenate([verts, corners])
            uv = np.concatenate([uv, q_uv])
            w_head = np.zeros((4, NB), np.float32)
            w_head[:, BI["head"]] = 1.0
            weights = np.concatenate([weights, w_head])
            tris = np.concatenate([tris, np.array([[0, 1, 2], [0, 2, 3]]) + base])
            tri_layer = np.concatenate([tri_layer, [len(layer_z)] * 2])
            layer_z = np.concatenate([layer_z, [1e6]]).astype(np.float32)
            layer_arm.append("")

        physics = None
        physics_bones = None
        if _physics is not None:
            try:
                regions = _physics.find_regions(r.vertices, r.vertex_layer, m.layers, m.joints, m.face)
            except (UserError, ValueError) as e:
                log.warning("mesh: %s: secondary motion off (%s)", m.name, e)
                regions = []
            if regions:
                physics = _physics.SecondaryMotion(regions, r.vertices, self._dev)
                physics_bones = np.array([BI[mesh_rig.JOINT_BONE.get(rg.anchor, "head")] for rg in regions])

        dev = self._dev

        def T(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dev)

        raster, tex_u8, skin = None, None, None
        if self.device == "cpu":
            skin = Skinning(verts, weights, r.rest_start, self.skinning)
            # remap samples at pixel centres = integer coordinates (grid_sample's -1 is a texel's edge)
            uv_px = (uv + 1.0) * (atlas_wh / 2.0) - 0.5
            raster = CpuRaster(tris, tri_layer, uv_px, len(layer_z), self.size)
            tex_u8 = np.ascontiguousarray(atlas[0].permute(1, 2, 0).mul(255.0).add_(0.5).clamp_(0, 255)
                                          .to(torch.uint8).numpy())

        return _Char(
            name=m.name, folder=p.folder, mtime=_mtime(p.folder), manifest=m, rig=r, k=k, offset=offset,
            body_height=body_height, art_rest=art_rest,
            tex=atlas.to(dev), uv0=T(uv[tris[:, 0]]), duv1=T(uv[tris[:, 1]] - uv[tris[:, 0]]),
            duv2=T(uv[tris[:, 2]] - uv[tris[:, 0]]),
            rest=torch.from_numpy(verts.astype(np.float32)).to(dev),
            weights=torch.from_numpy(weights.astype(np.float32)).to(dev),
            tris=torch.from_numpy(tris.astype(np.int64)).to(dev),
            tri_layer=torch.from_numpy(tri_layer.astype(np.int64)).to(dev),
            layer_z=layer_z, layer_arm=layer_arm, n_mesh=n_mesh, n_tris=n_tris, face=anim,
            face_slot=((face_src or 0) * (tw + pad), 0), overlay_slot=overlay_slot,
            physics=physics, physics_bones=physics_bones, raster=raster, tex_u8=tex_u8, skin=skin,
            pivot=torch.from_numpy(np.argmax(weights, 1).astype(np.int64)).to(dev),
            bone_start=T(r.rest_start))

    @staticmethod
    def _face_source(m: mesh_pack.MeshManifest) -> int | None:
        for part in ("head", "body", "torso"):
            for i, la in enumerate(m.layers):
                if la.part == part:
                    return i
        return None

    @staticmethod
    def _texture(rgba: np.ndarray, x0: int, y0: int, w: int, h: int, tw: int, th: int) -> torch.Tensor:
        """Canvas-sized straight RGBA -> premultiplied (4, th, tw) crop of [x0, x0+w) x [y0, y0+h)."""
        H, W = rgba.shape[:2]
        crop = np.zeros((h, w, 4), np.float32)
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(W, x0 + w), min(H, y0 + h)
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgba[sy0:sy1, sx0:sx1]
        crop[..., :3] *= crop[..., 3:4]
        t = torch.from_numpy(crop).permute(2, 0, 1)[None]
        if (tw, th) != (w, h):
            t = F.interpolate(t, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        return t[0].clamp_(0.0, 1.0)

    # ------------------------------------------------------------------ protocol: render
    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        return render_by_character(self.name, self.size, conds, characters, lambda: self._chars,
                                   self.prepare_character, self._render_group, self._render_lock)

    # ------------------------------------------------------------------ pose
    def _channels(self, c: _Char, g: dict) -> np.ndarray:
        """Motion channels like rig2d's, with the art's own pose as the rest: the idle keeps the
        limbs as drawn, an action clip moves only the limbs it animates (the others stay as drawn),
        and leg angles count from the drawn legs (a webcam rarely sees legs, and a drawing's stance
        is part of the character); arm angles are absolute, as tracked."""
        n = len(g["t"])
        live = motion.rest_channels(n)
        live[:, :motion.N_BONES] = g["bones"]
        live[:, LEG_CH] += c.art_rest[LEG_CH] - REST_BONE_ANGLES[LEG_CH]
        live[:, motion.YAW:motion.ROLL + 1] = g["head"]
        idle = motion.idle(g["t"])
        idle[:, :motion.N_BONES] += c.art_rest - REST_BONE_ANGLES
        idle[:, motion.YAW:motion.ROLL + 1] += g["head"]
        pres = g["present"]
        ch = motion.blend(idle, live, pres)
        nb = motion.N_BONES
        ch[:, nb:] = idle[:, nb:] + (live[:, nb:] - idle[:, nb:]) * pres[:, None]
        clip = motion.clip_channels(g["action"], g["phase"])
        drawn = c.art_rest - REST_BONE_ANGLES
        still = ~_ANIMATED[g["action"]][:, :motion.N_BONES]
        clip[:, :motion.N_BONES] += np.where(still, drawn[None], 0.0)
        clip[:, LEG_CH] += np.where(still[:, LEG_CH], 0.0, drawn[LEG_CH][None])
        ch = motion.blend(ch, clip, g["weight"])
        ch += motion.breathing(g["t"])
        return ch

    def _bone_affines(self, c: _Char, ch: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Pose]:
        """(n, NB, 2, 3) affines canvas px -> output px, posed joints of each bone start, and the
        same pose split into rigid, scale and global parts (for skinning.py)."""
        n = ch.shape[0]
        r = c.rig
        rs, ra, rl = r.rest_start, r.rest_angle, r.rest_length
        A = np.zeros((n, NB, 2, 3), np.float32)
        P = np.zeros((n, NB, 2), np.float32)        # posed start of each bone (canvas px, local)
        ang = np.zeros((n, NB), np.float32)         # posed direction
        hips = rs[BI["root"]]
        wrap = motion.wrap
        ang[:, BI["spine"]] = ra[BI["spine"]] + wrap(ch[:, motion.SPINE] - np.pi)
        ang[:, BI["head"]] = ra[BI["head"]] + wrap(ch[:, motion.NECK] - np.pi) + ch[:, motion.ROLL]
        for b in LIMBS:
            ang[:, BI[b]] = ch[:, LIMB_CH[b]]
        delta = ang - ra[None]
        # The pelvis follows half the spine's lean (about the hips): the bend is shared by the
        # waist and the hips instead of folding one of them.
        delta[:, BI["root"]] = 0.5 * delta[:, BI["spine"]]
        # A fifth of rig2d's bow compression: a mesh torso squashed by 30 % folds against the pelvis
        # (the bow still reads from the head dipping and the body lowering).
        spine_scale = 1.0 - 0.2 * (1.0 - np.clip(ch[:, motion.SPINE_SCALE], 0.3, 1.5))
        cs, sn = np.cos(delta), np.sin(delta)
        R = np.stack([np.stack([cs, sn], -1), np.stack([-sn, cs], -1)], -2)     # (n, NB, 2, 2)
        M = R.copy()
        # The spine shortens along its own rest axis (bow); the head narrows as it turns.
        u = np.array([math.sin(ra[BI["spine"]]), math.cos(ra[BI["spine"]])], np.float32)
        Su = np.eye(2, dtype=np.float32)[None] + (spine_scale - 1.0)[:, None, None] * np.outer(u, u)[None]
        M[:, BI["spine"]] = R[:, BI["spine"]] @ Su
        yaw = np.clip(ch[:, motion.YAW], -0.8, 0.8)
        pitch = np.clip(ch[:, motion.PITCH], -0.8, 0.8)
        uh = np.array([math.sin(ra[BI["head"]]), math.cos(ra[BI["head"]])], np.float32)
        Puu = np.outer(uh, uh)[None]
        Sh = ((1.0 - 0.08 * np.abs(pitch))[:, None, None] * Puu
              + (1.0 - 0.08 * np.abs(yaw))[:, None, None] * (np.eye(2)[None] - Puu))
        M[:, BI["head"]] = R[:, BI["head"]] @ Sh.astype(np.float32)

        def d(a: np.ndarray) -> np.ndarray:
            return np.stack([np.sin(a), np.cos(a)], -1)

        P[:, BI["root"]] = hips
        P[:, BI["spine"]] = hips
        shoulders = hips + (rl[BI["spine"]] * spine_scale)[:, None] * d(ang[:, BI["spine"]])
        rot_spine = M[:, BI["spine"]]
        rest_shoulders = rs[BI["spine"]] + rl[BI["spine"]] * u
        P[:, BI["head"]] = shoulders + np.einsum("nij,j->ni", rot_spine, rs[BI["head"]] - rest_shoulders)
        P[:, BI["head"], 1] += (0.12 * rl[BI["head"]] * pitch).astype(np.float32)   # the head dips as it nods
        for side in "lr":
            ua, la = BI[f"upper_arm_{side}"], BI[f"lower_arm_{side}"]
            if r.bone_present[ua]:
                P[:, ua] = shoulders + np.einsum("nij,j->ni", rot_spine, rs[ua] - rest_shoulders)
                P[:, la] = P[:, ua] + rl[ua] * d(ang[:, ua])
            ul, ll = BI[f"upper_leg_{side}"], BI[f"lower_leg_{side}"]
            if r.bone_present[ul]:
                P[:, ul] = rs[ul]
                P[:, ll] = P[:, ul] + rl[ul] * d(ang[:, ul])
        # local: X -> P_b + M_b (X - s_b); global: X -> k (hips + T + s D (X - hips)) + offset
        t_local = P - np.einsum("nbij,bj->nbi", M, rs)
        s = root[:, 2]
        xs = ch[:, motion.XSCALE]
        xs = np.where(np.abs(xs) < 0.05, np.where(xs < 0, -0.05, 0.05), xs).astype(np.float32)
        shift = (root[:, :2] + ch[:, [motion.DX, motion.DY]]) * c.body_height
        Dg = np.zeros((n, 2, 2), np.float32)
        Dg[:, 0, 0] = c.k * s * xs
        Dg[:, 1, 1] = c.k * s
        tg = c.k * (hips + shift) - np.einsum("nij,j->ni", Dg, hips) + c.offset
        A[..., :2] = np.einsum("nij,nbjk->nbik", Dg, M)
        A[..., 2] = np.einsum("nij,nbj->nbi", Dg, t_local) + tg[:, None]
        S = np.broadcast_to(np.eye(2, dtype=np.float32), (n, NB, 2, 2)).copy()
        S[:, BI["spine"]] = Su
        S[:, BI["head"]] = Sh
        glob = np.concatenate([Dg, tg[:, :, None]], 2)
        # R above is the rotation by -delta in skinning.py's convention
        return A, P, _Pose(rot=-delta, scale=S, pos=P, glob=glob)

    def _layer_order(self, c: _Char, A: np.ndarray) -> np.ndarray:
        """(n, L) draw order: rest z, with arm layers lifted above the body when the hand is in
        front of the torso (between the shoulders, above the hips)."""
        n = A.shape[0]
        z = np.broadcast_to(c.layer_z, (n, len(c.layer_z))).copy()
        if any(c.layer_arm):
            r = c.rig
            body_z = max((float(la.z) for la in r.layers if la.part in ("body", "torso")), default=0.0)

            def at(bone: str, joint: str) -> np.ndarray:
                p = c.manifest.joint(joint)
                if p is None:
                    return np.zeros((n, 2), np.float32)
                Ab = A[:, BI[bone]]
                return np.einsum("nij,j->ni", Ab[..., :2], p) + Ab[..., 2]

            sl, sr = at("upper_arm_l", "shoulder_l"), at("upper_arm_r", "shoulder_r")
            hips = at("root", "hips")
            lo_x, hi_x = np.minimum(sl[:, 0], sr[:, 0]), np.maximum(sl[:, 0], sr[:, 0])
            for li, side in enumerate(c.layer_arm):
                if not side or c.layer_z[li] > body_z:
                    continue
                w = at(f"lower_arm_{side}", f"wrist_{side}")
                front = (w[:, 0] > lo_x) & (w[:, 0] < hi_x) & (w[:, 1] < hips[:, 1])
                z[front, li] = body_z + 0.25
        return np.argsort(z, axis=1, kind="stable")

    # ------------------------------------------------------------------ render internals
    def rest_frame(self, name: str) -> dict[str, Any]:
        """Where the character sits on the output at rest: joints (output px, present ones only),
        body_height (output px that root offsets count in), head_radius (output px or None)."""
        self.prepare_character(name)
        c = self._chars[name]
        joints = {j: (c.k * np.array([s.x, s.y], np.float32) + c.offset).tolist()
                  for j, s in c.manifest.joints.items() if s.present}
        face = c.manifest.face
        return {"joints": joints, "body_height": c.k * c.body_height, "framing": c.manifest.framing,
                "head_radius": c.k * face.head_radius if face.head_radius else None}

    def mesh(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Rest vertices (V, 2) canvas px and triangles (T, 3) of `name` (counter-clockwise)."""
        self.prepare_character(name)
        c = self._chars[name]
        return c.rest.cpu().numpy()[:c.n_mesh], c.tris.cpu().numpy()[:c.n_tris]

    def deform(self, conds: Sequence[Conditioning], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Deformed mesh of `name` for each conditioning: vertices (n, V, 2) output px, triangles
        (T, 3), and the pose's mirror sign (n,) (-1 while a spin shows the back). For tests and
        the fidelity benchmark; stateless (secondary motion is not stepped)."""
        self.prepare_character(name)
        c = self._chars[name]
        g = Rig2DGenerator._gather(conds)
        ch = self._channels(c, g)
        A, _, pose = self._bone_affines(c, ch, g["root"])
        if c.skin is not None:
            xy = c.skin.apply(pose.rot, pose.scale, pose.pos, pose.glob, private=True)   # not under the render lock
            verts = torch.from_numpy(xy.transpose(0, 2, 1).astype(np.float32))
        else:
            verts = self._skin_torch(c, A, pose)
        mirror = np.sign(ch[:, motion.XSCALE] + 1e-9)
        return verts[:, :c.n_mesh].cpu().numpy(), c.tris.cpu().numpy()[:c.n_tris], mirror

    def _skin_torch(self, c: _Char, A: np.ndarray, pose: _Pose) -> torch.Tensor:
        """The torch (GPU) path's skinning, the same method as the CPU's."""
        if self.skinning == DQS and c.pivot is not None and c.bone_start is not None:
            return dqs_torch(c.weights, c.pivot, c.rest, c.bone_start, pose.rot, pose.scale, pose.pos, pose.glob)
        return self._skin(c, A)

    @staticmethod
    def _skin(c: _Char, A: np.ndarray) -> torch.Tensor:
        """Linear blend skinning in torch (the CUDA path): per-vertex affine = weights @ bone
        affines, applied to rest px."""
        n = A.shape[0]
        A_t = torch.from_numpy(np.ascontiguousarray(A.reshape(n, NB, 6))).to(c.rest.device)
        Mv = torch.matmul(c.weights, A_t).view(n, -1, 2, 3)            # (n, V, 2, 3)
        rest = c.rest
        return Mv[..., 0] * rest[None, :, 0:1] + Mv[..., 1] * rest[None, :, 1:2] + Mv[..., 2]

    def _render_group(self, c: _Char, conds: Sequence[Conditioning]) -> np.ndarray:
        n, S = len(conds), self.size
        g = Rig2DGenerator._gather(conds)
        ch = self._channels(c, g)
        A, _, pose = self._bone_affines(c, ch, g["root"])
        if c.physics is not None:
            if c.rows != n:
                c.physics.reset()
            c.physics.step(g["t"], A[:, c.physics_bones])
        c.rows = n
        if c.skin is not None and c.raster is not None:
            # CPU: compiled skinning into a reused float64 buffer the rasteriser reads as is
            xy = c.skin.apply(pose.rot, pose.scale, pose.pos, pose.glob)
            if c.physics is not None:
                c.physics.displace_xy(xy)
            return self._render_cpu(c, conds, xy, A)
        verts = self._skin_torch(c, A, pose)
        if c.physics is not None:
            verts[:, :c.n_mesh] = c.physics.displace(verts[:, :c.n_mesh])
        tex = c.tex.expand(n, -1, -1, -1)
        if c.face is not None:
            frame = c.face.animate(conds)
            tex = tex.clone()
            fx0, fy0, fx1, fy1 = (int(v) for v in c.face.box)
            sx, sy = c.face_slot
            tex[:, :, sy + fy0:sy + fy1, sx + fx0:sx + fx1] = frame.patch
            if c.overlay_slot is not None and frame.overlay is not None:
                ox, oy = c.overlay_slot
                oh, ow = frame.overlay.shape[2], frame.overlay.shape[3]
                tex[:, :, oy:oy + oh, ox:ox + ow] = frame.overlay
        order = self._layer_order(c, A)
        return self._rasterise(c, verts, tex, order, S)

    def _render_cpu(self, c: _Char, conds: Sequence[Conditioning], xy: np.ndarray, A: np.ndarray) -> np.ndarray:
        """The CPU path: the face rewrites each session's own uint8 atlas, raster.py draws the
        skinned (n, 2, V) buffer."""
        assert c.raster is not None and c.tex_u8 is not None
        n = len(conds)
        layer_on = np.ones((n, len(c.layer_z)), bool)
        textures = [c.tex_u8] * n
        if c.face is not None:
            frame = c.face.animate(conds)
            rows = c.tex_rows
            if rows is None or rows.shape[0] < n:
                rows = c.tex_rows = np.repeat(c.tex_u8[None], n, 0)
            fx0, fy0, fx1, fy1 = (int(v) for v in c.face.box)
            sx, sy = c.face_slot
            rows[:n, sy + fy0:sy + fy1, sx + fx0:sx + fx1] = _to_u8(frame.patch)
            if c.overlay_slot is not None:
                if frame.overlay is not None:
                    ox, oy = c.overlay_slot
                    oh, ow = frame.overlay.shape[2], frame.overlay.shape[3]
                    rows[:n, oy:oy + oh, ox:ox + ow] = _to_u8(frame.overlay)
                else:
                    layer_on[:, -1] = False       # the overlay quad would sample nothing
            textures = list(rows[:n])
        order = self._layer_order(c, A)
        return c.raster.render_xy(xy, textures, order, layer_on)

    def _rasterise(self, c: _Char, verts: torch.Tensor, tex: torch.Tensor, order: np.ndarray, S: int) -> np.ndarray:
        """Deformed triangles -> (n, S, S, 4) uint8 straight RGBA. Every triangle tests the pixel
        centres of its bounding tile with its barycentric coordinates (affine in the pixel, so two
        fused multiply-adds each); covered pixels get texture coordinates, ONE grid_sample fetches
        them all, and they are scattered into per-layer buffers composited in draw order."""
        n, dev = verts.shape[0], verts.device
        L = len(c.layer_z)
        out = np.zeros((n, S, S, 4), np.uint8)
        verts = torch.nan_to_num(verts, nan=0.0, posinf=1e4, neginf=-1e4).clamp_(-4 * S, 5 * S)
        lo = verts.amin(1).floor().clamp(0, S)                 # (n, 2) region origin per session
        hi = verts.amax(1).ceil().clamp(0, S)
        wh = (hi - lo).amax(0)
        Wb, Hb = int(wh[0]) + 1, int(wh[1]) + 1
        if Wb <= 1 or Hb <= 1:
            return out
        tri = (verts - lo[:, None])[:, c.tris]                 # (n, T, 3, 2) region px
        T = tri.shape[1]
        a = tri[:, :, 0]
        e1 = tri[:, :, 1] - a
        e2 = tri[:, :, 2] - a
        det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
        inv = torch.where(det.abs() > 1e-9, 1.0 / det, torch.zeros_like(det))
        # Barycentrics are affine in the pixel: l_i = A_i + B_i x + C_i y (l0 = 1 - l1 - l2).
        B1, C1 = e2[..., 1] * inv, -e2[..., 0] * inv
        B2, C2 = -e1[..., 1] * inv, e1[..., 0] * inv
        A1 = -(a[..., 0] * B1 + a[..., 1] * C1)
        A2 = -(a[..., 0] * B2 + a[..., 1] * C2)
        A = torch.stack([1.0 - A1 - A2, A1, A2], -1)          # (n, T, 3)
        Bx = torch.stack([-B1 - B2, B1, B2], -1)
        Cy = torch.stack([-C1 - C2, C1, C2], -1)
        # Scanlines: each triangle's rows of pixel centres; on a row every l_i >= 0 is one bound on x.
        row0 = (tri[..., 1].amin(2) - 0.5).ceil()              # (n, T) first row
        rows = ((tri[..., 1].amax(2) - 0.5).floor() - row0 + 1).amax(0).clamp_(1, MAX_TILE)   # (T,)
        # Triangles are scanned in buckets of similar height, so one big triangle (the face
        # overlay quad, a stretched limb) does not make every triangle pay for its rows.
        parts_px, parts_py, parts_bt = [], [], []
        lo_rows = 0
        for hi_rows in ROW_BUCKETS:
            sel = ((rows > lo_rows) & (rows <= hi_rows)).nonzero().squeeze(1)
            lo_rows = hi_rows
            if sel.numel() == 0:
                continue
            th = int(rows[sel].max())
            Ts = sel.numel()
            ys = row0[:, sel, None] + self._ramp(th)           # (n, Ts, th) row indices
            As, Bs, Cs = A[:, sel], Bx[:, sel], Cy[:, sel]
            lin = As[..., None, :] + Cs[..., None, :] * (ys[..., None] + 0.5)    # (n, Ts, th, 3)
            bnd = (-1e-5 - lin) / torch.where(Bs.abs() > 1e-12, Bs, torch.ones_like(Bs))[..., None, :]
            pos = (Bs > 1e-12)[..., None, :]
            neg = (Bs < -1e-12)[..., None, :]
            flat_out = ((Bs.abs() <= 1e-12)[..., None, :] & (lin < -1e-5)).any(-1)   # a flat edge excludes the row
            xl = torch.where(pos, bnd, torch.full_like(bnd, -1e9)).amax(-1)
            xr = torch.where(neg, bnd, torch.full_like(bnd, 1e9)).amin(-1)
            x0 = (xl - 0.5).ceil().clamp_(min=0)
            x1 = (xr - 0.5).floor().clamp_(max=Wb - 1)
            valid = (ys >= 0) & (ys < Hb) & ~flat_out & (inv[:, sel] != 0)[..., None]
            counts = torch.where(valid, (x1 - x0 + 1).clamp_(min=0), torch.zeros_like(x0)).to(torch.int64).view(-1)
            rid = torch.repeat_interleave(counts)              # scanline of every covered pixel
            starts = torch.cumsum(counts, 0) - counts
            parts_px.append(x0.view(-1).to(torch.int64)[rid] + (torch.arange(rid.numel(), device=dev) - starts[rid]))
            parts_py.append(ys.view(-1).to(torch.int64)[rid])
            bt_local = rid // th
            parts_bt.append((bt_local // Ts) * T + sel[bt_local % Ts])
        px, py, bt = torch.cat(parts_px), torch.cat(parts_py), torch.cat(parts_bt)
        t = bt % T
        b = bt // T
        # Texture coordinates are affine in the pixel too: uv = U0 + Ux x + Uy y per triangle.
        uva, d1, d2 = c.uv0[None], c.duv1[None], c.duv2[None]
        U0 = uva + A1[..., None] * d1 + A2[..., None] * d2
        Ux = B1[..., None] * d1 + B2[..., None] * d2
        Uy = C1[..., None] * d1 + C2[..., None] * d2
        U0, Ux, Uy = U0.view(-1, 2)[bt], Ux.view(-1, 2)[bt], Uy.view(-1, 2)[bt]
        fx, fy = (px.to(U0.dtype) + 0.5)[:, None], (py.to(U0.dtype) + 0.5)[:, None]
        uv = torch.addcmul(torch.addcmul(U0, Ux, fx), Uy, fy)
        if tex.shape[0] > 1:                                  # per-session textures stacked in y
            uv[:, 1] = (uv[:, 1] + 1.0 + 2.0 * b.to(uv.dtype)) / tex.shape[0] - 1.0
            src = tex.permute(1, 0, 2, 3).reshape(1, 4, -1, tex.shape[3])
        else:
            src = tex
        col = F.grid_sample(src, uv.view(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0, :, 0].t()  # (M, 4) premultiplied
        layer_of = c.tri_layer[t]
        # Per-session layer slot of each covered pixel: position of its layer in that session's order.
        rank = torch.from_numpy(np.argsort(order, axis=1)).to(dev)   # (n, L) layer -> draw position
        pos = rank[b, layer_of]
        buf = torch.zeros((n * L * Hb * Wb, 4), device=dev)
        buf[((b * L + pos) * Hb + py) * Wb + px] = col
        buf = buf.view(n, L, Hb, Wb, 4)
        acc = buf[:, 0]
        for j in range(1, L):
            layer = buf[:, j]
            acc = layer + acc * (1.0 - layer[..., 3:4])
        alpha = acc[..., 3:4].clamp(0.0, 1.0)
        rgb = acc[..., :3] / alpha.clamp(min=1e-4)
        straight = torch.cat([rgb, alpha], -1).clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8).cpu().numpy()
        for bi, (x0, y0) in enumerate(lo.to(torch.int64).tolist()):
            w, h = min(Wb, S - x0), min(Hb, S - y0)
            if w > 0 and h > 0:
                out[bi, y0:y0 + h, x0:x0 + w] = straight[bi, :h, :w]
        return out

    def _ramp(self, n: int) -> torch.Tensor:
        r = self._offsets.get(n)
        if r is None:
            r = self._offsets[n] = torch.arange(n, dtype=torch.float32, device=self._dev)
        return r



def _to_u8(t: torch.Tensor) -> np.ndarray:
    """(n, 4, h, w) float in 0..1 -> (n, h, w, 4) uint8."""
    return t.permute(0, 2, 3, 1).mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def _mtime(folder: Any) -> float:
    try:
        return float((folder / mesh_pack.MANIFEST).stat().st_mtime_ns)
    except OSError:
        return -1.0
