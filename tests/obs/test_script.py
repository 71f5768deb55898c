"""The OBS hotkey script: its pure helpers here, and inside real OBS 29 (loaded through the scene
collection like Tools > Scripts does) against a recording HTTP endpoint."""
from __future__ import annotations

import importlib.util
import time

import pytest

from liveavatar.types import ACTIONS, EMOTIONS
from tests.obs.conftest import SCRIPT, RecordingService
from tests.obs.headless import free_port


def load_script():
    spec = importlib.util.spec_from_file_location("liveavatar_obs_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = load_script()
pytestmark = pytest.mark.obs


def test_vocabulary_matches_liveavatar_types():
    assert script.EMOTIONS == EMOTIONS
    assert script.ACTIONS == tuple(a for a in ACTIONS if a != "none")


def test_script_imports_only_the_standard_library():
    import ast
    import sys
    tree = ast.parse(SCRIPT.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules - {"obspython"} <= set(sys.stdlib_module_names)


def test_scene_map_parsing_reports_bad_lines():
    mapping, problems = script.parse_scene_map(
        "# comment\nJust Chatting = Happy\nBRB=sad\nno equals sign\nGame = furious\n= happy\n")
    assert mapping == {"Just Chatting": "happy", "BRB": "sad"}
    assert len(problems) == 3
    assert "line 4" in problems[0] and "unknown emotion 'furious'" in problems[1]


def test_sender_logs_an_unreachable_service_and_keeps_going():
    logs: list[str] = []
    sender = script.Sender(logs.append)
    sender.start()
    config = script.Config(url=f"http://127.0.0.1:{free_port()}")
    sender.submit(config, *script.hotkey_payload(config, "liveavatar.emotion.sad"))
    service = RecordingService()
    try:
        ok = script.Config(url=service.url, token="t0k", session="stage")
        sender.submit(ok, *script.hotkey_payload(ok, "liveavatar.action.dance"))
        got = service.wait_for(1, 10)
    finally:
        sender.stop()
        service.close()
    assert sender.failed == 1 and sender.sent == 1
    assert logs and "could not reach" in logs[0]
    assert got[0][1] == "/api/hotkey"
    assert got[0][2]["Authorization"] == "Bearer t0k"
    assert got[0][3] == {"name": "liveavatar.action.dance", "session": "stage"}


# --------------------------------------------------------------------------------------------
# Inside real OBS
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service():
    s = RecordingService()
    yield s
    s.close()


@pytest.fixture(scope="module")
def obs_with_script(obs_factory, service):
    # Settings as OBS would have saved them: service URL, token, a scene map, and F2 bound to
    # "angry" (this is what checks that saved bindings are loaded back).
    settings = {"url": service.url, "token": "obs-secret", "scene_map": "Sad scene = sad\n",
                "liveavatar.emotion.angry": [{"key": "OBS_KEY_F2"}]}
    return obs_factory(scripts=[SCRIPT], script_settings={SCRIPT: settings},
                       extra_scenes=["Sad scene"])


def test_script_registers_one_hotkey_per_emotion_and_action(obs_with_script):
    with obs_with_script.client() as c:
        names = [h for h in c.send("GetHotkeyList", raw=True)["hotkeys"] if h.startswith("liveavatar.")]
    assert sorted(names) == sorted(script.hotkey_names())
    assert len(names) == len(EMOTIONS) + len(ACTIONS) - 1


def test_hotkey_press_sends_the_event_to_the_service(obs_with_script, service):
    before = len(service.requests)
    with obs_with_script.client() as c:
        c.send("TriggerHotkeyByName", {"hotkeyName": "liveavatar.emotion.happy"})
        c.send("TriggerHotkeyByName", {"hotkeyName": "liveavatar.action.head_shake"})
    got = service.wait_for(before + 2, 10)[before:]
    assert [(r[1], r[3]) for r in got] == [
        ("/api/hotkey", {"name": "liveavatar.emotion.happy", "session": "default"}),
        ("/api/hotkey", {"name": "liveavatar.action.head_shake", "session": "default"})]
    assert all(r[2]["Authorization"] == "Bearer obs-secret" for r in got)


def test_saved_key_binding_is_loaded(obs_with_script, service):
    before = len(service.requests)
    with obs_with_script.client() as c:
        c.send("TriggerHotkeyByKeySequence", {"keyId": "OBS_KEY_F2"})
    got = service.wait_for(before + 1, 10)[before:]
    assert got[0][3] == {"name": "liveavatar.emotion.angry", "session": "default"}


def test_switching_to_a_mapped_scene_sets_its_emotion(obs_with_script, service):
    before = len(service.requests)
    with obs_with_script.client() as c:
        c.send("SetCurrentProgramScene", {"sceneName": "Sad scene"})
        got = service.wait_for(before + 1, 10)[before:]
        c.send("SetCurrentProgramScene", {"sceneName": "Scene"})  # unmapped: nothing is sent
    assert got[0][1] == "/api/sessions/default/emotion"
    assert got[0][3] == {"name": "sad", "mode": "hold", "hold_s": 5.0, "source": "obs"}


def test_bindings_are_saved_and_failures_logged_on_shutdown(obs_factory):
    dead_url = f"http://127.0.0.1:{free_port()}"
    o = obs_factory(scripts=[SCRIPT], script_settings={SCRIPT: {
        "url": dead_url, "liveavatar.action.dance": [{"key": "OBS_KEY_F6", "shift": True}]}})
    with o.client() as c:
        c.send("TriggerHotkeyByName", {"hotkeyName": "liveavatar.emotion.shy"})
    deadline = time.monotonic() + 10
    while "could not reach" not in o.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    o.stop()  # SIGINT: OBS saves the collection, calling script_save
    saved = o.collection()["modules"]["scripts-tool"][0]["settings"]
    assert saved["liveavatar.action.dance"] == [{"key": "OBS_KEY_F6", "shift": True}]
    assert set(script.hotkey_names()) <= set(saved)
    log = o.log_text()
    assert f"{len(script.hotkey_names())} hotkeys registered" in log
    assert f"could not reach {dead_url}/api/hotkey" in log
