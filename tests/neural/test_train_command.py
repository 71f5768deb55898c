"""`liveavatar train` end to end: rig2d teacher, real video through our perception, resume."""
from __future__ import annotations

import json

import numpy as np
import torch
from typer.testing import CliRunner

from liveavatar.generation.neural import NeuralGenerator
from liveavatar.types import Conditioning
from tests.media import path as media

TINY = ["--steps", "4", "--batch", "4", "--held-out", "16", "--widths", "8,8,8,8"]


def _train(args, tmp_path):
    """Runs the real command in-process (a subprocess would pay torch + MediaPipe start-up again)."""
    from liveavatar import cli
    r = CliRunner().invoke(cli.app, ["train", *args, *TINY[2:], "--out", str(tmp_path / "models"),
                                     "--run-dir", str(tmp_path / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output[-2000:]
    return json.loads((tmp_path / "models" / "manifest.json").read_text())["models"][0], r.output


def test_from_character_exports_a_model_that_renders_and_resumes(tmp_path):
    entry, out = _train(["--from-character", "nova", "--samples", "32", "--steps", "4", "--upsample", "2"],
                        tmp_path)
    assert "held-out PSNR" in out
    t = entry["training"]
    assert entry["character"] == "nova" and t["mode"] == "from-character" and t["source"] == "nova"
    assert t["steps"] == 4 and t["samples"] == 32 and t["held_out"] == 16
    assert entry["outputs"][0]["shape"] == ["batch", 256, 256, 4] and entry["net_config"]["upsample"] == 2
    assert 0 < t["psnr_db"] < 60 and 0 < t["ssim"] <= 1 and t["seconds"] > 0
    assert "--from-character nova" in t["command"] and "rig2d" in t["notes"]
    gen = NeuralGenerator("cpu", 256, model_dir=tmp_path / "models")
    frame = gen.render([Conditioning.neutral()], ["nova"])
    assert frame.shape == (1, 256, 256, 4)
    # resume: the checkpoint's 4 steps are kept and 2 more run
    entry, _ = _train(["--from-character", "nova", "--samples", "32", "--steps", "6", "--upsample", "2",
                       "--resume"], tmp_path)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert entry["training"]["steps"] == 6 and [h["step"] for h in history] == [4, 6]


def test_from_video_pairs_frames_with_their_own_conditioning(tmp_path):
    clip = media("messi_sway.mp4")
    entry, _ = _train(["--from-video", str(clip), "--max-frames", "32", "--steps", "2"], tmp_path)
    t = entry["training"]
    assert t["mode"] == "from-video" and t["source"] == "messi_sway.mp4"
    assert t["samples"] + t["held_out"] == 32 and t["device"] == f"cpu ({torch.get_num_threads()} threads)"
    # the guide's skeleton was fitted to the person in the (square, mirrored) crop
    geo = entry["net_config"]["geometry"]
    assert 0.2 < geo["hips"][0] < 0.8 and 0.2 < geo["hips"][1] < 1.0
    assert all(0.01 < geo[k] < 0.6 for k in ("spine", "upper_arm", "lower_arm", "upper_leg", "lower_leg"))
    cached = np.load(tmp_path / "run" / "train.images.npy", mmap_mode="r")
    alpha = cached[..., 3].astype(float) / 255
    assert 0.02 < alpha.mean() < 0.7     # the person is cut out: neither empty nor the whole frame
