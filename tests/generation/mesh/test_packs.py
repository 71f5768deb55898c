"""Broken mesh packs: every problem is one line naming the file, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liveavatar.errors import UserError
from liveavatar.generation.mesh import MeshGenerator
from liveavatar.generation.mesh import pack as mesh_pack
from tests.generation.mesh.drawings import make_pack


def _broken(tmp: Path, how: str) -> Path:
    name = make_pack(2, tmp, "broken")
    folder = tmp / name
    mpath = folder / "character.json"
    m = json.loads(mpath.read_text())
    if how == "not json":
        mpath.write_text("{ nope")
        return folder
    if how == "format":
        m["format"] = "mesh/9"
    elif how == "no licence":
        del m["licence"]
    elif how == "unknown part":
        m["layers"][0]["part"] = "wing\nx"
    elif how == "missing joint":
        del m["joints"]["elbow_l"]
    elif how == "unknown joint":
        m["joints"]["tail_tip"] = {"x": 1, "y": 2}
    elif how == "nan joint":
        m["joints"]["head"]["x"] = float("nan")
    elif how == "layer outside":
        m["layers"][0]["file"] = "../../etc/passwd"
    elif how == "layer missing":
        m["layers"][0]["file"] = "nothere.png"
    elif how == "wrong size":
        Image.new("RGBA", (10, 10), (255, 0, 0, 255)).save(folder / "body.png")
    elif how == "transparent":
        Image.fromarray(np.zeros((392, 333, 4), np.uint8)).save(folder / "body.png")
    elif how == "not a png":
        (folder / "body.png").write_bytes(b"hello")
    elif how == "name differs":
        m["name"] = "other"
    elif how == "extra key":
        m["colour"] = "blue"
    mpath.write_text(json.dumps(m, allow_nan=True))
    return folder


CASES = ["not json", "format", "no licence", "unknown part", "missing joint", "unknown joint", "nan joint",
         "layer outside", "layer missing", "wrong size", "transparent", "not a png", "name differs", "extra key"]


@pytest.mark.parametrize("how", CASES)
def test_bad_pack_is_one_line_naming_the_file(tmp_path: Path, how: str) -> None:
    folder = _broken(tmp_path, how)
    with pytest.raises(UserError) as e:
        mesh_pack.load(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg, msg


def test_the_generator_reports_a_bad_pack_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAVATAR_DATA_DIR", str(tmp_path))
    _broken(tmp_path / "characters", "missing joint")
    gen = MeshGenerator(device="cpu", size=128)
    assert "broken" in gen.characters()
    with pytest.raises(UserError) as e:
        gen.prepare_character("broken")
    assert "\n" not in str(e.value) and "elbow_l" in str(e.value)


def test_names_with_path_tricks_are_refused() -> None:
    for bad in ("../x", "a/b", "", "UPPER", "x" * 65, "a\nb", ".hidden"):
        with pytest.raises(UserError) as e:
            mesh_pack.check_name(bad)
        assert "\n" not in str(e.value)
    assert mesh_pack.check_name("mia_2-b") == "mia_2-b"
