"""Authoring (offline): a user's picture in, a character pack out, in one step.

    from liveavatar.authoring import import_character
    result = import_character("art.png", "mia")          # -> ImportResult(folder, manifest, ...)

Steps (each its own module):
- reading: PNG, WebP, JPEG (Pillow) and layered PSD (psd-tools). Sizes are checked from the header
  before any pixel is decoded (at most 8192 px a side and 40 MP): a 30000x30000 picture or a
  decompression bomb is refused without using the memory.
- cutout: transparent art keeps its alpha; a drawing on paper or a flat background is cut out
  without a neural net (adaptive threshold, flood fill from the border, largest shape, holes
  filled, as Animated Drawings does); a photo of a person by MediaPipe's selfie segmentation.
- rig: joints from MediaPipe Pose when it finds a body on the figure, else from the silhouette's
  skeleton; face boxes from MediaPipe Face Mesh, else estimated inside the head.
- importer: crops to the figure, writes the pack (liveavatar.generation.mesh.pack, "mesh/1")
  under a temporary "." folder and renames it into place.
- psd: the layer naming convention (head, hair_front, hair_back, body, arm_l, forearm_r, hand_l,
  leg_r, shin_l, foot_r, tail, skirt, ears, accessory, ...; see liveavatar.authoring.psd).
- evaluate: cut-out IoU and joint error on real drawings with hand-made masks and joints.

Nothing on the live path imports this package.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ImportResult", "import_character"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from liveavatar.authoring import importer
        return getattr(importer, name)
    raise AttributeError(name)
