"""`liveavatar bench character`: importing a character from one picture, then rendering it with the
mesh generator, and how faithful the mesh is.

- import: `liveavatar.authoring.importer.import_character` on a 1000 px picture (the shipped astro
  photo scaled up), auto-rig included, after one warm-up import (MediaPipe's graph start);
- render: ms per `render` call, one session on one torch thread at 256 and 512 px, eight sessions
  batched at 256 px (fps each), conditionings varying every frame (bench.generator's), and the
  baseline workload beside them: rig2d drawing nova, one session at 256 px;
- fidelity: rest-pose SSIM over the character's pixels against the art placed the same way,
  silhouette area over every action (9 phases each; spin only where it faces the camera) relative
  to rest, and flipped triangles over those poses;
- pose fidelity: the clips of real people in ../shared/media/bodies go through perception and the
  conditioner as in an offline render; MediaPipe Pose then reads the rendered avatar (over grey)
  and its arm angles are compared with the conditioning's, which is the source's pose as the
  avatar is asked to show it (tracked frames only): for astro, for the three children's drawings
  imported by the authoring code, and for rig2d nova (the baseline: MediaPipe's own error on clip
  art); beside it, pose_diagnosis (the rig's own posed joints against the conditioning, which arm
  bones move the mesh, whether Pose finds the rest render at all).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from liveavatar.bench import report
from liveavatar.bench.generator import _measure
from liveavatar.paths import models_dir
from liveavatar.types import ACTIONS, Conditioning


def ssim_over(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window sigma 1.5) of two RGB images over `mask`."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return float(s.mean(-1)[mask].mean())


def _over_grey(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    return rgba[..., :3] * a + 128.0 * (1.0 - a)


def fidelity(gen: Any, name: str) -> dict:
    """Rest SSIM, area ratio range over all actions, flipped triangles (see module doc)."""
    rest_c = gen.rest_conditioning(name)
    # a root that keeps the figure inside the canvas while a bust bows or a full figure jumps
    upper = gen.rest_frame(name)["framing"] == "upper"
    inside = np.array([0.0, -0.2, 0.8] if upper else [0.0, 0.12, 0.75], np.float32)
    frame = gen.render([rest_c], [name])[0]
    ref = gen.rest_reference(name)
    ssim = ssim_over(_over_grey(frame), _over_grey(ref), (frame[..., 3] > 0) | (ref[..., 3] > 0))
    rest_c.root = inside.copy()
    rest_area = float((gen.render([rest_c], [name])[0][..., 3] > 127).sum())
    rv, tris = gen.mesh(name)

    def signed(v: np.ndarray) -> np.ndarray:
        a, b, c = v[..., tris[:, 0], :], v[..., tris[:, 1], :], v[..., tris[:, 2], :]
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])

    s0 = np.sign(signed(rv))
    ratios, flips = [], 0
    for act in ACTIONS:
        phases = np.array([0.0, 0.02, 0.48, 0.5, 0.52, 0.98]) if act == "spin" else np.linspace(0, 1, 9)
        conds = []
        for p in phases:
            c = Conditioning.neutral(t_tick_ns=int(p * 1e9))
            c.action, c.action_phase, c.action_weight, c.root = act, float(p), 1.0, inside.copy()
            conds.append(c)
        v, _, mirror = gen.deform(conds, name)
        flips += int(((signed(v) * mirror[:, None] * s0[None]) <= 0).sum())
        frames = gen.render(conds, [name] * len(conds))
        ratios += list((frames[..., 3] > 127).sum((1, 2)) / rest_area)
    return {"ssim": ssim, "area_min": float(min(ratios)), "area_max": float(max(ratios)), "flips": flips,
            "poses": len(ratios), "triangles": int(len(tris))}


def clip_conditionings(clips: list[Path], max_frames: int = 90) -> dict[str, list]:
    """The conditionings of each clip as an offline render makes them (tracked frames only, no
    action clip playing), at most `max_frames` input frames per clip."""
    from liveavatar.conditioning import conditioning_over
    from liveavatar.perception import Perception
    from liveavatar.sources.file import iter_media
    from liveavatar.types import CapturedFrame

    out: dict[str, list] = {}
    for clip in clips:
        perception = Perception(static=False, sync=True, enable_voice=False, face=False, hands=False)
        try:
            cues = []
            for item in iter_media(clip, start_ns=0, audio=False):
                if isinstance(item, CapturedFrame):
                    cues.append(perception.process_video(item))
                    if len(cues) >= max_frames:
                        break
        finally:
            perception.close()
        out[clip.name] = [c for c in conditioning_over(cues) if c.body_present >= 0.99 and c.action_weight < 1e-3]
    return out


def pose_fidelity(gen: Any, name: str, conds_by_clip: dict[str, list]) -> dict:
    """Arm angle errors (degrees) of the avatar driven by real video (see module doc). Arms only:
    a bust has no legs, and a mesh character's legs count from its drawn stance by design."""
    from liveavatar.bench.neural_quality import LIMBS, limb_errors

    limbs = [k for k in LIMBS if "arm" in k]
    errors: list[float] = []
    per_clip: dict[str, float] = {}
    tracked = detected = 0
    for clip, conds in conds_by_clip.items():
        gen.reset()
        frames = np.concatenate([gen.render([c], [name]) for c in conds]) if conds else np.zeros((0, 1, 1, 4))
        found, errs = limb_errors(frames, conds)
        e = [x for k in limbs for x in errs[k]]
        tracked, detected = tracked + len(conds), detected + found
        errors += e
        per_clip[clip] = float(np.mean(e)) if e else float("nan")
    return {"mean": float(np.mean(errors)) if errors else float("nan"),
            "median": float(np.median(errors)) if errors else float("nan"),
            "p95": float(np.percentile(errors, 95)) if errors else float("nan"),
            "tracked": tracked, "detected": detected, "per_clip": per_clip,
            **(pose_diagnosis(gen, name, [c for conds in conds_by_clip.values() for c in conds])
               if hasattr(gen, "_bone_affines") else {})}


