"""Shared fixtures: rig2d (the real teacher) and a tiny trained-and-exported model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from liveavatar.commands.train import character_geometry, rig2d_clips, teacher
from liveavatar.generation.neural import manifest, sampling
from liveavatar.generation.neural.export import export
from liveavatar.generation.neural.model import NetConfig, NeuralAvatarNet
from liveavatar.generation.neural.train import PairSet, TrainConfig, Trainer, make_pairs, set_action_clips

SMALL = dict(size=128, guide=32, widths=(8, 12, 16, 8), embed=32)


def small_config() -> NetConfig:
    return NetConfig(geometry=character_geometry("nova"), **SMALL)


@pytest.fixture(scope="session")
def nova_pairs(tmp_path_factory) -> tuple[PairSet, PairSet]:
    """96 training and 32 held-out frames of rig2d's nova at 128x128."""
    root = tmp_path_factory.mktemp("pairs")
    render = teacher("nova", "cpu", size=128)
    conds, starts = sampling.sequences(96, seed=3)
    val, _ = sampling.sequences(32, seed=4, seq_len=(16, 16))
    train_set = make_pairs(conds, starts, render, root / "train", size=128)
    val_set = make_pairs(val, np.arange(32) % 16 == 0, render, root / "val", size=128)
    return train_set, val_set


@pytest.fixture(scope="session")
def random_net() -> NeuralAvatarNet:
    """A full-size (256) network with random weights, including the FiLM layers (which start at
    zero after init), with rig2d's action clips: the torch/ONNX parity subject."""
    torch.manual_seed(7)
    net = NeuralAvatarNet(NetConfig(geometry=character_geometry("nova")))
    set_action_clips(net, **rig2d_clips())
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.05)
            if isinstance(m, torch.nn.Conv2d):   # livelier than the init: pictures that vary
                m.weight.mul_(3.0)
        net.out.bias.zero_()   # alpha around one half: colour is compared on most pixels
    return net.eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, random_net) -> Path:
    """models folder with neural/nova.onnx and neural/bolt.onnx (same net, two names)."""
    root = tmp_path_factory.mktemp("models")
    folder = root / "neural"
    info = manifest.Training(mode="from-character", source="nova", samples=0, notes="test fixture")
    export(random_net, folder, "nova", info)
    export(random_net, folder, "bolt", info)
    return folder


def trainer_for(run_dir: Path, pairs, steps: int, seed: int = 0) -> Trainer:
    cfg = TrainConfig(steps=steps, batch=4, lr=3e-3, seed=seed, val_every=1000)
    return Trainer(run_dir, small_config(), cfg, pairs[0], pairs[1], 16, clip_table=rig2d_clips())
