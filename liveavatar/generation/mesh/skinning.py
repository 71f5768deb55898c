"""Per-frame deformation of the mesh on CPU: linear blend or dual-quaternion skinning, compiled.

Each bone's local motion (canvas px) is split as Rigid_b o Scale_b: a scale/shear about the bone's
rest start (the spine's bow, the head narrowing as it turns; identity for the limbs), then a
rotation R_b and translation t_b. One global affine per session (framing, root motion, the mirror
of a spin) follows. Everything per character (sparse weights: the bones of each vertex and their
weights, rest px) is cached once in `Skinning`; per frame only the bone transforms change, and
the output goes into a preallocated (n, 2, V) float64 buffer that the rasteriser reads as is.

- LBS: the vertex's affine is the weighted sum of its bones' affines (a rotation blended with
  another shrinks towards the joint: the elbow and shoulder lose area when bent far).
- DQS (Kavan et al. 2007, in the plane): each rigid part is a unit dual quaternion
  (cos a/2, sin a/2; translation part); the vertex blends them (signs aligned to its heaviest bone)
  and renormalises, so the blended transform stays a rotation; the scale part is blended linearly
  first. Nothing is solved per frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

LBS, DQS = "lbs", "dqs"
METHODS = (LBS, DQS)


class Skinning:
    """Cached sparse weights and rest px of one character; `apply` skins a batch of sessions."""

    def __init__(self, rest: np.ndarray, weights: np.ndarray, bone_start: np.ndarray, method: str = LBS):
        if method not in METHODS:
            raise ValueError(f"skinning method {method!r}; use one of {', '.join(METHODS)}")
        self.method = method
        w = np.asarray(weights, np.float64)
        V, NB = w.shape
        k = max(1, int((w > 0).sum(1).max()))
        # each vertex's bones, heaviest first (DQS aligns the others' signs to it); pad: weight 0
        order = np.argsort(-w, axis=1, kind="stable")[:, :k]
        self.bone = np.ascontiguousarray(order, np.int64)
        self.weight = np.ascontiguousarray(np.take_along_axis(w, order, 1))
        self.rest = np.ascontiguousarray(np.asarray(rest, np.float64).T)      # (2, V)
        self.bone_start = np.ascontiguousarray(bone_start, np.float64)       # (NB, 2) rest canvas px
        self.n_bones = NB
        self._out = np.zeros((0, 2, V), np.float64)

    def buffer(self, n: int) -> np.ndarray:
        """The (n, 2, V) output buffer, grown on demand (the caller copies what it keeps)."""
        if self._out.shape[0] < n:
            self._out = np.zeros((n, 2, self.rest.shape[1]), np.float64)
        return self._out[:n]

    def apply(self, rot: np.ndarray, scale: np.ndarray, pos: np.ndarray, glob: np.ndarray,
              private: bool = False) -> np.ndarray:
        """rot (n, NB) radians of R_b (x -> [[cos, -sin], [sin, cos]] x); scale (n, NB, 2, 2) S_b about
        the bone's rest start; pos (n, NB, 2) where the bone's rest start goes (canvas px, local);
        glob (n, 2, 3) canvas -> output px. -> (n, 2, V) output px: the shared buffer (the render
        path, one render at a time), or a new array with `private`."""
        n = rot.shape[0]
        out = np.empty((n, 2, self.rest.shape[1]), np.float64) if private else self.buffer(n)
        r = np.ascontiguousarray(rot, np.float64)
        s = np.ascontiguousarray(scale, np.float64)
        p = np.ascontiguousarray(pos, np.float64)
        g = np.ascontiguousarray(glob, np.float64)
        if self.method == DQS:
            _dqs(self.bone, self.weight, self.rest, self.bone_start, r, s, p, g, out)
        else:
            _lbs(self.bone, self.weight, self.rest, self.bone_start, r, s, p, g, out)
        return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bone_affine(rot: float, s: np.ndarray, start: np.ndarray, pos: np.ndarray) -> tuple:  # pragma: no cover
    """Local affine of one bone: X -> pos + R S (X - start), as (a, b, c, d, tx, ty)."""
    c, sn = math.cos(rot), math.sin(rot)
    a = c * s[0, 0] - sn * s[1, 0]
    b = c * s[0, 1] - sn * s[1, 1]
    cc = sn * s[0, 0] + c * s[1, 0]
    d = sn * s[0, 1] + c * s[1, 1]
    tx = pos[0] - (a * start[0] + b * start[1])
    ty = pos[1] - (cc * start[0] + d * start[1])
    return a, b, cc, d, tx, ty


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _lbs(bone: np.ndarray, weight: np.ndarray, rest: np.ndarray, start: np.ndarray, rot: np.ndarray,
         scale: np.ndarray, pos: np.ndarray, glob: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    n, NB = rot.shape
    V, K = bone.shape
    aff = np.empty((NB, 6))
    for i in range(n):
        g = glob[i]
        for b in range(NB):
            a, bb, c, d, tx, ty = _bone_affine(rot[i, b], scale[i, b], start[b], pos[i, b])
            # global after local: G [M | t]
            aff[b, 0] = g[0, 0] * a + g[0, 1] * c
            aff[b, 1] = g[0, 0] * bb + g[0, 1] * d
            aff[b, 2] = g[0, 0] * tx + g[0, 1] * ty + g[0, 2]
            aff[b, 3] = g[1, 0] * a + g[1, 1] * c
            aff[b, 4] = g[1, 0] * bb + g[1, 1] * d
            aff[b, 5] = g[1, 0] * tx + g[1, 1] * ty + g[1, 2]
        for v in range(V):
            x, y = rest[0, v], rest[1, v]
            ox = oy = 0.0
            for j in range(K):
                w = weight[v, j]
                if w == 0.0:
                    break
                m = aff[bone[v, j]]
                ox += w * (m[0] * x + m[1] * y + m[2])
                oy += w * (m[3] * x + m[4] * y + m[5])
            out[i, 0, v] = ox
            out[i, 1, v] = oy


@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _dqs(bone: np.ndarray, weight: np.ndarray, rest: np.ndarray, start: np.ndarray, rot: np.ndarray,
         scale: np.ndarray, pos: np.ndarray, glob: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    n, NB = rot.shape
    V, K = bone.shape
    dq = np.empty((NB, 4))      # (cos a/2, sin a/2, dual x, dual y) of the rigid part
    sc = np.empty((NB, 6))      # the scale part about the bone start, as an affine
    for i in range(n):
        g = glob[i]
        for b in range(NB):
            s = scale[i, b]
            st = start[b]
            sc[b, 0], sc[b, 1], sc[b, 3], sc[b, 4] = s[0, 0], s[0, 1], s[1, 0], s[1, 1]
            sc[b, 2] = st[0] - (s[0, 0] * st[0] + s[0, 1] * st[1])
            sc[b, 5] = st[1] - (s[1, 0] * st[0] + s[1, 1] * st[1])
            half = 0.5 * rot[i, b]
            qc, qs = math.cos(half), math.sin(half)
            c, sn = math.cos(rot[i, b]), math.sin(rot[i, b])
            # rigid: X -> R X + t with R (start) + t = pos
            tx = pos[i, b, 0] - (c * st[0] - sn * st[1])
            ty = pos[i, b, 1] - (sn * st[0] + c * st[1])
            dq[b, 0], dq[b, 1] = qc, qs
            dq[b, 2] = 0.5 * (tx * qc + ty * qs)
            dq[b, 3] = 0.5 * (-tx * qs + ty * qc)
        for v in range(V):
            x, y = rest[0, v], rest[1, v]
            sx = sy = 0.0
            q0 = q1 = q2 = q3 = 0.0
            pivot = bone[v, 0]
            for j in range(K):
                w = weight[v, j]
                if w == 0.0:
                    break
                b = bone[v, j]
                m = sc[b]
                sx += w * (m[0] * x + m[1] * y + m[2])
                sy += w * (m[3] * x + m[4] * y + m[5])
                # the shorter way round: same hemisphere as the heaviest bone
                if dq[b, 0] * dq[pivot, 0] + dq[b, 1] * dq[pivot, 1] < 0.0:
                    w = -w
                q0 += w * dq[b, 0]
                q1 += w * dq[b, 1]
                q2 += w * dq[b, 2]
                q3 += w * dq[b, 3]
            norm = math.sqrt(q0 * q0 + q1 * q1)
            if norm < 1e-12:
                q0, q1, q2, q3, norm = 1.0, 0.0, 0.0, 0.0, 1.0
            q0, q1, q2, q3 = q0 / norm, q1 / norm, q2 / norm, q3 / norm
            # the rotation and the translation (t = 2 q_d conj(q_r)) of the blend
            c = q0 * q0 - q1 * q1
            sn = 2.0 * q0 * q1
            tx = 2.0 * (q2 * q0 - q3 * q1)
            ty = 2.0 * (q2 * q1 + q3 * q0)
            lx = c * sx - sn * sy + tx
            ly = sn * sx + c * sy + ty
            out[i, 0, v] = g[0, 0] * lx + g[0, 1] * ly + g[0, 2]
            out[i, 1, v] = g[1, 0] * lx + g[1, 1] * ly + g[1, 2]


def dqs_torch(weights: torch.Tensor, pivot: torch.Tensor, rest: torch.Tensor, start: torch.Tensor,
              rot: np.ndarray, scale: np.ndarray, pos: np.ndarray, glob: np.ndarray) -> torch.Tensor:
    """_dqs in torch, for the GPU path (same arguments as Skinning.apply, dense weights (V, NB),
    pivot (V,) the heaviest bone of each vertex, rest (V, 2), start (NB, 2)) -> (n, V, 2)."""
    dev, dt = rest.device, rest.dtype

    def T(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev, dt)

    r, s, p, g = T(rot), T(scale), T(pos), T(glob)
    half = 0.5 * r
    qc, qs = torch.cos(half), torch.sin(half)
    c, sn = torch.cos(r), torch.sin(r)
    sx0, sy0 = start[:, 0], start[:, 1]
    tx = p[..., 0] - (c * sx0 - sn * sy0)
    ty = p[..., 1] - (sn * sx0 + c * sy0)
    dq = torch.stack([qc, qs, 0.5 * (tx * qc + ty * qs), 0.5 * (-tx * qs + ty * qc)], -1)    # (n, NB, 4)
    st = start[None, :, :, None]                                                           # (1, NB, 2, 1)
    sc = torch.cat([s, (start[None] - (s @ st).squeeze(-1))[..., None]], -1)                 # (n, NB, 2, 3)
    scaled = torch.einsum("vb,nbij,vj->nvi", weights, sc[..., :2], rest) + torch.einsum("vb,nbi->nvi", weights,
                                                                                          sc[..., 2])
    piv = dq[:, pivot, :2]                                                                 # (n, V, 2)
    sign = torch.sign(torch.einsum("nvk,nbk->nvb", piv, dq[..., :2]) + 1e-12)               # (n, V, NB)
    q = torch.einsum("vb,nvb,nbk->nvk", weights, sign, dq)
    norm = torch.linalg.vector_norm(q[..., :2], dim=-1, keepdim=True).clamp_min(1e-12)
    q = q / norm
    q0, q1, q2, q3 = q.unbind(-1)
    c2, s2 = q0 * q0 - q1 * q1, 2.0 * q0 * q1
    lx = c2 * scaled[..., 0] - s2 * scaled[..., 1] + 2.0 * (q2 * q0 - q3 * q1)
    ly = s2 * scaled[..., 0] + c2 * scaled[..., 1] + 2.0 * (q2 * q1 + q3 * q0)
    local = torch.stack([lx, ly], -1)
    return torch.einsum("nij,nvj->nvi", g[..., :2], local) + g[:, None, :, 2]
