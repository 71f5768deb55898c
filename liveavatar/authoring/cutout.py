"""Cutting the character out of its picture.

Three kinds of picture, three methods (`method="auto"` picks one):
- "alpha": art on a transparent background keeps its own alpha.
- "paper": a drawing on white paper or any flat background, without a neural net, as Animated
  Drawings does: adaptive threshold of the darkest channel (ink), a morphological close + dilate
  that seals gaps in the strokes, a flood fill from the border (what it reaches is background),
  the largest remaining shape, holes filled. The alpha then follows the figure's outline exactly.
- "photo": a photo of a real person, cut out by MediaPipe's bundled selfie segmentation, its
  low-resolution mask refined to the picture's edges by a guided filter.

"auto" takes "alpha" when the picture has real transparency, else tells paper from photo by the
border: on paper, few border pixels look like ink; a photo's background is textured everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liveavatar.errors import UserError

METHODS = ("auto", "alpha", "paper", "photo")
#: Share of border pixels the adaptive threshold calls ink, above which a picture is a photo.
#: Measured: children's drawings on paper 0.055-0.096 (figures touching the edge included);
#: photos of people (astronaut, grace_hopper, messi5, basketball1) 0.26-0.39.
PHOTO_BORDER_INK = 0.18


@dataclass
class Cutout:
    """alpha: float32 (H, W) in [0, 1]; mask: bool (H, W), the figure (one shape, holes filled)."""
    method: str
    alpha: np.ndarray
    mask: np.ndarray


class NoFigureError(UserError):
    """Nothing that looks like a character was found: the user places the rig by hand (the
    studio's rig editor imports it with `manual=True`)."""
    http_status = 422


def _odd(n: float, lo: int = 15) -> int:
    n = max(lo, int(round(n)))
    return n | 1


def _ink(rgb: np.ndarray) -> np.ndarray:
    """Ink strokes (uint8 0/255): darker than their neighbourhood in the darkest channel, so
    coloured pencil on white counts as ink as much as black pen."""
    import cv2
    gray = np.ascontiguousarray(rgb.min(axis=2))
    h, w = gray.shape
    block = _odd(min(h, w) * 0.11)
    light = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, 8)
    return cv2.bitwise_not(light)


def border_ink_share(rgb: np.ndarray) -> float:
    ink = _ink(rgb) > 0
    h, w = ink.shape
    b = max(2, min(h, w) // 20)
    strips = (ink[:b], ink[-b:], ink[:, :b], ink[:, -b:])
    return float(sum(s.sum() for s in strips) / sum(s.size for s in strips))


def largest_shape(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected shape of a bool mask, its holes filled."""
    import cv2
    from scipy import ndimage
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return ndimage.binary_fill_holes(labels == biggest)


def paper_mask(rgb: np.ndarray) -> np.ndarray:
    import cv2
    ink = _ink(rgb)
    kernel = np.ones((3, 3), np.uint8)
    ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, kernel, iterations=2)
    ink = cv2.dilate(ink, kernel, iterations=2)
    # Flood fill from the border (4-connected): a one-pixel frame of background lets it reach
    # around a figure that touches the edge of the paper.
    from scipy import ndimage
    paper = np.pad(ink == 0, 1, constant_values=True)
    labels, _ = ndimage.label(paper)
    return largest_shape(labels[1:-1, 1:-1] != labels[0, 0])


def _soft_edge(rgb: np.ndarray, prob: np.ndarray, radius: int) -> np.ndarray:
    """Snap a coarse foreground probability to the picture's own edges (guided filter)."""
    import cv2
    guide = rgb.astype(np.float32) / 255.0
    try:
        return np.clip(cv2.ximgproc.guidedFilter(guide, prob.astype(np.float32), radius, 1e-3), 0, 1)
    except AttributeError:  # opencv without the contrib modules: a plain blur of the edge
        return np.clip(cv2.GaussianBlur(prob.astype(np.float32), (0, 0), radius / 3), 0, 1)


def photo_cutout(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, mask) of the person in a photo by MediaPipe's selfie segmentation (bundled model)."""
    import mediapipe as mp
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        res = seg.process(np.ascontiguousarray(rgb))
    prob = res.segmentation_mask
    if prob is None:
        return np.zeros(rgb.shape[:2], np.float32), np.zeros(rgb.shape[:2], bool)
    h, w = rgb.shape[:2]
    radius = max(2, min(h, w) // 100)
    alpha = _soft_edge(rgb, np.asarray(prob, np.float32), radius)
    mask = largest_shape(alpha > 0.5)
    # Stray blobs (a second person, furniture) fade out; gaps inside the figure stay see-through.
    return (alpha * _near(mask, radius * 2)).astype(np.float32), mask


def _near(mask: np.ndarray, dist: int) -> np.ndarray:
    """1 within `dist` px of the mask, else 0: soft edge pixels of stray blobs go away."""
    import cv2
    k = np.ones((2 * dist + 1, 2 * dist + 1), np.uint8)
    return (cv2.dilate(mask.astype(np.uint8), k) > 0).astype(np.float32)


def choose_method(rgba: np.ndarray, has_alpha: bool) -> str:
    alpha = rgba[..., 3]
    if has_alpha and (alpha < 250).mean() > 0.01:
        return "alpha"
    return "photo" if border_ink_share(rgba[..., :3]) > PHOTO_BORDER_INK else "paper"


def whole_picture(rgba: np.ndarray, has_alpha: bool) -> Cutout:
    """The picture as it is (its own alpha, else all of it): for a rig placed by hand."""
    alpha = rgba[..., 3].astype(np.float32) / 255.0 if has_alpha else np.ones(rgba.shape[:2], np.float32)
    return Cutout(method="manual", alpha=alpha, mask=alpha >= 0.5)


def cut_out(rgba: np.ndarray, has_alpha: bool, method: str = "auto", where: str = "picture") -> Cutout:
    """Cut the figure out. UserError for an empty/transparent picture; NoFigureError when no
    figure is found."""
    if method not in METHODS:
        raise UserError(f"unknown cut-out method {method!r}; use one of {', '.join(METHODS)}")
    alpha8 = rgba[..., 3]
    if int(alpha8.max()) < 8:
        raise UserError(f"{where}: the picture is fully transparent: there is nothing to import")
    rgb = np.ascontiguousarray(rgba[..., :3])
    visible = alpha8 >= 8
    if float(rgb[visible].std(axis=0).max()) < 1.0 and not (has_alpha and (alpha8 < 250).mean() > 0.01):
        raise UserError(f"{where}: the picture is empty (one flat colour): there is nothing to import")
    if method == "auto":
        method = choose_method(rgba, has_alpha)
    if method == "alpha":
        alpha = alpha8.astype(np.float32) / 255.0
        mask = largest_shape(alpha8 >= 128)
    elif method == "paper":
        import cv2
        mask = paper_mask(rgb)
        # A pixel-wide soft edge instead of the mask's stair steps (the figure's outline is ink).
        alpha = np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8) * 2 - 0.5, 0, 1)
    else:
        alpha, mask = photo_cutout(rgb)
    h, w = mask.shape
    if mask.sum() < max(64, 0.002 * h * w):
        raise NoFigureError(f"{where}: no figure found in the picture ({method} cut-out); "
                            "open it in the studio's rig editor (New character) and place the rig by hand")
    if method != "alpha":
        alpha = np.minimum(alpha, alpha8.astype(np.float32) / 255.0)
    return Cutout(method=method, alpha=alpha, mask=mask)
