"""`liveavatar train`: teach the neural generator a character, then export it to ONNX.

Two sources of (conditioning, frame) pairs:
- `--from-character NAME`: rig2d (mesh, for an imported character) renders the character for
  sampled conditionings (and for the conditionings of `--record` videos run through perception +
  conditioning);
- `--from-video clip.mp4`: our perception + conditioning read the clip; each frame (subject cut
  out with MediaPipe's selfie segmentation) is the target for its own conditioning.
Wiring code: it is the one place that imports rig2d, perception and conditioning together.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from liveavatar.errors import NotFoundError, UserError

VAL_RUN = 16   # held-out runs are this many consecutive frames


def train(
    from_character: str | None = typer.Option(None, "--from-character",
                                              help="Learn this character (rig2d, e.g. nova, or an imported one)."),
    from_video: Path | None = typer.Option(None, "--from-video", help="Learn the person in this video."),
    name: str | None = typer.Option(None, help="Character name of the model (default: the character, "
                                    "or the video's file stem)."),
    out: Path | None = typer.Option(None, help="Folder for <name>.onnx and manifest.json (default: models/neural)."),
    run_dir: Path | None = typer.Option(None, help="Checkpoints and cached pairs (default: runs/neural/<name>)."),
    steps: int = typer.Option(3000, min=1, help="Training steps."),
    batch: int = typer.Option(12, min=1, help="Frames per step."),
    minutes: float = typer.Option(0.0, min=0, help="Stop (and export) after this many minutes; 0: no limit."),
    samples: int = typer.Option(4000, min=16, help="Training pairs (from-character)."),
    held_out: int = typer.Option(256, min=VAL_RUN, help="Held-out frames for PSNR/SSIM."),
    record: list[Path] = typer.Option([], "--record",
                                      help="Also learn the conditionings of this video (from-character; repeatable)."),
    widths: str = typer.Option("32,48,64,16", help="Network widths at 1/4, 1/8, 1/16 and 1/2 of the output size."),
    upsample: int = typer.Option(1, min=1, max=4,
                                 help="Predict at 256/upsample and upsample bilinearly in the graph "
                                 "(faster to train and run, softer edges)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed for sampling, initialisation and batches."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    max_frames: int = typer.Option(0, min=0, help="Use only the first N frames of --from-video (0: all)."),
    val_every: int = typer.Option(0, min=0, help="Validate and checkpoint every N steps (0: about 12 times a run)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's checkpoint."),
    licence: str = typer.Option("Apache-2.0", help="Licence recorded in the manifest."),
) -> None:
    """Train a neural character model (progress bar, checkpoints, resume, PSNR/SSIM) and export
    it to ONNX with a manifest."""
    given = dict(locals())
    if (from_character is None) == (from_video is None):
        raise UserError("give exactly one of --from-character NAME or --from-video FILE")
    if from_video is not None and not from_video.is_file():
        raise NotFoundError(f"{from_video}: no such video file")
    for r in record:
        if not r.is_file():
            raise NotFoundError(f"{r}: no such video file (--record)")
    try:
        width_t = tuple(int(x) for x in widths.split(","))
        if len(width_t) != 4 or min(width_t) < 4:
            raise ValueError
    except ValueError:
        raise UserError(f"--widths {widths!r}: four comma-separated integers >= 4") from None
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from liveavatar.generation.neural import export, manifest
    from liveavatar.generation.neural.model import NetConfig
    from liveavatar.generation.neural.train import TrainConfig, Trainer
    from liveavatar.paths import models_dir

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
    torch.manual_seed(seed)
    threads = torch.get_num_threads()   # perception's voice model sets torch to one thread
    video = from_video if from_video is not None else Path()   # set whenever from_character is not
    name = name or from_character or video.stem
    out = out or models_dir() / "neural"
    run_dir = run_dir or Path("runs") / "neural" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    command = _command_line(given)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    t0 = time.monotonic()
    with progress:
        if from_character:
            pairs = _character_pairs(from_character, samples, held_out, record, seed, device, run_dir, progress)
        else:
            pairs = _video_pairs(video, held_out, run_dir, progress, max_frames)
        train_set, val_set, geometry, clips, source_note = pairs
        torch.set_num_threads(threads)
        net_cfg = NetConfig(widths=width_t, geometry=geometry, upsample=upsample, guide=64 // upsample)
        cfg = TrainConfig(steps=steps, batch=batch, lr=lr, minutes=minutes, seed=seed, device=device,
                          val_every=val_every or max(50, min(250, steps // 12)))
        trainer = Trainer(run_dir, net_cfg, cfg, train_set, val_set, VAL_RUN, clip_table=clips)
        if resume and not trainer.resume():
            progress.console.print(f"no checkpoint in {run_dir}; starting fresh")
        task = progress.add_task("training", total=steps, completed=trainer.state.step, info="")

        def on_step(step: int, loss: float, val: dict | None) -> None:
            info = f"loss {loss:.4f}"
            if val:
                info += f"  held-out PSNR {val['psnr_db']:.2f} dB  SSIM {val['ssim']:.3f}"
            progress.update(task, completed=step, info=info)

        final = trainer.run(on_step)
    net, best = trainer.best_net()
    training = manifest.Training(
        mode="from-character" if from_character else "from-video",
        source=from_character or video.name, command=command, samples=len(train_set),
        held_out=len(val_set), steps=trainer.state.step, seconds=round(trainer.state.elapsed_s, 1),
        device=device + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else
                         f" ({torch.get_num_threads()} threads)"),
        seed=seed, psnr_db=round(best["psnr_db"], 2), ssim=round(best["ssim"], 4),
        notes=f"{source_note}; best checkpoint at step {best['step']} of {trainer.state.step}; "
              f"wall time including pair rendering {time.monotonic() - t0:.0f} s")
    entry = export.export(net, out, name, training, licence=licence)
    typer.echo(f"wrote {out / entry.file} ({entry.size / 1e6:.1f} MB) and {out / manifest.MANIFEST}: "
               f"held-out PSNR {best['psnr_db']:.2f} dB, SSIM {best['ssim']:.3f} "
               f"(last step: {final['psnr_db']:.2f} dB)")


def _command_line(given: dict) -> str:
    """The options that differ from their defaults, for the manifest's record of the run."""
    import inspect
    parts = ["liveavatar", "train"]
    for name, param in inspect.signature(train).parameters.items():
        v, default = given.get(name), getattr(param.default, "default", param.default)
        if v == default or v in (None, [], ()):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag)
        else:
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                parts += [flag, shlex.quote(str(item))]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# from a rig2d character
# ---------------------------------------------------------------------------------------------

