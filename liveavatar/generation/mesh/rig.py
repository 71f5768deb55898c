"""Prepare-time geometry of a mesh character: triangle mesh of each layer's silhouette, bones
from the pack's joints, skinning weights from distance along the bones inside the shape, and the
split of a single picture's arms into their own layers.

All coordinates are canvas px of the art (x right, y down). Nothing here runs per frame.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import triangle
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from liveavatar.errors import ConfigError
from liveavatar.generation.mesh.pack import HEAD_PARTS, MeshManifest

#: Skinning bones, in the order of the per-frame affine array. `root` carries the pelvis (moves
#: with the hips, does not rotate with the spine); `head` is the neck bone plus head roll.
BONES = ("root", "spine", "head", "upper_arm_l", "lower_arm_l", "upper_arm_r", "lower_arm_r",
         "upper_leg_l", "lower_leg_l", "upper_leg_r", "lower_leg_r")
BI = {b: i for i, b in enumerate(BONES)}
#: Bone -> (start joint, end joint) in the pack.
BONE_JOINTS = {"spine": ("hips", "shoulders"), "head": ("shoulders", "head"),
               "upper_arm_l": ("shoulder_l", "elbow_l"), "lower_arm_l": ("elbow_l", "wrist_l"),
               "upper_arm_r": ("shoulder_r", "elbow_r"), "lower_arm_r": ("elbow_r", "wrist_r"),
               "upper_leg_l": ("hip_l", "knee_l"), "lower_leg_l": ("knee_l", "ankle_l"),
               "upper_leg_r": ("hip_r", "knee_r"), "lower_leg_r": ("knee_r", "ankle_r")}
#: Which skinning bone carries each joint (for anchors of physics regions and overlays).
JOINT_BONE = {"hips": "root", "hip_l": "root", "hip_r": "root", "shoulders": "spine", "head": "head",
              "shoulder_l": "upper_arm_l", "elbow_l": "upper_arm_l", "wrist_l": "lower_arm_l",
              "shoulder_r": "upper_arm_r", "elbow_r": "upper_arm_r", "wrist_r": "lower_arm_r",
              "knee_l": "upper_leg_l", "ankle_l": "lower_leg_l", "knee_r": "upper_leg_r",
              "ankle_r": "lower_leg_r"}
#: A PSD limb layer is skinned to its own bone and its neighbours only.
PART_BONES = {
    "upper_arm_l": ("upper_arm_l", "lower_arm_l"), "lower_arm_l": ("upper_arm_l", "lower_arm_l"),
    "hand_l": ("lower_arm_l",),
    "upper_arm_r": ("upper_arm_r", "lower_arm_r"), "lower_arm_r": ("upper_arm_r", "lower_arm_r"),
    "hand_r": ("lower_arm_r",),
    "upper_leg_l": ("upper_leg_l", "lower_leg_l"), "lower_leg_l": ("upper_leg_l", "lower_leg_l"),
    "foot_l": ("lower_leg_l",),
    "upper_leg_r": ("upper_leg_r", "lower_leg_r"), "lower_leg_r": ("upper_leg_r", "lower_leg_r"),
    "foot_r": ("lower_leg_r",),
    "neck": ("spine", "head"), "torso": ("root", "spine", "head"),
}
ALPHA_MIN = 1.0 / 255.0
WEIGHT_POWER = 4.0       # inverse-distance exponent: higher = sharper joints
MAX_INFLUENCES = 3
#: Triangles with more arm weight than this are arm (split at the joints); pieces overlap by
#: OVERLAP bone lengths each side of a cut.
ARM_WEIGHT = 0.3
OVERLAP = 0.12
BODY_KEEPS = 0.5
#: Neighbour-averaging passes over the weights: wider blends at joints fold fewer triangles.
SMOOTHING = 40


@dataclass
class Layer:
    """One drawable layer of the mesh: triangles into the shared vertex array."""
    name: str
    source: int          # index into manifest.layers (its texture)
    part: str            # pack part, or "arm_l"/"arm_r" for arms split off a single picture
    z: float             # rest draw order
    triangles: np.ndarray   # (T, 3) int32 into Rig.vertices


@dataclass
class Rig:
    vertices: np.ndarray      # (V, 2) float32 rest canvas px
    vertex_layer: np.ndarray  # (V,) int32 index into manifest.layers
    weights: np.ndarray       # (V, len(BONES)) float32, rows sum to 1
    layers: list[Layer]
    rest_start: np.ndarray    # (B, 2) bone start joint at rest (root: hips)
    rest_angle: np.ndarray    # (B,) rest direction atan2(dx, dy) (root: 0)
    rest_length: np.ndarray   # (B,) px (root: 0)
    bone_present: np.ndarray  # (B,) bool
    bbox: tuple[float, float, float, float]   # x0, y0, x1, y1 of every layer's pixels


def _bones(m: MeshManifest) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    nb = len(BONES)
    start = np.zeros((nb, 2), np.float32)
    angle = np.zeros(nb, np.float32)
    length = np.zeros(nb, np.float32)
    present = np.zeros(nb, bool)
    hips = m.joint("hips")
    assert hips is not None     # the manifest validator requires it
    start[BI["root"]] = hips
    present[BI["root"]] = True
    for b, (j0, j1) in BONE_JOINTS.items():
        p0, p1 = m.joint(j0), m.joint(j1)
        if p0 is None or p1 is None:
            continue
        d = p1 - p0
        start[BI[b]] = p0
        length[BI[b]] = float(np.hypot(*d))
        angle[BI[b]] = float(np.arctan2(d[0], d[1]))
        present[BI[b]] = length[BI[b]] > 1e-3
    return start, angle, length, present


def _segments(m: MeshManifest, present: np.ndarray, length: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The segment each bone's weight is measured from. Hands/feet extend past the wrist/ankle;
    the pelvis spans the hip joints; the head bone reaches up through the head."""
    segs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hips = m.joint("hips")
    hl, hr = m.joint("hip_l"), m.joint("hip_r")
    assert hips is not None
    segs["root"] = (hl, hr) if hl is not None and hr is not None else (hips, hips)
    for b, (j0, j1) in BONE_JOINTS.items():
        if not present[BI[b]]:
            continue
        p0, p1 = m.joint(j0), m.joint(j1)
        assert p0 is not None and p1 is not None
        if b.startswith("lower_"):
            p1 = p1 + (p1 - p0) * 0.35
        if b == "spine":     # stop short of the shoulders: the neck belongs to the head bone
            p0 = p0 + (p1 - p0) * 0.15
        if b == "head":
            face = m.face
            if face.head_center is not None and face.head_radius:
                p1 = np.array(face.head_center, np.float32)
            p0 = p0 + (p1 - p0) * 0.35
        segs[b] = (p0, p1)
    return segs


