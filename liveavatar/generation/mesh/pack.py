"""Mesh character packs: one picture (or PSD layers) plus a rig, deformed as a triangle mesh.

Pack format "mesh/1"; all paths are relative to the pack folder and never leave it:

```
character.json
  format: "mesh/1"            kind: "mesh"
  name (folder name: a-z 0-9 _ -), display_name, licence (required), author, source (what it came from)
  canvas: [w, h]              px of the art; every layer PNG is exactly this size
  framing: "full" | "upper"   upper: legs are absent (bust/VTuber framing); leg joints may be omitted
  layers: [{name, file, part, z, physics}]
      file:    canvas-sized straight-alpha RGBA PNG (alpha 0 = background)
      part:    body | head | neck | torso | hair_front | hair_back | ears | tail | skirt | accessory
               | upper_arm_l | lower_arm_l | hand_l | upper_arm_r | lower_arm_r | hand_r
               | upper_leg_l | lower_leg_l | foot_l | upper_leg_r | lower_leg_r | foot_r
               A single-picture import has one "body" layer (the whole figure); the renderer splits
               its arms into their own layers by skinning weight so they can pass in front.
               Limb parts follow their bone rigidly, head/hair/ears follow the head, the rest are
               skinned to every bone by distance inside the shape.
      z:       draw order at rest, low first (the pose may lift arms above the body)
      physics: null, or {anchor: joint name, stiffness (1/s^2, > 0, default 60), damping (1/s, >= 0,
               default 8)}: the layer swings as a damped pendulum hung from `anchor`
  joints: {name: {x, y, present}}  image px (may lie outside the canvas, e.g. hips of a bust).
      names: liveavatar.generation.characters.JOINTS. The character's left (_l) appears on the
      image's RIGHT. hips, shoulders and head are required and present; arms need shoulder/elbow/
      wrist per side; "full" framing also needs hip/knee/ankle per side.
  face: {present, head_center [x, y], head_radius, eye_l, eye_r, brow_l, brow_r, mouth ([x, y, w, h]
         boxes in image px, null when unknown), skin_rgb [r, g, b] 0..255 (for eyelids),
         detected_by: "facemesh" | "estimate" | "user"}
```
Loading validates with pydantic and checks each PNG (exists, inside the folder, canvas-sized, not
empty); every error is one line naming the file. Shipped packs live in models/characters/<name>/,
imported ones in paths.user_characters_dir()/<name>/.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from liveavatar.errors import ConfigError, NotFoundError, UserError
from liveavatar.paths import safe_join

FORMAT = "mesh/1"
MANIFEST = "character.json"
MAX_CANVAS = 4096        # px per side; imports scale larger art down
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# Kept equal to liveavatar.generation.characters.JOINTS (not imported: that module lists packs of
# both kinds and imports this one).
JOINTS = ("hips", "shoulders", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
          "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r", "head")
REQUIRED_JOINTS = ("hips", "shoulders", "head")
ARM_JOINTS = tuple(f"{j}_{s}" for s in "lr" for j in ("shoulder", "elbow", "wrist"))
LEG_JOINTS = tuple(f"{j}_{s}" for s in "lr" for j in ("hip", "knee", "ankle"))

LIMB_PARTS = tuple(f"{p}_{s}" for s in "lr" for p in ("upper_arm", "lower_arm", "hand", "upper_leg",
                                                       "lower_leg", "foot"))
HEAD_PARTS = ("head", "hair_front", "hair_back", "ears")
PARTS = ("body", "neck", "torso", "tail", "skirt", "accessory") + HEAD_PARTS + LIMB_PARTS


def one_of(value: str, names: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `names`; otherwise the one-line error a pydantic validator raises."""
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; one of {', '.join(names)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhysicsSpec(_Strict):
    anchor: str
    stiffness: float = Field(60.0, gt=0, le=10_000)
    damping: float = Field(8.0, ge=0, le=1_000)

    @field_validator("anchor")
    @classmethod
    def _anchor(cls, v: str) -> str:
        return one_of(v, JOINTS, "joint")


class LayerSpec(_Strict):
    name: str = Field(min_length=1, max_length=64)
    file: str = Field(min_length=1)
    part: str
    z: int = 0
    physics: PhysicsSpec | None = None

    @field_validator("part")
    @classmethod
    def _part(cls, v: str) -> str:
        return one_of(v, PARTS, "part")


class JointSpec(_Strict):
    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)
    present: bool = True


Box = tuple[float, float, float, float]