def character_geometry(character: str) -> Any:
    """The pack's rig in canvas units (the guide must sit where rig2d draws)."""
    from liveavatar.generation import characters as packs
    from liveavatar.generation.neural.model import Geometry
    if packs.find(character).kind == "mesh":
        return _mesh_geometry(character)
    m = packs.load_pack(character).manifest
    rig, ref = m.rig, float(m.rig.reference_size)
    L = rig.bone_lengths
    return Geometry(hips=(rig.hips[0] / ref, rig.hips[1] / ref), body_height=rig.body_height / ref,
                    spine=L.spine / ref, neck=L.neck / ref, upper_arm=L.upper_arm / ref,
                    lower_arm=L.lower_arm / ref, upper_leg=L.upper_leg / ref, lower_leg=L.lower_leg / ref,
                    shoulder_half=rig.shoulder_half_width / ref, hip_half=rig.hip_half_width / ref,
                    head_radius=0.4 * m.face.canvas / ref,
                    segment_sigmas=_scaled_sigmas(rig.body_height / ref / Geometry().body_height))


def _mesh_geometry(character: str, size: int = 256) -> Any:
    """Geometry of an imported (mesh) character, measured from its rig where the mesh generator
    places it on the canvas; a bust's missing legs keep the default proportions."""
    from liveavatar.generation.mesh import MeshGenerator
    from liveavatar.generation.neural.model import Geometry
    frame = MeshGenerator("cpu", size).rest_frame(character)
    j = {k: np.asarray(v, np.float64) / size for k, v in frame["joints"].items()}
    d = Geometry()

    def dist(a: str, b: str, default: float) -> float:
        return float(np.hypot(*(j[a] - j[b]))) if a in j and b in j else default

    bh = frame["body_height"] / size
    mean2 = lambda a, b, c, e, default: (dist(a, b, default) + dist(c, e, default)) / 2  # noqa: E731
    return Geometry(hips=(float(j["hips"][0]), float(j["hips"][1])), body_height=bh,
                    spine=dist("hips", "shoulders", d.spine), neck=dist("shoulders", "head", d.neck),
                    upper_arm=mean2("shoulder_l", "elbow_l", "shoulder_r", "elbow_r", d.upper_arm),
                    lower_arm=mean2("elbow_l", "wrist_l", "elbow_r", "wrist_r", d.lower_arm),
                    upper_leg=mean2("hip_l", "knee_l", "hip_r", "knee_r", d.upper_leg),
                    lower_leg=mean2("knee_l", "ankle_l", "knee_r", "ankle_r", d.lower_leg),
                    shoulder_half=dist("shoulder_l", "shoulder_r", 2 * d.shoulder_half) / 2,
                    hip_half=dist("hip_l", "hip_r", 2 * d.hip_half) / 2,
                    head_radius=(frame["head_radius"] / size) if frame["head_radius"] else 0.6 * dist(
                        "shoulders", "head", d.neck),
                    segment_sigmas=_scaled_sigmas(bh / d.body_height))