def _contour_mesh(mask: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Constrained quality Delaunay mesh of a binary mask: outer contours and holes as segments,
    interior points added by Triangle (min angle 25 deg, max area ~ edge^2 / 2)."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 3), np.int32)
    verts: list[np.ndarray] = []
    segs: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    min_area = max(4.0, edge * edge * 0.25)
    n0 = 0
    for i, c in enumerate(contours):
        area = cv2.contourArea(c)
        if area < min_area:
            continue
        poly = cv2.approxPolyDP(c, 0.75, True).reshape(-1, 2).astype(np.float64)
        # Boundary steps much shorter than the mesh edge make sliver triangles that fold under
        # small neck bends: merge vertices closer than a third of an edge to the last one kept.
        kept = [poly[0]]
        for p in poly[1:]:
            if np.hypot(*(p - kept[-1])) >= max(2.0, edge / 3.0):
                kept.append(p)
        if len(kept) > 3 and np.hypot(*(kept[-1] - kept[0])) < max(2.0, edge / 3.0):
            kept.pop()
        poly = np.asarray(kept)
        # Resample so boundary edges are at most `edge` long (Triangle splits segments anyway,
        # but long straight runs would give needle triangles with 'q' alone).
        pts: list[np.ndarray] = []
        for a, b in zip(poly, np.roll(poly, -1, 0), strict=False):
            k = max(1, int(np.ceil(np.hypot(*(b - a)) / edge)))
            pts.extend(a + (b - a) * (t / k) for t in range(k))
        pts_a = np.asarray(pts)
        if len(pts_a) < 3:
            continue
        k = len(pts_a)
        verts.append(pts_a)
        segs.append(np.stack([np.arange(k), (np.arange(k) + 1) % k], 1) + n0)
        n0 += k
        if hierarchy[0][i][3] >= 0:     # a hole: Triangle needs one point strictly inside it
            hole = np.zeros_like(mask, np.uint8)
            cv2.drawContours(hole, [c], -1, (1,), -1)
            hole &= (~mask.astype(bool)).astype(np.uint8)
            if hole.any():
                dist = cv2.distanceTransform(hole, cv2.DIST_L2, 3)
                y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
                holes.append(np.array([x + 0.5, y + 0.5]))
    if not verts:
        return np.zeros((0, 2), np.float32), np.zeros((0, 3), np.int32)
    # Contours run through pixel centres of the boundary pixels; +0.5 puts them on the centres.
    data: dict[str, np.ndarray] = {"vertices": np.concatenate(verts) + 0.5, "segments": np.concatenate(segs)}
    if holes:
        data["holes"] = np.asarray(holes)
    out = triangle.triangulate(data, f"pq25a{edge * edge * 0.5:.3f}")
    tris = np.asarray(out.get("triangles", np.zeros((0, 3))), np.int32)
    v = np.asarray(out["vertices"], np.float32)
    # Drop triangles outside the mask (Triangle fills concavities only when a region is unbounded).
    cen = v[tris].mean(1)
    cx = np.clip(cen[:, 0].astype(int), 0, mask.shape[1] - 1)
    cy = np.clip(cen[:, 1].astype(int), 0, mask.shape[0] - 1)
    tris = tris[mask[cy, cx] > 0]
    used = np.unique(tris)
    remap = np.full(len(v), -1, np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return v[used], remap[tris]


def _orient(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Every triangle counter-clockwise in image coords (positive signed area with y down)."""
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    out = tris.copy()
    neg = cross < 0
    out[neg, 1], out[neg, 2] = tris[neg, 2], tris[neg, 1]
    return out


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.asarray(np.hypot(*(p - (a + t[:, None] * ab)).T))


def _geodesic(v: np.ndarray, tris: np.ndarray, a: np.ndarray, b: np.ndarray, edge: float) -> np.ndarray:
    """Distance from segment a-b to every vertex, travelling inside the mesh: a virtual source is
    linked to the vertices close to the segment (at their straight-line distance), then Dijkstra
    over the mesh edges. A bone outside the shape seeds its nearest vertices instead."""
    n = len(v)
    d0 = _seg_dist(v, a, b)
    seeds = np.nonzero(d0 <= max(1.5 * edge, float(d0.min()) + 1e-3))[0]
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    w = np.hypot(*(v[e[:, 0]] - v[e[:, 1]]).T)
    rows = np.concatenate([e[:, 0], e[:, 1], np.full(len(seeds), n)])
    cols = np.concatenate([e[:, 1], e[:, 0], seeds])
    vals = np.concatenate([w, w, d0[seeds] + 1e-6])
    g = coo_matrix((vals, (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    dist = dijkstra(g, directed=True, indices=n)[:n]
    return np.where(np.isfinite(dist), dist, 1e6).astype(np.float64)


def build(m: MeshManifest, alphas: list[np.ndarray], split_arms: bool = True) -> Rig:
    """Mesh, weights and layers of a pack. `alphas` are (H, W) float 0..1 per manifest layer."""
    start, angle, length, present = _bones(m)
    if m.framing == "upper":
        present[[BI[b] for b in BONES if "leg" in b]] = False
    segs = _segments(m, present, length)
    union = np.zeros_like(alphas[0], bool)
    for a in alphas:
        union |= a >= ALPHA_MIN
    ys, xs = np.nonzero(union)
    bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    fig = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    edge = max(3.0, fig / 36.0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    all_v: list[np.ndarray] = []
    all_w: list[np.ndarray] = []
    all_l: list[np.ndarray] = []
    layers: list[Layer] = []
    n0 = 0
    for li, (spec, alpha) in enumerate(zip(m.layers, alphas, strict=False)):
        # The mesh reaches 2 px past the visible alpha, so the texture's own alpha makes the edge.
        mask = cv2.dilate((alpha >= ALPHA_MIN).astype(np.uint8), kernel)
        v, tris = _contour_mesh(mask, edge)
        if len(tris) == 0:
            continue
        tris = _orient(v, tris)
        allowed: tuple[str, ...] = ("head",) if spec.part in HEAD_PARTS else PART_BONES.get(spec.part, BONES)
        allowed_i = [BI[b] for b in allowed if b in segs]
        if not allowed_i:
            allowed_i = [BI["spine"]]
        d = np.full((len(v), len(BONES)), np.inf)
        for bi in allowed_i:
            a, b = segs[BONES[bi]]
            d[:, bi] = _geodesic(v, tris, a, b, edge)
        w = _weights(d)
        vl = np.full(len(v), li, np.int32)
        parts = _split(w, v, tris, m, mask) if split_arms and spec.part == "body" else [("", tris, None)]
        for suffix, t, keep in parts:
            wl = _smooth(w if keep is None else _restrict(d, keep), t, SMOOTHING)
            if suffix and len(t) == 0:
                continue
            if suffix:   # arm triangles get their own copy of the vertices (drawn as another layer)
                used = np.unique(t)
                remap = np.full(len(v), -1, np.int32)
                remap[used] = np.arange(len(used), dtype=np.int32) + n0
                all_v.append(v[used])
                all_w.append(wl[used])
                all_l.append(vl[used])
                dz = 0.6 if suffix.startswith("lower") else 0.5
                layers.append(Layer(f"{spec.name}.{suffix}", li, suffix, spec.z + dz, remap[t]))
                n0 += len(used)
            else:
                all_v.append(v)
                all_w.append(wl)
                all_l.append(vl)
                layers.append(Layer(spec.name, li, spec.part, float(spec.z), t + n0))
                n0 += len(v)
    if not layers:
        raise ConfigError(f"character {m.name!r}: no layer has a shape to mesh")
    return Rig(vertices=np.concatenate(all_v).astype(np.float32), vertex_layer=np.concatenate(all_l),
               weights=np.concatenate(all_w).astype(np.float32), layers=layers, rest_start=start,
               rest_angle=angle, rest_length=length, bone_present=present, bbox=bbox)


def _weights(d: np.ndarray) -> np.ndarray:
    """Inverse-distance weights (power WEIGHT_POWER), at most MAX_INFLUENCES bones per vertex."""
    inv = 1.0 / np.maximum(d, 0.5) ** WEIGHT_POWER
    inv[~np.isfinite(d)] = 0.0
    if inv.shape[1] > MAX_INFLUENCES:
        cut = np.sort(inv, 1)[:, -MAX_INFLUENCES][:, None]
        inv[inv < cut] = 0.0
    s = inv.sum(1, keepdims=True)
    w = inv / np.maximum(s, 1e-30)
    w[w < 0.01] = 0.0
    return w / np.maximum(w.sum(1, keepdims=True), 1e-30)


def _restrict(d: np.ndarray, bones: Sequence[int]) -> np.ndarray:
    """Weights from the distances to `bones` only (the others do not pull on these vertices)."""
    sub = np.full_like(d, np.inf)
    sub[:, bones] = d[:, bones]
    if not np.isfinite(sub).any(1).all():     # no allowed bone reaches a vertex: nearest allowed
        sub[:, bones] = np.where(np.isfinite(sub[:, bones]), sub[:, bones], 1e6)
    return _weights(sub)


def _split(w: np.ndarray, v: np.ndarray, tris: np.ndarray, m: MeshManifest, mask: np.ndarray
           ) -> list[tuple[str, np.ndarray, list[int] | None]]:
    """A single picture's arms become their own layers, drawn in front of the body, each piece
    skinned to its own bone only (and the body to no arm bone): an arm turns about its shoulder
    like a cut-out part instead of dragging the torso along, which is where blended weights fold
    triangles, and the forearm about the elbow. Cuts run across the limb through the joint
    (perpendicular to the bone); pieces overlap by a band on each side so no gap opens. An arm is
    what lies within its thickness (the shape's inscribed radius along the bone) of the bone, so a
    wide torso beside the shoulder stays torso."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    tw = w[tris].mean(1)
    cen = v[tris].mean(1)
    out: list[tuple[str, np.ndarray, list[int] | None]] = []
    arm_bones: list[int] = []
    body = np.ones(len(tris), bool)

    def along(joint: str, child: str) -> tuple[np.ndarray, float]:
        p0, p1 = m.joint(joint), m.joint(child)
        assert p0 is not None and p1 is not None
        d = p1 - p0
        length = float(np.hypot(*d))
        return (cen - p0) @ (d / max(length, 1e-6)), length

    for side in "lr":
        ua, la = BI[f"upper_arm_{side}"], BI[f"lower_arm_{side}"]
        arm = (tw[:, ua] + tw[:, la]) > ARM_WEIGHT
        if arm.sum() < 4:
            continue
        t_sh, l_ua = along(f"shoulder_{side}", f"elbow_{side}")
        t_el, l_la = along(f"elbow_{side}", f"wrist_{side}")
        band_s, band_e = OVERLAP * l_ua, OVERLAP * l_la
        sh, el, wr = (m.joint(f"{j}_{side}") for j in ("shoulder", "elbow", "wrist"))
        assert sh is not None and el is not None and wr is not None     # required by the manifest
        pts = [sh, el, wr]
        radius = _thickness(dist, pts[0], pts[1], pts[2])
        arm_bones += [ua, la]
        if not _free_arm(mask, pts, radius):
            continue    # a bust's arm cut by the frame (or no arm at all): it stays torso, unmoved
        near = np.minimum(_seg_dist(cen, pts[0], pts[1]), _seg_dist(cen, pts[1], pts[2] + (pts[2] - pts[1]) * 0.35))
        arm &= near < 1.4 * radius
        limb = arm & (t_sh > -band_s)
        upper = limb & (t_el < band_e)
        lower = limb & (t_el > -band_e)
        if upper.sum() >= 2:
            out.append((f"upper_arm_{side}", tris[upper], [ua]))
        if lower.sum() >= 2:
            out.append((f"lower_arm_{side}", tris[lower], [la]))
        # The body keeps the arm's root (half the upper arm) under the moving arm: a single picture
        # has nothing drawn behind the arm, and a shoulder bulge reads better than a hole.
        body &= ~(arm & (t_sh > BODY_KEEPS * l_ua))
    others = [i for i in range(len(BONES)) if i not in arm_bones]
    out.append(("", tris[body], others if arm_bones else None))
    return out


def _thickness(dist: np.ndarray, *joints: np.ndarray | None) -> float:
    """Half-thickness of a limb: the median inscribed radius of the shape along its bones."""
    vals = []
    for a, b in zip(joints[:-1], joints[1:], strict=False):
        if a is None or b is None:
            continue
        for t in np.linspace(0.2, 0.8, 7):
            x, y = a + (b - a) * t
            xi, yi = int(round(float(x))), int(round(float(y)))
            if 0 <= yi < dist.shape[0] and 0 <= xi < dist.shape[1] and dist[yi, xi] > 0:
                vals.append(float(dist[yi, xi]))
    return float(np.median(vals)) if vals else 10.0


def _smooth(w: np.ndarray, tris: np.ndarray, passes: int) -> np.ndarray:
    """Average each vertex's weights with its mesh neighbours' (`passes` times), renormalised:
    a sharp change of weight between neighbours is what folds a triangle when bones turn apart."""
    if passes <= 0 or len(tris) == 0:
        return w
    n = len(w)
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    adj = coo_matrix((np.ones(2 * len(e)), (np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]]))),
                     shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(1)).reshape(-1, 1)
    used = deg[:, 0] > 0
    out = w.astype(np.float64)
    for _ in range(passes):
        nb = adj @ out / np.maximum(deg, 1)
        out = np.where(used[:, None], 0.5 * out + 0.5 * nb, out)
    out[out < 0.005] = 0.0
    return (out / np.maximum(out.sum(1, keepdims=True), 1e-12)).astype(np.float32)


def _free_arm(mask: np.ndarray, pts: list[np.ndarray], radius: float) -> bool:
    """Whether an arm can swing as its own piece: its hand is in the picture, not cut off by the
    frame's edge (a bust photo's arms usually are)."""
    h, w = mask.shape
    x, y = pts[2]
    margin = 0.75 * radius
    return bool(margin <= x <= w - 1 - margin and margin <= y <= h - 1 - margin)
