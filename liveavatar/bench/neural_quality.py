"""Quality of a neural character model against its rig2d teacher, on held-out conditionings.

- PSNR and SSIM of the student's frames against rig2d's for conditioning runs drawn with a seed
  that neither training nor its validation used; the student runs as it runs live (its own
  previous frame as input, 16-frame runs from a reset). Premultiplied RGBA, 0..1.
- Fidelity, as for rig2d: MediaPipe Pose reads the student's frames (over a plain background);
  the avatar must be detected and its limb angles must match the conditioning. The teacher's
  frames go through the same check, so MediaPipe's own error is visible next to the student's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.bench import report

RUN = 16
HELD_OUT_SEED = 777_777      # training samples use seed 0, its validation seed 1_000_003
# BONES entry -> MediaPipe Pose landmark pair (start, end); character left = subject left
LIMBS = {"upper_arm_l": (11, 13), "lower_arm_l": (13, 15), "upper_arm_r": (12, 14),
         "lower_arm_r": (14, 16), "upper_leg_l": (23, 25), "lower_leg_l": (25, 27),
         "upper_leg_r": (24, 26), "lower_leg_r": (26, 28)}


def _premult(frames: np.ndarray) -> Any:
    import torch

    from liveavatar.generation.neural.train import premultiplied
    return premultiplied(torch.from_numpy(np.ascontiguousarray(frames)))


def over_background(rgba: np.ndarray, grey: int = 128) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + grey * (1 - a)).astype(np.uint8)


def fidelity_poses(n: int = 24, seed: int = HELD_OUT_SEED + 1) -> list:
    """Live-tracked poses (no action clip, fully present), arms anywhere, legs near rest."""
    from liveavatar.generation.neural import sampling
    conds, _ = sampling.sequences(n * 8, seed, action_prob=0.0)
    picked = [c for c in conds if c.body_present == 1.0][::8][:n]
    return picked


def limb_errors(frames: np.ndarray, conds: list) -> tuple[int, dict[str, list[float]]]:
    """(frames where MediaPipe Pose found the avatar, per-limb absolute angle errors in degrees)."""
    import cv2
    import mediapipe as mp

    from liveavatar.types import BONE_INDEX
    errors: dict[str, list[float]] = {k: [] for k in LIMBS}
    detected = 0
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        for f, c in zip(frames, conds):
            img = cv2.resize(over_background(f), (512, 512), interpolation=cv2.INTER_CUBIC)
            res = pose.process(img)
            if res.pose_landmarks is None:
                continue
            detected += 1
            lm = res.pose_landmarks.landmark
            for name, (a, b) in LIMBS.items():
                seen = np.arctan2(lm[b].x - lm[a].x, lm[b].y - lm[a].y)
                d = (seen - c.bone_angles[BONE_INDEX[name]] + np.pi) % (2 * np.pi) - np.pi
                errors[name].append(float(np.degrees(abs(d))))
    return detected, errors


def run(character: str = "nova", frames: int = 256, model_dir: Path | None = None,
        fidelity: int = 24) -> dict:
    from liveavatar.commands.train import teacher
    from liveavatar.generation.neural import NeuralGenerator, sampling
    from liveavatar.generation.neural.train import psnr, ssim

    n_runs = max(1, frames // RUN)
    conds, _ = sampling.sequences(n_runs * RUN, HELD_OUT_SEED, seq_len=(RUN, RUN))
    runs = [conds[r * RUN:(r + 1) * RUN] for r in range(n_runs)]
    gen = NeuralGenerator("cpu", 256, model_dir=model_dir)
    gen.prepare_character(character)
    render_teacher = teacher(character, "cpu", 256)
    ps, ss = [], []
    for t in range(RUN):      # all runs side by side, one frame of each per call, as live
        batch = [run[t] for run in runs]
        student = gen.render(batch, [character] * len(batch)).copy()
        target = render_teacher(batch)
        a, b = _premult(student), _premult(target)
        ps.append(psnr(a, b).numpy())
        ss.append(ssim(a, b).numpy())
    p, s = np.concatenate(ps), np.concatenate(ss)
    rows = [report.row("PSNR vs rig2d (held-out)", float(np.median(p)), float(np.percentile(p, 5)), "dB",
                       f"mean {p.mean():.2f} dB over {p.size} frames; p95 column: 5th percentile; goal >= 28"),
            report.row("SSIM vs rig2d (held-out)", float(np.median(s)), float(np.percentile(s, 5)), "",
                       f"mean {s.mean():.3f}; p95 column: 5th percentile")]

    poses = fidelity_poses(fidelity)
    student_frames: list[np.ndarray] = []
    for c in poses:               # each pose from a reset: no previous frame to lean on
        gen.reset()
        student_frames.append(gen.render([c], [character]).copy())
    student = np.concatenate(student_frames)
    for who, frames_ in (("neural", student), ("rig2d", render_teacher(poses))):
        detected, errors = limb_errors(frames_, poses)
        allerr = np.concatenate([np.asarray(v) for v in errors.values()]) if detected else np.array([np.nan])
        worst = max(errors, key=lambda k: np.mean(errors[k]) if errors[k] else 0)
        rows.append(report.row(f"{who}: avatar detected by MediaPipe Pose", 100.0 * detected / len(poses),
                               None, "%", f"{detected}/{len(poses)} held-out poses"))
        rows.append(report.row(f"{who}: limb angle error", float(np.median(allerr)), float(np.percentile(allerr, 95)),
                               "deg", f"mean {np.nanmean(allerr):.1f}; worst limb {worst}; goal < 15"))
    info = gen.info()
    return report.result("neural_quality", rows, character=character, model=info["models"][character],
                         psnr_mean_db=float(p.mean()), ssim_mean=float(s.mean()))