def _scaled_sigmas(k: float) -> tuple[float, ...]:
    """The default limb widths (drawn for nova's proportions) scaled to another body size."""
    from liveavatar.generation.neural.model import Geometry
    return tuple(s * k for s in Geometry().segment_sigmas)


def rig2d_clips() -> dict:
    """rig2d's action clips sampled at the network's phase samples."""
    from liveavatar.generation.neural.model import N_ACTION_SAMPLES
    from liveavatar.generation.rig2d import motion
    from liveavatar.types import ACTIONS
    phase = np.linspace(0.0, 1.0, N_ACTION_SAMPLES)
    clips = np.stack([motion.clip_channels(np.full(N_ACTION_SAMPLES, a), phase) for a in range(len(ACTIONS))])
    has = np.array([0.0] + [1.0] * (len(ACTIONS) - 1), np.float32)
    return {"clips": clips, "has": has}


def teacher(character: str, device: str, size: int = 256) -> Any:
    """rig2d as a function of conditionings. Its own clock-driven extras (breathing, automatic
    blinks) are frozen at t=0: the student sees no clock, and the conditioner's idle motion still
    reaches it through the conditioning."""
    import copy

    from liveavatar.generation import characters as packs
    from liveavatar.generation.mesh import MeshGenerator
    from liveavatar.generation.rig2d import Rig2DGenerator
    # an imported character is taught by the mesh generator, a rig2d pack by rig2d
    kind = packs.find(character).kind
    gen = MeshGenerator(device, size) if kind == "mesh" else Rig2DGenerator(device, size)
    gen.prepare_character(character)

    def render(conds: Any) -> Any:
        frozen = [copy.copy(c) for c in conds]
        for c in frozen:
            c.t_tick_ns = 0
        return gen.render(frozen, [character] * len(frozen))
    return render


