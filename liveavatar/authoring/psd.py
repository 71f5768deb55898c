"""Layered PSD art through psd-tools: each layer (or layer group) whose name says a body part
becomes a layer of the pack, in the file's stacking order.

Layer naming convention (case, spaces, dots and dashes do not matter; "left"/"right", "L"/"R"
and a "_l"/"_r" suffix all say the side, which is the CHARACTER's own: its left arm is drawn on
the image's right):

| part        | layer names                                              |
|-------------|----------------------------------------------------------|
| head        | head, face                                               |
| hair_front  | hair_front, front_hair, fringe, bangs                    |
| hair_back   | hair_back, back_hair, hair                               |
| ears        | ears, ear, ear_l, ear_r, animal_ears                     |
| neck        | neck                                                     |
| body        | body, torso, chest, trunk                                |
| upper_arm_X | arm_X, upper_arm_X, upperarm_X                           |
| lower_arm_X | forearm_X, lower_arm_X, lowerarm_X                       |
| hand_X      | hand_X                                                   |
| upper_leg_X | leg_X, thigh_X, upper_leg_X                              |
| lower_leg_X | shin_X, calf_X, lower_leg_X                              |
| foot_X      | foot_X, shoe_X                                           |
| skirt, tail | skirt, dress; tail                                       |
| accessory   | accessory, hat, ribbon, bow, prop                        |

Layers named background, bg, backdrop or paper are left out, as are hidden layers. A group whose
name says a part is taken as one layer; other groups are opened. A layer whose name says no part
joins as an "accessory" (it moves with the body) when at least one layer is named; a PSD with no
named, visible, non-empty layer is refused.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.authoring.reading import Layer, Picture, one_line
from liveavatar.errors import UserError

_SIDED = {
    "upper_arm": ("arm", "upper_arm", "upperarm"),
    "lower_arm": ("forearm", "lower_arm", "lowerarm"),
    "hand": ("hand",),
    "upper_leg": ("leg", "thigh", "upper_leg", "upperleg"),
    "lower_leg": ("shin", "calf", "lower_leg", "lowerleg"),
    "foot": ("foot", "shoe"),
}
_PLAIN = {
    "head": ("head", "face"),
    "hair_front": ("hair_front", "front_hair", "fringe", "bangs"),
    "hair_back": ("hair_back", "back_hair", "hair"),
    "ears": ("ears", "ear", "animal_ears", "ear_l", "ear_r"),
    "neck": ("neck",),
    "body": ("body", "torso", "chest", "trunk"),
    "skirt": ("skirt", "dress"),
    "tail": ("tail",),
    "accessory": ("accessory", "hat", "ribbon", "bow", "prop"),
}
BACKGROUND_NAMES = ("background", "bg", "backdrop", "paper")
PART_NAMES: dict[str, str] = {}
for _part, _names in _PLAIN.items():
    PART_NAMES.update({n: _part for n in _names})
for _part, _names in _SIDED.items():
    for _n in _names:
        PART_NAMES[f"{_n}_l"] = f"{_part}_l"
        PART_NAMES[f"{_n}_r"] = f"{_part}_r"


def normalise(name: str) -> str:
    """'Left Fore-Arm' -> 'forearm_l', 'Arm.R' -> 'arm_r', 'hair front' -> 'hair_front'."""
    s = re.sub(r"[\s.\-]+", "_", name.strip().lower()).strip("_")
    s = re.sub(r"_?\d+$", "", s)                       # "arm_l 2" copies
    side = ""
    m = re.match(r"^(left|right)_?(.*)$", s) or re.match(r"^(.*?)_?(left|right)$", s)
    if m:
        a, b = m.groups()
        word, rest = (a, b) if a in ("left", "right") else (b, a)
        side, s = word[0], rest
    elif re.search(r"_[lr]$", s):
        side, s = s[-1], s[:-2]
    s = s.replace("fore_arm", "forearm")
    return f"{s}_{side}" if side else s


def part_of(name: str) -> str | None:
    key = normalise(name)
    return PART_NAMES.get(key)


def _composite(layer: Any, size: tuple[int, int]) -> np.ndarray | None:
    """The layer (with its opacity, blending inside, masks) on the full canvas, RGBA uint8."""
    w, h = size
    im = layer.composite(viewport=(0, 0, w, h))
    if im is None:
        return None
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    if rgba.shape[:2] != (h, w):
        canvas = np.zeros((h, w, 4), np.uint8)
        canvas[:rgba.shape[0], :rgba.shape[1]] = rgba[:h, :w]
        rgba = canvas
    return rgba if int(rgba[..., 3].max()) >= 8 else None


def read_psd(path: Path, where: str) -> Picture:
    try:
        from psd_tools import PSDImage
    except ImportError:
        raise UserError(f"{where}: reading PSD needs psd-tools (pip install psd-tools)") from None
    try:
        psd = PSDImage.open(path)
    except Exception as e:  # psd-tools raises many kinds on a damaged file
        raise UserError(f"{where}: not a readable PSD ({one_line(type(e).__name__)}: {one_line(e)})") from None
    size = (psd.width, psd.height)
    found: list[tuple[str, str | None, Any]] = []   # bottom first

    def walk(group: Any) -> None:
        for layer in group:  # psd-tools iterates bottom to top
            if not layer.is_visible():
                continue
            name = str(layer.name or "")
            if normalise(name) in BACKGROUND_NAMES:
                continue
            part = part_of(name)
            if layer.is_group() and part is None:
                walk(layer)
            else:
                found.append((name, part, layer))

    try:
        walk(psd)
        named = [(n, p, la) for n, p, la in found if p is not None]
        if not named:
            names = ", ".join(one_line(n, 30) for n, _, _ in found[:6]) or "none"
            raise UserError(f"{where}: no usable layers (visible layers named for a body part, e.g. "
                            f"head, body, arm_l, forearm_r; found: {names})")
        layers: list[Layer] = []
        for name, part, layer in found:
            rgba = _composite(layer, size)
            if rgba is None:
                continue
            layers.append(Layer(name=name, part=part or "accessory", rgba=rgba, z=len(layers)))
        if not any(la.part != "accessory" or part_of(la.name) for la in layers):
            raise UserError(f"{where}: no usable layers (the named layers are empty)")
        flat = _over(layers, size)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where}: the PSD's layers could not be read ({one_line(type(e).__name__)}: "
                        f"{one_line(e)})") from None
    return Picture(path=path, format="PSD", rgba=flat, has_alpha=True, layers=layers)


def _over(layers: list[Layer], size: tuple[int, int]) -> np.ndarray:
    """Straight-alpha 'over' of the layers, bottom first."""
    w, h = size
    rgb = np.zeros((h, w, 3), np.float32)
    a = np.zeros((h, w, 1), np.float32)
    for la in layers:
        src_a = la.rgba[..., 3:4].astype(np.float32) / 255.0
        src = la.rgba[..., :3].astype(np.float32) / 255.0
        out_a = src_a + a * (1 - src_a)
        rgb = np.where(out_a > 0, (src * src_a + rgb * a * (1 - src_a)) / np.maximum(out_a, 1e-6), 0)
        a = out_a
    return np.concatenate([np.clip(rgb * 255 + 0.5, 0, 255), np.clip(a * 255 + 0.5, 0, 255)],
                          axis=2).astype(np.uint8)
