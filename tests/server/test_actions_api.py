"""Imported and recorded actions over HTTP, against a real service (real generator and
conditioner; perception is the stand-in, so a recorded take is the idle motion the avatar shows):
they are listed (/api/actions, OpenAPI, the studio's keys), triggered like built-ins (API,
hotkeys), recorded as takes that play at once, and removed; bad requests are one-line 4xx."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from liveavatar.conditioning import action_files as af
from liveavatar.paths import actions_dir
from liveavatar.server.config import ServerConfig
from tests.server.conftest import ServerThread, free_port, http
from tests.server.fakes import fake_perception_stages

BVH = Path(__file__).resolve().parents[2] / ".." / "shared" / "media" / "bvh" / "dab.bvh"


@pytest.fixture(scope="module")
def server():
    folder = actions_dir()
    af.save_action(af.import_bvh(BVH, "dab", end_s=3.0), replace=True)   # imported before the service starts
    cfg = ServerConfig(port=free_port(), size=96, demo=False)
    srv = ServerThread(cfg, fake_perception_stages(cfg)).start()
    yield srv
    srv.stop()
    shutil.rmtree(folder, ignore_errors=True)


def post(server, path, body):
    return http(server.url + path, "POST", body)


def test_imported_actions_are_listed_everywhere(server):
    status, body = http(server.url + "/api/actions")
    assert status == 200
    assert "wave" in body["builtin"] and [a["name"] for a in body["imported"]] == ["dab"]
    assert body["all"][-1] == "dab" and body["imported"][0]["frames"] == 91
    status, spec = http(server.url + "/api/openapi.json")
    assert "dab" in spec["components"]["schemas"]["ActionRequest"]["properties"]["name"]["examples"]
    assert "/api/sessions/{sid}/actions/record" in spec["paths"]
    assert "RecordRequest" in spec["components"]["schemas"]
    status, state = http(server.url + "/api/sessions/default/state")
    keys = {a["name"]: a["key"] for a in state["controls"]["actions"]}
    assert "dab" in keys and keys["dab"] and len(set(keys.values())) == len(keys)   # a studio key of its own


def test_imported_action_triggers_like_a_built_in(server):
    status, body = post(server, "/api/sessions/default/action", {"name": "dab", "source": "studio"})
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "dab"
    assert body["state"]["conditioning"]["action"]["source"] == "studio"
    status, body = post(server, "/api/hotkey", {"name": "liveavatar.action.dab"})
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "dab"
    status, body = post(server, "/api/sessions/default/action", {"name": "none"})
    assert status == 200


def test_record_a_take_then_play_export_and_remove_it(server, tmp_path):
    status, body = post(server, "/api/sessions/default/actions/record",
                        {"name": "my-take", "seconds": 3, "countdown_s": 0.2, "parts": "upper"})
    assert status == 200, body
    assert body["action"]["name"] == "my-take" and body["action"]["parts"] == "upper"
    assert 80 <= body["action"]["frames"] <= 95 and "my-take" in body["actions"]
    # bindable at once: every live session knows it without a restart
    status, body = post(server, "/api/sessions/default/action", {"name": "my-take"})
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "my-take"
    status, act = http(server.url + "/api/actions/my-take")
    assert status == 200 and act["source"]["kind"] == "recorded"
    assert len(act["frames"]) >= 80 and len(act["frames"][0]) == len(af.CHANNELS)
    # exported and imported again: the same motion
    saved = af.load_action(actions_dir() / "my-take.json")
    out = tmp_path / "take.bvh"
    out.write_text(af.export_bvh(saved))
    again = af.import_bvh(out, "again", projection="frontal").array()
    d = (again[:, :af.NB] - saved.array()[:, :af.NB] + np.pi) % (2 * np.pi) - np.pi
    assert np.degrees(np.abs(d)).max() < 0.5
    status, body = http(server.url + "/api/actions/my-take", "DELETE")
    assert status == 200
    status, body = http(server.url + "/api/actions")
    assert "my-take" not in body["all"]
    status, body = post(server, "/api/sessions/default/action", {"name": "my-take"})
    assert status == 400 and "unknown action 'my-take'" in body["error"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"name": "wave", "seconds": 3}, 400, "'wave' is a built-in action"),
    ({"name": "dab", "seconds": 3}, 400, "an action called 'dab' exists already"),
    ({"name": "ok-name", "seconds": 20}, 422, "seconds:"),
    ({"name": "Bad Name", "seconds": 3}, 422, "name:"),
    ({"name": "ok-name", "parts": "tail"}, 422, "parts:"),
])
def test_bad_record_requests_are_one_line_4xx(server, body, status, message):
    got, resp = post(server, "/api/sessions/default/actions/record", body)
    assert got == status and message in resp["error"] and "\n" not in resp["error"], resp
    assert not (actions_dir() / "ok-name.json").exists()


def test_unknown_session_and_action_are_404(server):
    status, body = post(server, "/api/sessions/nobody/actions/record", {"name": "x1", "seconds": 3})
    assert status == 404 and "nobody" in body["error"]
    status, body = http(server.url + "/api/actions/nothing-here")
    assert status == 404
    status, body = http(server.url + "/api/actions/nothing-here", "DELETE")
    assert status == 404 and "no imported action called 'nothing-here'" in body["error"]
    status, body = http(server.url + "/api/actions/wave", "DELETE")
    assert status == 400 and "built-in" in body["error"]


def test_the_obs_script_lists_imported_actions_from_the_service(server):
    import importlib.util
    script_path = Path(__file__).resolve().parents[2] / "integrations" / "obs" / "liveavatar_obs.py"
    spec = importlib.util.spec_from_file_location("liveavatar_obs_script_actions", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    names = script.fetch_actions(server.url, "", "default")
    assert names == ["dab"]
    hotkeys = script.hotkey_names(names)
    assert "liveavatar.action.dab" in hotkeys and "liveavatar.action.wave" in hotkeys
    assert script.hotkey_description("liveavatar.action.dab") == "LiveAvatar: action dab"
    # what an OBS hotkey press sends resolves like any built-in
    status, body = post(server, *script.hotkey_payload(script.Config(url=server.url), "liveavatar.action.dab"))
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "dab"
    assert script.imported_from_listing({"all": ["dance", "dab", "Bad Name", 3]}) == ["dab"]
    assert script.split_names("dab,,my-take,Bad") == ["dab", "my-take"]


def test_a_character_pack_brings_its_own_actions(server):
    from liveavatar.paths import data_dir
    own = data_dir() / "characters" / "nova" / "actions"
    wave = af.import_bvh(BVH.parent / "wave_hello.bvh", "wave-hello").model_copy(update={"name": "wave"})
    af.save_action(wave, own)
    af.save_action(af.import_bvh(BVH.parent / "zombie.bvh", "nova-zombie", end_s=4.0), own)
    try:
        status, _ = post(server, "/api/sessions/default/character", {"name": "nova"})
        assert status == 200
        status, body = http(server.url + "/api/actions")
        origins = {a["name"]: a["origin"] for a in body["imported"]}
        assert origins == {"wave": "character", "nova-zombie": "character", "dab": "user"}
        assert "nova-zombie" in body["all"] and body["all"].count("wave") == 1
        status, body = post(server, "/api/sessions/default/action", {"name": "nova-zombie"})
        assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "nova-zombie"
        status, body = post(server, "/api/sessions/default/character", {"name": "bolt"})
        status, body = http(server.url + "/api/actions")
        assert "nova-zombie" not in body["all"] and [a["name"] for a in body["imported"]] == ["dab"]
    finally:
        shutil.rmtree(own.parent.parent, ignore_errors=True)
        post(server, "/api/sessions/default/character", {"name": "nova"})