def _character_pairs(character: Any, samples: Any, held_out: Any, record: Any, seed: Any, device: Any, run_dir: Any,
                     progress: Any) -> Any:
    from liveavatar.generation import characters as packs
    from liveavatar.generation.neural import sampling
    from liveavatar.generation.neural.train import make_pairs
    geometry = character_geometry(character)    # NotFoundError for an unknown character
    render = teacher(character, device)
    conds, starts = sampling.sequences(samples, seed)
    for video in record:
        rec = recorded_conditionings(video, progress)
        conds += rec
        starts = np.concatenate([starts, np.arange(len(rec)) == 0])
    val_conds, _ = sampling.sequences(held_out // VAL_RUN * VAL_RUN, seed + 1_000_003,
                                      seq_len=(VAL_RUN, VAL_RUN))
    val_starts = np.arange(len(val_conds)) % VAL_RUN == 0
    kind = packs.find(character).kind
    task = progress.add_task(f"{kind} renders {character}", total=len(conds) + len(val_conds), info="")
    adv = lambda n: progress.advance(task, n)  # noqa: E731
    train_set = make_pairs(conds, starts, render, run_dir / "train", on_batch=adv)
    val_set = make_pairs(val_conds, val_starts, render, run_dir / "val", on_batch=adv)
    progress.update(task, completed=len(conds) + len(val_conds))
    note = (f"{samples} sampled conditionings (seed {seed})"
            + (f" + {len(train_set) - samples} recorded from {', '.join(r.name for r in record)}" if record else "")
            + f", rendered by {kind} at 256x256; held out: {len(val_set)} frames in runs of {VAL_RUN} "
              f"from another seed")
    return train_set, val_set, geometry, rig2d_clips(), note


def recorded_conditionings(video: Path, progress: Any = None) -> list:
    """Conditionings of a real video through our perception and conditioning (offline clock)."""
    return [cond for _, _, cond, _ in _perceive(video, progress)]


def _perceive(video: Path, progress: Any = None) -> Any:
    """Yield (RGB frame, Cues, Conditioning, mirrored) for every video frame of the file."""
    from liveavatar.clock import VirtualClock
    from liveavatar.conditioning import Conditioner
    from liveavatar.perception import Perception
    from liveavatar.sources.file import iter_media, probe
    from liveavatar.types import AudioChunk, CapturedFrame

    info = probe(video)                               # UserError naming the file when unreadable
    clock = VirtualClock(0)
    conditioner = Conditioner(rate_hz=info.fps or 30.0, clock=clock)
    task = progress.add_task(f"perceiving {video.name}", total=info.frames or None, info="") if progress else None
    with Perception(static=False, sync=True) as perception:
        for item in iter_media(video, start_ns=0):
            if isinstance(item, AudioChunk):
                perception.process_audio(item)
                continue
            assert isinstance(item, CapturedFrame)
            clock.sleep_until(item.t_capture_ns)
            cues = perception.process_video(item)
            conditioner.push_cues(cues)
            yield item.image, cues, conditioner.tick(item.t_capture_ns), conditioner.mirror
            if task is not None:
                progress.advance(task)


# ---------------------------------------------------------------------------------------------
# from a video of a person
# ---------------------------------------------------------------------------------------------

