"""Secondary motion: hair, ears, skirts, tails and loose layers swing as damped pendulums.

Like Live2D/Inochi2D physics groups, each region hangs from an anchor joint. The pendulum's angle is
kept RELATIVE to where the anchor would carry it rigidly (lag angle θ):

    θ'' = -k (θ - θ_target) - c θ' - (a_root · n) / L - α_anchor

- k (stiffness, 1/s²) and c (damping, 1/s) come from the pack's layer physics or the defaults here;
- a_root is the acceleration of the region's root (output px/s²), n the pendulum's normal, L its
  length (output px): a pendulum lags behind its accelerating pivot;
- α_anchor is the anchor's angular acceleration: the region keeps its world angle for a moment
  when the body turns;
- θ_target = gravity * (rest world angle - rigid angle): with gravity > 0 hair keeps hanging down a
  little when the head tilts.

The linear part is integrated implicitly (backward Euler) in sub-steps of at most 1/120 s, so any
stiffness is stable, and dt is clamped to [0, 1/20] s per frame; a row whose clock jumps (dt < 0 or
> 1 s) snaps to rest. State is per batch row (= session slot). Each mesh vertex follows at most one
region: after skinning it is rotated about the region's deformed root by weight * θ, so the root
stays put and the tip swings most.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numba import njit

MAX_DT = 1.0 / 20.0        # a longer frame is integrated as this long (stability + no big jumps)
SNAP_DT = 1.0              # a gap longer than this (or a clock going back) restarts the row at rest
SUBSTEP = 1.0 / 120.0
MAX_ANGLE = 0.75           # rad of lag at the tip
MAX_FORCE = 400.0          # rad/s² (clamps the finite-difference acceleration of jittery input)

# Defaults per part: anchor joint, stiffness (1/s²), damping (1/s), gravity 0..1.
PART_DEFAULTS: dict[str, tuple[str, float, float, float]] = {
    "hair_front": ("head", 90.0, 10.0, 0.3),
    "hair_back": ("head", 60.0, 8.0, 0.5),
    "ears": ("head", 140.0, 12.0, 0.1),
    "tail": ("hips", 40.0, 6.0, 0.3),
    "skirt": ("hips", 70.0, 10.0, 0.2),
    "accessory": ("shoulders", 60.0, 8.0, 0.4),
}
AUTO_HAIR = ("head", 60.0, 9.0, 0.4)
AUTO_SKIRT = ("hips", 80.0, 11.0, 0.2)


@dataclass
class PhysicsRegion:
    """One swinging region. `weights` (V,) 0..1 per mesh vertex: 0 at the root, 1 at the tip."""
    name: str
    anchor: str
    root: tuple[float, float]          # rest canvas px: where it hangs from
    weights: np.ndarray
    stiffness: float = 60.0
    damping: float = 8.0
    gravity: float = 0.3

    def hang(self, vertices: np.ndarray) -> tuple[np.ndarray, float]:
        """Rest hang direction (unit, rest px) and length (px) from the weighted vertices."""
        w = self.weights
        root = np.asarray(self.root, np.float64)
        sel = w > 0.3 * max(float(w.max()), 1e-6)
        pts = vertices[sel] if sel.any() else vertices[w > 0]
        if len(pts) == 0:
            return np.array([0.0, 1.0]), 1.0
        d = pts - root
        dist = np.hypot(d[:, 0], d[:, 1])
        far = d[np.argsort(dist)[-max(1, len(d) // 4):]].mean(0)   # towards the tips
        n = float(np.hypot(*far))
        direction = far / n if n > 1e-6 else np.array([0.0, 1.0])
        return direction, float(max(dist.max(), 4.0))


# ---------------------------------------------------------------------------------------------
# Finding regions
# ---------------------------------------------------------------------------------------------

def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _joint(joints: Mapping[str, Any], name: str) -> np.ndarray | None:
    j = joints.get(name)
    if j is None or not (_get(j, "present") if _get(j, "present") is not None else True):
        return None
    return np.array([float(_get(j, "x")), float(_get(j, "y"))], np.float64)


def _tip_weights(vertices: np.ndarray, sel: np.ndarray, root: np.ndarray, start: float = 0.0,
                 power: float = 1.3) -> np.ndarray:
    """0 at `start` px from the root rising to 1 at the farthest selected vertex."""
    w = np.zeros(len(vertices), np.float32)
    if not sel.any():
        return w
    d = np.hypot(*(vertices[sel] - root).T)
    span = max(float(d.max()) - start, 1.0)
    w[sel] = np.clip((d - start) / span, 0.0, 1.0) ** power
    return w


def find_regions(vertices: np.ndarray, vertex_layer: np.ndarray, layers: Sequence[Any],
                 joints: Mapping[str, Any], face: Any = None) -> list[PhysicsRegion]:
    """Physics regions of a character's mesh.

    - A layer with a `physics` spec, or whose part is hair_front/hair_back/ears/tail/skirt/accessory,
      swings as one region from its anchor (the spec's, else the part's default).
    - A single picture (no such layer) gets: hair = the silhouette of the head area outside the face
      (head circle), hanging from the head; a skirt = the band below the hips when the silhouette is
      much wider there than at the hips, hanging from the hips.
    Returns [] when nothing should swing."""
    vertices = np.asarray(vertices, np.float64).reshape(-1, 2)
    vertex_layer = np.asarray(vertex_layer).reshape(-1)
    regions: list[PhysicsRegion] = []
    taken = np.zeros(len(vertices), bool)
    for li, layer in enumerate(layers):
        part = _get(layer, "part")
        spec = _get(layer, "physics")
        if spec is None and part not in PART_DEFAULTS:
            continue
        sel = vertex_layer == li
        if not sel.any():
            continue
        anchor, k, c, g = PART_DEFAULTS.get(part, ("head" if "hair" in str(part) else "hips", 60.0, 8.0, 0.3))
        if spec is not None:
            anchor, k, c = _get(spec, "anchor"), float(_get(spec, "stiffness")), float(_get(spec, "damping"))
        a = _joint(joints, anchor)
        if a is None:
            continue
        pts = vertices[sel]
        # Root: the layer's point nearest the anchor (hair hangs from the scalp, a tail from its base).
        root = pts[np.argmin(np.hypot(*(pts - a).T))]
        if part in ("hair_front", "hair_back", "ears") and a is not None:
            root = a if _inside_bbox(a, pts) else root
        w = _tip_weights(vertices, sel, root, start=0.0)
        regions.append(PhysicsRegion(str(_get(layer, "name")), anchor, (float(root[0]), float(root[1])),
                                     w, k, c, g))
        taken |= sel & (w > 0)
    if regions:
        return regions
    hair = _auto_hair(vertices, joints, face)
    if hair is not None:
        regions.append(hair)
        taken |= hair.weights > 0
    skirt = _auto_skirt(vertices, joints, ~taken)
    if skirt is not None:
        regions.append(skirt)
    return regions


def _inside_bbox(p: np.ndarray, pts: np.ndarray) -> bool:
    lo, hi = pts.min(0), pts.max(0)
    return bool(np.all(p >= lo) and np.all(p <= hi))


def _head(joints: Mapping[str, Any], face: Any) -> tuple[np.ndarray, float] | None:
    hc = _get(face, "head_center") if face is not None else None
    hr = _get(face, "head_radius") if face is not None else None
    if hc is not None and hr:
        return np.array([float(hc[0]), float(hc[1])]), float(hr)
    head, sh = _joint(joints, "head"), _joint(joints, "shoulders")
    if head is None or sh is None:
        return None
    return head, 0.6 * float(np.hypot(*(head - sh)))


def _auto_hair(vertices: np.ndarray, joints: Mapping[str, Any], face: Any) -> PhysicsRegion | None:
    """Hair of a single picture: mesh vertices near the head but outside the face circle, above the
    shoulders (side locks, ponytails, long hair beside the face). Needs a few of them to count."""
    hd = _head(joints, face)
    if hd is None:
        return None
    hc, r = hd
    sh = _joint(joints, "shoulders")
    d = np.hypot(*(vertices - hc).T) / r
    limit_y = sh[1] if sh is not None else hc[1] + 1.6 * r
    sel = (d > 1.12) & (d < 3.0) & (vertices[:, 1] < limit_y)
    # Arms raised beside the head are not hair: drop vertices near the arm joints.
    for name in ("elbow_l", "elbow_r", "wrist_l", "wrist_r", "shoulder_l", "shoulder_r"):
        j = _joint(joints, name)
        if j is not None:
            sel &= np.hypot(*(vertices - j).T) > 0.9 * r
    if sel.sum() < 6:
        return None
    w = np.zeros(len(vertices), np.float32)
    w[sel] = np.clip((d[sel] - 1.12) / 1.0, 0.0, 1.0) ** 1.2
    return PhysicsRegion("hair", AUTO_HAIR[0], (float(hc[0]), float(hc[1])), w, *AUTO_HAIR[1:])


def _auto_skirt(vertices: np.ndarray, joints: Mapping[str, Any], free: np.ndarray) -> PhysicsRegion | None:
    """A skirt of a single picture: below the hips the silhouette stays much wider than the hips."""
    hips, hl, hr = _joint(joints, "hips"), _joint(joints, "hip_l"), _joint(joints, "hip_r")
    kl, kr = _joint(joints, "knee_l"), _joint(joints, "knee_r")
    if hips is None or hl is None or hr is None or kl is None or kr is None:
        return None
    hip_w = float(abs(hl[0] - hr[0]))
    knee_y = 0.5 * (kl[1] + kr[1])
    if knee_y <= hips[1] + 4 or hip_w < 2:
        return None
    # the mesh's vertex spacing sets how finely the silhouette can be read
    from scipy.spatial import cKDTree
    spacing = float(np.median(cKDTree(vertices).query(vertices, k=2)[0][:, 1])) if len(vertices) > 2 else 1.0
    n_bands = int(np.clip((knee_y - hips[1]) / max(2.0 * spacing, 1.0), 3, 8))
    rows = np.linspace(hips[1], knee_y, n_bands + 1)
    wide_until = None
    for y0, y1 in zip(rows[:-1], rows[1:], strict=True):
        band = (vertices[:, 1] >= y0) & (vertices[:, 1] < y1)
        if band.sum() < 2:
            break
        span = float(np.ptp(vertices[band, 0]))
        # a skirt is one piece: the silhouette is wide AND filled between the legs
        middle = np.abs(vertices[band, 0] - hips[0]) < max(0.12 * hip_w, 0.75 * spacing)
        if span > 1.5 * hip_w + 0.1 * (knee_y - hips[1]) and middle.any():
            wide_until = y1
        elif wide_until is not None:
            break
    if wide_until is None or wide_until < hips[1] + 0.45 * (knee_y - hips[1]):   # covers half the thigh
        return None
    sel = free & (vertices[:, 1] > hips[1]) & (vertices[:, 1] < wide_until) & \
        (np.abs(vertices[:, 0] - hips[0]) < 2.5 * hip_w + (knee_y - hips[1]))
    if sel.sum() < 6:
        return None
    w = np.zeros(len(vertices), np.float32)
    w[sel] = (np.clip((vertices[sel, 1] - hips[1]) / (wide_until - hips[1]), 0, 1) ** 1.5) * 0.8
    return PhysicsRegion("skirt", AUTO_SKIRT[0], (float(hips[0]), float(hips[1])), w, *AUTO_SKIRT[1:])


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------

class SecondaryMotion:
    """Per-session pendulum state for a character's regions (see the module doc)."""

    def __init__(self, regions: Sequence[PhysicsRegion], vertices: np.ndarray,
                 device: torch.device | str = "cpu"):
        self.regions = list(regions)
        self.device = torch.device(device)
        vertices = np.asarray(vertices, np.float64).reshape(-1, 2)
        n_r, n_v = len(self.regions), len(vertices)
        self.n_regions, self.n_vertices = n_r, n_v
        self.root = np.array([r.root for r in self.regions], np.float64).reshape(n_r, 2)
        self.k = np.array([r.stiffness for r in self.regions], np.float64)
        self.c = np.array([r.damping for r in self.regions], np.float64)
        self.g = np.array([r.gravity for r in self.regions], np.float64)
        hangs = [r.hang(vertices) for r in self.regions]
        self.hang = np.array([h[0] for h in hangs], np.float64).reshape(n_r, 2)
        self.length = np.array([h[1] for h in hangs], np.float64)
        # Each vertex follows its strongest region.
        W = np.stack([np.asarray(r.weights, np.float32).reshape(-1) for r in self.regions]) if n_r else \
            np.zeros((0, n_v), np.float32)
        if W.shape[1] != n_v:
            raise ValueError(f"region weights have {W.shape[1]} vertices, the mesh has {n_v}")
        idx = W.argmax(0) if n_r else np.zeros(n_v, np.int64)
        w = W.max(0) if n_r else np.zeros(n_v, np.float32)
        self.vertex_region = torch.from_numpy(idx.astype(np.int64)).to(self.device)
        self.vertex_weight = torch.from_numpy(w.astype(np.float32)).to(self.device)
        self._moving = torch.from_numpy(np.nonzero(w > 0)[0]).to(self.device)
        # the same, for displace_xy (CPU: the skinning buffer, no torch)
        moving = np.nonzero(w > 0)[0]
        self._np_moving = moving.astype(np.int64)
        self._np_region = idx[moving].astype(np.int64)
        self._np_weight = w[moving].astype(np.float64)
        self._rows = 0
        self._alloc(0)
        self.root_out = np.zeros((0, n_r, 2), np.float64)

    def _alloc(self, rows: int) -> None:
        n_r = self.n_regions

        def grow(a: np.ndarray | None, fill: float, shape: tuple[int, ...]) -> np.ndarray:
            out = np.full(shape, fill, np.float64)
            if a is not None and len(a):
                out[:len(a)] = a[:rows]
            return out

        old = getattr(self, "theta", None)
        if old is not None and len(old) >= rows:
            return
        self.theta = grow(getattr(self, "theta", None), 0.0, (rows, n_r))
        self.omega = grow(getattr(self, "omega", None), 0.0, (rows, n_r))
        self.p_prev = grow(getattr(self, "p_prev", None), 0.0, (rows, n_r, 2))
        self.v_prev = grow(getattr(self, "v_prev", None), 0.0, (rows, n_r, 2))
        self.phi_prev = grow(getattr(self, "phi_prev", None), 0.0, (rows, n_r))
        self.phi_vel = grow(getattr(self, "phi_vel", None), 0.0, (rows, n_r))
        self.t_prev = grow(getattr(self, "t_prev", None), np.nan, (rows,))
        self._rows = rows

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Forget the state of all rows, or of the given ones (they restart at rest)."""
        if rows is None:
            self.t_prev[:] = np.nan
            self.theta[:] = 0.0
            self.omega[:] = 0.0
            return
        idx = [i for i in rows if 0 <= i < len(self.t_prev)]
        self.t_prev[idx] = np.nan
        self.theta[idx] = 0.0
        self.omega[idx] = 0.0

    def step(self, t_s: np.ndarray, anchor_affine: np.ndarray) -> None:
        """Advance every row to time t_s (B,) seconds; anchor_affine (B, R, 2, 3) maps rest px to
        output px for each region's anchor bone this frame."""
        t_s = np.asarray(t_s, np.float64).reshape(-1)
        b = len(t_s)
        n_r = self.n_regions
        self._alloc(max(b, self._rows))
        if n_r == 0:
            self.root_out = np.zeros((b, 0, 2), np.float64)
            return
        A = np.asarray(anchor_affine, np.float64).reshape(b, n_r, 2, 3)
        A = np.where(np.isfinite(A), A, 0.0)
        M, tr = A[..., :2], A[..., 2]
        p = np.einsum("brij,rj->bri", M, self.root) + tr                      # root, output px
        d = np.einsum("brij,rj->bri", M, self.hang)                           # rigid hang direction
        scale = np.sqrt(np.abs(M[..., 0, 0] * M[..., 1, 1] - M[..., 0, 1] * M[..., 1, 0])).clip(1e-3)
        phi = np.arctan2(d[..., 0], d[..., 1])
        length = self.length[None] * scale
        rest_phi = np.arctan2(self.hang[:, 0], self.hang[:, 1])[None]
        self.root_out = p

        dt_raw = t_s - self.t_prev[:b]
        fresh = ~np.isfinite(dt_raw) | (dt_raw < 0) | (dt_raw > SNAP_DT) | ~np.isfinite(t_s)
        rows = np.arange(b)
        # Fresh rows start at rest, with the current pose as their history.
        fr = rows[fresh]
        self.theta[fr] = 0.0
        self.omega[fr] = 0.0
        self.p_prev[fr] = p[fresh]
        self.v_prev[fr] = 0.0
        self.phi_prev[fr] = phi[fresh]
        self.phi_vel[fr] = 0.0
        self.t_prev[:b] = np.where(np.isfinite(t_s), t_s, self.t_prev[:b])
        live = rows[~fresh & (dt_raw > 1e-6)]
        if len(live) == 0:
            return
        dtr = dt_raw[live][:, None]
        v = (p[live] - self.p_prev[live]) / dtr[..., None]
        acc = (v - self.v_prev[live]) / dtr[..., None]
        dphi = np.angle(np.exp(1j * (phi[live] - self.phi_prev[live])))      # wrapped
        w_ang = dphi / dtr
        alpha = (w_ang - self.phi_vel[live]) / dtr
        self.p_prev[live], self.v_prev[live] = p[live], v
        self.phi_prev[live], self.phi_vel[live] = phi[live], w_ang
        # Pendulum normal (direction of increasing angle) at the current swing.
        ang = phi[live] + self.theta[live]
        nrm = np.stack([np.cos(ang), -np.sin(ang)], -1)
        force = -(acc * nrm).sum(-1) / length[live] - alpha
        force = np.clip(force if np.isfinite(force).all() else np.nan_to_num(force), -MAX_FORCE, MAX_FORCE)
        target = self.g[None] * np.angle(np.exp(1j * (rest_phi - phi[live])))
        target = np.clip(target, -0.5, 0.5)
        dt = np.minimum(dt_raw[live], MAX_DT)
        n_sub = np.maximum(1, np.ceil(dt / SUBSTEP)).astype(np.int64)
        h = (dt / n_sub)[:, None]
        th, om = self.theta[live], self.omega[live]
        k, c = self.k[None], self.c[None]
        for s in range(int(n_sub.max())):
            on = (s < n_sub)[:, None]
            # backward Euler on the linear spring-damper, the forcing held over the frame
            om_new = (om + h * (-k * (th - target) + force)) / (1.0 + h * c + h * h * k)
            th_new = th + h * om_new
            om = np.where(on, om_new, om)
            th = np.where(on, th_new, th)
        over = np.abs(th) > MAX_ANGLE
        om = np.where(over & (np.sign(om) == np.sign(th)), 0.0, om)
        self.theta[live] = np.clip(th, -MAX_ANGLE, MAX_ANGLE)
        self.omega[live] = np.clip(om, -30.0, 30.0)

    def angles(self, rows: int | None = None) -> np.ndarray:
        """Current lag angles (B, R) of the first `rows` rows."""
        return self.theta[: (rows if rows is not None else self._rows)].copy()

    def displace(self, verts: torch.Tensor) -> torch.Tensor:
        """Deformed vertices (B, V, 2) output px -> with the swing applied (a new tensor)."""
        b = verts.shape[0]
        if self.n_regions == 0 or len(self._moving) == 0:
            return verts
        dev, dt_ = verts.device, verts.dtype
        theta = torch.from_numpy(self.theta[:b]).to(dev, dt_)                  # (B, R)
        root = torch.from_numpy(self.root_out[:b]).to(dev, dt_)                 # (B, R, 2)
        mv = self._moving
        reg = self.vertex_region[mv]
        ang = theta[:, reg] * self.vertex_weight[mv].to(dt_)                    # (B, M)
        rel = verts[:, mv] - root[:, reg]
        c, s = torch.cos(ang), torch.sin(ang)
        # rotate by +ang in the bone-angle sense: (sin φ, cos φ) -> (sin(φ+a), cos(φ+a))
        x = c * rel[..., 0] + s * rel[..., 1]
        y = -s * rel[..., 0] + c * rel[..., 1]
        out = verts.clone()
        out[:, mv] = root[:, reg] + torch.stack([x, y], -1)
        return out


    def displace_xy(self, xy: np.ndarray) -> None:
        """displace() on CPU, in place: xy (B, 2, V) float64 output px (skinning.py's buffer)."""
        b = xy.shape[0]
        if self.n_regions == 0 or len(self._np_moving) == 0:
            return
        _swing(xy, self.theta[:b], self.root_out[:b], self._np_moving, self._np_region, self._np_weight)


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _swing(xy: np.ndarray, theta: np.ndarray, root: np.ndarray, moving: np.ndarray, region: np.ndarray,
           weight: np.ndarray) -> None:  # pragma: no cover - compiled
    """displace()'s rotation about each region's deformed root, per moving vertex."""
    for b in range(xy.shape[0]):
        for j in range(moving.shape[0]):
            v, r = moving[j], region[j]
            a = theta[b, r] * weight[j]
            c, s = math.cos(a), math.sin(a)
            rx, ry = xy[b, 0, v] - root[b, r, 0], xy[b, 1, v] - root[b, r, 1]
            xy[b, 0, v] = root[b, r, 0] + c * rx + s * ry
            xy[b, 1, v] = root[b, r, 1] - s * rx + c * ry


def settle_time(motion: SecondaryMotion, threshold: float = 0.02, row: int = 0) -> float:
    """How long (s) the lag of `row` needs to fall below `threshold` rad with the anchor held still,
    from the current state (a simulation on a copy; for tests and the benchmark)."""
    if motion.n_regions == 0:
        return 0.0
    th, om = motion.theta[row].copy(), motion.omega[row].copy()
    h = SUBSTEP
    t, quiet = 0.0, 0.0
    while t < 10.0:
        om = (om + h * (-motion.k * th)) / (1.0 + h * motion.c + h * h * motion.k)
        th = th + h * om
        t += h
        quiet = quiet + h if np.abs(th).max() < threshold else 0.0
        if quiet >= 0.1:
            return max(0.0, t - quiet)
    return math.inf
