"""How well the importer cuts out and rigs real drawings: the children's drawings of Animated
Drawings' examples (`shared/media/drawings`: charN_texture.png, a hand-made charN_mask.png and
hand-placed joints charN_char_cfg.yaml). Used by the tests and by `bench character`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Animated Drawings joint -> ours. Their "right_*" is the character's right, which is also ours
#: (appears on the image's left). Their "hip" is the pelvis centre, our "hips".
AD_JOINTS = {
    "hip": "hips",
    "right_shoulder": "shoulder_r", "right_elbow": "elbow_r", "right_hand": "wrist_r",
    "left_shoulder": "shoulder_l", "left_elbow": "elbow_l", "left_hand": "wrist_l",
    "right_hip": "hip_r", "right_knee": "knee_r", "right_foot": "ankle_r",
    "left_hip": "hip_l", "left_knee": "knee_l", "left_foot": "ankle_l",
}


@dataclass
class DrawingScore:
    name: str
    size: tuple[int, int]
    method: str           # cut-out method chosen
    joints_by: str        # "pose" or "silhouette"
    iou: float            # mask intersection over union against the hand-made mask
    joint_error_px: dict[str, float]   # our joint name -> distance to the hand-placed joint
    seconds: float        # cut-out + auto-rig

    @property
    def mean_joint_error_px(self) -> float:
        return float(np.mean(list(self.joint_error_px.values())))

    @property
    def figure_height_px(self) -> float:
        return float(self.size[1])


def drawing_names(folder: Path) -> list[str]:
    return sorted(p.name[: -len("_texture.png")] for p in folder.glob("*_texture.png")
                  if (folder / p.name.replace("_texture.png", "_mask.png")).exists())


def reference_joints(cfg_path: Path) -> dict[str, tuple[float, float]]:
    import yaml
    cfg = yaml.safe_load(cfg_path.read_text())
    return {AD_JOINTS[j["name"]]: (float(j["loc"][0]), float(j["loc"][1]))
            for j in cfg["skeleton"] if j["name"] in AD_JOINTS}


def score_drawing(folder: Path, name: str) -> DrawingScore:
    from PIL import Image

    from liveavatar.authoring.cutout import cut_out
    from liveavatar.authoring.reading import read_picture
    from liveavatar.authoring.rig import auto_rig

    pic = read_picture(folder / f"{name}_texture.png")
    t0 = time.perf_counter()
    cut = cut_out(pic.rgba, pic.has_alpha)
    rig = auto_rig(pic.rgba[..., :3], cut.mask, photo=cut.method == "photo")
    seconds = time.perf_counter() - t0
    with Image.open(folder / f"{name}_mask.png") as im:
        truth = np.asarray(im.convert("L")) > 127
    iou = float((cut.mask & truth).sum() / max(1, (cut.mask | truth).sum()))
    ref = reference_joints(folder / f"{name}_char_cfg.yaml")
    err = {j: float(np.hypot(rig.joints[j][0] - x, rig.joints[j][1] - y)) for j, (x, y) in ref.items()
           if j in rig.joints}
    return DrawingScore(name=name, size=pic.size, method=cut.method, joints_by=rig.joints_by, iou=iou,
                        joint_error_px=err, seconds=seconds)


def score_drawings(folder: Path) -> list[DrawingScore]:
    return [score_drawing(folder, n) for n in drawing_names(folder)]
