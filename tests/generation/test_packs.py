"""Character packs: the shipped ones load and are licensed; broken packs get one-line errors that
name the file (missing layer, bad manifest, a path escaping the folder, wrong layer size)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from liveavatar.errors import ConfigError, NotFoundError, UserError
from liveavatar.generation import registry
from liveavatar.generation.characters import characters_dir, list_characters, load_pack
from liveavatar.generation.rig2d import Rig2DGenerator
from liveavatar.types import EMOTIONS, VISEMES


def test_shipped_packs_are_complete_small_and_licensed():
    names = list_characters()
    assert "nova" in names and "bolt" in names
    for name in ("nova", "bolt"):
        pack = load_pack(name)
        assert pack.manifest.licence == "CC0-1.0"
        assert set(pack.expressions) == set(EMOTIONS)
        assert all(set(e.mouth) == set(VISEMES) for e in pack.expressions.values())
        size = sum(f.stat().st_size for f in (characters_dir() / name).rglob("*") if f.is_file())
        assert size < 1_000_000
        # Premultiplied: colour never exceeds alpha.
        for img in pack.part_images.values():
            assert np.all(img[:3] <= img[3:4] + 1e-6)


def test_the_two_characters_look_clearly_different(rig):
    from liveavatar.types import Conditioning
    a, b = rig.render([Conditioning.neutral()] * 2, ["nova", "bolt"])
    body = (a[..., 3] > 0) & (b[..., 3] > 0)
    colour_gap = np.abs(a[..., :3].astype(int) - b[..., :3].astype(int))[body].mean()
    assert colour_gap > 40


@pytest.fixture
def pack_copy(tmp_path):
    root = tmp_path / "characters"
    shutil.copytree(characters_dir() / "nova", root / "mine")
    return root


def _edit_manifest(root, fn):
    mpath = root / "mine" / "manifest.json"
    m = json.loads(mpath.read_text())
    fn(m)
    mpath.write_text(json.dumps(m))
    return mpath


def test_missing_layer_names_the_file(pack_copy):
    (pack_copy / "mine" / "parts" / "hand_l.png").unlink()
    with pytest.raises(NotFoundError, match=r"parts/hand_l\.png: layer file missing"):
        load_pack("mine", root=pack_copy)


def test_missing_expression_layer_names_the_file(pack_copy):
    (pack_copy / "mine" / "face" / "mouth_sad_O.png").unlink()
    with pytest.raises(NotFoundError, match=r"mouth_sad_O\.png"):
        load_pack("mine", root=pack_copy)


def test_manifest_that_is_not_json(pack_copy):
    (pack_copy / "mine" / "manifest.json").write_text("{ not json")
    with pytest.raises(ConfigError, match=r"mine/manifest\.json: not valid JSON"):
        load_pack("mine", root=pack_copy)


def test_manifest_without_licence_names_the_key(pack_copy):
    _edit_manifest(pack_copy, lambda m: m.pop("licence"))
    with pytest.raises(ConfigError, match=r"manifest\.json: licence: Field required"):
        load_pack("mine", root=pack_copy)


def test_manifest_with_unknown_bone_names_the_key(pack_copy):
    _edit_manifest(pack_copy, lambda m: m["parts"][0].update(bone="tail"))
    with pytest.raises(ConfigError, match=r"manifest\.json: parts\.0\.bone: .*unknown bone 'tail'"):
        load_pack("mine", root=pack_copy)


def test_layer_path_outside_the_pack_is_refused(pack_copy, tmp_path):
    (tmp_path / "secret.png").write_bytes((pack_copy / "mine" / "parts" / "torso.png").read_bytes())
    _edit_manifest(pack_copy, lambda m: m["parts"][0].update(file="../../secret.png"))
    with pytest.raises(UserError, match=r"manifest\.json: parts\[torso\]\.file '\.\./\.\./secret\.png' points outside"):
        load_pack("mine", root=pack_copy)


def test_layer_of_the_wrong_size_names_the_file(pack_copy):
    from PIL import Image
    Image.new("RGBA", (10, 10)).save(pack_copy / "mine" / "face" / "pupils.png")
    with pytest.raises(ConfigError, match=r"face/pupils\.png: is 10x10, face\.pupils needs 88x30"):
        load_pack("mine", root=pack_copy)


def test_corrupt_png_names_the_file(pack_copy):
    (pack_copy / "mine" / "parts" / "neck.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"parts/neck\.png: not a readable PNG"):
        load_pack("mine", root=pack_copy)


def test_unknown_character_lists_the_available_ones(monkeypatch, pack_copy):
    monkeypatch.setenv("LIVEAVATAR_MODELS", str(pack_copy.parent))
    g = Rig2DGenerator("cpu", 128)
    with pytest.raises(NotFoundError, match=r"unknown character 'nobody'.*available: mine"):
        g.prepare_character("nobody")
    with pytest.raises(UserError, match="points outside"):
        g.prepare_character("../../etc")
    with pytest.raises(UserError, match="must be a folder name directly under"):
        g.prepare_character("mine/parts")
    g.prepare_character("mine")     # a user's own pack folder, found through LIVEAVATAR_MODELS
    assert g.characters() == ["mine"]


def test_registry_selects_rig2d_by_name_and_device():
    g = registry.create("rig2d", device="cpu", size=128)
    assert isinstance(g, Rig2DGenerator)
    assert g.info()["device"] == "cpu" and g.info()["characters_loaded"] == ["nova"]
    with pytest.raises(UserError, match="unknown generator 'nope'"):
        registry.create("nope")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        registry.create("rig2d", device="tpu")
