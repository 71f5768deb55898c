"""Face animation for characters imported from one picture (or PSD layers).

The art has no separate eye, brow or mouth drawings, so the face is animated on the picture itself,
in rest space, before the mesh warp. A FaceAnimator is built once per character (prepare time):

- the face boxes (pack.face: eyes, brows, mouth, head centre and radius, in canvas px) are scaled to
  the texture and the head area is cut out as a patch;
- inside each eye box the dark iris blob is looked for; when it separates from a lighter eye white
  (or paper), it is cut out as its own sprite and the eye is inpainted behind it (OpenCV Telea);
- smooth displacement bases are laid out in patch px (brow raise / inner raise / furrow, eye
  opening, mouth width, mouth corners, jaw drop, upper lip, yaw and pitch parallax);
- emotion extras (blush, tears, gloom, flush, anger mark, shy hatching; sparkles, sweat and
  surprise lines outside the head) are drawn once per emotion, scaled to the head radius.

Per frame (`animate`, all sessions in one batch, torch on CPU or CUDA, no per-pixel Python):
1. irises are sampled shifted by the gaze in the two eye crops and laid over the inpainted eyes;
2. emotion extras are mixed by the emotion weights (one matmul) and laid on;
3. one grid_sample moves the features by the displacement field (coefficients @ bases, one
   matmul): brows, eye opening, mouth width and corners, jaw drop, yaw/pitch parallax (the
   features move more than the outline);
4. eyelids (skin colour sampled around each eye, with a lash line) are drawn analytically over
   the moved eyes: blinks per eye, squint, slanted lids for anger and sadness, smiling ^ ^ eyes;
5. the mouth interior (dark inside, upper teeth, tongue, lip edge) is drawn analytically in the
   gap the jaw drop opened, sized by mouth_open/width, shaped by the visemes and the smile.

Everything drawn is painted onto the art's surface (alpha is kept), so nothing shows outside the
silhouette; effects outside the head go in `FaceFrame.overlay`, which the renderer draws rigidly
with the head. Sides are the character's own: eye_l is on the image's right.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from liveavatar.generation.mesh.raster import bilinear_zeros
from liveavatar.generation.rig2d.motion import auto_blink
from liveavatar.types import EMOTIONS, FP, VISEMES, Conditioning

Box = tuple[float, float, float, float]

# Optional face parameters another stage may append to FACE_PARAMS (read only when present).
WIDE_NAMES = {"l": ("eye_wide_left", "eye_wide"), "r": ("eye_wide_right", "eye_wide")}
SQUINT_NAMES = {"l": ("eye_squint_left", "squint_left", "eye_squint"),
                "r": ("eye_squint_right", "squint_right", "eye_squint")}
PUCKER_NAMES = ("mouth_pucker", "pucker", "mouth_funnel", "lips_pucker")
FROWN_NAMES = ("mouth_frown", "frown")
BROW_INNER_NAMES = ("brow_inner_up", "brow_raise_inner")

# Viseme mouth shapes (VISEMES[1:] order A I U E O): width factor, height factor, roundness, teeth.
VISEME_SHAPE = np.array([[1.00, 1.00, 0.0, 0.30],    # A
                         [1.10, 0.45, 0.0, 0.55],    # I: wide, teeth show
                         [0.55, 0.55, 1.0, 0.10],    # U: small and round
                         [1.05, 0.60, 0.0, 0.45],    # E
                         [0.70, 0.90, 1.0, 0.20]],   # O
                        np.float32)

# Displacement bases, in this order (coefficients are patch px, or a factor for the scale bases).
BASES = ("brow_l", "brow_r", "brow_inner_l", "brow_inner_r", "furrow", "eye_open_l", "eye_open_r",
         "mouth_width", "mouth_corners", "jaw", "upper_lip", "yaw", "pitch")
BI = {n: i for i, n in enumerate(BASES)}

EMO = {name: i for i, name in enumerate(EMOTIONS)}


@dataclass(frozen=True)
class FaceBoxes:
    """The face layout in one pixel space; boxes are (x, y, w, h)."""
    head_center: tuple[float, float]
    head_radius: float
    eye_l: Box
    eye_r: Box
    brow_l: Box
    brow_r: Box
    mouth: Box
    skin_rgb: tuple[int, int, int] | None = None

    @classmethod
    def from_spec(cls, spec: Any) -> FaceBoxes:
        """From a pack's face spec (attributes or dict keys). Missing feature boxes are estimated
        from the head centre and radius with ordinary face proportions. ValueError without a head."""
        def get(name: str) -> Any:
            return spec.get(name) if isinstance(spec, dict) else getattr(spec, name, None)
        hc, r = get("head_center"), get("head_radius")
        if hc is None or r is None or not float(r) > 0:
            raise ValueError("the face needs head_center and head_radius")
        cx, cy, r = float(hc[0]), float(hc[1]), float(r)
        est = estimate_boxes((cx, cy), r)
        boxes = {k: tuple(float(v) for v in (get(k) or est[k])) for k in ("eye_l", "eye_r", "brow_l", "brow_r",
                                                                          "mouth")}
        skin = get("skin_rgb")
        return cls((cx, cy), r, boxes["eye_l"], boxes["eye_r"], boxes["brow_l"], boxes["brow_r"],  # type: ignore[arg-type]
                   boxes["mouth"], tuple(int(c) for c in skin) if skin is not None else None)  # type: ignore[arg-type]

    def scaled(self, s: float) -> FaceBoxes:
        def sb(b: Box) -> Box:
            return (b[0] * s, b[1] * s, b[2] * s, b[3] * s)
        return FaceBoxes((self.head_center[0] * s, self.head_center[1] * s), self.head_radius * s,
                         sb(self.eye_l), sb(self.eye_r), sb(self.brow_l), sb(self.brow_r), sb(self.mouth),
                         self.skin_rgb)


def estimate_boxes(center: tuple[float, float], radius: float) -> dict[str, Box]:
    """Feature boxes of a front-facing head from its centre and radius (cartoon-ish proportions:
    eyes a little below the centre line, as children draw them)."""
    cx, cy, r = center[0], center[1], radius
    ew, eh = 0.36 * r, 0.24 * r
    out: dict[str, Box] = {}
    for side, sgn in (("l", 1.0), ("r", -1.0)):       # character's left eye on the image's right
        ex = cx + sgn * 0.36 * r
        out[f"eye_{side}"] = (ex - ew / 2, cy - 0.12 * r - eh / 2, ew, eh)
        out[f"brow_{side}"] = (ex - 0.22 * r, cy - 0.42 * r - 0.06 * r, 0.44 * r, 0.12 * r)
    out["mouth"] = (cx - 0.25 * r, cy + 0.42 * r - 0.09 * r, 0.5 * r, 0.18 * r)
    return out


# MediaPipe Face Mesh landmark indices (the subject's left eye is on the image's right).
MESH_EYE_L = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MESH_EYE_R = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MESH_BROW_L = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
MESH_BROW_R = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
MESH_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MESH_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def boxes_from_landmarks(points: np.ndarray) -> dict[str, Any]:
    """Face boxes (a pack's face spec as a dict) from Face Mesh landmarks in image px, (468+, 2)."""
    pts = np.asarray(points, np.float64)[:, :2]

    def box(idx: Sequence[int], grow: float = 0.0) -> list[float]:
        q = pts[list(idx)]
        lo, hi = q.min(0), q.max(0)
        pad = (hi - lo) * grow / 2
        lo, hi = lo - pad, hi + pad
        return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]

    oval = pts[list(MESH_OVAL)]
    centre = (oval.min(0) + oval.max(0)) / 2
    radius = float(max(oval.max(0) - oval.min(0)) / 2)
    return {"present": True, "head_center": [float(centre[0]), float(centre[1])], "head_radius": radius,
            "eye_l": box(MESH_EYE_L, 0.1), "eye_r": box(MESH_EYE_R, 0.1), "brow_l": box(MESH_BROW_L, 0.1),
            "brow_r": box(MESH_BROW_R, 0.1), "mouth": box(MESH_LIPS, 0.05), "detected_by": "facemesh"}


@dataclass
class FaceFrame:
    """One batch of animated faces. `patch` (B, 4, h, w) premultiplied replaces texture[:, y0:y1,
    x0:x1] (FaceAnimator.box); `overlay` (B, 4, h', w') premultiplied is drawn over the frame at
    FaceAnimator.overlay_box, rigidly with the head, or None when no session shows an effect."""
    patch: torch.Tensor
    overlay: torch.Tensor | None


