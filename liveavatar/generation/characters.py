"""Character packs: models/characters/<name>/manifest.json plus PNG layers.

Pack format (format 1), all paths relative to the pack folder and never outside it:

```
manifest.json
  format: 1
  name, display_name, description, licence (required, e.g. "CC0-1.0"), author
  rig:   reference_size (px of the canvas the art is drawn for, e.g. 512), hips [x, y] (rest hip
         centre), body_height (px; root offsets are in body heights), shoulder_half_width,
         hip_half_width, bone_lengths {spine, neck, upper_arm, lower_arm, upper_leg, lower_leg}
  parts: [{name, file, joint, bone, pivot [x, y] in the PNG, rest_angle (radians, the bone angle
         the PNG is drawn at: 0 = hanging down, pi = pointing up), depth (draw order, low first)}]
         joints: hips shoulders shoulder_l/r elbow_l/r wrist_l/r hip_l/r knee_l/r ankle_l/r head;
         bones: liveavatar.types.BONES plus "head". The part with joint "head" is the face canvas.
  face:  canvas (px, square), pivot [x, y] (head centre inside it), pupils (PNG, eyes_box size),
         eyes_box / brows_box / mouth_box [x, y, w, h] inside the canvas,
         expressions {emotion: {eyes, eye_mask, brows (box-sized PNGs), mouth {closed, A, I, U, E,
         O} (mouth_box-sized), extras_back, extras_front (canvas-sized)}}; "neutral" is required,
         a missing emotion falls back to neutral.
```
Loading validates with pydantic and checks every PNG (exists, inside the folder, right size);
errors are one line naming the file. The neural generator reuses `list_characters`/`load_pack`.

Imported characters are mesh packs (`character.json`, see liveavatar.generation.mesh.pack), shipped
in models/characters/ or imported into paths.user_characters_dir(). `catalog()` lists both kinds;
a shipped name wins over an imported pack of the same name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from liveavatar.errors import ConfigError, NotFoundError, UserError
from liveavatar.generation.mesh import pack as mesh_pack
from liveavatar.paths import models_dir, safe_join, user_characters_dir
from liveavatar.types import BONES, EMOTIONS, VISEMES

JOINTS = ("hips", "shoulders", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
          "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r", "head")
PART_BONES = BONES + ("head",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BoneLengths(_Strict):
    spine: float = Field(gt=0)
    neck: float = Field(gt=0)
    upper_arm: float = Field(gt=0)
    lower_arm: float = Field(gt=0)
    upper_leg: float = Field(gt=0)
    lower_leg: float = Field(gt=0)


class RigSpec(_Strict):
    reference_size: int = Field(gt=0)
    hips: tuple[float, float]
    body_height: float = Field(gt=0)
    shoulder_half_width: float = Field(ge=0)
    hip_half_width: float = Field(ge=0)
    bone_lengths: BoneLengths


class PartSpec(_Strict):
    name: str
    file: str
    joint: str
    bone: str
    pivot: tuple[float, float]
    rest_angle: float = 0.0
    depth: int = 0

    @field_validator("joint")
    @classmethod
    def _joint(cls, v: str) -> str:
        return mesh_pack.one_of(v, JOINTS, "joint")

    @field_validator("bone")
    @classmethod
    def _bone(cls, v: str) -> str:
        return mesh_pack.one_of(v, PART_BONES, "bone")


class ExpressionSpec(_Strict):
    eyes: str
    eye_mask: str
    brows: str
    mouth: dict[str, str]
    extras_back: str | None = None
    extras_front: str | None = None

    @field_validator("mouth")
    @classmethod
    def _mouth(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [m for m in VISEMES if m not in v]
        if missing:
            raise ValueError(f"mouth shapes missing: {', '.join(missing)}")
        return v


class FaceSpec(_Strict):
    canvas: int = Field(gt=0)
    pivot: tuple[float, float]
    pupils: str
    eyes_box: tuple[int, int, int, int]
    brows_box: tuple[int, int, int, int]
    mouth_box: tuple[int, int, int, int]
    expressions: dict[str, ExpressionSpec]

    @field_validator("expressions")
    @classmethod
    def _neutral(cls, v: dict[str, ExpressionSpec]) -> dict[str, ExpressionSpec]:
        if "neutral" not in v:
            raise ValueError("the 'neutral' expression is required")
        return v


class Manifest(_Strict):
    format: int = Field(1, ge=1, le=1)
    name: str
    display_name: str = ""
    description: str = ""
    licence: str = Field(min_length=1)
    author: str = ""
    rig: RigSpec
    parts: list[PartSpec] = Field(min_length=1)
    face: FaceSpec


@dataclass
class Expression:
    """Premultiplied-alpha float32 RGBA images (C, H, W) of one emotion."""
    eyes: np.ndarray
    eye_mask: np.ndarray           # (1, H, W): where pupils may show
    brows: np.ndarray
    mouth: dict[str, np.ndarray]   # viseme -> image
    extras_back: np.ndarray
    extras_front: np.ndarray


@dataclass
class CharacterPack:
    name: str
    folder: Path
    manifest: Manifest
    part_images: dict[str, np.ndarray]     # part name -> premultiplied RGBA (4, H, W) float32
    head: np.ndarray                       # face canvas base (4, F, F)
    pupils: np.ndarray                     # (4, eh, ew)
    expressions: dict[str, Expression]     # one per EMOTIONS entry (missing ones = neutral)


def characters_dir() -> Path:
    return models_dir() / "characters"


@dataclass(frozen=True)
class CharacterEntry:
    name: str
    kind: str        # "rig2d" (manifest.json) or "mesh" (character.json)
    folder: Path
    shipped: bool    # under models/characters (False: imported into the user folder)


def catalog() -> dict[str, CharacterEntry]:
    """Every character by name, both kinds. Reads only folder listings (no manifests), so it is
    cheap enough to call per request; a folder that holds neither manifest is skipped."""
    found: dict[str, CharacterEntry] = {}
    for root, shipped in ((characters_dir(), True), (user_characters_dir(), False)):
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir()):
            if p.name in found or p.name.startswith("."):
                continue     # shipped first; temp folders of an import in progress start with "."
            if (p / "manifest.json").is_file():
                found[p.name] = CharacterEntry(p.name, "rig2d", p, shipped)
            elif mesh_pack.is_mesh_pack(p):
                found[p.name] = CharacterEntry(p.name, "mesh", p, shipped)
    return found


def find(name: str) -> CharacterEntry:
    """The catalog entry of `name`, else NotFoundError listing what exists (one line)."""
    entry = catalog().get(name)
    if entry is None:
        shown = " ".join(repr(name).split())[:80]
        raise NotFoundError(f"unknown character {shown}; available: {', '.join(catalog()) or 'none'}")
    return entry


def list_characters(root: Path | None = None) -> list[str]:
    root = root or characters_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())


def read_manifest(folder: Path) -> Manifest:
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise NotFoundError(f"{mpath}: manifest.json missing")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{mpath}: not valid JSON ({e})") from e
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(f"{mpath}: {key}: {err['msg']}{more}") from e


def _load_png(folder: Path, rel: str, what: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG -> premultiplied float32 (4, H, W). `size` is (w, h) when the layer must match a box."""
    from PIL import Image, UnidentifiedImageError

    path = safe_join(folder, rel, what=f"{folder / 'manifest.json'}: {what}")
    if not path.is_file():
        raise NotFoundError(f"{path}: layer file missing ({what} in {folder / 'manifest.json'})")
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"{path}: not a readable PNG ({e})") from e
    if size is not None and (rgba.shape[1], rgba.shape[0]) != tuple(size):
        raise ConfigError(f"{path}: is {rgba.shape[1]}x{rgba.shape[0]}, {what} needs {size[0]}x{size[1]}")
    rgba[..., :3] *= rgba[..., 3:4]
    return np.ascontiguousarray(rgba.transpose(2, 0, 1))


