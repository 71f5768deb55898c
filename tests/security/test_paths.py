"""Character and model paths cannot escape their folders: names from the API, names given to the
pack loader, and file names inside a character manifest (including symlinks pointing out)."""
from __future__ import annotations

import json
import shutil

import pytest

from liveavatar.errors import UserError
from liveavatar.generation.characters import characters_dir, load_pack
from liveavatar.paths import safe_join
from tests.server.harness import http, running_server

ESCAPES = ["..", "../..", "../../etc/passwd", "/etc/passwd", "nova/../../..", "~root"]


@pytest.fixture()
def pack_root(tmp_path):
    """A private copy of the shipped nova pack to damage."""
    root = tmp_path / "characters"
    shutil.copytree(characters_dir() / "nova", root / "nova")
    return root


@pytest.mark.parametrize("name", ESCAPES)
def test_pack_loader_refuses_names_outside_the_characters_folder(pack_root, name):
    with pytest.raises(UserError) as e:
        load_pack(name, root=pack_root)
    msg = str(e.value)
    assert "\n" not in msg and (name in msg or "outside" in msg)


def test_manifest_file_names_cannot_point_outside_the_pack(pack_root, tmp_path):
    secret = tmp_path / "secret.png"
    shutil.copy(next((pack_root / "nova").rglob("*.png")), secret)  # a valid PNG outside the pack
    mpath = pack_root / "nova" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["parts"][0]["file"] = "../../secret.png"
    mpath.write_text(json.dumps(m))
    with pytest.raises(UserError) as e:
        load_pack("nova", root=pack_root)
    assert "outside" in str(e.value) and "manifest.json" in str(e.value)


def test_symlinked_layer_pointing_outside_is_refused(pack_root, tmp_path):
    outside = tmp_path / "elsewhere.png"
    m = json.loads((pack_root / "nova" / "manifest.json").read_text())
    layer = pack_root / "nova" / m["parts"][0]["file"]
    shutil.copy(layer, outside)
    layer.unlink()
    layer.symlink_to(outside)
    with pytest.raises(UserError) as e:
        load_pack("nova", root=pack_root)
    assert "outside" in str(e.value)


def test_symlinked_pack_folder_pointing_outside_is_refused(pack_root, tmp_path):
    shutil.copytree(pack_root / "nova", tmp_path / "stolen")
    (pack_root / "stolen").symlink_to(tmp_path / "stolen")
    with pytest.raises(UserError) as e:
        load_pack("stolen", root=pack_root)
    assert "outside" in str(e.value)


def test_safe_join_keeps_inside_paths(tmp_path):
    (tmp_path / "a").mkdir()
    assert safe_join(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(UserError):
            safe_join(tmp_path, bad)


@pytest.fixture(scope="module")
def server():
    with running_server(size=64) as srv:
        yield srv


@pytest.mark.parametrize("name", ESCAPES + ["nova/../bolt", "nova\\..\\..", "%2e%2e"])
def test_character_api_refuses_escaping_names(server, name):
    status, reply = http(server.url + "/api/sessions/default/character", "POST", {"name": name})
    assert status in (404, 422), reply
    assert "\n" not in reply["error"]
    assert server.engine.sessions["default"].character == "nova"


@pytest.mark.parametrize("sid", ["..", "../etc", "a/b", "x" * 65])
def test_session_ids_are_confined(server, sid):
    from urllib.parse import quote
    status, reply = http(server.url + f"/api/sessions/{quote(sid, safe='')}/emotion", "POST", {"name": "happy"})
    assert status in (400, 404), reply
    assert set(server.engine.sessions) == {"default"}


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx"])
def test_neural_model_file_cannot_point_outside_its_folder(tmp_path, rel):
    """A neural manifest entry naming a file outside the models folder is refused before any
    file is opened (hashing or loading /etc/passwd would be a read outside the folder)."""
    from liveavatar.generation.neural import manifest
    from liveavatar.generation.neural.runtime import OnnxCharacterModel
    folder = tmp_path / "neural"
    folder.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"not a model")
    entry = manifest.ModelEntry(character="nova", file=rel, sha256="0" * 64, size=11, opset=17, inputs=[],
                                outputs=[], cond_layout=[], net_config={},
                                training=manifest.Training(mode="from-character", source="nova"))
    with pytest.raises(UserError) as e:
        OnnxCharacterModel(folder, entry, "cpu")
    assert "outside" in str(e.value) and "manifest" in str(e.value)
