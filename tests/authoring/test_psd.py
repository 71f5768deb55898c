"""Layered PSD art through psd-tools: layer names give the parts, the stacking gives occlusion.
The fixture is written with psd-tools from a real drawing cut into layers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liveavatar.authoring.importer import import_character
from liveavatar.authoring.psd import normalise, part_of
from liveavatar.errors import UserError
from liveavatar.generation.mesh import pack
from tests.authoring.conftest import drawing_mask, drawing_rgba


def write_psd(path: Path, size: tuple[int, int], layers: list[tuple[str, np.ndarray, bool]]) -> Path:
    """layers: (name, canvas-sized RGBA, visible), bottom first."""
    from PIL import Image
    from psd_tools import PSDImage
    from psd_tools.api.layers import PixelLayer
    psd = PSDImage.new("RGB", size)
    for name, rgba, visible in layers:
        ys, xs = np.nonzero(rgba[..., 3])
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        layer = PixelLayer.frompil(Image.fromarray(rgba[y0:y1, x0:x1], "RGBA"), psd, name, int(y0), int(x0))
        layer.visible = visible
        psd.append(layer)
    psd.save(path)
    return path


def _split_drawing() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """char1 cut by hand-made mask into a body, its left arm (image right) and a paper background."""
    rgba = drawing_rgba("char1").copy()
    mask = drawing_mask("char1")
    h, w = mask.shape
    figure = rgba.copy()
    figure[..., 3] = np.where(mask, 255, 0)
    arm = figure.copy()
    arm[:, : int(w * 0.68)] = 0
    arm[int(h * 0.62):] = 0
    body = figure.copy()
    body[arm[..., 3] > 0] = 0
    hair = np.zeros_like(figure)
    hair[: int(h * 0.12), int(w * 0.25): int(w * 0.6)] = (90, 40, 20, 255)
    background = rgba.copy()
    background[..., 3] = 255
    return figure, {"background": background, "hair_back": hair, "body": body, "Left Arm": arm}


def test_layer_names() -> None:
    assert normalise("Left Fore-Arm") == "forearm_l"
    assert normalise("Arm.R") == "arm_r"
    assert part_of("forearm_r") == "lower_arm_r"
    assert part_of("arm_l") == "upper_arm_l"
    assert part_of("Hair Front") == "hair_front"
    assert part_of("HEAD") == "head"
    assert part_of("right leg") == "upper_leg_r"
    assert part_of("Layer 1") is None


@pytest.mark.slow
def test_psd_layers_become_pack_layers_in_stacking_order(tmp_path: Path, data_dir: Path) -> None:
    figure, parts = _split_drawing()
    h, w = figure.shape[:2]
    hidden = np.zeros_like(figure)
    hidden[10:40, 10:40] = (255, 0, 0, 255)
    psd = write_psd(tmp_path / "art.psd", (w, h), [("background", parts["background"], True),
                                                    ("hair_back", parts["hair_back"], True),
                                                    ("body", parts["body"], True),
                                                    ("Left Arm", parts["Left Arm"], True),
                                                    ("head", hidden, False)])
    res = import_character(psd, "layered")
    assert res.method == "psd"
    loaded = pack.load(res.folder)
    m = loaded.manifest
    assert [la.part for la in m.layers] == ["hair_back", "body", "upper_arm_l"]
    z = {la.part: la.z for la in m.layers}
    assert z["hair_back"] < z["body"] < z["upper_arm_l"]      # the arm in front, the hair behind
    # Each layer keeps its own pixels: the arm layer holds only the arm.
    arm = loaded.layers[[la.part for la in m.layers].index("upper_arm_l")]
    assert 0 < (arm[..., 3] > 0.5).sum() < 0.2 * (loaded.layers[1][..., 3] > 0.5).sum()
    assert m.framing == "full"


def test_psd_without_usable_layers(tmp_path: Path, data_dir: Path) -> None:
    figure, parts = _split_drawing()
    h, w = figure.shape[:2]
    psd = write_psd(tmp_path / "flat.psd", (w, h), [("Background", parts["background"], True),
                                                     ("Layer 1", figure, True)])
    with pytest.raises(UserError) as e:
        import_character(psd, "flat")
    msg = str(e.value)
    assert "no usable layers" in msg and "Layer 1" in msg and "\n" not in msg
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


def test_damaged_psd(tmp_path: Path, data_dir: Path) -> None:
    figure, parts = _split_drawing()
    h, w = figure.shape[:2]
    good = write_psd(tmp_path / "good.psd", (w, h), [("body", figure, True)]).read_bytes()
    bad = tmp_path / "bad.psd"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError) as e:
        import_character(bad, "bad")
    assert "\n" not in str(e.value)
