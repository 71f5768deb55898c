"""Mesh packs built from the children's drawings in ../shared/media/drawings (Animated Drawings
examples, MIT): their hand-made masks give the alpha and their char_cfg.yaml the joints, so the
tests of the generator do not depend on the importer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

DRAWINGS = Path(__file__).resolve().parents[3] / ".." / "shared" / "media" / "drawings"
#: Animated Drawings joint -> ours (their "right_*" is the character's right, on the image's left).
AD_JOINTS = {"hip": "hips", "torso": "shoulders", "left_shoulder": "shoulder_l", "right_shoulder": "shoulder_r",
             "left_elbow": "elbow_l", "right_elbow": "elbow_r", "left_hand": "wrist_l", "right_hand": "wrist_r",
             "left_hip": "hip_l", "right_hip": "hip_r", "left_knee": "knee_l", "right_knee": "knee_r",
             "left_foot": "ankle_l", "right_foot": "ankle_r"}


def art(i: int) -> np.ndarray:
    """The drawing as straight-alpha RGBA uint8 (its mask as alpha)."""
    rgb = np.asarray(Image.open(DRAWINGS / f"char{i}_texture.png").convert("RGB"))
    mask = np.asarray(Image.open(DRAWINGS / f"char{i}_mask.png").convert("L"))
    return np.dstack([rgb, np.where(mask > 127, 255, 0).astype(np.uint8)])


def joints(i: int) -> dict[str, dict[str, float]]:
    cfg = yaml.safe_load((DRAWINGS / f"char{i}_char_cfg.yaml").read_text())
    loc = {j["name"]: np.array(j["loc"], np.float32) for j in cfg["skeleton"]}
    out = {ours: {"x": float(loc[ad][0]), "y": float(loc[ad][1])} for ad, ours in AD_JOINTS.items()}
    # Their "neck" is the base of the head; our head joint is the head's centre, about half a
    # neck-to-chest length above it.
    head = loc["neck"] + (loc["neck"] - loc["torso"]) * 0.5
    out["head"] = {"x": float(head[0]), "y": float(head[1])}
    return out


def make_pack(i: int, root: Path, name: str | None = None) -> str:
    """Write character `name` (default drawing<i>) as a one-layer mesh pack under `root`."""
    name = name or f"drawing{i}"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    rgba = art(i)
    Image.fromarray(rgba).save(folder / "body.png")
    manifest = {"format": "mesh/1", "kind": "mesh", "name": name, "display_name": f"Drawing {i}",
                "licence": "MIT", "author": "Animated Drawings examples", "source": f"char{i}_texture.png",
                "canvas": [rgba.shape[1], rgba.shape[0]], "framing": "full",
                "layers": [{"name": "body", "file": "body.png", "part": "body", "z": 0}],
                "joints": joints(i), "face": {"present": False}}
    (folder / "character.json").write_text(json.dumps(manifest, indent=1))
    return name
