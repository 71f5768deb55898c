"""Skinning of imported characters (mesh/skinning.py): dual quaternions against linear blend on the
children's drawings (packs made from ../shared/media/drawings by conftest), the torch (GPU) path
against the compiled one, and the shared bilinear sampler against grid_sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from liveavatar.errors import UserError
from liveavatar.generation.mesh import MeshGenerator
from liveavatar.generation.mesh.raster import bilinear_zeros
from liveavatar.generation.mesh.skinning import Skinning, dqs_torch
from liveavatar.generation.rig2d.generator import Rig2DGenerator
from liveavatar.types import BONE_INDEX, Conditioning
from tests.generation.mesh.conftest import signed_areas


def _bent_elbows(gen: MeshGenerator, name: str) -> list[Conditioning]:
    """The drawn pose with both elbows bent from -150 to +150 degrees, the shoulders swung, and the
    knees bent by 0.6 of the elbows' bend."""
    rest = gen.rest_conditioning(name)
    out = []
    for bend in np.linspace(-2.6, 2.6, 9):
        for swing in (-1.2, 0.0, 1.2):
            c = gen.rest_conditioning(name)
            for s in "lr":
                ua, la = BONE_INDEX[f"upper_arm_{s}"], BONE_INDEX[f"lower_arm_{s}"]
                c.bone_angles[ua] = rest.bone_angles[ua] + swing
                c.bone_angles[la] = c.bone_angles[ua] + bend
                ul, ll = BONE_INDEX[f"upper_leg_{s}"], BONE_INDEX[f"lower_leg_{s}"]
                c.bone_angles[ll] = rest.bone_angles[ul] + 0.6 * bend
            out.append(c)
    return out


def _area_ratios(gen: MeshGenerator, name: str, conds: list[Conditioning]) -> np.ndarray:
    rest_v, tris = gen.mesh(name)
    v0, _, _ = gen.deform([gen.rest_conditioning(name)], name)
    v, _, _ = gen.deform(conds, name)
    a0 = signed_areas(v0, tris)[0]
    keep = np.abs(a0) > 1e-3
    return (signed_areas(v, tris) / a0)[:, keep]


@pytest.fixture(scope="module")
def pair(data_dir) -> tuple[MeshGenerator, MeshGenerator]:
    with pytest.MonkeyPatch.context() as mp:      # module scope: before the autouse user folder
        mp.setenv("LIVEAVATAR_DATA_DIR", str(data_dir))
        lbs, dqs = MeshGenerator("cpu", 256, skinning="lbs"), MeshGenerator("cpu", 256, skinning="dqs")
        for g in (lbs, dqs):
            g.prepare_character("drawing1")
    return lbs, dqs


def test_dual_quaternions_hold_a_bent_elbow_better_than_linear_blend(pair) -> None:
    lbs, dqs = pair
    conds = _bent_elbows(lbs, "drawing1")
    r_lbs, r_dqs = _area_ratios(lbs, "drawing1", conds), _area_ratios(dqs, "drawing1", conds)
    # linear blend collapses triangles at the joint; dual quaternions keep more of their area
    assert (r_dqs < 0.5).mean() < (r_lbs < 0.5).mean()
    assert np.percentile(r_dqs, 1) > np.percentile(r_lbs, 1)
    assert (r_dqs <= 0).sum() <= (r_lbs <= 0).sum()


def test_both_methods_agree_at_rest_and_keep_the_art(pair) -> None:
    lbs, dqs = pair
    c = lbs.rest_conditioning("drawing1")
    v_l, _, _ = lbs.deform([c], "drawing1")
    v_d, _, _ = dqs.deform([c], "drawing1")
    assert np.abs(v_l - v_d).max() < 1e-3
    a = lbs.render([c], ["drawing1"]).astype(int)
    b = dqs.render([c], ["drawing1"]).astype(int)
    assert (np.abs(a - b).max(-1) > 2).mean() < 1e-3      # rounding on a few edge pixels at most


@pytest.mark.parametrize("name", ["drawing1", "astro"])
def test_torch_dual_quaternions_equal_the_compiled_ones(data_dir, name: str) -> None:
    gen = MeshGenerator("cpu", 256, skinning="dqs")
    gen.prepare_character(name)
    c = gen._chars[name]
    conds = _bent_elbows(gen, name)[::4]
    for i, k in enumerate(conds):
        k.head = np.array([0.3, -0.2, 0.25], np.float32) * (i % 3 - 1)
        k.bone_angles[BONE_INDEX["spine"]] += 0.2 * (i % 2)
    g = Rig2DGenerator._gather(conds)
    ch = gen._channels(c, g)
    _, _, pose = gen._bone_affines(c, ch, g["root"])
    assert c.skin is not None and c.pivot is not None and c.bone_start is not None
    compiled = c.skin.apply(pose.rot, pose.scale, pose.pos, pose.glob).transpose(0, 2, 1)
    eager = dqs_torch(c.weights, c.pivot, c.rest, c.bone_start, pose.rot, pose.scale, pose.pos, pose.glob)
    assert np.abs(eager.numpy() - compiled).max() < 0.01


def test_linear_blend_equals_the_torch_bone_affines(data_dir) -> None:
    gen = MeshGenerator("cpu", 256, skinning="lbs")
    gen.prepare_character("drawing2")
    c = gen._chars["drawing2"]
    conds = _bent_elbows(gen, "drawing2")[::3]
    g = Rig2DGenerator._gather(conds)
    A, _, pose = gen._bone_affines(c, gen._channels(c, g), g["root"])
    assert c.skin is not None
    compiled = c.skin.apply(pose.rot, pose.scale, pose.pos, pose.glob).transpose(0, 2, 1)
    assert np.abs(gen._skin(c, A).numpy() - compiled).max() < 0.01


def test_unknown_method_is_refused() -> None:
    with pytest.raises(UserError, match="unknown skinning"):
        MeshGenerator("cpu", 256, skinning="arap")
    with pytest.raises(ValueError):
        Skinning(np.zeros((3, 2)), np.ones((3, 1)), np.zeros((1, 2)), "arap")


def test_shared_sampler_equals_grid_sample() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((9, 13, 4)).astype(np.float32)
    pts = rng.uniform(-2.0, 15.0, (400, 2))
    ours = np.array([bilinear_zeros(img, float(u), float(v)) for u, v in pts])
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    # integer texel centres: grid_sample's -1 is the left edge of texel 0 (align_corners=False)
    grid = torch.from_numpy(np.stack([(pts[:, 0] + 0.5) / 13 * 2 - 1, (pts[:, 1] + 0.5) / 9 * 2 - 1], -1))
    ref = F.grid_sample(t, grid.float().view(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)[0, :, 0].t().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    # a strided (channels-first) view samples the same
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    ours_view = np.array([bilinear_zeros(chw.transpose(1, 2, 0), float(u), float(v)) for u, v in pts[:50]])
    assert np.abs(ours_view - ours[:50]).max() < 1e-6
