"""RGBA avatar-like frames cut from real photos: the person inside a soft ellipse, transparent
around it, like a generator's output."""
from __future__ import annotations

import numpy as np

from liveavatar.types import RenderedFrame
from tests.media import load_rgb


def cutout(name: str = "astronaut.png", size: tuple[int, int] = (320, 240)) -> np.ndarray:
    import cv2
    w, h = size
    rgb = cv2.resize(load_rgb(name), (w, h), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (0.32 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2)
    alpha = np.clip((1.1 - r) / 0.1, 0, 1)  # opaque inside, 10 % soft edge, transparent outside
    return np.dstack([rgb, (alpha * 255).astype(np.uint8)])


def rendered(rgba: np.ndarray, seq: int, t_ns: int) -> RenderedFrame:
    return RenderedFrame(rgba=rgba, seq=seq, t_capture_ns=t_ns, t_rendered_ns=t_ns)


def over(rgba: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    """Reference compositing in float (independent of the sink's integer version)."""
    a = rgba[..., 3:4].astype(np.float64) / 255
    return np.round(rgba[..., :3] * a + np.asarray(bg, np.float64) * (1 - a)).astype(np.uint8)
