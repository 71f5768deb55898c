"""The mesh generator on real art: three children's drawings (hand-made masks and joints, from
Animated Drawings) and the shipped `astro` (a photo imported by the authoring code)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from liveavatar.errors import NotFoundError, UserError
from liveavatar.generation import characters as catalog
from liveavatar.generation import registry
from liveavatar.generation.mesh import MeshGenerator
from liveavatar.types import ACTIONS, BONE_INDEX, EMOTIONS, FACE_PARAMS, REST_BONE_ANGLES, Conditioning
from tests.generation.mesh.conftest import area, flipped

DRAWINGS = ("drawing1", "drawing2", "drawing3")
CHARACTERS = DRAWINGS + ("astro",)


def over_grey(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    return rgba[..., :3] * a + 128.0 * (1.0 - a)


def inside(gen: MeshGenerator, name: str) -> np.ndarray:
    """A root that keeps the character inside the canvas through every action (a bust is framed
    to the bottom edge and bows down; a full figure jumps up): the area then measures tearing,
    not cropping."""
    upper = gen.rest_frame(name)["framing"] == "upper"
    return np.array([0.0, -0.2, 0.8] if upper else [0.0, 0.12, 0.75], np.float32)


def action(name: str, phase: float, t: float = 0.0, root: np.ndarray | None = None) -> Conditioning:
    c = Conditioning.neutral(t_tick_ns=int(t * 1e9))
    c.action, c.action_phase, c.action_weight = name, phase, 1.0
    if root is not None:
        c.root = root.copy()
    return c


@pytest.mark.parametrize("name", CHARACTERS)
def test_rest_pose_reproduces_the_art(mesh256: MeshGenerator, name: str) -> None:
    frame = mesh256.render([mesh256.rest_conditioning(name)], [name])[0]
    ref = mesh256.rest_reference(name)
    pixels = (frame[..., 3] > 0) | (ref[..., 3] > 0)
    _, ssim = structural_similarity(over_grey(frame), over_grey(ref), channel_axis=2, data_range=255, full=True)
    assert ssim.mean(-1)[pixels].mean() >= 0.9
    assert abs(area(frame) / area(ref) - 1.0) < 0.05
    # straight alpha with a transparent background and a soft edge (not a binary mask)
    assert frame[0, 0, 3] == 0 and frame[-1, -1, 3] == 0
    edge = (frame[..., 3] > 0) & (frame[..., 3] < 255)
    assert 0 < edge.sum() < 0.5 * pixels.sum()


@pytest.mark.parametrize("name", CHARACTERS)
def test_every_action_plays_without_folds_or_tearing(mesh256: MeshGenerator, name: str) -> None:
    INSIDE = inside(mesh256, name)
    home = mesh256.rest_conditioning(name)
    home.root = INSIDE.copy()
    rest = area(mesh256.render([home], [name])[0])
    idle = mesh256.render([action("none", 0.0, root=INSIDE)], [name])[0]
    for act in ACTIONS:
        phases = np.linspace(0.0, 1.0, 9)
        if act == "spin":   # edge-on the figure is thin by design; compare where it faces us
            phases = np.array([0.0, 0.02, 0.48, 0.5, 0.52, 0.98])
        conds = [action(act, float(p), t=float(p), root=INSIDE) for p in phases]
        assert flipped(mesh256, conds, name).max() == 0, act
        frames = mesh256.render(conds, [name] * len(conds))
        ratio = area(frames) / rest
        assert (np.abs(ratio - 1.0) <= 0.15).all(), (act, ratio.round(3))
        if act != "none":   # the action really moves the character
            assert np.abs(frames.astype(np.int16) - idle).max(-1).mean() > 1.0, act


@settings(derandomize=True, max_examples=40, deadline=None)
@given(arms=st.lists(st.floats(-np.pi, np.pi), min_size=4, max_size=4),
       legs=st.lists(st.floats(-0.4, 0.4), min_size=4, max_size=4),
       spine=st.floats(-0.15, 0.15), neck=st.floats(-0.2, 0.2),
       head=st.tuples(st.floats(-0.8, 0.8), st.floats(-0.8, 0.8), st.floats(-0.3, 0.3)),
       root=st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3), st.floats(0.6, 1.4)),
       which=st.sampled_from(CHARACTERS))
def test_random_poses_never_fold(mesh256: MeshGenerator, arms, legs, spine, neck, head, root, which) -> None:
    """Any arm pose, moderate legs/lean/tilt. (Larger combined head tilts, past ~0.5 rad against
    the torso, can fold a few neck triangles: the blend there is linear skinning.)"""
    c = Conditioning.neutral()
    b = REST_BONE_ANGLES.copy()
    b[BONE_INDEX["spine"]] += spine
    b[BONE_INDEX["neck"]] += neck
    b[2:6] = arms
    b[6:10] += np.asarray(legs, np.float32)
    c.bone_angles, c.head, c.root, c.body_present = b, np.asarray(head, np.float32), np.asarray(root, np.float32), 1.0
    assert flipped(mesh256, [c], which)[0] == 0
    frame = mesh256.render([c], [which])[0]
    neutral = Conditioning.neutral()
    neutral.root = c.root
    ref = area(mesh256.render([neutral], [which])[0])
    # no tearing: nothing grows; arms in front of the body may hide up to a quarter of it
    assert 0.75 <= area(frame) / ref <= 1.15


def test_batched_equals_single(mesh256: MeshGenerator) -> None:
    conds = [action("wave", 0.3, 0.1), action("dance", 0.6, 0.2), Conditioning.neutral(t_tick_ns=123_000_000)]
    conds[2].root = np.array([0.2, -0.1, 1.3], np.float32)
    names = ["drawing1", "drawing2", "drawing1"]
    mesh256.reset()
    batched = mesh256.render(conds, names)
    for i, (c, n) in enumerate(zip(conds, names, strict=False)):
        mesh256.reset()
        single = mesh256.render([c], [n])[0]
        assert np.abs(single.astype(np.int16) - batched[i]).max() <= 1


def test_bad_conditioning_is_clamped(mesh256: MeshGenerator) -> None:
    bad = Conditioning.neutral()
    bad.bone_angles = np.full(len(BONE_INDEX), np.nan, np.float32)
    bad.root = np.array([np.nan, np.nan, np.nan], np.float32)
    bad.head = np.array([np.nan, 50.0, np.nan], np.float32)
    bad.face = np.full(len(FACE_PARAMS), np.nan, np.float32)
    bad.emotion = np.full(len(EMOTIONS) + 3, np.nan, np.float32)
    bad.visemes = np.array([np.inf, -1.0], np.float32)
    bad.action, bad.action_phase, bad.action_weight = "no-such-action", np.nan, np.inf
    short = Conditioning.neutral()
    short.bone_angles = np.zeros(2, np.float32)       # wrong length
    for name in ("drawing2", "astro"):
        frames = mesh256.render([bad, short], [name, name])
        assert frames.shape == (2, 256, 256, 4) and frames.dtype == np.uint8
        for f in frames:
            assert 0.05 < (f[..., 3] > 127).mean() < 0.9      # the character, on a transparent canvas
        assert flipped(mesh256, [bad, short], name).max() == 0
    # out of range: clamped to the edge of the range (x, y +-1 body height, scale 0.5..2)
    far = Conditioning.neutral()
    far.root = np.array([np.inf, -np.inf, 1e9], np.float32)
    edge = Conditioning.neutral()
    edge.root = np.array([1.0, -1.0, 2.0], np.float32)
    # one call each: the clamp is under test, not the batch (rows of a batch sample their stacked
    # textures at coordinates that can round one level apart)
    a, b = mesh256.render([far], ["drawing1"])[0], mesh256.render([edge], ["drawing1"])[0]
    assert np.array_equal(a, b)


def test_unknown_character_is_one_line(mesh256: MeshGenerator) -> None:
    with pytest.raises(NotFoundError) as e:
        mesh256.prepare_character("no\nsuch")
    assert "\n" not in str(e.value) and "drawing1" in str(e.value)
    with pytest.raises(NotFoundError):
        mesh256.prepare_character("nova")     # a rig2d pack is not the mesh generator's


def test_auto_routes_and_switches_live_without_a_dropped_frame(data_dir) -> None:
    gen = registry.create("auto", device="cpu", size=128)
    assert {"nova", "bolt", "astro", "drawing1"} <= set(gen.characters())
    assert catalog.find("drawing1").kind == "mesh" and catalog.find("nova").kind == "rig2d"
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            gen.prepare_character("drawing3")
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    loader = threading.Thread(target=prepare)
    loader.start()
    names = ["nova", "drawing1"]
    gen.prepare_character("drawing1")
    frames = []
    for i in range(24):      # keep rendering both kinds while drawing3 loads, then switch to it
        if i == 12:
            loader.join()
            names = ["drawing3", "nova"]
        conds = [Conditioning.neutral(seq=i, t_tick_ns=i * 33_000_000) for _ in names]
        out = gen.render(conds, names)
        frames.append(out)
        assert out.shape == (2, 128, 128, 4)
        assert ((out[..., 3] > 127).mean((1, 2)) > 0.03).all(), i     # never an empty frame
    assert not errors
    # after the switch the session gets what the mesh generator alone draws for the same ticks
    # (secondary motion has state, so it replays them all)
    mesh = MeshGenerator(device="cpu", size=128)
    for i in range(12, 24):
        solo = mesh.render([Conditioning.neutral(seq=i, t_tick_ns=i * 33_000_000)], ["drawing3"])[0]
    assert np.abs(frames[-1][0].astype(np.int16) - solo).max() <= 1


def test_registered_generators() -> None:
    gens = registry.available()
    assert gens["mesh"] == "liveavatar.generation.mesh:MeshGenerator"
    assert gens["auto"] == "liveavatar.generation.auto:AutoGenerator"
    with pytest.raises(UserError):
        MeshGenerator(device="cpu", size=10)


def test_serve_refuses_an_unknown_character_in_one_line(data_dir) -> None:
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    r = subprocess.run([sys.executable, "-m", "liveavatar", "serve", "--character", "no\nsuch", "--port", "0"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and len(out.splitlines()) == 1 and "drawing1" in out, out


@pytest.mark.slow
def test_an_imported_photo_plays_every_action(data_dir) -> None:
    """tests/media's grace_hopper photo through the importer (MediaPipe cut-out and rig), then
    every action on the mesh: no folds, no tearing, the rest pose reproduces the photo."""
    from liveavatar.authoring.importer import import_character
    from tests.media import path as media

    import_character(media("grace_hopper.jpg"), "grace", dest_root=data_dir / "characters", replace=True)
    gen = MeshGenerator(device="cpu", size=256)
    frame = gen.render([gen.rest_conditioning("grace")], ["grace"])[0]
    ref = gen.rest_reference("grace")
    pixels = (frame[..., 3] > 0) | (ref[..., 3] > 0)
    _, ssim = structural_similarity(over_grey(frame), over_grey(ref), channel_axis=2, data_range=255, full=True)
    assert ssim.mean(-1)[pixels].mean() >= 0.9
    INSIDE = inside(gen, "grace")
    home = gen.rest_conditioning("grace")
    home.root = INSIDE.copy()
    rest = area(gen.render([home], ["grace"])[0])
    for act in ACTIONS:
        conds = [action(act, float(p), t=float(p), root=INSIDE) for p in (0.0, 0.25, 0.5, 0.75)]
        if act == "spin":
            conds = [action(act, float(p), t=float(p), root=INSIDE) for p in (0.0, 0.5, 0.98)]
        assert flipped(gen, conds, "grace").max() == 0, act
        ratio = area(gen.render(conds, ["grace"] * len(conds))) / rest
        assert (np.abs(ratio - 1.0) <= 0.15).all(), (act, ratio.round(3))
