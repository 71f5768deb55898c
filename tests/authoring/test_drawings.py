"""Real children's drawings (Animated Drawings' examples) with hand-made masks and joints."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.authoring.evaluate import drawing_names, score_drawing
from liveavatar.generation.mesh import pack
from tests.authoring.conftest import DRAWINGS, drawing_mask, drawing_rgba, write_png

NAMES = drawing_names(DRAWINGS)


def test_the_drawings_are_there() -> None:
    assert NAMES == ["char1", "char2", "char3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_cut_out_and_joints_match_the_hand_made_ones(name: str) -> None:
    s = score_drawing(DRAWINGS, name)
    assert s.method == "paper"
    assert s.iou >= 0.95, s.iou
    side = max(s.size)
    assert len(s.joint_error_px) == 13
    # Generous bounds: a joint within 15 % of the picture, the mean within 8 % (measured: 3-5 %).
    assert s.mean_joint_error_px <= 0.08 * side, s.joint_error_px
    assert max(s.joint_error_px.values()) <= 0.15 * side, s.joint_error_px


@pytest.mark.slow
def test_drawing_on_a_transparent_background_uses_its_alpha(tmp_path, data_dir) -> None:
    from liveavatar.authoring.importer import import_character
    rgba = drawing_rgba("char2").copy()
    truth = drawing_mask("char2")
    rgba[..., 3] = np.where(truth, 255, 0)
    res = import_character(write_png(tmp_path / "cut.png", rgba), "girl")
    assert res.method == "alpha"
    loaded = pack.load(res.folder)
    assert loaded.manifest.framing == "full"
    # The pack's art keeps exactly the figure (cropped to it): the same number of opaque pixels.
    assert abs(int((loaded.layers[0][..., 3] > 0.5).sum()) - int(truth.sum())) <= 0.01 * truth.sum()


@pytest.mark.slow
def test_a_bust_cut_by_the_bottom_edge_has_no_legs(tmp_path, data_dir) -> None:
    """Upper-body art: the drawing's top half, cut through the skirt."""
    from liveavatar.authoring.importer import import_character
    rgba = drawing_rgba("char2").copy()
    rgba[..., 3] = np.where(drawing_mask("char2"), 255, 0)
    top = rgba[: int(rgba.shape[0] * 0.62)]
    res = import_character(write_png(tmp_path / "bust.png", top), "bust")
    m = pack.load(res.folder).manifest
    assert m.framing == "upper"
    assert not any(j in m.joints for j in pack.LEG_JOINTS)
    assert all(m.joints[j].present for j in pack.ARM_JOINTS + pack.REQUIRED_JOINTS)


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG", "PNG"])
def test_webp_jpeg_png_are_read(fmt: str, tmp_path) -> None:
    from PIL import Image

    from liveavatar.authoring.reading import read_picture
    rgb = drawing_rgba("char3")[..., :3]
    p = tmp_path / f"art.{fmt.lower()}"
    Image.fromarray(rgb).save(p, format=fmt)
    pic = read_picture(p)
    assert pic.format == fmt and pic.size == (rgb.shape[1], rgb.shape[0])
    assert not pic.has_alpha and pic.rgba.shape[2] == 4
    assert np.abs(pic.rgba[..., :3].astype(int) - rgb).mean() < 8     # lossy formats stay close