class FaceSpec(_Strict):
    present: bool = False
    head_center: tuple[float, float] | None = None
    head_radius: float | None = Field(default=None, gt=0)
    eye_l: Box | None = None
    eye_r: Box | None = None
    brow_l: Box | None = None
    brow_r: Box | None = None
    mouth: Box | None = None
    skin_rgb: tuple[int, int, int] = (240, 200, 170)
    detected_by: Literal["facemesh", "estimate", "user"] = "estimate"

    @field_validator("eye_l", "eye_r", "brow_l", "brow_r", "mouth")
    @classmethod
    def _box(cls, v: Box | None) -> Box | None:
        if v is not None and (v[2] <= 0 or v[3] <= 0):
            raise ValueError("box width and height must be > 0")
        return v

    @field_validator("skin_rgb")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in v):
            raise ValueError("colour components must be 0..255")
        return v


class MeshManifest(_Strict):
    format: Literal["mesh/1"]
    kind: Literal["mesh"] = "mesh"
    name: str
    display_name: str = ""
    description: str = ""
    licence: str = Field(min_length=1)
    author: str = ""
    source: str = ""
    canvas: tuple[int, int]
    framing: Literal["full", "upper"] = "full"
    layers: list[LayerSpec] = Field(min_length=1, max_length=64)
    joints: dict[str, JointSpec]
    face: FaceSpec = Field(default_factory=lambda: FaceSpec())

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-64 chars of a-z 0-9 _ - (starting with a letter or digit)")
        return v

    @field_validator("canvas")
    @classmethod
    def _canvas(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (8 <= v[0] <= MAX_CANVAS and 8 <= v[1] <= MAX_CANVAS):
            raise ValueError(f"each side must be 8..{MAX_CANVAS} px")
        return v

    @field_validator("joints")
    @classmethod
    def _joints(cls, v: dict[str, JointSpec]) -> dict[str, JointSpec]:
        for k in v:
            one_of(k, JOINTS, "joint")
        return v

    @model_validator(mode="after")
    def _rig(self) -> MeshManifest:
        def ok(j: str) -> bool:
            return j in self.joints and self.joints[j].present
        missing = [j for j in REQUIRED_JOINTS + ARM_JOINTS if not ok(j)]
        if self.framing == "full":
            missing += [j for j in LEG_JOINTS if not ok(j)]
        if missing:
            raise ValueError(f"joints missing (or not present): {', '.join(missing)}")
        names = [la.name for la in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        return self

    def joint(self, name: str) -> np.ndarray | None:
        j = self.joints.get(name)
        return None if j is None or not j.present else np.array([j.x, j.y], np.float32)


@dataclass
class MeshPack:
    name: str
    folder: Path
    manifest: MeshManifest
    layers: list[np.ndarray]      # straight-alpha float32 RGBA (H, W, 4) 0..1, manifest.layers order


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def read_manifest(folder: Path) -> MeshManifest:
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise NotFoundError(f"{mpath}: {MANIFEST} missing")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{mpath}: not valid JSON ({_one_line(e)})") from e
    try:
        return MeshManifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(_one_line(f"{mpath}: {key}: {err['msg']}{more}")) from e


def _load_layer(folder: Path, spec: LayerSpec, canvas: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    what = f"{folder / MANIFEST}: layers[{spec.name}].file"
    path = safe_join(folder, spec.file, what=what)
    if not path.is_file():
        raise NotFoundError(f"{path}: layer file missing ({what})")
    try:
        with Image.open(path) as im:
            if im.size != tuple(canvas):
                raise ConfigError(f"{path}: is {im.size[0]}x{im.size[1]}, the canvas is {canvas[0]}x{canvas[1]}")
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ConfigError(f"{path}: not a readable PNG ({_one_line(e)})") from e
    if not (rgba[..., 3] > 0.5).any():
        raise ConfigError(f"{path}: layer is fully transparent")
    return rgba


def is_mesh_pack(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def load(folder: Path) -> MeshPack:
    """Load and validate the pack in `folder`; UserError (naming the file) on any problem."""
    m = read_manifest(folder)
    if m.name != folder.name:
        raise ConfigError(f"{folder / MANIFEST}: name {m.name!r} differs from the folder name {folder.name!r}")
    layers = [_load_layer(folder, spec, m.canvas) for spec in m.layers]
    return MeshPack(name=m.name, folder=folder, manifest=m, layers=layers)


def check_name(name: str) -> str:
    """A character name that is safe as a folder name, else UserError (one line)."""
    if not NAME_RE.match(name or ""):
        shown = _one_line(repr(name))[:80]
        raise UserError(f"character name {shown} is not allowed: use 1-64 chars of a-z 0-9 _ -")
    return name
