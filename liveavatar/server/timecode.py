"""Debug timecodes drawn into video pixels: how glass-to-glass latency is measured.

A timecode is a strip of black/white blocks across the bottom of a frame: two guard blocks
(white, black), then each field MSB first, then an 8-bit check byte. Blocks are fractions of the
frame width, so a stamp survives the browser downscaling the camera and VP8 compression.
Browser and server agree on wall-clock milliseconds (`Date.now()` / `time.time_ns()`), taken
modulo 2**24 so a value fits one field; ages are computed modulo too, so wrap-around is harmless.

Two layouts, mirrored in static/timecode.js:
- CAMERA: (capture_ms,) stamped by the studio page onto the camera frames it sends.
- AVATAR: (capture_ms, sent_ms, events) drawn by the server into a strip below the avatar in
  the packed colour|alpha frames (viewers never show the strip).
"""
from __future__ import annotations

import functools
import time

import numpy as np

MS_BITS = 24
MS_MOD = 1 << MS_BITS
GUARD = (1, 0)
CAMERA_FIELDS = (MS_BITS,)
AVATAR_FIELDS = (MS_BITS, MS_BITS, 8)
CHECK_SEED = 0xA5


def n_blocks(fields: tuple[int, ...]) -> int:
    return len(GUARD) + sum(fields) + 8


def camera_strip_height(frame_height: int) -> int:
    """Rows of the studio's camera stamp (mirrors timecode.js)."""
    return max(6, frame_height // 32)


def _check(values: tuple[int, ...], fields: tuple[int, ...]) -> int:
    c = CHECK_SEED
    for v, bits in zip(values, fields):
        for shift in range(0, bits, 8):
            c ^= (v >> shift) & 0xFF
    return c


def encode_bits(values: tuple[int, ...], fields: tuple[int, ...]) -> np.ndarray:
    bits = list(GUARD)
    for v, n in zip(values, fields):
        v &= (1 << n) - 1
        bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]
    check = _check(tuple(v & ((1 << n) - 1) for v, n in zip(values, fields)), fields)
    bits += [(check >> (7 - i)) & 1 for i in range(8)]
    return np.asarray(bits, np.uint8)


@functools.lru_cache(maxsize=16)
def _block_of_column(width: int, n: int) -> np.ndarray:
    edges = (np.arange(n + 1) * width) // n
    return np.searchsorted(edges, np.arange(width), side="right") - 1


def draw(strip: np.ndarray, values: tuple[int, ...], fields: tuple[int, ...]) -> None:
    """Paint the blocks into `strip` (h, w, c) uint8 in place, spread over its full width."""
    bits = encode_bits(values, fields)
    strip[:] = (bits[_block_of_column(strip.shape[1], bits.size)] * 255)[None, :, None]


def read(strip: np.ndarray, fields: tuple[int, ...]) -> tuple[int, ...] | None:
    """Decode a strip (h, w, c); None when the guard or check byte does not match (no stamp)."""
    h, w = strip.shape[:2]
    nb = n_blocks(fields)
    centres = ((np.arange(nb) + 0.5) * w / nb).astype(np.int64)
    rows = strip[h // 4: h - h // 4 or h]
    luma = rows[:, centres].reshape(rows.shape[0], nb, -1).mean(axis=(0, 2))
    bits = (luma > 127).astype(np.int64)
    if tuple(bits[:len(GUARD)]) != GUARD:
        return None
    pos = len(GUARD)
    values = []
    for n in fields:
        v = 0
        for b in bits[pos:pos + n]:
            v = (v << 1) | int(b)
        values.append(v)
        pos += n
    check = 0
    for b in bits[pos:pos + 8]:
        check = (check << 1) | int(b)
    return tuple(values) if check == _check(tuple(values), fields) else None


def wall_ms_now() -> int:
    return (time.time_ns() // 1_000_000) % MS_MOD


def age_ms(stamp_ms: int, now_ms: int | None = None) -> int:
    """How long ago (ms) a wall-clock stamp was taken, modulo the 24-bit wrap."""
    now = wall_ms_now() if now_ms is None else now_ms
    return (now - stamp_ms) % MS_MOD


class WallClockMap:
    """Converts between monotonic ns (the pipeline's clock) and wall ms (the browser's)."""

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def to_wall_ms(self, t_mono_ns: int) -> int:
        return ((t_mono_ns + self.offset_ns) // 1_000_000) % MS_MOD

    def capture_ns_from_stamp(self, stamp_ms: int, now_mono_ns: int, max_age_ms: int = 5000) -> int | None:
        """Monotonic capture time of a camera stamp, or None when it is implausible (clock skew:
        the browser is another machine whose clock disagrees with ours)."""
        age = age_ms(stamp_ms, self.to_wall_ms(now_mono_ns))
        if age > max_age_ms:
            return None
        return now_mono_ns - age * 1_000_000
