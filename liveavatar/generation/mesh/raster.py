"""The CPU rasteriser of the mesh generator: scanlines compiled with numba, one thread.

Everything that depends only on the rest mesh is cached at prepare time (triangles grouped by
layer, texture coordinates in atlas px, the premultiplied uint8 atlas). Per frame and session,
in one compiled call (`_render_session`):

1. layers are drawn back to front in the session's draw order: a lone layer straight into the
   output, otherwise the first into an accumulator and each further one into a scratch buffer
   over its own bounding box only;
2. every triangle of a layer walks its rows of pixel centres; on a row, each barycentric
   coordinate >= 0 is one bound on x (affine in the pixel), so only covered pixels are visited;
3. a covered pixel's texture coordinate is affine in the pixel too; the atlas is sampled
   bilinearly (premultiplied, zeros outside, as grid_sample and cv2.remap do), and the pixel is
   set (a pixel on an edge shared by two triangles is written, not blended, twice);
4. a further layer is composited "over" the accumulator, which ends as straight RGBA.

The torch rasteriser in generator.py stays for CUDA.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

EPS = 1e-7         # barycentric slack: a pixel centre on a shared edge belongs to both triangles


class CpuRaster:
    """Rasterises one character's deformed mesh for a batch of sessions (see module doc)."""

    def __init__(self, tris: np.ndarray, tri_layer: np.ndarray, uv_px: np.ndarray, n_layers: int, size: int):
        if np.any(np.diff(tri_layer) < 0):
            raise ValueError("triangles must be grouped by layer")
        self.size = int(size)
        self.n_layers = int(n_layers)
        self.tris = np.ascontiguousarray(tris, np.int64)
        # triangles of layer l: layer_start[l]:layer_start[l + 1]
        self.layer_start = np.searchsorted(np.asarray(tri_layer), np.arange(self.n_layers + 1)).astype(np.int64)
        self.uvx = np.ascontiguousarray(uv_px[:, 0], np.float64)
        self.uvy = np.ascontiguousarray(uv_px[:, 1], np.float64)
        S = self.size
        self._acc = np.zeros((S, S, 4), np.float32)     # premultiplied 0..255, zero between calls
        self._lay = np.zeros((S, S, 4), np.float32)

    def render(self, verts: np.ndarray, textures: list[np.ndarray], order: np.ndarray,
               layer_on: np.ndarray) -> np.ndarray:
        """verts (n, V, 2) output px; textures: one premultiplied (H, W, 4) uint8 atlas per session;
        order (n, L) layers back to front; layer_on (n, L) bool. -> (n, S, S, 4) straight RGBA."""
        xy = np.ascontiguousarray(np.asarray(verts, np.float64).transpose(0, 2, 1))
        return self.render_xy(xy, textures, order, layer_on)

    def render_xy(self, xy: np.ndarray, textures: list[np.ndarray], order: np.ndarray,
                  layer_on: np.ndarray) -> np.ndarray:
        """render() from skinning.py's (n, 2, V) float64 buffer, which it sanitises in place."""
        n, S = xy.shape[0], self.size
        out = np.zeros((n, S, S, 4), np.uint8)
        if not np.isfinite(xy).all():
            np.nan_to_num(xy, copy=False, nan=0.0, posinf=1e4, neginf=-1e4)
        np.clip(xy, -4 * S, 5 * S, out=xy)
        order = np.ascontiguousarray(order, np.int64)
        on = np.ascontiguousarray(layer_on, np.bool_)
        for bi in range(n):
            _render_session(xy[bi, 0], xy[bi, 1], self.tris, self.layer_start, order[bi], on[bi],
                            self.uvx, self.uvy, textures[bi], self._acc, self._lay, out[bi])
        return out


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def bilinear_zeros(img: np.ndarray, u: float, v: float) -> tuple[float, float, float, float]:  # pragma: no cover
    """Bilinear sample of a (H, W, 4) image (any dtype, any strides) at (u, v), texel centres at
    integers, zeros outside (as grid_sample(padding zeros, align_corners=False) and cv2.remap with
    a zero border). Shared by this rasteriser and face.py's iris and feature warps."""
    H, W = img.shape[0], img.shape[1]
    fu, fv = math.floor(u), math.floor(v)
    iu, iv = int(fu), int(fv)
    wu, wv = u - fu, v - fv
    c0 = c1 = c2 = c3 = 0.0
    if iu >= 0 and iv >= 0 and iu + 1 < W and iv + 1 < H:
        w00, w01 = (1.0 - wu) * (1.0 - wv), wu * (1.0 - wv)
        w10, w11 = (1.0 - wu) * wv, wu * wv
        c0 = w00 * img[iv, iu, 0] + w01 * img[iv, iu + 1, 0] + w10 * img[iv + 1, iu, 0] + w11 * img[iv + 1, iu + 1, 0]
        c1 = w00 * img[iv, iu, 1] + w01 * img[iv, iu + 1, 1] + w10 * img[iv + 1, iu, 1] + w11 * img[iv + 1, iu + 1, 1]
        c2 = w00 * img[iv, iu, 2] + w01 * img[iv, iu + 1, 2] + w10 * img[iv + 1, iu, 2] + w11 * img[iv + 1, iu + 1, 2]
        c3 = w00 * img[iv, iu, 3] + w01 * img[iv, iu + 1, 3] + w10 * img[iv + 1, iu, 3] + w11 * img[iv + 1, iu + 1, 3]
        return c0, c1, c2, c3
    for dv in range(2):
        yy = iv + dv
        if yy < 0 or yy >= H:
            continue
        wy = wv if dv else 1.0 - wv
        for du in range(2):
            xx = iu + du
            if xx < 0 or xx >= W:
                continue
            w = wy * (wu if du else 1.0 - wu)
            c0 += w * img[yy, xx, 0]
            c1 += w * img[yy, xx, 1]
            c2 += w * img[yy, xx, 2]
            c3 += w * img[yy, xx, 3]
    return c0, c1, c2, c3


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _bound(A: float, B: float, C: float, yc: float, xl: float, xr: float,
           skip: bool) -> tuple[float, float, bool]:  # pragma: no cover - compiled
    """On row yc, barycentric A + B x + C y >= -EPS bounds x from below (B > 0) or above (B < 0);
    an edge parallel to the row (B = 0) keeps or excludes the whole row."""
    lin = A + C * yc
    if B > 1e-12:
        xl = max(xl, (-EPS - lin) / B)
    elif B < -1e-12:
        xr = min(xr, (-EPS - lin) / B)
    elif lin < -EPS:
        skip = True
    return xl, xr, skip


