"""The CPU rasteriser of the mesh generator: numpy scanlines + one OpenCV remap per layer.

Everything that depends only on the rest mesh is cached at prepare time (triangles, their layer,
texture coordinates in atlas px, the premultiplied uint8 atlas). Per frame, for all sessions at
once:

1. every triangle's barycentric coordinates as affine functions of the pixel (float64 setup);
2. its rows of pixel centres, and on each row the span where all three barycentrics are >= 0
   (each one is a bound on x), expanded to pixels with np.repeat: exactly the covered pixels,
   no bounding-box tests;
3. the texture coordinate of every covered pixel (affine in the pixel too) is scattered into a
   per-session, per-layer coordinate map (CV_32FC2);
4. per session and layer, over the layer's bounding box only: one cv2.remap (bilinear, zeros
   outside) fetches the premultiplied colour, layers are composited "over" in the session's draw
   order, and cv2.divide turns the result into straight RGBA.

The torch rasteriser in generator.py stays for CUDA.
"""
from __future__ import annotations

import cv2
import numpy as np

OUT = -16.0        # map value that samples nothing (BORDER_CONSTANT zeros)
EPS = 1e-7         # barycentric slack: a pixel centre on a shared edge belongs to both triangles


class CpuRaster:
    """Rasterises one character's deformed mesh for a batch of sessions (see module doc)."""

    def __init__(self, tris: np.ndarray, tri_layer: np.ndarray, uv_px: np.ndarray, n_layers: int, size: int):
        if np.any(np.diff(tri_layer) < 0):
            raise ValueError("triangles must be grouped by layer")
        self.size = int(size)
        self.n_layers = int(n_layers)
        self.tris = np.ascontiguousarray(tris, np.int64)
        self.tri_layer = np.ascontiguousarray(tri_layer, np.int64)
        # first triangle of each layer (np.minimum.reduceat segments)
        self.layer_start = np.searchsorted(self.tri_layer, np.arange(self.n_layers))
        self.layer_has = np.bincount(self.tri_layer, minlength=self.n_layers) > 0
        self.layer_start = np.minimum(self.layer_start, len(self.tri_layer) - 1)
        uv = uv_px.astype(np.float64)
        t0 = uv[self.tris[:, 0]]
        d1, d2 = uv[self.tris[:, 1]] - t0, uv[self.tris[:, 2]] - t0
        # texture px of each triangle's first vertex and edges, one flat array per component
        self.t0u, self.t0v = t0[:, 0].copy(), t0[:, 1].copy()
        self.d1u, self.d1v, self.d2u, self.d2v = d1[:, 0].copy(), d1[:, 1].copy(), d2[:, 0].copy(), d2[:, 1].copy()
        self._maps: tuple[np.ndarray, np.ndarray] | None = None   # x and y maps (n, L, S, S) float32

    def maps(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        m = self._maps
        if m is None or m[0].shape[0] < n:
            shape = (n, self.n_layers, self.size, self.size)
            m = self._maps = (np.full(shape, OUT, np.float32), np.full(shape, OUT, np.float32))
        return m

    def render(self, verts: np.ndarray, textures: list[np.ndarray], order: np.ndarray,
               layer_on: np.ndarray) -> np.ndarray:
        """verts (n, V, 2) output px; textures: one premultiplied (H, W, 4) uint8 atlas per session;
        order (n, L) layers back to front; layer_on (n, L) bool. -> (n, S, S, 4) straight RGBA."""
        n, S, L = verts.shape[0], self.size, self.n_layers
        out = np.zeros((n, S, S, 4), np.uint8)
        v = np.nan_to_num(verts.astype(np.float64), nan=0.0, posinf=1e4, neginf=-1e4).clip(-4 * S, 5 * S)
        vx, vy = v[..., 0], v[..., 1]
        tr = self.tris
        # (n, T) corner coordinates; flat arrays over session * triangle from here on
        ax, ay = vx[:, tr[:, 0]], vy[:, tr[:, 0]]
        bx, by = vx[:, tr[:, 1]], vy[:, tr[:, 1]]
        cx, cy = vx[:, tr[:, 2]], vy[:, tr[:, 2]]
        T = tr.shape[0]
        e1x, e1y, e2x, e2y = bx - ax, by - ay, cx - ax, cy - ay
        det = e1x * e2y - e1y * e2x
        ok = np.abs(det) > 1e-9
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        # barycentrics l_i = A_i + B_i x + C_i y (l0 = 1 - l1 - l2), x, y at pixel centres
        B1, C1 = e2y * inv, -e2x * inv
        B2, C2 = -e1y * inv, e1x * inv
        A1 = -(ax * B1 + ay * C1)
        A2 = -(ax * B2 + ay * C2)
        # texture px, affine in the pixel: u = U0 + Ux x + Uy y (and v)
        U0 = self.t0u + A1 * self.d1u + A2 * self.d2u
        V0 = self.t0v + A1 * self.d1v + A2 * self.d2v
        Uxu, Uxv = B1 * self.d1u + B2 * self.d2u, B1 * self.d1v + B2 * self.d2v
        Uyu, Uyv = C1 * self.d1u + C2 * self.d2u, C1 * self.d1v + C2 * self.d2v
        # On a row y, l_i >= -EPS is x >= P_i + Q_i y where B_i > 0, x <= P_i + Q_i y where B_i < 0
        # (B_i == 0: a horizontal edge, which the row range already enforces).
        lows_p, lows_q, highs_p, highs_q = [], [], [], []
        for A_, B_, C_ in ((1.0 - A1 - A2, -B1 - B2, -C1 - C2), (A1, B1, C1), (A2, B2, C2)):
            pos, neg = B_ > 1e-12, B_ < -1e-12
            rb = 1.0 / np.where(pos | neg, B_, 1.0)
            p_, q_ = -(EPS + A_) * rb, -C_ * rb
            lows_p.append(np.where(pos, p_, -1e9).reshape(-1))
            lows_q.append(np.where(pos, q_, 0.0).reshape(-1))
            highs_p.append(np.where(neg, p_, 1e9).reshape(-1))
            highs_q.append(np.where(neg, q_, 0.0).reshape(-1))

        xmin = np.minimum(np.minimum(ax, bx), cx)
        xmax = np.maximum(np.maximum(ax, bx), cx)
        ymin = np.minimum(np.minimum(ay, by), cy)
        ymax = np.maximum(np.maximum(ay, by), cy)
        r0 = np.ceil(ymin - 0.5).clip(0, S)                  # (n, T) first row
        r1 = np.floor(ymax - 0.5).clip(-1, S - 1)
        tri_on = ok & layer_on[:, self.tri_layer]
        cnt = np.where(tri_on, r1 - r0 + 1, 0).clip(0).astype(np.int64).reshape(-1)
        # per session and layer: the bounding box of its triangles (clipped to the frame)
        box = np.stack([np.floor(xmin), np.floor(ymin), -np.ceil(xmax), -np.ceil(ymax)])
        box = np.minimum.reduceat(box, self.layer_start, axis=2)
        bx0, by0 = box[0].clip(0, S).astype(np.int64), box[1].clip(0, S).astype(np.int64)
        bx1, by1 = (-box[2]).clip(0, S).astype(np.int64), (-box[3]).clip(0, S).astype(np.int64)

        # rows of every triangle
        rid = np.repeat(np.arange(n * T), cnt)
        starts = np.cumsum(cnt) - cnt
        y = r0.reshape(-1)[rid] + (np.arange(rid.size) - starts[rid])
        yc = y + 0.5
        xl = np.maximum(np.maximum(lows_p[0][rid] + lows_q[0][rid] * yc, lows_p[1][rid] + lows_q[1][rid] * yc),
                        lows_p[2][rid] + lows_q[2][rid] * yc)
        xr = np.minimum(np.minimum(highs_p[0][rid] + highs_q[0][rid] * yc, highs_p[1][rid] + highs_q[1][rid] * yc),
                        highs_p[2][rid] + highs_q[2][rid] * yc)
        x0 = np.ceil(xl - 0.5).clip(0, S)
        x1 = np.floor(xr - 0.5).clip(-1, S - 1)
        span = (x1 - x0 + 1).clip(0).astype(np.int64)
        # texture coordinates at each row's first pixel, and their step per pixel
        xc = x0 + 0.5
        ur = U0.reshape(-1)[rid] + Uxu.reshape(-1)[rid] * xc + Uyu.reshape(-1)[rid] * yc
        vr = V0.reshape(-1)[rid] + Uxv.reshape(-1)[rid] * xc + Uyv.reshape(-1)[rid] * yc
        du, dv = Uxu.reshape(-1)[rid], Uxv.reshape(-1)[rid]
        seg = (rid // T) * L + self.tri_layer[rid % T]        # session * L + layer of each row
        base = (seg * S + y.astype(np.int64)) * S + x0.astype(np.int64)
        # pixels of every row
        pid = np.repeat(np.arange(span.size), span)
        pstart = np.cumsum(span) - span
        k = np.arange(pid.size) - pstart[pid]
        kf = k.astype(np.float64)
        mx, my = self.maps(n)
        fx, fy = mx.reshape(-1), my.reshape(-1)
        idx = base[pid] + k
        fx[idx] = ur[pid] + du[pid] * kf
        fy[idx] = vr[pid] + dv[pid] * kf

        for bi in range(n):
            tex = textures[bi]
            layers = [li for li in order[bi] if layer_on[bi, li] and self.layer_has[li]
                      and bx1[bi, li] > bx0[bi, li] and by1[bi, li] > by0[bi, li]]
            if not layers:
                continue
            if len(layers) == 1:
                li = layers[0]
                X0, Y0, X1, Y1 = bx0[bi, li], by0[bi, li], bx1[bi, li], by1[bi, li]
                acc = self._sample(tex, mx[bi, li], my[bi, li], X0, Y0, X1, Y1)
            else:
                X0 = min(bx0[bi, li] for li in layers)
                Y0 = min(by0[bi, li] for li in layers)
                X1 = max(bx1[bi, li] for li in layers)
                Y1 = max(by1[bi, li] for li in layers)
                accf = np.zeros((Y1 - Y0, X1 - X0, 4), np.float32)
                for li in layers:
                    lx0, ly0, lx1, ly1 = bx0[bi, li], by0[bi, li], bx1[bi, li], by1[bi, li]
                    lay = self._sample(tex, mx[bi, li], my[bi, li], lx0, ly0, lx1, ly1).astype(np.float32)
                    dst = accf[ly0 - Y0:ly1 - Y0, lx0 - X0:lx1 - X0]
                    dst *= 1.0 - lay[..., 3:4] * (1.0 / 255.0)
                    dst += lay
                acc = (accf + 0.5).clip(0, 255).astype(np.uint8)
            # straight colour = premultiplied * 255 / alpha (0 where alpha is 0); alpha / 255 * 255
            denom = np.empty_like(acc)
            denom[...] = acc[..., 3:4]
            denom[..., 3] = 255
            cv2.divide(acc, denom, dst=out[bi, Y0:Y1, X0:X1], scale=255.0)
        return out

    @staticmethod
    def _sample(tex: np.ndarray, mx: np.ndarray, my: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Premultiplied colour of the maps' region; the region of the maps is reset for the next frame."""
        rx, ry = mx[y0:y1, x0:x1], my[y0:y1, x0:x1]
        col = cv2.remap(tex, rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=(0, 0, 0, 0))
        rx[...] = OUT
        ry[...] = OUT
        return col