def load_pack(name: str, root: Path | None = None) -> CharacterPack:
    """Load and validate a character pack; UserError (naming the file) on any problem."""
    root = root or characters_dir()
    folder = safe_join(root, name, what="character")
    if folder.parent != root.resolve():
        raise UserError(f"character {name!r}: must be a folder name directly under {root}")
    if not (folder / "manifest.json").is_file():
        known = ", ".join(list_characters(root)) or "none"
        raise NotFoundError(f"unknown character {name!r} (no {folder / 'manifest.json'}); available: {known}")
    m = read_manifest(folder)
    parts = {}
    for p in m.parts:
        parts[p.name] = _load_png(folder, p.file, f"parts[{p.name}].file")
    f = m.face
    F = f.canvas
    head_part = [p for p in m.parts if p.joint == "head"]
    if len(head_part) != 1:
        raise ConfigError(f"{folder / 'manifest.json'}: parts: exactly one part must use joint 'head'")
    head = parts.pop(head_part[0].name)
    if head.shape[1:] != (F, F):
        raise ConfigError(f"{folder / head_part[0].file}: head layer must be {F}x{F} (face.canvas)")
    for box_name in ("eyes_box", "brows_box", "mouth_box"):
        x, y, w, h = getattr(f, box_name)
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > F or y + h > F:
            raise ConfigError(f"{folder / 'manifest.json'}: face.{box_name} {[x, y, w, h]} is outside the canvas")
    eye_size, brow_size, mouth_size = f.eyes_box[2:], f.brows_box[2:], f.mouth_box[2:]
    pupils = _load_png(folder, f.pupils, "face.pupils", eye_size)
    blank = np.zeros((4, F, F), np.float32)
    expressions: dict[str, Expression] = {}
    for emo, spec in f.expressions.items():
        if emo not in EMOTIONS:
            continue    # extra emotions need a mapping; the renderer only blends the shared set
        key = f"face.expressions.{emo}"
        expressions[emo] = Expression(
            eyes=_load_png(folder, spec.eyes, f"{key}.eyes", eye_size),
            eye_mask=_load_png(folder, spec.eye_mask, f"{key}.eye_mask", eye_size)[3:4],
            brows=_load_png(folder, spec.brows, f"{key}.brows", brow_size),
            mouth={v: _load_png(folder, spec.mouth[v], f"{key}.mouth.{v}", mouth_size) for v in VISEMES},
            extras_back=_load_png(folder, spec.extras_back, f"{key}.extras_back", (F, F))
            if spec.extras_back else blank,
            extras_front=_load_png(folder, spec.extras_front, f"{key}.extras_front", (F, F))
            if spec.extras_front else blank,
        )
    for emo in EMOTIONS:
        expressions.setdefault(emo, expressions["neutral"])
    return CharacterPack(name=m.name, folder=folder, manifest=m, part_images=parts, head=head,
                         pupils=pupils, expressions=expressions)