def pose_diagnosis(gen: Any, name: str, conds: list) -> dict:
    """Where an arm angle error comes from, without MediaPipe reading the drawing:
    - skinned_error: mean degrees between the conditioning's arm angles and the rig's posed joints
      (shoulder, elbow, wrist carried by their bones' affines): the retargeting onto the bones;
    - arms_move: the arm bones that move any vertex (a bust's arms cut by the frame stay torso);
    - rest_found: whether MediaPipe Pose finds the figure in the rest render (the art as drawn)."""
    import cv2
    import mediapipe as mp

    from liveavatar.bench.neural_quality import over_background
    from liveavatar.generation.mesh.rig import BI
    from liveavatar.generation.rig2d.generator import Rig2DGenerator
    from liveavatar.types import BONE_INDEX

    gen.prepare_character(name)
    c = gen._chars[name]
    errs: list[float] = []
    if conds:
        g = Rig2DGenerator._gather(conds)
        A, _, _ = gen._bone_affines(c, gen._channels(c, g), g["root"])
        for side in "lr":
            joints = [c.manifest.joint(f"{j}_{side}") for j in ("shoulder", "elbow", "wrist")]
            if any(j is None for j in joints):
                continue
            for limb, (j0, j1), (b0, b1) in ((f"upper_arm_{side}", joints[:2], ("upper_arm", "upper_arm")),
                                             (f"lower_arm_{side}", joints[1:], ("upper_arm", "lower_arm"))):
                a0, a1 = A[:, BI[f"{b0}_{side}"]], A[:, BI[f"{b1}_{side}"]]
                d = (np.einsum("nij,j->ni", a1[..., :2], j1) + a1[..., 2]
                     - np.einsum("nij,j->ni", a0[..., :2], j0) - a0[..., 2])
                want = np.array([k.bone_angles[BONE_INDEX[limb]] for k in conds])
                e = (np.arctan2(d[:, 0], d[:, 1]) - want + np.pi) % (2 * np.pi) - np.pi
                errs += list(np.degrees(np.abs(e)))
    moving = [b for b in ("upper_arm_l", "lower_arm_l", "upper_arm_r", "lower_arm_r")
              if float(c.weights[:, BI[b]].sum()) > 0]
    rest = gen.render([gen.rest_conditioning(name)], [name])[0]
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        img = cv2.resize(over_background(rest), (512, 512), interpolation=cv2.INTER_CUBIC)
        found = pose.process(img).pose_landmarks is not None
    return {"skinned_error": float(np.mean(errs)) if errs else float("nan"), "arms_move": moving,
            "rest_found": found}


def _pose_row(who: str, pf: dict) -> dict:
    clips = ", ".join(f"{k} {v:.1f}" for k, v in pf["per_clip"].items())
    return report.row(f"{who}: arm angle error, driven by real video", pf["median"], pf["p95"], "deg",
                      f"mean {pf['mean']:.1f} (goal <= 15; per clip: {clips}); MediaPipe Pose found the avatar "
                      f"in {pf['detected']}/{pf['tracked']} tracked frames"
                      + (f"; rig's posed arm joints vs the conditioning {pf['skinned_error']:.1f} deg, arm bones that "
                         f"move the mesh: {len(pf['arms_move'])}/4, Pose finds the rest render: "
                         f"{'yes' if pf['rest_found'] else 'no'}" if "rest_found" in pf else ""))


def _drawing_fidelity(picture: Path, root: Path, by_clip: dict[str, list]) -> dict:
    """pose_fidelity of a picture imported by the authoring code into a temporary user folder."""
    import os

    from liveavatar.authoring.importer import import_character
    from liveavatar.generation.mesh import MeshGenerator

    data = root / "data"
    import_character(picture, "benchdrawing", dest_root=data / "characters", replace=True)
    old = os.environ.get("LIVEAVATAR_DATA_DIR")
    os.environ["LIVEAVATAR_DATA_DIR"] = str(data)
    try:
        gen = MeshGenerator("cpu", 256)
        gen.prepare_character("benchdrawing")
        return pose_fidelity(gen, "benchdrawing", by_clip)
    finally:
        if old is None:
            os.environ.pop("LIVEAVATAR_DATA_DIR", None)
        else:
            os.environ["LIVEAVATAR_DATA_DIR"] = old