def _video_pairs(video: Path, held_out: int, run_dir: Path, progress: Any, max_frames: int = 0) -> Any:
    """Every frame of the video (square centre crop, subject cut out, mirrored when the
    conditioner mirrors) paired with its own conditioning; the last frames are held out."""
    import cv2
    import mediapipe as mp

    from liveavatar.generation.neural.train import make_pairs
    size = 256
    frames, conds, points = [], [], []
    seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
    try:
        for rgb, cues, cond, mirrored in _perceive(video, progress):
            h, w = rgb.shape[:2]
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            crop = cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
            if mirrored:   # the character is the user's mirror image: so is its target frame
                crop = np.ascontiguousarray(crop[:, ::-1])
            mask = seg.process(crop).segmentation_mask
            frames.append(np.dstack([crop, np.clip(mask * 255, 0, 255).astype(np.uint8)]))
            conds.append(cond)
            if cues.pose.present:
                xy = cues.pose.landmarks[:, :2] * np.array([w, h], np.float32) - np.array([x0, y0], np.float32)
                xy /= side
                if mirrored:
                    xy[:, 0] = 1.0 - xy[:, 0]
                points.append((xy, cond.root[:2].copy()))
            if max_frames and len(frames) >= max_frames:
                break
    finally:
        seg.close()
    n = len(frames)
    if n < 2 * VAL_RUN:
        raise UserError(f"{video}: {n} frames; at least {2 * VAL_RUN} are needed to train and validate")
    if len(points) < 5:
        raise UserError(f"{video}: a person was found in only {len(points)} frames; "
                        f"the video must show one person's body")
    n_val = min(held_out // VAL_RUN, max(1, n // VAL_RUN // 5)) * VAL_RUN
    geometry = video_geometry(points)
    frames_arr = np.stack(frames)
    split = n - n_val

    def from_array(offset: Any) -> Any:
        pos = [offset]

        def render(batch: Any) -> Any:
            out = frames_arr[pos[0]:pos[0] + len(batch)]
            pos[0] += len(batch)
            return out
        return render

    train_set = make_pairs(conds[:split], np.arange(split) == 0, from_array(0), run_dir / "train")
    val_set = make_pairs(conds[split:], np.arange(n_val) % VAL_RUN == 0, from_array(split), run_dir / "val")
    note = (f"{split} frames of {video.name} (square centre crop, subject cut out with MediaPipe "
            f"selfie segmentation), conditioning from LiveAvatar perception + conditioning; held out: "
            f"the last {n_val} frames")
    return train_set, val_set, geometry, None, note


def video_geometry(points: list) -> object:
    """Fit the guide's skeleton to the person in the (cropped, mirrored) video, from MediaPipe
    landmarks: median bone lengths, and the hips' home and body height by least squares on
    hips = home + root * body_height (how the conditioner defines root offsets)."""
    from liveavatar.conditioning import retarget as rt
    from liveavatar.generation.neural.model import Geometry
    xy = np.stack([p for p, _ in points])                      # (n, 33, 2)
    root = np.stack([r for _, r in points])                    # (n, 2)

    def dist(a: Any, b: Any) -> Any:
        return float(np.median(np.linalg.norm(xy[:, a] - xy[:, b], axis=-1)))

    hips = (xy[:, rt.L_HIP] + xy[:, rt.R_HIP]) / 2
    shoulders = (xy[:, rt.L_SHOULDER] + xy[:, rt.R_SHOULDER]) / 2
    head = (xy[:, rt.L_EAR] + xy[:, rt.R_EAR]) / 2
    spine = float(np.median(np.linalg.norm(shoulders - hips, axis=-1)))
    # hips = home + root * bh, solved for (home_x, home_y, bh) over all frames
    A = np.zeros((2 * len(root), 3))
    A[0::2, 0], A[1::2, 1] = 1.0, 1.0
    A[0::2, 2], A[1::2, 2] = root[:, 0], root[:, 1]
    sol = np.linalg.lstsq(A, hips.reshape(-1), rcond=None)[0]
    body_height = float(sol[2]) if 0.1 < sol[2] < 3 else 3.5 * spine
    return Geometry(
        hips=(float(sol[0]), float(sol[1])), body_height=body_height, spine=spine,
        segment_sigmas=_scaled_sigmas(spine / Geometry().spine),
        neck=float(np.median(np.linalg.norm(head - shoulders, axis=-1))),
        head_radius=max(0.75 * dist(rt.L_EAR, rt.R_EAR), 0.02),
        shoulder_half=dist(rt.L_SHOULDER, rt.R_SHOULDER) / 2, hip_half=dist(rt.L_HIP, rt.R_HIP) / 2,
        upper_arm=(dist(rt.L_SHOULDER, rt.L_ELBOW) + dist(rt.R_SHOULDER, rt.R_ELBOW)) / 2,
        lower_arm=(dist(rt.L_ELBOW, rt.L_WRIST) + dist(rt.R_ELBOW, rt.R_WRIST)) / 2,
        upper_leg=(dist(rt.L_HIP, rt.L_KNEE) + dist(rt.R_HIP, rt.R_KNEE)) / 2,
        lower_leg=(dist(rt.L_KNEE, rt.L_ANKLE) + dist(rt.R_KNEE, rt.R_ANKLE)) / 2)
