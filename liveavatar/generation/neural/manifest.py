"""models/neural/manifest.json: what each character's ONNX file is, validated with pydantic.

One manifest per folder lists every character model in it, so `characters()` is one file read.
Loading checks the file's sha256 and its input/output shapes against this record and fails with
one line naming the file when they disagree.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from liveavatar.errors import ConfigError, NotFoundError

MANIFEST = "manifest.json"


class TensorSpec(BaseModel):
    name: str
    shape: list[int | str]          # "batch" marks the dynamic axis
    dtype: str
    description: str = ""


class Training(BaseModel):
    mode: str                       # "from-character" or "from-video"
    source: str                     # character name or video file name
    command: str = ""
    samples: int = 0
    held_out: int = 0
    steps: int = 0
    seconds: float = 0.0
    device: str = ""
    seed: int = 0
    psnr_db: float | None = None    # on held-out frames, premultiplied RGBA
    ssim: float | None = None
    notes: str = ""


class ModelEntry(BaseModel):
    character: str
    file: str
    sha256: str
    size: int
    opset: int = Field(ge=17)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    cond_layout: list[dict]
    net_config: dict
    training: Training
    licence: str = "Apache-2.0"
    description: str = ""


class Manifest(BaseModel):
    format: int = 1
    models: list[ModelEntry] = []

    def find(self, character: str) -> ModelEntry | None:
        return next((m for m in self.models if m.character == character), None)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read(folder: Path) -> Manifest:
    """The folder's manifest; an empty one when there is none. Bad JSON / fields -> ConfigError."""
    p = folder / MANIFEST
    if not p.exists():
        return Manifest()
    try:
        return Manifest.model_validate(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{p}: {where}: {err['msg']}") from None


def write(folder: Path, entry: ModelEntry) -> Path:
    """Add or replace `entry` in the folder's manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    man = read(folder)
    man.models = [m for m in man.models if m.character != entry.character] + [entry]
    man.models.sort(key=lambda m: m.character)
    p = folder / MANIFEST
    p.write_text(man.model_dump_json(indent=2) + "\n")
    return p


def entry_for(folder: Path, character: str) -> ModelEntry:
    entry = read(folder).find(character)
    if entry is None:
        raise NotFoundError(f"no neural model for character {character!r} in {folder / MANIFEST}")
    return entry
