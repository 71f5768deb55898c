"""Control API, OpenAPI, health, metrics, frame.png and the WebSocket event stream against a real
service (real generator and conditioner; perception is a stand-in: no camera here)."""
from __future__ import annotations

import aiohttp
import cv2
import numpy as np
import pytest

from liveavatar.server.config import ServerConfig
from tests.server.fakes import fake_perception_stages
from tests.server.harness import ServerThread, free_port, http, running_server


@pytest.fixture(scope="module")
def server():
    with running_server(size=128) as srv:
        yield srv


def post(server, path, body, **kw):
    return http(server.url + path, "POST", body, **kw)


def test_health_says_what_really_runs(server):
    status, body = http(server.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["generator"] == "auto" and body["device"] == "cpu"   # rig2d or mesh per character
    assert body["generator_info"]["device"] == "cpu"
    assert body["webrtc"]["library"] == "aiortc"


def test_health_is_503_until_warmed_up():
    import threading
    gate = threading.Event()
    cfg = ServerConfig(port=free_port(), size=64, demo=False)
    stages = fake_perception_stages(cfg)
    real_generator = stages.generator

    def slow_generator():
        gate.wait(30)
        return real_generator()
    stages.generator = slow_generator
    srv = ServerThread(cfg, stages).launch()
    try:
        status, body = http(srv.url + "/health")
        assert status == 503 and body["status"] == "warming_up"
        status, body = http(srv.url + "/whep/default", "POST", b"v=0\r\nm=video a=fingerprint: a=ice-ufrag:",
                            {"Content-Type": "application/sdp"})
        assert status == 503 and body["code"] == "warming_up"
        gate.set()
        srv.wait_healthy()
        assert http(srv.url + "/health")[0] == 200
    finally:
        gate.set()
        srv.stop()


def test_emotion_modes_and_sources_reach_the_conditioner(server):
    status, body = post(server, "/api/sessions/default/emotion",
                        {"name": "sad", "mode": "hold", "hold_s": 5, "intensity": 0.8, "source": "obs"})
    assert status == 200 and body["ok"] is True
    trig = [t for t in body["state"]["conditioning"]["triggers"] if t["emotion"] == "sad"]
    assert trig and trig[-1]["mode"] == "hold" and trig[-1]["source"] == "obs"
    status, body = post(server, "/api/sessions/default/emotion", {"name": "happy", "mode": "toggle"})
    assert status == 200
    assert any(t["emotion"] == "happy" and t["mode"] == "toggle" for t in body["state"]["conditioning"]["triggers"])


def test_unknown_names_get_4xx_naming_the_known_ones(server):
    status, body = post(server, "/api/sessions/default/emotion", {"name": "grumpy"})
    assert status == 400 and "unknown emotion 'grumpy'" in body["error"] and "happy" in body["error"]
    status, body = post(server, "/api/sessions/default/action", {"name": "moonwalk"})
    assert status == 400 and "unknown action 'moonwalk'" in body["error"] and "dance" in body["error"]
    status, body = post(server, "/api/sessions/default/character", {"name": "godzilla"})
    assert status == 404 and "nova" in body["error"]
    status, body = post(server, "/api/hotkey", {"name": "liveavatar.emotion.grumpy"})
    assert status == 400 and "grumpy" in body["error"]
    status, body = post(server, "/api/hotkey", {"name": "F13-nothing"})
    assert status == 400 and "unknown hotkey" in body["error"]
    status, body = post(server, "/api/sessions/nobody/emotion", {"name": "happy"})
    assert status == 404 and "nobody" in body["error"]


def test_malformed_requests_are_4xx_with_one_line(server):
    url = "/api/sessions/default/emotion"
    status, body = http(server.url + url, "POST", b'{"name": "happy"', {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = http(server.url + url, "POST", b'name=happy', {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in body["error"]
    status, body = post(server, url, {"name": "happy", "mode": "forever"})
    assert status == 422 and body["error"].startswith("mode:")
    status, body = post(server, url, {"name": "happy", "intensity": 7})
    assert status == 422 and "intensity" in body["error"]
    status, body = post(server, url, {"mode": "hold"})
    assert status == 422 and "name" in body["error"]
    status, body = http(server.url + url, "POST", b'{"name": "' + b"x" * 400_000 + b'"}',
                        {"Content-Type": "application/json"})
    assert status == 413
    status, body = http(server.url + "/api/sessions/bad%20id!/emotion", "POST", b"{}",
                        {"Content-Type": "application/json"})
    assert status == 404
    assert http(server.url + "/health")[0] == 200


def test_action_character_calibrate_and_hotkey(server):
    status, body = post(server, "/api/sessions/default/action", {"name": "dance", "source": "studio"})
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "dance"
    status, body = post(server, "/api/sessions/default/character", {"name": "nova"})
    assert status == 200 and body["state"]["character"] == "nova"
    status, body = post(server, "/api/sessions/default/calibrate", {})
    assert status == 200
    assert server.engine.sessions["default"].perception.calibrations == 1
    status, body = post(server, "/api/hotkey", {"name": "liveavatar.emotion.surprised", "session": "default"})
    assert status == 200
    triggers = body["state"]["conditioning"]["triggers"]
    assert any(t["emotion"] == "surprised" and t["source"] == "hotkey" for t in triggers)
    status, body = post(server, "/api/hotkey", {"name": "liveavatar.action.wave"})
    assert status == 200 and body["state"]["conditioning"]["action"]["name"] == "wave"


def test_state_lists_controls_with_keys_and_characters(server):
    status, st = http(server.url + "/api/sessions/default/state")
    assert status == 200
    emo = st["controls"]["emotions"]
    assert emo[0] == {"name": "neutral", "key": "1"} and emo[1] == {"name": "happy", "key": "2"}
    keys = [a["key"] for a in st["controls"]["actions"]]
    assert len(keys) == len(set(keys)) and all(len(k) == 1 and k.isalpha() for k in keys)
    assert {"name": "dance", "key": "d"} in st["controls"]["actions"]
    assert "nova" in st["characters"]


def test_frame_png_is_the_rgba_avatar_with_transparent_background(server):
    status, png = http(server.url + "/api/sessions/default/frame.png")
    assert status == 200
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (128, 128, 4)
    alpha = img[..., 3]
    assert alpha[:4, :4].max() == 0 and alpha[:4, -4:].max() == 0  # clear around the character
    assert 0.05 < (alpha == 255).mean() < 0.8                       # an opaque character in between


def test_openapi_documents_the_control_api(server):
    status, doc = http(server.url + "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for p in ("/api/sessions/{sid}/emotion", "/api/sessions/{sid}/action", "/api/sessions/{sid}/character",
              "/api/sessions/{sid}/calibrate", "/api/hotkey", "/whip/{sid}", "/whep/{sid}", "/health",
              "/metrics", "/api/events", "/api/sessions/{sid}/feeds", "/api/sessions/{sid}/frame.png"):
        assert p in doc["paths"], p
    emo = doc["components"]["schemas"]["EmotionRequest"]
    assert set(emo["properties"]) >= {"name", "mode", "hold_s", "intensity", "source"}
    assert "TriggerMode" in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["TriggerMode"]["enum"] == ["momentary", "toggle", "hold"]


def test_metrics_are_prometheus_text(server):
    status, text = http(server.url + "/metrics")
    assert status == 200
    from prometheus_client.parser import text_string_to_metric_families
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["liveavatar_ready"].samples[0].value == 1.0
    rendered = [s for s in fams["liveavatar_frames_rendered"].samples if s.labels.get("session") == "default"]
    assert rendered and rendered[0].value > 0
    assert "liveavatar_dropped_frames" in fams and "liveavatar_stage_ms" in fams


async def test_every_command_of_the_table_answers_over_http_and_the_websocket_alike(server):
    """One table (control.COMMANDS) makes both: the same body fails the same way on either, and a
    message whose type is no command (or not even a string) gets the one-line list of types."""
    from liveavatar.server import control
    assert set(control.COMMANDS) == {"emotion", "action", "character", "calibrate", "hotkey"}
    bad = {"emotion": {"name": "x y"}, "action": {"name": ""}, "character": {"name": "nobody"},
           "calibrate": {"source": "nowhere"}, "hotkey": {"name": "liveavatar.emotion.nope"}}
    async with aiohttp.ClientSession() as c:
        async with c.ws_connect(server.url.replace("http", "ws") + "/api/events?session=default") as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            for i, (kind, body) in enumerate(bad.items()):
                path = control.COMMANDS[kind].path.replace("{sid}", "default")
                status, reply = post(server, path, body)
                assert 400 <= status < 500, (kind, status, reply)
                await ws.send_json({"type": kind, **body, "id": i})
                while (m := await ws.receive_json(timeout=10)).get("id") != i:
                    pass
                assert m == {"type": "error", "error": reply["error"], "id": i}, kind
            for n, odd in enumerate(("dance", ["emotion"], None)):
                await ws.send_json({"type": odd, "id": 100 + n})
                while (m := await ws.receive_json(timeout=10)).get("id") != 100 + n:
                    pass
                assert m["type"] == "error" and m["error"] == (
                    f"unknown message type {odd!r}; use emotion, action, character, calibrate, hotkey, "
                    "subscribe or ping")


async def test_event_stream_carries_control_events_and_accepts_commands(server):
    async with aiohttp.ClientSession() as c:
        async with c.ws_connect(server.url.replace("http", "ws") + "/api/events?session=default") as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello" and hello["access"] == "control"
            assert hello["state"]["controls"]["emotions"][1]["name"] == "happy"
            await ws.send_json({"type": "emotion", "name": "excited", "source": "studio", "id": 7})
            await ws.send_json({"type": "emotion", "name": "nope", "id": 8})
            await ws.send_str("not json")
            await ws.send_json({"type": "subscribe", "cues": True, "id": 9})
            got, control, bad_json = {}, None, None
            for _ in range(50):
                m = await ws.receive_json(timeout=10)
                if "id" in m:
                    got[m["id"]] = m
                elif m["type"] == "error":
                    bad_json = m
                if m["type"] == "control" and m["name"] == "excited":
                    control = m
                if len(got) == 3 and control and bad_json:
                    break
            assert bad_json and "not valid JSON" in bad_json["error"]
            assert got[7]["type"] == "ack"
            assert got[7]["state"]["conditioning"]["emotion"]["distribution"]["excited"] >= 0
            assert got[8]["type"] == "error" and "unknown emotion 'nope'" in got[8]["error"]
            assert got[9]["type"] == "ack"
            assert control == {"type": "control", "session": "default", "kind": "emotion", "name": "excited",
                               "source": "studio", "mode": "momentary"}
            # An API call from elsewhere (OBS, a script) shows up on the stream too.
            await c.post(server.url + "/api/sessions/default/action", json={"name": "bow", "source": "obs"})
            for _ in range(50):
                m = await ws.receive_json(timeout=10)
                if m["type"] == "control" and m["name"] == "bow":
                    assert m["source"] == "obs"
                    break
            else:
                raise AssertionError("the API's action never reached the event stream")
            stats = None
            for _ in range(100):
                m = await ws.receive_json(timeout=10)
                if m["type"] == "stats":
                    stats = m
                    break
            assert stats and stats["fps_out"] > 0 and "dropped" in stats
    assert http(server.url + "/health")[0] == 200