# fastmath: inputs are finite (sanitised in render); about 10 % faster here
@njit(cache=True, nogil=True, error_model="numpy", fastmath=True)
def _render_session(vx: np.ndarray, vy: np.ndarray, tris: np.ndarray, layer_start: np.ndarray,
                    order: np.ndarray, on: np.ndarray, uvx: np.ndarray, uvy: np.ndarray, tex: np.ndarray,
                    acc: np.ndarray, lay: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    S = out.shape[0]
    X0, Y0, X1, Y1 = S, S, 0, 0              # the accumulator's touched box
    active = 0
    for li in range(order.shape[0]):
        if on[li] and layer_start[li + 1] > layer_start[li]:
            active += 1
    # One layer: pixels go straight to the output. More: the first drawn layer goes to the
    # accumulator directly, the others through the scratch layer, composited over it.
    drawn = 0
    for oi in range(order.shape[0]):
        li = order[oi]
        if not on[li]:
            continue
        t_lo, t_hi = layer_start[li], layer_start[li + 1]
        if t_hi <= t_lo:
            continue
        # the layer's bounding box, clipped to the frame
        lx0, ly0, lx1, ly1 = 1e9, 1e9, -1e9, -1e9
        for t in range(t_lo, t_hi):
            for j in range(3):
                p = tris[t, j]
                lx0, lx1 = min(lx0, vx[p]), max(lx1, vx[p])
                ly0, ly1 = min(ly0, vy[p]), max(ly1, vy[p])
        bx0, by0 = max(0, int(math.floor(lx0))), max(0, int(math.floor(ly0)))
        bx1, by1 = min(S, int(math.ceil(lx1)) + 1), min(S, int(math.ceil(ly1)) + 1)
        if bx1 <= bx0 or by1 <= by0:
            continue
        direct = active == 1
        dst = acc if drawn == 0 else lay
        drawn += 1
        for t in range(t_lo, t_hi):
            a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
            ax, ay = vx[a], vy[a]
            e1x, e1y = vx[b] - ax, vy[b] - ay
            e2x, e2y = vx[c] - ax, vy[c] - ay
            det = e1x * e2y - e1y * e2x
            if abs(det) <= 1e-9:
                continue
            inv = 1.0 / det
            # barycentrics l_i = A_i + B_i x + C_i y (l0 = 1 - l1 - l2)
            B1, C1 = e2y * inv, -e2x * inv
            B2, C2 = -e1y * inv, e1x * inv
            A1 = -(ax * B1 + ay * C1)
            A2 = -(ax * B2 + ay * C2)
            A0, B0, C0 = 1.0 - A1 - A2, -B1 - B2, -C1 - C2
            # texture px: u = U0 + Ux x + Uy y
            d1u, d1v = uvx[b] - uvx[a], uvy[b] - uvy[a]
            d2u, d2v = uvx[c] - uvx[a], uvy[c] - uvy[a]
            U0 = uvx[a] + A1 * d1u + A2 * d2u
            V0 = uvy[a] + A1 * d1v + A2 * d2v
            Uxu, Uxv = B1 * d1u + B2 * d2u, B1 * d1v + B2 * d2v
            Uyu, Uyv = C1 * d1u + C2 * d2u, C1 * d1v + C2 * d2v
            ymin = min(ay, vy[b], vy[c])
            ymax = max(ay, vy[b], vy[c])
            r0 = max(0, int(math.ceil(ymin - 0.5)))
            r1 = min(S - 1, int(math.floor(ymax - 0.5)))
            for y in range(r0, r1 + 1):
                yc = y + 0.5
                xl, xr, skip = _bound(A0, B0, C0, yc, -1e9, 1e9, False)
                xl, xr, skip = _bound(A1, B1, C1, yc, xl, xr, skip)
                xl, xr, skip = _bound(A2, B2, C2, yc, xl, xr, skip)
                if skip:
                    continue
                x0 = max(0, int(math.ceil(xl - 0.5)))
                x1 = min(S - 1, int(math.floor(xr - 0.5)))
                for x in range(x0, x1 + 1):
                    xc = x + 0.5
                    u = U0 + Uxu * xc + Uyu * yc
                    v = V0 + Uxv * xc + Uyv * yc
                    c0, c1, c2, c3 = bilinear_zeros(tex, u, v)
                    if direct:
                        if c3 > 0.0:
                            k = 255.0 / c3
                            out[y, x, 0] = min(255, int(c0 * k + 0.5))
                            out[y, x, 1] = min(255, int(c1 * k + 0.5))
                            out[y, x, 2] = min(255, int(c2 * k + 0.5))
                            out[y, x, 3] = min(255, int(c3 + 0.5))
                        else:
                            for ch in range(4):
                                out[y, x, ch] = 0
                    else:
                        dst[y, x, 0] = c0
                        dst[y, x, 1] = c1
                        dst[y, x, 2] = c2
                        dst[y, x, 3] = c3
        if direct:
            return
        X0, Y0, X1, Y1 = min(X0, bx0), min(Y0, by0), max(X1, bx1), max(Y1, by1)
        if drawn == 1:
            continue
        # composite the layer over the accumulator, clearing the scratch for the next layer
        for y in range(by0, by1):
            for x in range(bx0, bx1):
                ia = 1.0 - lay[y, x, 3] * (1.0 / 255.0)
                for ch in range(4):
                    acc[y, x, ch] = lay[y, x, ch] + acc[y, x, ch] * ia
                    lay[y, x, ch] = 0.0
    # straight colour = premultiplied * 255 / alpha; the accumulator is cleared for the next call
    for y in range(Y0, Y1):
        for x in range(X0, X1):
            al = acc[y, x, 3]
            if al > 0.0:
                k = 255.0 / al
                for ch in range(3):
                    out[y, x, ch] = min(255, int(acc[y, x, ch] * k + 0.5))
                out[y, x, 3] = min(255, int(al + 0.5))
            for ch in range(4):
                acc[y, x, ch] = 0.0