def run(frames: int = 60, imports: int = 3) -> dict:
    from liveavatar.generation.mesh import MeshGenerator

    rows: list[dict] = []
    info: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = "astro"
        try:
            from liveavatar.authoring.importer import import_character
            have_importer = True
        except ImportError:
            have_importer = False
        if have_importer:
            from PIL import Image
            src = root / "picture.png"
            with Image.open(models_dir() / "characters" / "astro" / "art.png") as im:
                rgba = im.convert("RGBA")
                k = 1000 / max(rgba.size)
                rgba.resize((round(rgba.size[0] * k), round(rgba.size[1] * k)), Image.Resampling.LANCZOS).save(src)
            import_character(src, "benchwarm", dest_root=root, replace=True)     # MediaPipe start-up
            secs = []
            for _ in range(imports):
                t0 = time.perf_counter()
                res = import_character(src, "benchpic", dest_root=root, replace=True)
                secs.append(time.perf_counter() - t0)
            st = report.stats([s * 1e3 for s in secs])
            rows.append(report.row("import 1000 px picture (auto-rig included)", st["median"] / 1e3,
                                   st["p95"] / 1e3, "s", f"{imports} imports after a warm-up; method {res.method}, "
                                   f"joints by {res.joints_by}"))
            try:
                from liveavatar.authoring.evaluate import score_drawings
                drawings = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "drawings"
                if drawings.is_dir():
                    scores = score_drawings(drawings)
                    rows.append(report.row("drawings: mask IoU (mean)", float(np.mean([s.iou for s in scores])),
                                           None, "", f"{len(scores)} children's drawings vs their hand-made masks"))
                    rows.append(report.row("drawings: joint error (mean)",
                                           float(np.mean([s.mean_joint_error_px for s in scores])), None, "px",
                                           "vs their hand-placed joints"))
            except ImportError:
                pass
        threads = torch.get_num_threads()
        for size in (256, 512):
            gen = MeshGenerator("cpu", size)
            gen.prepare_character(name)
            torch.set_num_threads(1)
            try:
                rows += _measure(gen, name, 1, frames, f"1 torch thread, {size} px")
            finally:
                torch.set_num_threads(threads)
            if size == 256:
                # One thread: on a loaded 2-core machine a second intra-op thread mostly spins at
                # barriers (see ServerConfig.render_threads), which is what serve runs with.
                torch.set_num_threads(1)
                try:
                    rows += _measure(gen, name, 8, frames, f"1 torch thread, {size} px")
                    # the baseline workload, measured beside it: rig2d drawing nova the same way
                    from liveavatar.generation.rig2d import Rig2DGenerator
                    base = Rig2DGenerator("cpu", size)
                    base.prepare_character("nova")
                    rows += [dict(r, metric="baseline rig2d nova: " + r["metric"])
                             for r in _measure(base, "nova", 1, frames, f"1 torch thread, {size} px")[:2]]
                finally:
                    torch.set_num_threads(threads)
                f = fidelity(gen, name)
                info["fidelity"] = f
                rows.append(report.row(f"{name}: rest SSIM over the character", f["ssim"], None, "",
                                       "goal >= 0.9"))
                rows.append(report.row(f"{name}: area vs rest, min..max over actions", f["area_min"], f["area_max"],
                                       "x", f"{f['poses']} poses; goal within 0.85..1.15 (p95 column: max)"))
                rows.append(report.row(f"{name}: flipped triangles over those poses", f["flips"], None, "",
                                       f"of {f['triangles']} triangles x {f['poses']} poses; goal 0"))
                bodies = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "bodies"
                clips = sorted(bodies.glob("*.mp4")) if bodies.is_dir() else []
                if clips:
                    by_clip = clip_conditionings(clips)
                    pf = info["pose_fidelity"] = pose_fidelity(gen, name, by_clip)
                    rows.append(_pose_row(name, pf))
                    drawing = Path(__file__).resolve().parents[2].parent / "shared" / "media" / "drawings"
                    for k in (1, 2, 3):      # full-body figures
                        if have_importer and (drawing / f"char{k}_texture.png").is_file():
                            rows.append(_pose_row(f"children's drawing {k} (imported)",
                                                  _drawing_fidelity(drawing / f"char{k}_texture.png", root, by_clip)))
                    # a real person's full-body photo (the test media's footballer, cut out by
                    # selfie segmentation): art that MediaPipe Pose reads as a person
                    photo = Path(__file__).resolve().parents[2] / "tests" / "media" / ".cache" / "messi5.jpg"
                    if have_importer and photo.is_file():
                        rows.append(_pose_row("full-body photo messi5.jpg (imported)",
                                              _drawing_fidelity(photo, root, by_clip)))
                    rows.append(_pose_row("baseline rig2d nova", pose_fidelity(base, "nova", by_clip)))
            info[f"size_{size}"] = gen.info()
    return report.result("character", rows, **info)