@dataclass
class _Eye:
    centre: np.ndarray        # (2,) patch px
    radii: np.ndarray         # (2,) eye opening ellipse radii (px)
    crop: tuple[int, int, int, int]   # x0, y0, x1, y1 in patch px (same size for both eyes)
    iris: bool                # an iris was separated (gaze moves it)
    travel: np.ndarray        # (2,) iris travel at gaze +-1 (px)
    lid_rgb: np.ndarray       # (3,) straight colour of the lid skin
    lash_rgb: np.ndarray      # (3,)
    inner_sign: float         # +1 when the inner corner (towards the nose) is at larger x


class FaceAnimator:
    """Animates the face on a character's rest texture (see the module doc)."""

    def __init__(self, texture: np.ndarray, face: Any, device: torch.device | str = "cpu", scale: float = 1.0):
        if texture.ndim != 3 or texture.shape[0] != 4:
            raise ValueError(f"texture must be (4, H, W), got {texture.shape}")
        self.device = torch.device(device)
        fb = (face if isinstance(face, FaceBoxes) else FaceBoxes.from_spec(face)).scaled(float(scale))
        H, W = texture.shape[1:]
        cx, cy = fb.head_center
        r = max(fb.head_radius, 4.0)
        self.radius = r
        pad = 1.25 * r
        feats = np.array([b for b in (fb.eye_l, fb.eye_r, fb.brow_l, fb.brow_r, fb.mouth)], np.float64)
        lo = np.minimum([cx - pad, cy - pad], (feats[:, :2] - 0.5 * feats[:, 2:]).min(0))
        hi = np.maximum([cx + pad, cy + pad], (feats[:, :2] + 1.5 * feats[:, 2:]).max(0) + [0, 0.4 * r])
        x0, y0 = int(max(0, math.floor(lo[0]))), int(max(0, math.floor(lo[1])))
        x1, y1 = int(min(W, math.ceil(hi[0]))), int(min(H, math.ceil(hi[1])))
        if x1 - x0 < 4 or y1 - y0 < 4:
            raise ValueError("the face lies outside the texture")
        self.box = (x0, y0, x1, y1)
        opad = 1.7 * r
        self.overlay_box = (int(math.floor(cx - opad)), int(math.floor(cy - opad)),
                            int(math.ceil(cx + opad)), int(math.ceil(cy + opad)))
        off = np.array([x0, y0], np.float64)
        self.h, self.w = y1 - y0, x1 - x0
        patch = np.ascontiguousarray(texture[:, y0:y1, x0:x1], np.float32)
        alpha = patch[3]
        rgb = patch[:3] / np.maximum(alpha, 1e-4)          # straight colour for analysis
        rgb = np.where(alpha > 1e-4, rgb, 0.0).clip(0, 1)

        def local(b: Box) -> np.ndarray:
            return np.array([b[0] - off[0], b[1] - off[1], b[2], b[3]], np.float64)

        self.head_c = np.array([cx, cy]) - off
        eyes_b = {"l": local(fb.eye_l), "r": local(fb.eye_r)}
        brows_b = {"l": local(fb.brow_l), "r": local(fb.brow_r)}
        mouth_b = local(fb.mouth)
        # The mouth opens at the lips' seam: re-centre the box on it (boxes are often padded, and a
        # smiling photo's seam is the dark gap between the teeth, not the box's middle).
        mouth_b[1] = _lip_line(rgb, alpha, mouth_b) - mouth_b[3] / 2
        skin = self._skin_colour(rgb, alpha, fb, eyes_b, brows_b, mouth_b)
        self.skin = skin

        # ---- eyes: iris separation + inpainting, lid colours
        cw = min(int(math.ceil(max(b[2] for b in eyes_b.values()) * 1.6)) + 4, self.w)
        ch = min(int(math.ceil(max(b[3] for b in eyes_b.values()) * 2.4)) + 4, self.h)
        base = patch.copy()
        iris_layer = np.zeros_like(patch)
        mid_x = 0.5 * (eyes_b["l"][0] + eyes_b["l"][2] / 2 + eyes_b["r"][0] + eyes_b["r"][2] / 2)
        self.eyes: dict[str, _Eye] = {}
        for side in ("l", "r"):
            b = eyes_b[side]
            c = b[:2] + b[2:] / 2
            radii = np.array([0.55 * b[2], 0.62 * b[3]]) + 0.5
            # same-size crops for both eyes, kept inside the patch (one batched pass per frame)
            cx0 = int(np.clip(round(c[0] - cw / 2), 0, max(self.w - cw, 0)))
            cy0 = int(np.clip(round(c[1] - ch / 2), 0, max(self.h - ch, 0)))
            crop = (cx0, cy0, cx0 + cw, cy0 + ch)
            found = _find_iris(rgb, alpha, c, radii)
            lid, lash = _lid_colours(rgb, alpha, c, radii, skin)
            travel = np.array([0.0, 0.0])
            if found is not None:
                mask, _, ir = found
                hole = (cv2.dilate((mask > 0.05).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
                base = _inpaint(base, hole)
                # The sprite is opaque over the whole hole and fades out only where the base still
                # holds the original, so at gaze 0 the eye is reproduced exactly.
                soft = np.maximum(hole.astype(np.float32),
                                  np.clip(cv2.GaussianBlur(hole.astype(np.float32), (0, 0), 0.8) * 2, 0, 1))
                iris_layer += patch * soft[None]
                travel = np.array([max(0.75 * (radii[0] - ir), 0.12 * radii[0]),
                                   max(0.45 * (radii[1] - ir), 0.08 * radii[1])])
            self.eyes[side] = _Eye(c, radii, crop, found is not None, travel, lid, lash,
                                   1.0 if c[0] < mid_x else -1.0)

        # ---- displacement bases (K, h, w, 2), px
        self.brows_b, self.mouth_b, self.eyes_b = brows_b, mouth_b, eyes_b
        bases = self._bases(eyes_b, brows_b, mouth_b)
        # The silhouette stays: the field fades out within 0.2 r of a transparent pixel (the patch's
        # own border counts as inside: the art goes on beyond it).
        solid = np.pad((alpha > 0.5).astype(np.uint8), 1, mode="edge")
        dist = cv2.distanceTransform(solid, cv2.DIST_L2, 3)[1:-1, 1:-1]
        edge_w = np.clip((dist - 1.0) / max(0.2 * r, 1.0), 0.0, 1.0)
        bases *= (edge_w * edge_w * (3 - 2 * edge_w))[None, :, :, None]
        self._K = bases.shape[0]
        feats_c = np.stack([self.eyes["l"].centre, self.eyes["r"].centre, mouth_b[:2] + mouth_b[2:] / 2])
        # Displacement of key points per basis: (K, 3, 2) for eyes l, r and the mouth centre.
        pts = np.clip(np.round(feats_c).astype(int), 0, [self.w - 1, self.h - 1])
        self._key_disp = bases[:, pts[:, 1], pts[:, 0], :].astype(np.float32)
        # The mouth interior is placed from the lip line itself: the jaw and lip bases open the gap
        # around it, they do not carry it.
        self._key_disp[[BI["jaw"], BI["upper_lip"]], 2] = 0.0

        # ---- emotion extras, drawn once (patch space: inside the head; overlay space: outside)
        inside, outside = self._extras(skin)

        dev = self.device
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)  # noqa: E731
        self._base = T(base)                                # (4, h, w) eyes inpainted
        self._iris = T(iris_layer)
        self._bases_t = T(bases.reshape(self._K, -1))      # (K, h*w*2)
        self._bases_hw = np.ascontiguousarray(self._bases_t.cpu().numpy().reshape(self._K, self.h, self.w, 2))
        # pixels no basis moves: the CPU warp copies them (the same values the sampling gives)
        self._still = np.ascontiguousarray(~(np.abs(self._bases_hw) > 0).any((0, 3)))
        self._inside = T(inside.reshape(len(EMOTIONS), -1))
        self._outside = T(outside.reshape(len(EMOTIONS), -1))
        self._inside_any = inside.reshape(len(EMOTIONS), -1).max(1) > 0
        self._outside_any = outside.reshape(len(EMOTIONS), -1).max(1) > 0
        self._oh, self._ow = outside.shape[2:]
        ys = torch.arange(self.h, dtype=torch.float32, device=dev) + 0.5
        xs = torch.arange(self.w, dtype=torch.float32, device=dev) + 0.5
        self._ident = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)   # (h, w, 2) px
        self._norm = torch.tensor([2.0 / self.w, 2.0 / self.h], device=dev)
        # Eye crops: patch-px grids of both crops (2, ch, cw, 2) and per-eye constants.
        self._cw, self._ch = cw, ch
        self._crop_xy = [(self.eyes[s].crop[0], self.eyes[s].crop[1]) for s in ("l", "r")]
        self._eye_grid = torch.stack([self._ident[y:y + ch, x:x + cw] for x, y in self._crop_xy])
        self._eye_centres = np.stack([self.eyes[s].centre for s in ("l", "r")]).astype(np.float64)
        self._eye_radii = np.stack([self.eyes[s].radii for s in ("l", "r")]).astype(np.float64)
        self._travel = np.stack([self.eyes[s].travel for s in ("l", "r")]).astype(np.float64)
        self._iris_any = any(self.eyes[s].iris for s in ("l", "r"))
        clip = []
        for e, s_ in enumerate(("l", "r")):
            eye = self.eyes[s_]
            ex = self._eye_grid[e] - torch.tensor(eye.centre, dtype=torch.float32, device=dev)
            reach = (eye.radii + 0.5 * eye.travel) * 1.05
            q = (ex[..., 0] / float(reach[0])) ** 2 + (ex[..., 1] / float(reach[1])) ** 2
            clip.append((1.0 - q).mul_(4.0).clamp_(0, 1) * float(eye.iris))   # keep the iris in the eye
        self._iris_clip = torch.stack(clip)[:, None]                               # (2, 1, ch, cw)
        self._lid_rx = torch.tensor(self._eye_radii[:, 0] * 1.08, dtype=torch.float32, device=dev)[:, None, None]
        self._inner_sign = torch.tensor([self.eyes[s].inner_sign for s in ("l", "r")], dtype=torch.float32,
                                        device=dev)[:, None, None]
        self._lash_half = max(0.45, 0.1 * float(self._eye_radii[:, 1].mean()))
        self._lid_rgb = [torch.tensor(self.eyes[s].lid_rgb, dtype=torch.float32, device=dev)[None, :, None, None]
                         for s in ("l", "r")]
        self._lash_rgb = [torch.tensor(self.eyes[s].lash_rgb, dtype=torch.float32, device=dev)[None, :, None, None]
                          for s in ("l", "r")]
        mw_, mh_ = mouth_b[2], mouth_b[3]
        self._mouth_crop = (int(math.floor(mouth_b[0] + mw_ / 2 - 0.85 * mw_)),
                            int(math.floor(mouth_b[1] - 0.6 * mh_ - 0.1 * r)),
                            int(math.ceil(mouth_b[0] + mw_ / 2 + 0.85 * mw_)),
                            int(math.ceil(mouth_b[1] + mh_ / 2 + 0.42 * r + 0.6 * mh_)))
        mx0, my0, mx1, my1 = self._mouth_crop
        self._mouth_clip = (max(mx0, 0), max(my0, 0), min(mx1, self.w), min(my1, self.h))
        cx0, cy0, cx1, cy1 = self._mouth_clip
        self._mouth_xy = self._ident[cy0:max(cy1, cy0), cx0:max(cx1, cx0)]
        lip = _lip_colour(rgb, alpha, mouth_b)
        self._mouth_colours = torch.tensor(np.stack([[0.20, 0.06, 0.08], [0.93, 0.91, 0.87], [0.72, 0.32, 0.36], lip]),
                                           dtype=torch.float32, device=dev)[:, None, :, None, None]
        # Opening sizes relative to the head (px).
        self.max_open = 0.45 * r
        self.max_corner = 0.07 * r

    # ------------------------------------------------------------------ prepare-time helpers
    @staticmethod
    def _skin_colour(rgb: np.ndarray, alpha: np.ndarray, fb: FaceBoxes, eyes: dict[str, np.ndarray],
                     brows: dict[str, np.ndarray], mouth: np.ndarray) -> np.ndarray:
        """The skin colour: pack's skin_rgb when given, else the median of the cheeks."""
        if fb.skin_rgb is not None:
            given = np.array(fb.skin_rgb, np.float32) / 255.0
        else:
            given = None
        h, w = alpha.shape
        samples = []
        for side in ("l", "r"):
            e = eyes[side]
            x0 = int(max(0, e[0]))
            y0 = int(max(0, e[1] + 1.3 * e[3]))
            x1 = int(min(w, e[0] + e[2]))
            y1 = int(min(h, y0 + max(2, e[3])))
            if x1 > x0 and y1 > y0:
                region = rgb[:, y0:y1, x0:x1].reshape(3, -1)
                ok = alpha[y0:y1, x0:x1].reshape(-1) > 0.9
                samples.append(region[:, ok])
        if samples:
            s = np.concatenate(samples, 1)
            if s.shape[1] >= 4:
                sampled = np.median(s, 1).astype(np.float32)
                if given is None:
                    return sampled
                # A user/importer colour wins unless it is far from what the cheeks show.
                return given if np.abs(given - sampled).max() < 0.25 else sampled
        return given if given is not None else np.array([0.94, 0.78, 0.67], np.float32)

    def _bases(self, eyes: dict[str, np.ndarray], brows: dict[str, np.ndarray], mouth: np.ndarray) -> np.ndarray:
        h, w, r = self.h, self.w, self.radius
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        out = np.zeros((len(BASES), h, w, 2), np.float32)

        def bump(c: np.ndarray, sx: float, sy: float, sy_up: float | None = None) -> np.ndarray:
            """Smooth bump with compact support; `sy_up` (optional) is its reach above the centre."""
            syy = np.where(ys < c[1], max(sy_up if sy_up is not None else sy, 1.0), max(sy, 1.0))
            q = ((xs - c[0]) / max(sx, 1.0)) ** 2 + ((ys - c[1]) / syy) ** 2
            return np.clip(1.0 - q, 0.0, 1.0) ** 2

        mid_x = 0.5 * (eyes["l"][0] + eyes["l"][2] / 2 + eyes["r"][0] + eyes["r"][2] / 2)
        for side in ("l", "r"):
            b, e = brows[side], eyes[side]
            bc, ec = b[:2] + b[2:] / 2, e[:2] + e[2:] / 2
            # Below the brow the bump reaches the eye centre (the upper lid stretches, the eye stays);
            # above it, the forehead moves along. The raise amplitude is capped so the field never folds.
            gap = max(ec[1] - bc[1], 0.5 * b[3], 2.0)
            self._brow_gap = min(getattr(self, "_brow_gap", gap), gap)
            wb = bump(bc, 0.75 * b[2] + 0.05 * r, gap, max(gap, 0.4 * r))
            out[BI[f"brow_{side}"], ..., 1] = -wb
            inner = np.clip(0.5 + (mid_x - bc[0]) / abs(mid_x - bc[0] + 1e-6) * (xs - bc[0]) / b[2], 0, 1)
            out[BI[f"brow_inner_{side}"], ..., 1] = -wb * inner
            toward = 1.0 if mid_x > bc[0] else -1.0
            out[BI["furrow"], ..., 0] += toward * 0.7 * wb * inner
            out[BI["furrow"], ..., 1] += 0.6 * wb * (0.4 + 0.6 * inner)
            we = bump(ec, 0.85 * e[2], 1.1 * e[3] + 0.06 * r)
            out[BI[f"eye_open_{side}"], ..., 1] = (ys - ec[1]) * we
        mc = mouth[:2] + mouth[2:] / 2
        mw, mh = mouth[2], mouth[3]
        wm = bump(mc, 0.95 * mw, 1.4 * mh + 0.1 * r)
        out[BI["mouth_width"], ..., 0] = (xs - mc[0]) * wm
        corner = np.clip(((xs - mc[0]) / (0.5 * mw)) ** 2, 0, 1.2)
        out[BI["mouth_corners"], ..., 1] = -corner * bump(mc, 0.9 * mw, 1.1 * mh + 0.05 * r)
        # Jaw: what lies below the lip line moves down; it fades out towards the chin and sides.
        below = np.clip((ys - mc[1]) / max(0.15 * mh, 1.0) + 0.5, 0, 1)
        jaw_c = np.array([mc[0], mc[1] + 0.15 * r])
        out[BI["jaw"], ..., 1] = below * bump(jaw_c, 0.9 * mw + 0.1 * r, 0.75 * r)
        above = np.clip((mc[1] - ys) / max(0.15 * mh, 1.0) + 0.5, 0, 1)
        out[BI["upper_lip"], ..., 1] = -above * bump(mc, 0.8 * mw, 0.9 * mh + 0.04 * r)
        # Parallax: the features (inner face) move, the outline stays (bump falls off before it).
        fc = np.array([mid_x, 0.5 * (eyes["l"][1] + eyes["l"][3] / 2 + mc[1])])
        wf = bump(fc, 1.05 * r, 1.15 * r)
        out[BI["yaw"], ..., 0] = wf
        out[BI["pitch"], ..., 1] = wf
        return out

    def _extras(self, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-emotion premultiplied sprites: (E, 4, h, w) inside the head, (E, 4, oh, ow) around it."""
        from PIL import Image, ImageDraw

        ss = 3
        r = self.radius
        ox0, oy0, ox1, oy1 = self.overlay_box
        x0, y0 = self.box[:2]
        hc = self.head_c
        ec = {s: self.eyes[s].centre for s in ("l", "r")}
        er = {s: self.eyes[s].radii for s in ("l", "r")}
        mid = 0.5 * (ec["l"] + ec["r"])
        inside = np.zeros((len(EMOTIONS), 4, self.h, self.w), np.float32)
        outside = np.zeros((len(EMOTIONS), 4, oy1 - oy0, ox1 - ox0), np.float32)
        # patch px -> overlay px
        to_o = np.array([x0 - ox0, y0 - oy0], np.float64)
        lw = max(1.0, 0.035 * r)

        def canvas(w: int, h: int) -> tuple[Any, Any]:
            im = Image.new("RGBA", (w * ss, h * ss), (0, 0, 0, 0))
            return im, ImageDraw.Draw(im)

        def S(pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
            return [(x * ss, y * ss) for x, y in pts]

        def ell(d: Any, c: Sequence[float], rx: float, ry: float, fill: tuple[int, ...]) -> None:
            d.ellipse([(c[0] - rx) * ss, (c[1] - ry) * ss, (c[0] + rx) * ss, (c[1] + ry) * ss], fill=fill)

        def line(d: Any, pts: Sequence[tuple[float, float]], fill: tuple[int, ...], width: float) -> None:
            d.line(S(pts), fill=fill, width=max(1, round(width * ss)), joint="curve")

        def star(d: Any, c: Sequence[float], rad: float, fill: tuple[int, ...]) -> None:
            k = 0.28
            pts = [(c[0], c[1] - rad), (c[0] + rad * k, c[1] - rad * k), (c[0] + rad, c[1]),
                   (c[0] + rad * k, c[1] + rad * k), (c[0], c[1] + rad), (c[0] - rad * k, c[1] + rad * k),
                   (c[0] - rad, c[1]), (c[0] - rad * k, c[1] - rad * k)]
            d.polygon(S(pts), fill=fill)

        def finish(im: Any, w: int, h: int) -> np.ndarray:
            a = np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), np.float32) / 255.0
            a = a.transpose(2, 0, 1).copy()
            a[:3] *= a[3:4]
            return a

        eye_dx = 0.5 * abs(ec["l"][0] - ec["r"][0]) or 0.36 * r
        brow_y = min(b[1] for b in self.brows_b.values())
        for k, emo in enumerate(EMOTIONS):
            im_i, di = canvas(self.w, self.h)
            im_o, do = canvas(ox1 - ox0, oy1 - oy0)
            if emo in ("happy", "excited", "shy"):
                a = {"happy": 95, "excited": 130, "shy": 190}[emo]
                for s in ("l", "r"):
                    out_dir = np.sign(ec[s][0] - mid[0]) or 1.0
                    c = ec[s] + np.array([out_dir * 0.12 * eye_dx, er[s][1] + 0.26 * r])
                    ell(di, c, 0.24 * r, 0.13 * r, (255, 70, 95, a))
                    if emo == "shy":      # hatch lines over the blush
                        for j in range(3):
                            xh = c[0] - 0.14 * r + j * 0.14 * r
                            line(di, [(xh - 0.04 * r, c[1] + 0.07 * r), (xh + 0.04 * r, c[1] - 0.07 * r)],
                                 (220, 40, 70, 230), lw)
            if emo == "sad":      # gloom on the forehead, tears from the outer eye corners
                ell(di, (mid[0], brow_y - 0.28 * r), 0.5 * r, 0.16 * r, (60, 80, 200, 60))
                for s in ("l", "r"):
                    out_dir = np.sign(ec[s][0] - mid[0]) or 1.0
                    x = ec[s][0] + out_dir * 0.35 * er[s][0]
                    ytop = ec[s][1] + 0.6 * er[s][1]
                    tw = max(0.05 * r, 1.2)
                    pts = [(x - tw, ytop), (x + tw, ytop), (x + 1.4 * tw, ytop + 0.42 * r),
                           (x, ytop + 0.5 * r), (x - 1.4 * tw, ytop + 0.42 * r)]
                    di.polygon(S(pts), fill=(90, 175, 255, 215))
                    ell(di, (x, ytop + 0.44 * r), 1.6 * tw, 1.8 * tw, (120, 195, 255, 235))
            if emo == "angry":
                ell(di, (mid[0], brow_y - 0.25 * r), 0.5 * r, 0.17 * r, (220, 30, 20, 70))
                side = np.sign(ec["l"][0] - mid[0]) or 1.0          # on the character's left temple
                ax, ay = ec["l"][0] + side * 0.25 * r, brow_y - 0.3 * r
                for ang in (45, 135, 225, 315):
                    t = math.radians(ang)
                    p0 = (ax + 0.06 * r * math.cos(t), ay + 0.06 * r * math.sin(t))
                    p1 = (ax + 0.2 * r * math.cos(t), ay + 0.2 * r * math.sin(t))
                    bend = (p1[0] + 0.06 * r * math.sin(t), p1[1] - 0.06 * r * math.cos(t))
                    line(di, [p0, bend], (225, 20, 25, 255), max(1.2, 0.055 * r))
            if emo in ("happy", "excited"):
                spots = ([(1.2, -0.75, 0.22), (-1.25, -0.6, 0.16), (1.3, 0.55, 0.14), (-1.2, 0.65, 0.18)]
                         if emo == "excited" else [(1.2, -0.75, 0.17), (-1.22, -0.55, 0.12)])
                for sx, sy, rad in spots:
                    c = hc + np.array([sx * r, sy * r]) + to_o
                    star(do, c, rad * r, (255, 215, 40, 255))
            if emo == "surprised":
                c = hc + np.array([1.05 * r, -0.7 * r]) + to_o
                drop = [(c[0], c[1] - 0.14 * r), (c[0] + 0.08 * r, c[1] + 0.03 * r), (c[0], c[1] + 0.1 * r),
                        (c[0] - 0.08 * r, c[1] + 0.03 * r)]
                do.polygon(S(drop), fill=(120, 200, 255, 255))
                for ang in (-150, -125, -55, -30):
                    t = math.radians(ang)
                    p0 = hc + to_o + np.array([1.1 * r * math.cos(t), 1.1 * r * math.sin(t)])
                    p1 = hc + to_o + np.array([1.35 * r * math.cos(t), 1.35 * r * math.sin(t)])
                    line(do, [tuple(p0), tuple(p1)], (40, 40, 40, 255), max(1.2, 0.05 * r))
            inside[k] = finish(im_i, self.w, self.h)
            outside[k] = finish(im_o, ox1 - ox0, oy1 - oy0)
        return inside, outside

    # ------------------------------------------------------------------ per frame
    def animate(self, conds: Sequence[Conditioning]) -> FaceFrame:
        """Animated face patches for a batch of sessions (one row per conditioning)."""
        p = self.params(conds)
        return self.animate_params(p)

    def params(self, conds: Sequence[Conditioning]) -> dict[str, np.ndarray]:
        """Conditionings -> per-session drawing parameters (numpy, vectorised over the batch)."""
        n = len(conds)
        nf = len(FP)
        face = np.zeros((n, nf), np.float32)
        vis = np.zeros((n, len(VISEMES)), np.float32)
        emo = np.zeros((n, len(EMOTIONS)), np.float32)
        head = np.zeros((n, 3), np.float32)
        t = np.zeros(n, np.float64)
        present = np.zeros(n, np.float32)
        face_seen = np.zeros(n, bool)
        for i, c in enumerate(conds):
            f = np.asarray(c.face, np.float32).reshape(-1)[:nf]
            face[i, :f.size] = f
            v = np.asarray(c.visemes, np.float32).reshape(-1)[:len(VISEMES)]
            vis[i, :v.size] = v
            ev = np.asarray(c.emotion, np.float32).reshape(-1)
            ev = _finite(ev, nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
            emo[i, :min(len(EMOTIONS), ev.size)] = ev[:len(EMOTIONS)]
            emo[i, 0] += ev[len(EMOTIONS):].sum()          # unknown extra emotions count as neutral
            hh = np.asarray(c.head, np.float32).reshape(-1)[:3]
            head[i, :hh.size] = hh
            t[i] = c.t_tick_ns * 1e-9
            present[i] = c.body_present
            face_seen[i] = bool(getattr(c, "face_present", False))
        face = _finite(face, nan=0.0, posinf=1.0, neginf=0.0)
        raw_face = face.copy()
        gaze = np.stack([face[:, FP["gaze_x"]], face[:, FP["gaze_y"]]], 1).clip(-1, 1)
        face = face.clip(0, 1)
        vis = _finite(vis, nan=0.0, posinf=1.0, neginf=0.0).clip(0, None)
        vs = vis.sum(1, keepdims=True)
        vis = np.where(vs > 1e-6, vis / np.maximum(vs, 1e-6), np.eye(len(VISEMES), dtype=np.float32)[0])
        es = emo.sum(1, keepdims=True)
        emo = np.where(es > 1e-6, emo / np.maximum(es, 1e-6), np.eye(len(EMOTIONS), dtype=np.float32)[0])
        head = _finite(head, nan=0.0, posinf=0.8, neginf=-0.8).clip(-0.8, 0.8)
        present = _finite(present, nan=0.0).clip(0, 1)

        def opt(names: Sequence[str]) -> np.ndarray:
            for nm in names:
                if nm in FP:
                    return face[:, FP[nm]]
            return np.zeros(n, np.float32)

        def emotion(name: str) -> np.ndarray:
            return emo[:, EMO[name]] if name in EMO else np.zeros(n, np.float32)

        happy, sad, angry, surp, exc, shy = (emotion(k) for k in
                                             ("happy", "sad", "angry", "surprised", "excited", "shy"))
        # Automatic blinks only while nobody is tracked: a face close-up has no body but a tracked
        # face (its smoothed parameters are never all exactly neutral), whose own blinks rule.
        tracked = ["blink_left", "blink_right", "gaze_x", "gaze_y", "mouth_open", "brow_raise_left",
                   "brow_raise_right", "brow_furrow"]
        face_seen |= np.abs(raw_face[:, [FP[k] for k in tracked]]).sum(1) > 1e-4
        auto = auto_blink(_finite(t)) * (1.0 - present)
        auto = auto * ~face_seen
        smile = np.clip(face[:, FP["smile"]] + 0.8 * happy + 0.9 * exc + 0.2 * shy
                        - 0.8 * sad - 0.55 * angry - opt(FROWN_NAMES), -1, 1)
        out: dict[str, np.ndarray] = {"gaze": gaze, "emo": emo, "smile": smile}
        for side, name in (("l", "left"), ("r", "right")):
            blink = np.maximum(face[:, FP[f"blink_{name}"]], auto)
            wide = np.clip(np.maximum(opt(WIDE_NAMES[side]), 0.9 * surp + 0.35 * exc), 0, 1)
            squint = np.clip(np.maximum(opt(SQUINT_NAMES[side]), 0.0)
                             + 0.3 * happy + 0.28 * angry + 0.35 * shy + 0.22 * sad
                             + 0.25 * np.clip(face[:, FP["smile"]], 0, 1) - 0.7 * wide, 0, 0.7)
            out[f"k_up_{side}"] = np.maximum(blink, squint)
            out[f"k_low_{side}"] = np.clip(0.4 * happy + 0.25 * np.clip(face[:, FP["smile"]], 0, 1)
                                           + 0.3 * opt(SQUINT_NAMES[side]) + 0.15 * exc, 0, 0.6) * (1 - blink)
            out[f"open_{side}"] = 0.32 * wide - 0.12 * squint          # eye opening scale
            out[f"slant_in_{side}"] = 0.45 * angry                       # inner corner lower
            out[f"slant_out_{side}"] = 0.4 * sad                         # outer corner lower
            out[f"brow_{side}"] = np.clip(face[:, FP[f"brow_raise_{name}"]] + 0.8 * surp + 0.3 * exc
                                          + 0.15 * happy, 0, 1.3)
        out["arc"] = np.clip(1.2 * happy + 0.5 * exc, 0, 1)
        out["brow_inner"] = np.clip(0.9 * sad + 0.5 * shy - 1.0 * angry + opt(BROW_INNER_NAMES), -1, 1)
        out["furrow"] = np.clip(face[:, FP["brow_furrow"]] + 0.8 * angry, 0, 1)
        pucker = np.clip(opt(PUCKER_NAMES), 0, 1)
        speech = 1.0 - vis[:, 0]
        shapes = vis[:, 1:]
        ssum = shapes.sum(1, keepdims=True)
        shapes = np.where(ssum > 1e-4, shapes / np.maximum(ssum, 1e-4), np.eye(len(VISEMES) - 1, dtype=np.float32)[0])
        shape = shapes @ VISEME_SHAPE                                   # (n, 4)
        sp = speech[:, None]
        shape = sp * shape + (1 - sp) * VISEME_SHAPE[0]                 # no speech: the plain jaw
        jaw = np.clip(np.maximum.reduce([face[:, FP["mouth_open"]], 0.85 * speech, 0.5 * surp, 0.3 * exc]), 0, 1)
        width = (0.75 + 0.5 * face[:, FP["mouth_width"]]) * shape[:, 0] * (1 + 0.12 * np.clip(smile, 0, 1))
        width = width * (1 - 0.35 * pucker) * (1 - 0.25 * shy) * (1 - 0.15 * surp)
        # A grimace (wide lips, little opening) shows clenched teeth.
        grimace = np.clip((face[:, FP["mouth_width"]] - 0.65) / 0.3, 0, 1) * np.clip(1.2 - 2.0 * jaw, 0, 1)
        out["jaw"] = jaw
        out["open_h"] = np.maximum(jaw * shape[:, 1], 0.22 * grimace)
        out["mouth_w"] = width
        out["round"] = np.clip(np.maximum(shape[:, 2], pucker), 0, 1)
        out["teeth"] = np.clip(np.maximum(shape[:, 3], 0.9 * grimace), 0, 0.95)
        out["yaw"], out["pitch"] = head[:, 0], head[:, 1]
        return out

    def coefficients(self, p: dict[str, np.ndarray]) -> np.ndarray:
        """Displacement coefficients (n, K) for the bases."""
        n = len(p["jaw"])
        r = self.radius
        c = np.zeros((n, self._K), np.float32)
        for s in ("l", "r"):
            # 0.5 * gap keeps the brow field's slope below 1 (the bump's steepest slope is ~1.3 / gap).
            c[:, BI[f"brow_{s}"]] = p[f"brow_{s}"] * min(0.16 * r, 0.5 * self._brow_gap)
            c[:, BI[f"brow_inner_{s}"]] = p["brow_inner"] * min(0.09 * r, 0.3 * self._brow_gap)
            c[:, BI[f"eye_open_{s}"]] = p[f"open_{s}"]
        c[:, BI["furrow"]] = p["furrow"] * min(0.07 * r, 0.35 * self._brow_gap)
        c[:, BI["mouth_width"]] = np.clip(p["mouth_w"], 0.4, 1.5) - 1.0
        c[:, BI["mouth_corners"]] = p["smile"] * self.max_corner
        c[:, BI["jaw"]] = p["open_h"] * self.max_open * 0.85
        c[:, BI["upper_lip"]] = p["open_h"] * self.max_open * 0.15
        c[:, BI["yaw"]] = p["yaw"] * 0.22 * r
        c[:, BI["pitch"]] = p["pitch"] * 0.16 * r
        return c

    def displacement(self, conds: Sequence[Conditioning]) -> torch.Tensor:
        """The feature displacement field (B, h, w, 2) in patch px (content at p moves to p + d)."""
        coef = self.coefficients(self.params(conds))
        t = torch.from_numpy(coef).to(self.device)
        return (t @ self._bases_t).view(len(conds), self.h, self.w, 2)

    def animate_params(self, p: dict[str, np.ndarray]) -> FaceFrame:
        dev = self.device
        n = len(p["jaw"])
        comp = self._base.expand(n, -1, -1, -1).clone()
        alpha = comp[:, 3:4]

        # 1. irises shifted by the gaze, inside both eye crops at once (one grid_sample)
        if self._iris_any and dev.type == "cpu":       # the same sampling, compiled
            shift = p["gaze"][:, None, :] * self._travel[None]                 # (n, 2 eyes, 2) px
            _iris_cpu(comp.numpy(), self._iris.numpy().transpose(1, 2, 0), shift.astype(np.float64),
                      np.array(self._crop_xy, np.int64),
                      self._ch, self._cw, self._iris_clip[:, 0].numpy())
        elif self._iris_any:
            shift = p["gaze"][:, None, :] * self._travel[None]                 # (n, 2 eyes, 2) px
            xy = self._eye_grid[None] - torch.from_numpy(shift.astype(np.float32)).to(dev)[:, :, None, None, :]
            grid = (xy * self._norm - 1.0).view(n * 2, self._ch, self._cw, 2)
            iris = F.grid_sample(self._iris.expand(n * 2, -1, -1, -1), grid, mode="bilinear",
                                 padding_mode="zeros", align_corners=False).view(n, 2, 4, self._ch, self._cw)
            iris = iris * self._iris_clip[None]
            for e, (x0, y0) in enumerate(self._crop_xy):
                dst = comp[:, :, y0:y0 + self._ch, x0:x0 + self._cw]
                dst.mul_(1.0 - iris[:, e, 3:4]).add_(iris[:, e])

        # 2. emotion extras painted on the surface (they move with the features below)
        emo = p["emo"]
        emo_t = torch.from_numpy(np.ascontiguousarray(emo, np.float32)).to(dev)
        if self._inside_any.any() and emo[:, self._inside_any].sum() > 1e-4:
            ex_in = _mix(emo, emo_t, self._inside, self._inside_any).view(n, 4, self.h, self.w)
            comp[:, :3].mul_(1.0 - ex_in[:, 3:4]).add_(ex_in[:, :3] * alpha)

        # 3. feature displacement: one field per session, one grid_sample
        coef = self.coefficients(p)
        if dev.type == "cpu":      # the same warp, compiled (one pass instead of ten tensor ops)
            out = torch.empty_like(comp)
            cn = comp.numpy()
            _warp_cpu(cn, cn.transpose(0, 2, 3, 1), coef, self._bases_hw, self._still, out.numpy())
        else:
            disp = (torch.from_numpy(coef).to(dev) @ self._bases_t).view(n, self.h, self.w, 2)
            grid = (self._ident[None] - disp) * self._norm - 1.0
            out = F.grid_sample(comp, grid, mode="bilinear", padding_mode="border", align_corners=False)
            # The silhouette never moves: keep the art's alpha, re-weight the moved colour to it.
            wa = out[:, 3:4]
            moved_rgb = torch.where(wa > 1e-3, out[:, :3] / wa.clamp(min=1e-3) * alpha, comp[:, :3])
            out = torch.cat([moved_rgb, alpha], 1)
        key = np.einsum("nk,kpd->npd", coef, self._key_disp)             # (n, 3, 2) px

        # 4. eyelids (both eyes at once)  5. the mouth interior
        self._lids(out, p, key[:, :2])
        self._mouth(out, p, key[:, 2])

        overlay = None
        if self._outside_any.any() and emo[:, self._outside_any].sum() > 1e-4:
            overlay = _mix(emo, emo_t, self._outside, self._outside_any).view(n, 4, self._oh, self._ow)
        return FaceFrame(out, overlay)

    def _lids(self, out: torch.Tensor, p: dict[str, np.ndarray], moved: np.ndarray) -> None:
        """Eyelids over both eyes of every row: (n, 2 eyes) parameters, one pass."""
        k_up = np.stack([p["k_up_l"], p["k_up_r"]], 1)
        k_low = np.stack([p["k_low_l"], p["k_low_r"]], 1)
        if float(k_up.max()) < 0.02 and float(k_low.max()) < 0.02:
            return
        dev = out.device
        n = out.shape[0]
        centre = self._eye_centres[None] + moved                              # (n, 2, 2)
        scale = 1.0 + np.stack([p["open_l"], p["open_r"]], 1)
        ry = self._eye_radii[None, :, 1] * 1.12 * scale
        slant_in = np.stack([p["slant_in_l"], p["slant_in_r"]], 1) * (k_up < 0.9)
        slant_out = np.stack([p["slant_out_l"], p["slant_out_r"]], 1) * (k_up < 0.9)
        arc = np.repeat(p["arc"][:, None], 2, 1)
        pack = np.stack([centre[..., 0], centre[..., 1], ry, k_up, k_low, slant_in, slant_out, arc], -1)
        if dev.type == "cpu":      # the same drawing, compiled (torch pays ~40 small ops here)
            _lids_cpu(out.numpy(), pack.astype(np.float64), np.array(self._crop_xy, np.int64), self._ch, self._cw,
                      self._eye_radii[:, 0] * 1.08, np.array([self.eyes[s].inner_sign for s in ("l", "r")]),
                      float(self._lash_half), np.stack([self.eyes[s].lid_rgb for s in ("l", "r")]).astype(np.float64),
                      np.stack([self.eyes[s].lash_rgb for s in ("l", "r")]).astype(np.float64))
            return
        P = torch.from_numpy(pack.astype(np.float32)).to(dev)[..., None, None]   # (n, 2, 8, 1, 1)
        cx, cy, ry_t, k_up_t, k_low_t, s_in, s_out, arc_t = P.unbind(2)
        xy = self._eye_grid                                                    # (2, ch, cw, 2)
        rx = self._lid_rx                                                      # (2, 1, 1)
        u = (xy[None, ..., 0] - cx) / rx                                       # (n, 2, ch, cw)
        y = xy[None, ..., 1] - cy
        half = (1.0 - u * u).clamp_(min=0.0).sqrt_()
        inner = (u * self._inner_sign).clamp(0, 1)                            # 1 at the inner corner
        outer = (-u * self._inner_sign).clamp(0, 1)
        k = (k_up_t + s_in * inner + s_out * outer).clamp_(0, 1)
        close = ry_t * (0.35 - 0.55 * arc_t * (1.0 - u * u))                  # the closed lid line
        top = -ry_t * half
        bottom = ry_t * half
        upper = top + k * (close - top)
        lower = bottom - k_low_t * (bottom - close)
        aa = 0.7
        in_x = (1.0 - u.abs()).mul_(rx / aa).clamp_(0, 1)
        # (a row whose lids are open draws nothing, whatever the other rows of the batch do)
        cover = ((upper - y) / aa + 0.5).clamp_(0, 1) * (k / 0.04).clamp(0, 1) + \
            ((y - lower) / aa + 0.5).clamp_(0, 1) * (k_low_t / 0.04).clamp(0, 1)
        cover = cover.clamp_(0, 1) * ((bottom + aa - y) / aa).clamp_(0, 1) * ((y - top + aa) / aa).clamp_(0, 1) * in_x
        lash = (1.0 - (y - upper).abs() / self._lash_half).clamp_(0, 1) * in_x * (k * 4).clamp_(0, 1)
        lash = lash * (y < bottom + aa)
        shade = 1.0 - 0.12 * (1.0 - ((upper - y) / (ry_t * 0.6)).clamp(0, 1))  # darker near the lid edge
        cov, la = cover[:, :, None], lash[:, :, None]                         # (n, 2, 1, ch, cw)
        for e, (x0, y0) in enumerate(self._crop_xy):
            dst = out[:, :, y0:y0 + self._ch, x0:x0 + self._cw]
            a = dst[:, 3:4]
            rgb = dst[:, :3] * (1 - cov[:, e]) + self._lid_rgb[e] * shade[:, e, None] * cov[:, e] * a
            dst[:, :3] = rgb * (1 - la[:, e]) + self._lash_rgb[e] * la[:, e] * a
        del n

    def _mouth(self, out: torch.Tensor, p: dict[str, np.ndarray], moved: np.ndarray) -> None:
        open_h = p["open_h"]
        if float(np.max(open_h)) < 0.01:
            return
        dev = out.device
        cx0, cy0, cx1, cy1 = self._mouth_clip
        if cx1 <= cx0 or cy1 <= cy0:
            return
        mb = self.mouth_b
        mc = mb[:2] + mb[2:] / 2
        gap = open_h * self.max_open                                  # jaw drop + upper lip lift
        hw = np.maximum(0.42 * mb[2] * np.clip(p["mouth_w"], 0.4, 1.5), 1.0)
        hh = np.maximum(0.5 * gap, 0.3)
        pack = np.stack([mc[0] + moved[:, 0], mc[1] + moved[:, 1] + 0.35 * gap, hw, hh,
                         p["smile"] * self.max_corner, p["round"], np.clip(gap / 1.5, 0, 1),
                         -1.0 + 2.0 * p["teeth"], np.clip(1.0 - p["teeth"] * 1.2, 0, 1),
                         1.0 / np.minimum(hw, hh)], -1)
        if dev.type == "cpu":      # the same drawing, compiled
            _mouth_cpu(out.numpy(), pack.astype(np.float64), cx0, cy0, cx1, cy1,
                       self._mouth_colours[:, 0, :, 0, 0].cpu().numpy().astype(np.float64))
            return
        P = torch.from_numpy(pack.astype(np.float32)).to(dev)[..., None, None]   # (n, 10, 1, 1)
        cx, yc, hw_t, hh_t, corner, rnd, fade, teeth_edge, tongue_on, px = P.unbind(1)
        xy = self._mouth_xy
        u = (xy[None, ..., 0] - cx) / hw_t
        uu = (u * u).clamp_(max=1.0)
        v = (xy[None, ..., 1] - yc + corner * uu) / hh_t                  # corners follow the smile
        expo = 2.0 + 1.5 * (1.0 - rnd)                                      # boxier when not round
        d = u.abs().clamp_(min=1e-4).pow_(expo) + v * v                     # < 1 inside
        inside = ((1.0 - d) / (2 * px) + 0.5).clamp_(0, 1) * fade           # a crack fades in
        teeth = ((teeth_edge - v) / px + 0.5).clamp_(0, 1) * (1.0 - u.abs() * 0.6).clamp_(0, 1)
        tongue_q = uu / 0.36 + ((v - 0.85) / 0.45) ** 2
        tongue = ((1.0 - tongue_q) / 0.2).clamp_(0, 1) * tongue_on
        edge = ((d - 0.82) / 0.18).clamp_(0, 1)                             # lip edge ring
        shade = 1.0 - 0.4 * (1.0 - v.abs()).clamp_(0, 1)                    # darker deep inside
        C = self._mouth_colours                                             # dark, teeth, tongue, lip
        tongue, teeth, edge = tongue[:, None], teeth[:, None], edge[:, None]
        col = C[0] * shade[:, None]
        col = col * (1 - tongue) + C[2] * tongue
        col = col * (1 - teeth) + C[1] * (1.0 - 0.12 * uu[:, None]) * teeth   # side teeth in shadow
        col = col * (1 - 0.6 * edge) + C[3] * 0.6 * edge
        dst = out[:, :, cy0:cy1, cx0:cx1]
        a = dst[:, 3:4]
        cov = inside[:, None]
        dst[:, :3] = dst[:, :3] * (1 - cov) + col * cov * a


def _mix(emo: np.ndarray, emo_t: torch.Tensor, extras: torch.Tensor, drawn: np.ndarray) -> torch.Tensor:
    """emo_t @ extras over only the emotions some row shows that have a drawing (usually one or
    two of them: the full product costs a pass over every emotion's drawing)."""
    used = np.flatnonzero(drawn & (emo.max(0) > 0))
    idx = torch.from_numpy(used).to(emo_t.device)
    return emo_t.index_select(1, idx) @ extras.index_select(0, idx)


def _finite(a: np.ndarray, nan: float = 0.0, posinf: float | None = None,
            neginf: float | None = None) -> np.ndarray:
    """np.nan_to_num, with a fast path for the usual all-finite input (nan_to_num alone costs tens
    of microseconds on these small arrays, several times per frame)."""
    if np.isfinite(a).all():
        return a
    return np.nan_to_num(a, nan=nan, posinf=posinf, neginf=neginf)


@njit(inline="always")
def _clamp01(x: float) -> float:  # pragma: no cover - compiled
    return min(max(x, 0.0), 1.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _iris_cpu(comp: np.ndarray, iris: np.ndarray, shift: np.ndarray, crop_xy: np.ndarray, ch: int, cw: int,
              clip: np.ndarray) -> None:  # pragma: no cover - compiled
    """animate_params' irises per pixel: the iris layer (h, w, 4) sampled bilinearly (zeros outside,
    as grid_sample(align_corners=False)) shifted by the gaze, kept inside the eye, laid over each
    eye crop in turn (the torch code beside the call is the reference)."""
    for b in range(comp.shape[0]):
        for e in range(2):
            x0, y0 = crop_xy[e, 0], crop_xy[e, 1]
            for j in range(ch):
                for i in range(cw):
                    k = clip[e, j, i]
                    if k == 0.0:
                        continue
                    sx = x0 + i - shift[b, e, 0]
                    sy = y0 + j - shift[b, e, 1]
                    o = bilinear_zeros(iris, sx, sy)
                    a = o[3] * k
                    for c in range(4):
                        comp[b, c, y0 + j, x0 + i] = comp[b, c, y0 + j, x0 + i] * (1.0 - a) + o[c] * k


@njit(cache=True, nogil=True, error_model="numpy")
def _warp_cpu(comp: np.ndarray, img: np.ndarray, coef: np.ndarray, bases: np.ndarray, still: np.ndarray,
              out: np.ndarray) -> None:  # pragma: no cover - compiled
    """animate_params' feature warp per pixel: displacement = coef @ bases, bilinear sampling with
    border padding at (pixel - displacement) as grid_sample(align_corners=False) does, the art's
    alpha kept and the moved colour re-weighted to it (the torch code beside the call is the
    reference). img is comp as (n, h, w, 4) (a view)."""
    n, h, w = comp.shape[0], comp.shape[2], comp.shape[3]
    K = bases.shape[0]
    for b in range(n):
        for y in range(h):
            for x in range(w):
                if still[y, x]:
                    for c in range(4):
                        out[b, c, y, x] = comp[b, c, y, x]
                    continue
                dx = 0.0
                dy = 0.0
                for k in range(K):
                    dx += coef[b, k] * bases[k, y, x, 0]
                    dy += coef[b, k] * bases[k, y, x, 1]
                # border padding = zeros padding at the clamped point (its outer weights are 0)
                sx, sy = min(max(x - dx, 0.0), w - 1.0), min(max(y - dy, 0.0), h - 1.0)
                o0, o1, o2, o3 = bilinear_zeros(img[b], sx, sy)
                alpha = comp[b, 3, y, x]
                if o3 > 1e-3:
                    k_ = alpha / max(o3, 1e-3)
                    out[b, 0, y, x] = o0 * k_
                    out[b, 1, y, x] = o1 * k_
                    out[b, 2, y, x] = o2 * k_
                else:
                    out[b, 0, y, x] = comp[b, 0, y, x]
                    out[b, 1, y, x] = comp[b, 1, y, x]
                    out[b, 2, y, x] = comp[b, 2, y, x]
                out[b, 3, y, x] = alpha


@njit(cache=True, nogil=True, error_model="numpy")
def _lids_cpu(out: np.ndarray, pack: np.ndarray, crop_xy: np.ndarray, ch: int, cw: int, rx: np.ndarray,
              inner_sign: np.ndarray, lash_half: float, lid_rgb: np.ndarray,
              lash_rgb: np.ndarray) -> None:  # pragma: no cover - compiled
    """FaceAnimator._lids' drawing per pixel (the torch code below it is the reference)."""
    c01 = _clamp01
    aa = 0.7
    for b in range(out.shape[0]):
        for e in range(2):
            cx, cy, ry, k_up, k_low, s_in, s_out, arc = pack[b, e]
            x0, y0 = crop_xy[e, 0], crop_xy[e, 1]
            for j in range(ch):
                yy = y0 + j
                yv = yy + 0.5 - cy
                for i in range(cw):
                    xx = x0 + i
                    u = (xx + 0.5 - cx) / rx[e]
                    half = math.sqrt(max(1.0 - u * u, 0.0))
                    inner = c01(u * inner_sign[e])
                    outer = c01(-u * inner_sign[e])
                    k = c01(k_up + s_in * inner + s_out * outer)
                    close = ry * (0.35 - 0.55 * arc * (1.0 - u * u))
                    top = -ry * half
                    bottom = ry * half
                    upper = top + k * (close - top)
                    lower = bottom - k_low * (bottom - close)
                    in_x = c01((1.0 - abs(u)) * (rx[e] / aa))
                    cover = (c01((upper - yv) / aa + 0.5) * c01(k / 0.04)
                             + c01((yv - lower) / aa + 0.5) * c01(k_low / 0.04))
                    cover = c01(cover) * c01((bottom + aa - yv) / aa) * c01((yv - top + aa) / aa) * in_x
                    lash = c01(1.0 - abs(yv - upper) / lash_half) * in_x * c01(k * 4.0)
                    if not yv < bottom + aa:
                        lash = 0.0
                    shade = 1.0 - 0.12 * (1.0 - c01((upper - yv) / (ry * 0.6)))
                    a = out[b, 3, yy, xx]
                    for c in range(3):
                        rgb = out[b, c, yy, xx] * (1.0 - cover) + lid_rgb[e, c] * shade * cover * a
                        out[b, c, yy, xx] = rgb * (1.0 - lash) + lash_rgb[e, c] * lash * a


@njit(cache=True, nogil=True, error_model="numpy")
def _mouth_cpu(out: np.ndarray, pack: np.ndarray, x0: int, y0: int, x1: int, y1: int,
               colours: np.ndarray) -> None:  # pragma: no cover - compiled
    """FaceAnimator._mouth's drawing per pixel (the torch code below it is the reference)."""
    c01 = _clamp01
    for b in range(out.shape[0]):
        cx, yc, hw, hh, corner, rnd, fade, teeth_edge, tongue_on, px = pack[b]
        expo = 2.0 + 1.5 * (1.0 - rnd)
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                u = (xx + 0.5 - cx) / hw
                uu = min(u * u, 1.0)
                v = (yy + 0.5 - yc + corner * uu) / hh
                d = max(abs(u), 1e-4) ** expo + v * v
                inside = c01((1.0 - d) / (2 * px) + 0.5) * fade
                teeth = c01((teeth_edge - v) / px + 0.5) * c01(1.0 - abs(u) * 0.6)
                tongue_q = uu / 0.36 + ((v - 0.85) / 0.45) ** 2
                tongue = c01((1.0 - tongue_q) / 0.2) * tongue_on
                edge = c01((d - 0.82) / 0.18)
                shade = 1.0 - 0.4 * c01(1.0 - abs(v))
                a = out[b, 3, yy, xx]
                for c in range(3):
                    col = colours[0, c] * shade
                    col = col * (1 - tongue) + colours[2, c] * tongue
                    col = col * (1 - teeth) + colours[1, c] * (1.0 - 0.12 * uu) * teeth
                    col = col * (1 - 0.6 * edge) + colours[3, c] * 0.6 * edge
                    out[b, c, yy, xx] = out[b, c, yy, xx] * (1 - inside) + col * inside * a


# ---------------------------------------------------------------------------------------------
# prepare-time analysis
# ---------------------------------------------------------------------------------------------

def _luma(rgb: np.ndarray) -> np.ndarray:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _ellipse_mask(shape: tuple[int, ...], c: np.ndarray, radii: np.ndarray) -> np.ndarray:
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    return ((xs - c[0]) / radii[0]) ** 2 + ((ys - c[1]) / radii[1]) ** 2 <= 1.0


def _find_iris(rgb: np.ndarray, alpha: np.ndarray, c: np.ndarray,
               radii: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The dark blob inside the eye ellipse, when it stands out from a lighter surround: a soft
    mask (h, w), its centre and radius. None when the eye has no separable iris."""
    inside = _ellipse_mask(alpha.shape, c, radii) & (alpha > 0.5)
    n_in = int(inside.sum())
    if n_in < 6:
        return None
    lum = _luma(rgb)
    vals = lum[inside]
    lo, hi = np.percentile(vals, 10), np.percentile(vals, 90)
    if hi - lo < 0.18:                                     # flat: nothing to separate
        return None
    thr = lo + 0.45 * (hi - lo)
    dark = (inside & (lum < thr)).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n <= 1:
        return None
    # the component nearest the eye centre, weighted by size
    best, score = -1, -1.0
    for i in range(1, n):
        area = stats[i, cv2.CC_STAT_AREA]
        dist = np.hypot(*((cents[i] - c) / radii))
        s = area / (1.0 + 2.0 * dist)
        if s > score:
            best, score = i, s
    area = float(stats[best, cv2.CC_STAT_AREA])
    if area < 3 or area > 0.8 * n_in:
        return None
    comp = (labels == best)
    light = inside & ~comp
    if light.sum() < 0.15 * n_in or np.median(lum[light]) - np.median(lum[comp]) < 0.15:
        return None
    # Round the blob out to a disc-ish mask (lashes cut it at the top), softened by one pixel.
    mask = cv2.GaussianBlur(comp.astype(np.float32), (0, 0), 0.8)
    mask = np.clip(mask * 1.6, 0, 1) * inside
    return mask.astype(np.float32), cents[best].astype(np.float64), math.sqrt(area / math.pi)


def _inpaint(patch: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill `hole` of a premultiplied (4, h, w) patch from its surroundings (colour only)."""
    a = patch[3]
    rgb = (patch[:3] / np.maximum(a, 1e-4)).clip(0, 1).transpose(1, 2, 0)
    img = (rgb * 255 + 0.5).astype(np.uint8)
    rad = max(2, int(math.sqrt(hole.sum()) * 0.5))
    filled = cv2.inpaint(img, hole.astype(np.uint8), rad, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
    out = patch.copy()
    out[:3] = np.where(hole[None], filled.transpose(2, 0, 1) * a[None], patch[:3])
    return out


def _lid_colours(rgb: np.ndarray, alpha: np.ndarray, c: np.ndarray, radii: np.ndarray,
                 skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lid skin: the light pixels of a ring just around the eye (falls back to the skin colour);
    lash: the darkest pixels in the eye, kept dark."""
    outer = _ellipse_mask(alpha.shape, c, radii * np.array([1.35, 1.9]))
    inner = _ellipse_mask(alpha.shape, c, radii * 1.05)
    ring = outer & ~inner & (alpha > 0.9)
    lid = skin.astype(np.float32)
    if ring.sum() >= 6:
        px = rgb[:, ring]
        lum = _luma(px)
        keep = lum >= np.percentile(lum, 40)
        cand = np.median(px[:, keep], 1)
        if np.abs(cand - skin).max() < 0.3:               # the ring is skin (not hair or shadow)
            lid = (0.6 * cand + 0.4 * skin).astype(np.float32)
    inside = inner & (alpha > 0.5)
    lash = np.array([0.16, 0.11, 0.11], np.float32)
    if inside.sum() >= 4:
        px = rgb[:, inside]
        lum = _luma(px)
        darkest = px[:, lum <= np.percentile(lum, 8)]
        if darkest.size:
            lash = np.minimum(np.median(darkest, 1), 0.3).astype(np.float32)
    return lid * 0.97, lash


def _lip_line(rgb: np.ndarray, alpha: np.ndarray, mouth: np.ndarray) -> float:
    """y (patch px) of the darkest row across the middle of the mouth box (the lips' seam), searched
    in the box's middle 40 %; the box centre when the box is flat or outside the picture."""
    x, y, w, h = mouth
    x0, x1 = int(max(0, x + 0.3 * w)), int(min(alpha.shape[1], x + 0.7 * w))
    y0, y1 = int(max(0, y + 0.3 * h)), int(min(alpha.shape[0], math.ceil(y + 0.7 * h)))
    if x1 - x0 < 1 or y1 - y0 < 3:
        return float(y + h / 2)
    lum = _luma(rgb[:, y0:y1, x0:x1]).mean(1)
    lum = np.convolve(np.pad(lum, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    if lum.max() - lum.min() < 0.05:
        return float(y + h / 2)
    return float(y0 + int(np.argmin(lum)) + 0.5)


def _lip_colour(rgb: np.ndarray, alpha: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    x0, y0 = int(max(0, mouth[0])), int(max(0, mouth[1]))
    x1, y1 = int(min(alpha.shape[1], mouth[0] + mouth[2])), int(min(alpha.shape[0], mouth[1] + mouth[3]))
    if x1 > x0 and y1 > y0:
        px = rgb[:, y0:y1, x0:x1].reshape(3, -1)[:, alpha[y0:y1, x0:x1].reshape(-1) > 0.5]
        if px.shape[1] >= 4:
            lum = _luma(px)
            return (np.median(px[:, lum <= np.percentile(lum, 30)], 1) * 0.8).astype(np.float32)
    return np.array([0.55, 0.22, 0.25], np.float32)
