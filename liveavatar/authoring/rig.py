"""Automatic rig of a cut-out figure: joints, framing and face boxes, in picture pixels.

Joints come from MediaPipe Pose when it finds a body whose key points lie on the figure. Otherwise
they come from the silhouette: its skeleton (scikit-image) as a graph, short spurs pruned, the
thickest point as the torso; extremities left and right are the hands, the lowest ones below the
torso the feet, the top one the head; shoulders and hips sit where the limbs meet the torso,
elbows and knees halfway along the limb. No feet below the torso (or the figure cut by the
bottom edge) means upper-body framing, legs absent.

Face points come from MediaPipe Face Mesh when it finds a face on the figure; otherwise they are
estimated from the head region (the studio's rig editor fixes them).

Sides: the character's left (_l) appears on the image's right, as MediaPipe's "left" does for a
person facing the camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from liveavatar.authoring.cutout import NoFigureError

JointMap = dict[str, tuple[float, float, bool]]       # name -> (x, y, present)
Box = tuple[float, float, float, float]               # x, y, w, h

# MediaPipe Pose landmark indices (person's own sides).
_POSE = {"nose": 0, "ear_l": 7, "ear_r": 8, "shoulder_l": 11, "shoulder_r": 12, "elbow_l": 13,
         "elbow_r": 14, "wrist_l": 15, "wrist_r": 16, "hip_l": 23, "hip_r": 24, "knee_l": 25,
         "knee_r": 26, "ankle_l": 27, "ankle_r": 28}
_LIMBS = ("shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
          "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r")


@dataclass
class Face:
    present: bool = False
    head_center: tuple[float, float] | None = None
    head_radius: float | None = None
    boxes: dict[str, Box | None] = field(default_factory=dict)   # eye_l eye_r brow_l brow_r mouth
    skin_rgb: tuple[int, int, int] = (240, 200, 170)
    detected_by: str = "estimate"


@dataclass
class Rig:
    joints: JointMap
    framing: str                  # "full" | "upper"
    face: Face
    joints_by: str                # "pose" | "silhouette"


# ---------------------------------------------------------------------------------------------
# MediaPipe
# ---------------------------------------------------------------------------------------------

def _pose_landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """(33, 4) x, y px, z, visibility, or None when no body is found."""
    import mediapipe as mp
    h, w = rgb.shape[:2]
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False) as pose:
        res = pose.process(np.ascontiguousarray(rgb))
    if res.pose_landmarks is None:
        return None
    return np.array([[p.x * w, p.y * h, p.z, p.visibility] for p in res.pose_landmarks.landmark], np.float64)


def _inside(mask: np.ndarray, x: float, y: float) -> bool:
    h, w = mask.shape
    xi, yi = round(x), round(y)
    return 0 <= xi < w and 0 <= yi < h and bool(mask[yi, xi])


def pose_rig_joints(rgb: np.ndarray, mask: np.ndarray, min_extent: float = 0.0) -> tuple[JointMap, str] | None:
    """Joints from MediaPipe Pose, or None when it finds no body that matches the figure: its
    landmarks must lie on the figure and (for drawings) span `min_extent` of its height."""
    import cv2
    lm = _pose_landmarks(rgb)
    if lm is None:
        return None
    h, w = mask.shape
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0

    def seen(name: str, vis: float = 0.5) -> bool:
        x, y, _, v = lm[_POSE[name]]
        return v >= vis and -0.02 * w <= x <= 1.02 * w and -0.02 * h <= y <= 1.02 * h

    core = ("shoulder_l", "shoulder_r", "nose")
    if not all(seen(n) for n in core):
        return None
    visible = [n for n in _LIMBS + ("nose",) if seen(n)]
    on_figure = [n for n in visible if _inside(grown, *lm[_POSE[n], :2])]
    # A drawing MediaPipe half-recognises puts landmarks off the figure: trust the silhouette then.
    if len(on_figure) < 0.8 * len(visible):
        return None
    ys = np.nonzero(mask.any(axis=1))[0]
    spread = np.ptp([lm[_POSE[n], 1] for n in on_figure])
    if ys.size == 0 or spread < min_extent * (ys[-1] - ys[0] + 1):
        return None
    # Legs only where the figure shows them: MediaPipe extrapolates legs below a bust's edge.
    legs = all(seen(n) and _inside(grown, *lm[_POSE[n], :2]) for n in ("knee_l", "knee_r", "ankle_l", "ankle_r"))
    framing = "full" if legs else "upper"
    joints: JointMap = {}
    for n in _LIMBS:
        x, y = lm[_POSE[n], :2]
        # Arm joints are needed even when out of frame (a bust): MediaPipe's estimate stands in.
        present = n.split("_")[0] in ("shoulder", "elbow", "wrist") or framing == "full"
        joints[n] = (float(x), float(y), present)
    sl, sr = lm[_POSE["shoulder_l"], :2], lm[_POSE["shoulder_r"], :2]
    hl, hr = lm[_POSE["hip_l"], :2], lm[_POSE["hip_r"], :2]
    joints["shoulders"] = (float((sl[0] + sr[0]) / 2), float((sl[1] + sr[1]) / 2), True)
    hips = (hl + hr) / 2
    shoulder_w = float(np.hypot(*(sl - sr)))
    if not (seen("hip_l", 0.3) and seen("hip_r", 0.3)) or hips[1] < joints["shoulders"][1] + 0.5 * shoulder_w:
        # Hips far out of frame: below the shoulders by a typical torso (1.3 shoulder widths).
        hips = np.array([joints["shoulders"][0], joints["shoulders"][1] + 1.3 * shoulder_w])
    joints["hips"] = (float(hips[0]), float(hips[1]), True)
    ears = [lm[_POSE[e], :2] for e in ("ear_l", "ear_r") if lm[_POSE[e], 3] >= 0.5]
    head = np.mean(ears, axis=0) if len(ears) == 2 else lm[_POSE["nose"], :2]
    joints["head"] = (float(head[0]), float(head[1]), True)
    return joints, framing


_FACE_SETS = {"eye_l": "FACEMESH_LEFT_EYE", "eye_r": "FACEMESH_RIGHT_EYE",
              "brow_l": "FACEMESH_LEFT_EYEBROW", "brow_r": "FACEMESH_RIGHT_EYEBROW", "mouth": "FACEMESH_LIPS"}


def _box_of(points: np.ndarray, pad: float, min_h: float = 0.0) -> Box:
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    pw, ph = (x1 - x0) * pad, max((y1 - y0) * pad, (min_h - (y1 - y0)) / 2, 0.0)
    return (float(x0 - pw), float(y0 - ph), float(x1 - x0 + 2 * pw), float(y1 - y0 + 2 * ph))


def facemesh_face(rgb: np.ndarray, mask: np.ndarray) -> Face | None:
    """Face boxes from MediaPipe Face Mesh (478 points incl. irises), or None."""
    import mediapipe as mp
    fm = mp.solutions.face_mesh
    h, w = rgb.shape[:2]
    with fm.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        res = mesh.process(np.ascontiguousarray(rgb))
    if not res.multi_face_landmarks:
        return None
    pts = np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark], np.float64)
    oval = pts[sorted({i for e in fm.FACEMESH_FACE_OVAL for i in e})]
    center = oval.mean(axis=0)
    if not _inside(mask, *center):
        return None
    radius = float(0.5 * max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
    boxes: dict[str, Box | None] = {}
    for key, const in _FACE_SETS.items():
        idx = sorted({i for e in getattr(fm, const) for i in e})
        boxes[key] = _box_of(pts[idx], 0.15, min_h=0.12 * radius if key.startswith("eye") else 0.0)
    return Face(present=True, head_center=(float(center[0]), float(center[1])), head_radius=radius,
                boxes=boxes, skin_rgb=_skin(rgb, mask, center, radius * 0.5), detected_by="facemesh")


def _skin(rgb: np.ndarray, mask: np.ndarray, center: np.ndarray | tuple[float, float],
          radius: float) -> tuple[int, int, int]:
    """Median colour of the figure's brighter pixels near `center` (the lids are painted with it)."""
    h, w = mask.shape
    yy, xx = np.ogrid[:h, :w]
    near = ((xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius ** 2) & mask
    px = rgb[near]
    if len(px) < 8:
        return (240, 200, 170)
    bright = px[px.sum(axis=1) >= np.percentile(px.sum(axis=1), 40)]
    r, g, b = np.median(bright, axis=0)
    return (int(r), int(g), int(b))


def estimate_face(rgb: np.ndarray, mask: np.ndarray, center: tuple[float, float], radius: float) -> Face:
    """Face boxes placed by typical proportions inside the head circle."""
    cx, cy, r = center[0], center[1], radius
    ew, eh = 0.42 * r, 0.3 * r
    boxes: dict[str, Box | None] = {
        "eye_l": (cx + 0.38 * r - ew / 2, cy - 0.12 * r - eh / 2, ew, eh),
        "eye_r": (cx - 0.38 * r - ew / 2, cy - 0.12 * r - eh / 2, ew, eh),
        "brow_l": (cx + 0.38 * r - ew / 2, cy - 0.45 * r - 0.08 * r, ew, 0.16 * r),
        "brow_r": (cx - 0.38 * r - ew / 2, cy - 0.45 * r - 0.08 * r, ew, 0.16 * r),
        "mouth": (cx - 0.3 * r, cy + 0.3 * r, 0.6 * r, 0.25 * r),
    }
    return Face(present=True, head_center=(float(cx), float(cy)), head_radius=float(r),
                boxes=boxes,
                skin_rgb=_skin(rgb, mask, (cx, cy), 0.6 * r), detected_by="estimate")


# ---------------------------------------------------------------------------------------------
# Silhouette
# ---------------------------------------------------------------------------------------------

_WORK_SIDE = 320   # the skeleton is found on the mask scaled to this (speed; joints are coarse anyway)


class _Skeleton:
    """The mask's skeleton as a tree (its minimum spanning tree: no pixel-staircase triangles or
    loops), short spurs pruned; node coordinates and distance to the outline."""

    def __init__(self, mask: np.ndarray, spur: float) -> None:
        import scipy.sparse as sp
        from scipy import ndimage
        from scipy.sparse.csgraph import minimum_spanning_tree
        from skimage.morphology import skeletonize
        self.dist = ndimage.distance_transform_edt(mask)
        skel = skeletonize(mask)
        ys, xs = np.nonzero(skel)
        index = -np.ones(mask.shape, np.int64)
        index[ys, xs] = np.arange(len(xs))
        rows, cols, wts = [], [], []
        h, w = mask.shape
        for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            j = np.full(len(xs), -1)
            j[ok] = index[ny[ok], nx[ok]]
            hit = j >= 0
            rows.append(np.nonzero(hit)[0])
            cols.append(j[hit])
            wts.append(np.full(hit.sum(), np.hypot(dx, dy)))
        n = len(xs)
        full = sp.csr_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        tree = minimum_spanning_tree(full)
        tree = (tree + tree.T).tocsr()
        adj: list[set[int]] = [set(tree.indices[tree.indptr[i]:tree.indptr[i + 1]].tolist()) for i in range(n)]
        xy = np.stack([xs, ys], axis=1).astype(np.float64)
        r = self.dist[ys, xs]
        alive = self._prune(adj, xy, r, spur)
        keep = np.array(sorted(alive), np.int64)
        remap = -np.ones(n, np.int64)
        remap[keep] = np.arange(len(keep))
        pr, pc, pw = [], [], []
        for i in keep:
            for j in adj[i]:
                if j in alive:
                    pr.append(remap[i])
                    pc.append(remap[j])
                    pw.append(float(np.hypot(*(xy[i] - xy[j]))))
        self.xy = xy[keep]
        self.r = r[keep]
        m = len(keep)
        self.graph = sp.csr_matrix((pw, (pr, pc)), shape=(m, m))
        self.degree = np.diff(self.graph.indptr)

    @staticmethod
    def _prune(adj: list[set[int]], xy: np.ndarray, r: np.ndarray, spur: float) -> set[int]:
        """Remove, pass by pass, leaf branches shorter than the width where they join (plus
        `spur` px): the bumps of a wobbly outline, fingers, a drawn crown. A figure keeps its
        limbs, whose branches are long."""
        alive = {i for i in range(len(adj)) if adj[i]}
        for _ in range(12):
            removed = False
            leaves = [i for i in alive if len(adj[i] & alive) == 1]
            if len(leaves) <= 2:
                break
            cut: set[int] = set()
            for leaf in leaves:
                branch, prev, cur, length = [leaf], -1, leaf, 0.0
                while True:
                    nxt = [j for j in adj[cur] & alive if j != prev]
                    if len(nxt) != 1:
                        break
                    length += float(np.hypot(*(xy[nxt[0]] - xy[cur])))
                    prev, cur = cur, nxt[0]
                    if len(adj[cur] & alive) > 2:
                        break
                    branch.append(cur)
                if len(adj[cur] & alive) > 2 and length < 1.2 * r[cur] + spur:
                    cut.update(branch)
            if cut and len(alive - cut) > 8:
                alive -= cut
                removed = True
            if not removed:
                break
        return alive

    def paths_from(self, source: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.sparse.csgraph import dijkstra
        d, pred = dijkstra(self.graph, directed=False, indices=source, return_predecessors=True)
        return d, pred

    @staticmethod
    def path(pred: np.ndarray, target: int) -> list[int]:
        out = [target]
        while pred[out[-1]] >= 0:
            out.append(int(pred[out[-1]]))
        return out   # target ... source


def _point_along(sk: _Skeleton, path: list[int], length: float) -> np.ndarray:
    """The point `length` px along `path` (clamped to its ends)."""
    pts = sk.xy[path]
    seg = np.hypot(*np.diff(pts, axis=0).T) if len(pts) > 1 else np.zeros(0)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(np.clip(length, 0, cum[-1]))
    i = int(np.searchsorted(cum, length, side="right") - 1)
    if i >= len(pts) - 1:
        return pts[-1].copy()
    t = (length - cum[i]) / max(seg[i], 1e-9)
    return pts[i] + t * (pts[i + 1] - pts[i])


def _path_length(sk: _Skeleton, path: list[int]) -> float:
    pts = sk.xy[path]
    return float(np.hypot(*np.diff(pts, axis=0).T).sum()) if len(pts) > 1 else 0.0


def _limb(sk: _Skeleton, pred: np.ndarray, tip: int, trunk: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(root, middle, tip) of the limb that ends at skeleton node `tip`: the root is where the limb
    meets the trunk, moved out by the trunk's half-width (the shoulder/hip is at the side of the
    torso, not on its centre line)."""
    path = _Skeleton.path(pred, tip)            # tip ... centre
    k = next((i for i, n in enumerate(path) if n in trunk), len(path) - 1)
    limb = path[:k + 1][::-1]                   # junction ... tip
    total = _path_length(sk, limb)
    inset = min(0.8 * sk.r[limb[0]], 0.45 * total)
    root = _point_along(sk, limb, inset)
    tip_pt = sk.xy[tip].copy()
    length_root = inset
    mid = _point_along(sk, limb, length_root + 0.5 * (total - length_root))
    return root, mid, tip_pt


def _widest_run(row: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    padded = np.concatenate([[0], row.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def silhouette_rig_joints(mask: np.ndarray) -> tuple[JointMap, str, tuple[float, float], float]:
    """Joints from the silhouette: (joints, framing, head centre, head radius), in mask pixels."""
    import cv2
    h, w = mask.shape
    scale = min(1.0, _WORK_SIDE / max(h, w))
    small = cv2.resize(mask.astype(np.uint8), (max(8, round(w * scale)), max(8, round(h * scale))),
                       interpolation=cv2.INTER_AREA) > 0
    small = cv2.morphologyEx(small.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    small = np.pad(small, 1)       # the skeleton needs background around a figure cut by the edge
    if small.sum() < 50:
        raise NoFigureError("the figure is too small to rig; open it in the studio's rig editor "
                            "(New character) and place the rig by hand")
    ys_m, xs_m = np.nonzero(small)
    height = ys_m.max() - ys_m.min() + 1
    sk = _Skeleton(small, spur=0.03 * height)
    if len(sk.xy) < 8:
        raise NoFigureError("no figure shape to rig found; open it in the studio's rig editor "
                            "(New character) and place the rig by hand")
    top, bottom = ys_m.min(), ys_m.max()
    # Torso centre: the thickest skeleton point in the middle band of the figure.
    band = (sk.xy[:, 1] > top + 0.25 * height) & (sk.xy[:, 1] < top + 0.8 * height)
    cand = np.nonzero(band)[0] if band.any() else np.arange(len(sk.xy))
    centre = int(cand[np.argmax(sk.r[cand])])
    dist, pred = sk.paths_from(centre)
    reach = np.isfinite(dist)
    ends = [int(i) for i in np.nonzero((sk.degree == 1) & reach)[0]]
    cx, cy = sk.xy[centre]
    pts = sk.xy

    # A bust is cut by the bottom edge across its body; feet touching the edge are narrow runs.
    cut_bottom = _widest_run(small[-2, :]) > 0.25 * (xs_m.max() - xs_m.min() + 1)
    # Feet: ends well below the torso centre, lowest first, one each side of the torso.
    low = [e for e in ends if pts[e, 1] > cy + 0.15 * height]
    feet: dict[str, int] = {}
    for side, pick in (("r", lambda e: pts[e, 0] < cx), ("l", lambda e: pts[e, 0] >= cx)):
        cands = [e for e in low if pick(e)]
        if cands:
            feet[side] = max(cands, key=lambda e: pts[e, 1])
    if len(feet) == 1 and len(low) >= 2:
        # Both feet on one side of the torso centre (a figure stepping sideways): the two lowest.
        a, b = sorted(low, key=lambda e: -pts[e, 1])[:2]
        feet = {"r": a, "l": b} if pts[a, 0] < pts[b, 0] else {"r": b, "l": a}
    framing = "full" if len(feet) == 2 and not cut_bottom else "upper"
    if framing == "upper":
        feet = {}
    rest = [e for e in ends if e not in feet.values()]
    above = [e for e in rest if pts[e, 1] < cy]
    head_end = min(above or rest or [centre], key=lambda e: pts[e, 1] + 0.5 * abs(pts[e, 0] - cx))
    rest = [e for e in rest if e != head_end]
    # Hands: the outermost remaining ends on each side, not below the feet's knees.
    hands: dict[str, int] = {}
    for side, sign in (("r", -1.0), ("l", 1.0)):
        cands = [e for e in rest if sign * (pts[e, 0] - cx) > 0.1 * height and pts[e, 1] < cy + 0.35 * height]
        if cands:
            hands[side] = max(cands, key=lambda e: sign * (pts[e, 0] - cx))

    # The trunk: skeleton path from the head end down through the centre to the crotch.
    trunk = set(_Skeleton.path(pred, head_end))
    if len(feet) == 2:
        pr = _Skeleton.path(pred, feet["r"])
        pl = set(_Skeleton.path(pred, feet["l"]))
        crotch = next((n for n in pr if n in pl), centre)
        trunk |= set(_Skeleton.path(pred, crotch))
        _, pred_c = sk.paths_from(crotch)
    joints: dict[str, tuple[float, float, bool]] = {}

    # Head: the widest point on the upper half of the trunk path (the head blob), else the top.
    head_path = _Skeleton.path(pred, head_end)          # head end ... centre
    upper = [n for n in head_path if pts[n, 1] <= cy - 0.1 * height] or head_path[:max(1, len(head_path) // 3)]
    neck_i = int(np.argmin([sk.r[n] for n in upper[len(upper) // 3:]] or [0])) + len(upper) // 3
    head_nodes = upper[:max(1, neck_i)]
    head_node = max(head_nodes, key=lambda n: sk.r[n])
    head_c = pts[head_node]
    head_r = max(float(sk.r[head_node]), 0.06 * height)

    for side in ("l", "r"):
        if side in hands:
            root, mid, tip = _limb(sk, pred, hands[side], trunk)
        else:  # an arm the skeleton does not show: hang it beside the torso
            sign = 1.0 if side == "l" else -1.0
            half = float(sk.r[centre])
            root = np.array([cx + sign * half * 0.9, cy - 0.2 * height])
            mid = root + np.array([sign * 0.05 * height, 0.15 * height])
            tip = root + np.array([sign * 0.08 * height, 0.3 * height])
        joints[f"shoulder_{side}"] = (root[0], root[1], True)
        joints[f"elbow_{side}"] = (mid[0], mid[1], True)
        joints[f"wrist_{side}"] = (tip[0], tip[1], True)
    sl, sr = np.array(joints["shoulder_l"][:2]), np.array(joints["shoulder_r"][:2])
    # Shoulder height: where the arms leave the trunk, but never above the neck.
    shoulders = (sl + sr) / 2
    if framing == "full":
        for side in ("l", "r"):
            root, mid, tip = _limb(sk, pred_c, feet[side], trunk)
            joints[f"hip_{side}"] = (root[0], root[1], True)
            joints[f"knee_{side}"] = (mid[0], mid[1], True)
            joints[f"ankle_{side}"] = (tip[0], tip[1], True)
        hips = (np.array(joints["hip_l"][:2]) + np.array(joints["hip_r"][:2])) / 2
    else:
        hips = np.array([cx, max(cy + 0.25 * height, float(bottom))])
    joints["shoulders"] = (shoulders[0], shoulders[1], True)
    joints["hips"] = (hips[0], hips[1], True)
    joints["head"] = (head_c[0], head_c[1], True)
    # Back to the caller's pixels (undo the 1 px pad and the scale).
    inv = 1.0 / scale
    out: JointMap = {n: (float((x - 1) * inv), float((y - 1) * inv), p) for n, (x, y, p) in joints.items()}
    head_centre = (float((head_c[0] - 1) * inv), float((head_c[1] - 1) * inv))
    return out, framing, head_centre, head_r * inv


# ---------------------------------------------------------------------------------------------

#: A standing figure's proportions (fractions of the figure's box): where a rig placed by hand starts.
_DEFAULT = {"head": (0.5, 0.13), "shoulders": (0.5, 0.3), "shoulder_l": (0.62, 0.3), "shoulder_r": (0.38, 0.3),
            "elbow_l": (0.72, 0.43), "elbow_r": (0.28, 0.43), "wrist_l": (0.78, 0.56), "wrist_r": (0.22, 0.56),
            "hips": (0.5, 0.55), "hip_l": (0.58, 0.55), "hip_r": (0.42, 0.55), "knee_l": (0.6, 0.75),
            "knee_r": (0.4, 0.75), "ankle_l": (0.6, 0.95), "ankle_r": (0.4, 0.95)}


def default_rig(rgb: np.ndarray, mask: np.ndarray) -> Rig:
    """A standing figure's rig over the mask's box, for the user to drag into place."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        h, w = mask.shape
        x0, y0, bw, bh = 0.0, 0.0, float(w), float(h)
    else:
        x0, y0 = float(xs.min()), float(ys.min())
        bw, bh = float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)
    joints: JointMap = {n: (x0 + fx * bw, y0 + fy * bh, True) for n, (fx, fy) in _DEFAULT.items()}
    head = (joints["head"][0], joints["head"][1])
    face = estimate_face(rgb, mask, head, 0.1 * bh)
    face.detected_by = "user"
    return Rig(joints=joints, framing="full", face=face, joints_by="manual")


def auto_rig(rgb: np.ndarray, mask: np.ndarray, use_pose: bool = True, photo: bool = False) -> Rig:
    """Joints, framing and face of the cut-out figure (`mask`) in `rgb` (picture pixels). On a
    drawing (`photo` False) a pose must span half the figure's height to be believed: MediaPipe
    reads faces into the patterns of drawn figures."""
    found = pose_rig_joints(rgb, mask, 0.0 if photo else 0.5) if use_pose else None
    sil = silhouette_rig_joints(mask)
    if found is not None:
        joints, framing = found
        by = "pose"
    else:
        joints, framing = sil[0], sil[1]
        by = "silhouette"
    face = facemesh_face(rgb, mask) if use_pose else None
    if face is None:
        if by == "pose":
            sh = np.array(joints["shoulders"][:2])
            head = np.array(joints["head"][:2])
            radius = max(0.5 * float(np.hypot(*(np.array(joints["shoulder_l"][:2]) -
                                                np.array(joints["shoulder_r"][:2])))) * 0.6,
                         0.5 * float(np.hypot(*(head - sh))))
            face = estimate_face(rgb, mask, (float(head[0]), float(head[1])), radius)
        else:
            face = estimate_face(rgb, mask, sil[2], sil[3])
    elif by == "pose":
        joints["head"] = (face.head_center[0], face.head_center[1], True) if face.head_center else joints["head"]
    return Rig(joints=joints, framing=framing, face=face, joints_by=by)
