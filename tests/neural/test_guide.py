"""The network draws its guide where rig2d draws the character: the in-graph motion (idle blend,
action clips) and forward kinematics reproduce rig2d's skeleton exactly."""
from __future__ import annotations

import copy

import numpy as np
import torch

from liveavatar.commands.train import character_geometry, rig2d_clips
from liveavatar.generation import characters as packs
from liveavatar.generation.neural import layout, sampling
from liveavatar.generation.neural.model import JOINTS, NetConfig, NeuralAvatarNet
from liveavatar.generation.neural.train import set_action_clips
from liveavatar.generation.rig2d import Rig2DGenerator


def test_guide_skeleton_matches_rig2d_including_actions_and_fading_tracking():
    conds, _ = sampling.sequences(480, seed=31, action_prob=0.8)
    conds = conds[::5]
    for c in conds:
        c.t_tick_ns = 0            # the student has no clock: rig2d's breathing is frozen at t=0
    assert len({c.action for c in conds}) >= 4 and min(c.body_present for c in conds) < 1.0
    rig = Rig2DGenerator("cpu", 256)
    rig.prepare_character("nova")
    char = rig._chars["nova"]
    g = rig._gather(conds)
    want, _ = rig._skeleton(rig._pose(g), g["root"], char)
    want = want / char.ref                                   # reference px -> canvas units

    net = NeuralAvatarNet(NetConfig(geometry=character_geometry("nova")))
    set_action_clips(net, **rig2d_clips())
    cond = torch.from_numpy(layout.pack(copy.deepcopy(conds), np.zeros((96, layout.COND_DIM), np.float32)).copy())
    with torch.no_grad():
        got, _ = net.guide.joints(cond, net.guide.motion(cond))
    got = got.numpy()
    for name in JOINTS:
        err = np.abs(got[:, JOINTS.index(name)] - want[:, packs.JOINTS.index(name)]).max()
        # 2e-3 of the canvas is half a pixel at 256; action clips are sampled at 96 phases
        assert err < 2e-3, f"{name}: {err:.4f}"


def test_guide_channels_follow_the_conditioning():
    net = NeuralAvatarNet(NetConfig(geometry=character_geometry("nova")))
    c = sampling.sequences(1, seed=2)[0][0]
    rows = np.zeros((2, layout.COND_DIM), np.float32)
    layout.pack([c, c], rows)
    rows[1, layout.OFFSETS["bone_angles"].start + 2] += 1.0          # swing the left upper arm
    with torch.no_grad():
        guide, _ = net.guide(torch.from_numpy(rows))
    changed = (guide[0] - guide[1]).abs().amax(dim=(1, 2))
    assert changed[4] > 0.5                       # the upper arm's segment moved
    assert changed[5] > 0.5                       # and the forearm hanging from it
    assert changed[8:12].max() < 1e-6             # the legs did not
