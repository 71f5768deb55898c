"""Secondary motion on real art: physics regions found on the children's drawings (their hand-made
masks and joints; mesh vertices sampled inside the mask like a mesh's interior points), and the
damped pendulums driven through anchor affines as the renderer passes them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from liveavatar.generation.mesh.physics import MAX_ANGLE, PhysicsRegion, SecondaryMotion, find_regions

from .drawings import art, joints
from .test_face import DRAWING_FACES

FPS = 30.0


def _vertices(i: int, step: int = 6) -> np.ndarray:
    """Points inside the drawing's mask on a grid (a stand-in for the mesh's vertices)."""
    alpha = art(i)[..., 3] > 0
    ys, xs = np.mgrid[step // 2:alpha.shape[0]:step, step // 2:alpha.shape[1]:step]
    keep = alpha[ys, xs]
    return np.stack([xs[keep], ys[keep]], 1).astype(np.float64)


def _body(i: int) -> tuple[np.ndarray, list[PhysicsRegion], dict]:
    v = _vertices(i)
    layers = [{"name": "body", "part": "body", "physics": None}]
    j = joints(i)
    regions = find_regions(v, np.zeros(len(v), int), layers, j, DRAWING_FACES[i])
    return v, regions, j


def _translate(b: int, r: int, x: np.ndarray, y: np.ndarray | None = None, rot: np.ndarray | None = None
               ) -> np.ndarray:
    """Anchor affines (b, r, 2, 3): rotation `rot` (bone-angle sense) about the origin, then a shift."""
    rot = np.zeros(b) if rot is None else rot
    y = np.zeros(b) if y is None else y
    c, s = np.cos(rot), np.sin(rot)
    A = np.zeros((b, r, 2, 3))
    A[:, :, 0, 0], A[:, :, 0, 1], A[:, :, 1, 0], A[:, :, 1, 1] = c[:, None], s[:, None], -s[:, None], c[:, None]
    A[:, :, 0, 2], A[:, :, 1, 2] = x[:, None], y[:, None]
    return A


def test_finds_the_ponytails_and_the_skirt_of_a_drawing():
    v, regions, j = _body(2)
    by_name = {r.name: r for r in regions}
    assert set(by_name) == {"hair", "skirt"}, list(by_name)
    hair, skirt = by_name["hair"], by_name["skirt"]
    assert hair.anchor == "head" and skirt.anchor == "hips"
    # the ponytails stick out beside the head (char2: left one x < 130, right one x > 205, above y 70)
    left = (v[:, 0] < 130) & (v[:, 1] < 70)
    right = (v[:, 0] > 205) & (v[:, 1] < 70)
    assert left.sum() > 5 and right.sum() > 5
    assert hair.weights[left].mean() > 0.4 and hair.weights[right].mean() > 0.4
    # not the face, not the arms, not the legs
    hc, r = np.array(DRAWING_FACES[2]["head_center"]), DRAWING_FACES[2]["head_radius"]
    face = np.hypot(*(v - hc).T) < r
    assert hair.weights[face].max() == 0.0
    for name in ("wrist_l", "wrist_r", "elbow_l", "elbow_r", "ankle_l", "ankle_r"):
        p = np.array([j[name]["x"], j[name]["y"]])
        near = np.hypot(*(v - p).T) < 15
        assert hair.weights[near].max(initial=0) == 0.0 and skirt.weights[near].max(initial=0) < 0.2, name
    # the skirt: the hem (char2's skirt ends about y 300) swings more than the waist
    hips_y = j["hips"]["y"]
    waist = (v[:, 1] > hips_y) & (v[:, 1] < hips_y + 25)
    hem = (v[:, 1] > 270) & (v[:, 1] < 300) & (skirt.weights > 0)
    assert hem.sum() > 5
    assert skirt.weights[hem].mean() > 3 * skirt.weights[waist].mean()


def test_arms_and_legs_are_never_hair():
    for i in (1, 3):
        v, regions, j = _body(i)
        for reg in regions:
            for name in ("wrist_l", "wrist_r", "elbow_l", "elbow_r", "ankle_l", "ankle_r", "knee_l", "knee_r"):
                p = np.array([j[name]["x"], j[name]["y"]])
                near = np.hypot(*(v - p).T) < 15
                assert reg.weights[near].max(initial=0) < 0.2, (i, reg.name, name)


def test_layers_of_a_psd_get_their_own_regions():
    v = _vertices(2)
    vl = np.zeros(len(v), int)
    j = joints(2)
    hc = np.array(DRAWING_FACES[2]["head_center"])
    vl[(np.hypot(*(v - hc).T) > 38) & (v[:, 1] < 70)] = 1        # "hair_back" layer
    vl[v[:, 1] > 250] = 2                                          # "skirt" layer with its own spring
    layers = [{"name": "body", "part": "body", "physics": None},
              {"name": "hair", "part": "hair_back", "physics": None},
              {"name": "frills", "part": "skirt", "physics": {"anchor": "hips", "stiffness": 30.0, "damping": 5.0}}]
    regions = find_regions(v, vl, layers, j, DRAWING_FACES[2])
    assert [r.name for r in regions] == ["hair", "frills"]
    hair, frills = regions
    assert hair.anchor == "head" and frills.anchor == "hips"
    assert (frills.stiffness, frills.damping) == (30.0, 5.0)
    assert hair.weights[vl != 1].max() == 0.0 and frills.weights[vl != 2].max() == 0.0
    assert hair.weights[vl == 1].max() == pytest.approx(1.0)


def _drive(motion: SecondaryMotion, xs: np.ndarray, t0: float = 0.0) -> float:
    r = motion.n_regions
    t = t0
    for x in xs:
        motion.step(np.array([t]), _translate(1, r, np.array([x])))
        t += 1 / FPS
    return t


def test_swings_and_settles_within_a_second_after_the_body_stops():
    v, regions, _ = _body(2)
    motion = SecondaryMotion(regions, v)
    t = np.arange(int(1.5 * FPS)) / FPS
    sway = 60.0 * np.sin(2 * np.pi * 1.2 * t)                 # a lively sway of the whole body
    t_end = _drive(motion, sway)
    swing = np.abs(motion.angles(1)).max()
    assert swing > 0.05, swing                                 # it really swings
    hold = np.full(int(1.0 * FPS), sway[-1])
    trace = []
    for x in hold:
        motion.step(np.array([t_end]), _translate(1, motion.n_regions, np.array([x])))
        t_end += 1 / FPS
        trace.append(np.abs(motion.angles(1)).max())
    assert trace[-1] < 0.02, trace[-5:]
    assert max(trace[int(0.8 * FPS):]) < 0.03, trace


def test_hair_lags_behind_an_accelerating_body():
    v, regions, _ = _body(2)
    hair = [r for r in regions if r.name == "hair"]
    motion = SecondaryMotion(hair, v)
    x = np.concatenate([np.zeros(5), 0.5 * 2000.0 * (np.arange(1, 6) / FPS) ** 2])   # accelerate right
    _drive(motion, x)
    rigid = torch.tensor((v + [x[-1], 0.0])[None], dtype=torch.float32)
    swung = motion.displace(rigid)
    w = torch.from_numpy(hair[0].weights)
    tips = w > 0.6
    below_root = torch.from_numpy(v[:, 1] > hair[0].root[1] - 5)
    # the hanging parts trail to the left (behind), the root stays
    dx = (swung - rigid)[0, :, 0]
    assert dx[tips & below_root].mean() < -0.5, dx[tips & below_root].mean()
    assert torch.allclose(swung[0, w == 0], rigid[0, w == 0])


def test_stable_for_any_frame_time_and_clock_jumps():
    v, regions, _ = _body(2)
    motion = SecondaryMotion(regions, v)
    rng = np.random.default_rng(3)
    t = 0.0
    for _ in range(300):
        t += float(rng.choice([0.0, 1e-4, 1 / 240, 1 / 30, 0.2, 0.6, 0.99]))
        A = _translate(1, motion.n_regions, rng.uniform(-500, 500, 1), rng.uniform(-200, 200, 1),
                       rng.uniform(-1.5, 1.5, 1))
        motion.step(np.array([t]), A)
        th = motion.angles(1)
        assert np.isfinite(th).all() and np.abs(th).max() <= MAX_ANGLE + 1e-9
    # a clock jump (backwards, or a long stall) restarts the row at rest
    motion.step(np.array([t - 5.0]), _translate(1, motion.n_regions, np.array([30.0])))
    assert np.abs(motion.angles(1)).max() == 0.0
    motion.step(np.array([t + 10.0]), _translate(1, motion.n_regions, np.array([-300.0])))
    assert np.abs(motion.angles(1)).max() == 0.0
    # huge stiffness with a long frame stays bounded (implicit integration)
    stiff = SecondaryMotion([PhysicsRegion("r", "head", regions[0].root, regions[0].weights, 9000.0, 0.0, 0.0)], v)
    for k in range(60):
        stiff.step(np.array([k * 0.05]), _translate(1, 1, np.array([(-1) ** k * 300.0])))
        assert np.abs(stiff.angles(1)).max() <= MAX_ANGLE + 1e-9


def test_reset_forgets_the_swing():
    v, regions, _ = _body(2)
    motion = SecondaryMotion(regions, v)
    t = _drive(motion, 80.0 * np.sin(np.arange(20) / 3.0))
    assert np.abs(motion.angles(1)).max() > 0.01
    motion.reset()
    motion.step(np.array([t]), _translate(1, motion.n_regions, np.array([0.0])))
    assert np.abs(motion.angles(1)).max() == 0.0
    verts = torch.tensor(v[None], dtype=torch.float32)
    assert torch.equal(motion.displace(verts), verts)


def test_batched_rows_equal_single_sessions():
    v, regions, _ = _body(2)
    r = len(regions)
    both = SecondaryMotion(regions, v)
    one = [SecondaryMotion(regions, v) for _ in range(2)]
    rng = np.random.default_rng(5)
    for k in range(40):
        xs = np.array([50 * np.sin(k / 4.0), 120 * np.cos(k / 2.5)])
        rot = rng.uniform(-0.3, 0.3, 2)
        t = np.array([k / FPS, 2.0 + k / 25.0])              # the rows run on their own clocks
        both.step(t, _translate(2, r, xs, rot=rot))
        for i in range(2):
            one[i].step(t[i:i + 1], _translate(1, r, xs[i:i + 1], rot=rot[i:i + 1]))
    assert np.allclose(both.angles(2), np.concatenate([one[0].angles(1), one[1].angles(1)]))
    verts = torch.tensor(np.stack([v, v + 3.0]), dtype=torch.float32)
    got = both.displace(verts)
    assert torch.allclose(got[1:], one[1].displace(verts[1:]), atol=1e-4)
    # resetting one row leaves the other alone
    before = both.angles(2)[1].copy()
    both.reset([0])
    assert np.array_equal(both.angles(2)[1], before) and np.abs(both.angles(2)[0]).max() == 0.0


def test_head_tilt_lets_hair_hang_towards_gravity():
    v, regions, _ = _body(2)
    hair = [r for r in regions if r.name == "hair"]
    motion = SecondaryMotion(hair, v)
    root = np.array(hair[0].root)
    tilt = 0.4
    for k in range(int(3 * FPS)):        # tilt the head and hold it: it settles at a gravity lag
        c, s = np.cos(tilt), np.sin(tilt)
        M = np.array([[c, s], [-s, c]])
        A = np.zeros((1, 1, 2, 3))
        A[0, 0, :, :2] = M
        A[0, 0, :, 2] = root - M @ root              # rotate about the root
        motion.step(np.array([k / FPS]), A)
    th = motion.angles(1)[0, 0]
    assert -0.5 * tilt * 1.01 < th < -0.05, th        # swung back against the tilt, partly
