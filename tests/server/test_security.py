"""Tokens, the read-only viewer token, CORS / origin checks, DNS-rebinding guard, stored tokens."""
from __future__ import annotations

import json
import os
import stat

import aiohttp
import pytest

from liveavatar.errors import ConfigError
from liveavatar.server import config as config_mod
from liveavatar.server.config import ServerConfig
from tests.server.harness import http, running_server
from tests.server.rtc_clients import Player

CONTROL, VIEWER = "control-secret-123", "viewer-secret-456"


@pytest.fixture(scope="module")
def guarded():
    with running_server(size=64, token=CONTROL, viewer_token=VIEWER,
                        allow_origins=["https://overlay.example"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def open_local():
    with running_server(size=64) as srv:
        yield srv


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


def test_control_needs_the_control_token(guarded):
    url = guarded.url + "/api/sessions/default/emotion"
    status, body = http(url, "POST", {"name": "happy"})
    assert status == 401 and "missing token" in body["error"]
    status, body = http(url, "POST", {"name": "happy"}, bearer("guess"))
    assert status == 401 and "wrong token" in body["error"]
    status, body = http(url, "POST", {"name": "happy"}, bearer(VIEWER))
    assert status == 403 and "read-only" in body["error"]
    assert http(url, "POST", {"name": "happy"}, bearer(CONTROL))[0] == 200
    assert http(url + f"?token={CONTROL}", "POST", {"name": "happy"})[0] == 200
    # Ingest is control too: a viewer token cannot publish a camera.
    status, _ = http(guarded.url + "/whip/default", "POST", b"v=0", {"Content-Type": "application/sdp",
                                                                     **bearer(VIEWER)})
    assert status == 403


def test_viewer_token_reads_but_cannot_drive(guarded):
    assert http(guarded.url + "/api/sessions/default/state")[0] == 401
    status, st = http(guarded.url + "/api/sessions/default/state", headers=bearer(VIEWER))
    assert status == 200 and st["session"] == "default"
    assert http(guarded.url + "/api/sessions/default/frame.png", headers=bearer(VIEWER))[0] == 200
    assert http(guarded.url + "/metrics")[0] == 401
    # Pages themselves carry no secrets; health stays open for monitoring.
    assert http(guarded.url + "/viewer")[0] == 200
    assert http(guarded.url + "/health")[0] == 200


async def test_whep_with_viewer_token_and_without(guarded):
    player = await Player().start(guarded.url + "/whep/default", headers=bearer(VIEWER))
    try:
        await player.wait_frames(3)
    finally:
        await player.close()
    with pytest.raises(AssertionError, match="401"):
        await Player().start(guarded.url + "/whep/default")


async def test_event_stream_is_read_only_for_viewers(guarded):
    ws_url = guarded.url.replace("http", "ws") + "/api/events?session=default"
    async with aiohttp.ClientSession() as c:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await c.ws_connect(ws_url)
        assert e.value.status == 401
        async with c.ws_connect(ws_url + f"&token={VIEWER}") as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["access"] == "view"
            await ws.send_json({"type": "emotion", "name": "happy", "id": 1})
            for _ in range(50):
                m = await ws.receive_json(timeout=10)
                if m.get("id") == 1:
                    assert m["type"] == "error" and "read-only" in m["error"]
                    break
            else:
                raise AssertionError("no reply to the viewer's control attempt")


def test_cors_is_limited_to_our_own_origin(guarded):
    url = guarded.url + "/api/sessions/default/emotion"
    status, body = http(url, "POST", {"name": "happy"}, {**bearer(CONTROL), "Origin": "https://evil.example"})
    assert status == 403 and "evil.example" in body["error"]
    status, _ = http(url, "OPTIONS", None, {"Origin": "https://evil.example",
                                            "Access-Control-Request-Method": "POST"})
    assert status == 403
    # Our own pages (same origin) and explicitly allowed origins work.
    own = guarded.url
    assert http(url, "POST", {"name": "happy"}, {**bearer(CONTROL), "Origin": own})[0] == 200
    import urllib.request
    req = urllib.request.Request(url, method="OPTIONS", headers={"Origin": "https://overlay.example",
                                                                 "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://overlay.example"
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


def test_open_localhost_service_refuses_foreign_hosts_and_origins(open_local):
    url = open_local.url + "/api/sessions/default/emotion"
    assert http(url, "POST", {"name": "happy"})[0] == 200  # no token needed on 127.0.0.1
    # A web page elsewhere cannot drive it from the streamer's browser ...
    status, _ = http(url, "POST", {"name": "happy"}, {"Origin": "http://attacker.example"})
    assert status == 403
    # ... nor through DNS rebinding (its own name resolving to 127.0.0.1).
    status, body = http(url, "POST", {"name": "happy"}, {"Host": f"attacker.example:{open_local.cfg.port}"})
    assert status == 403 and "localhost" in body["error"]


def test_tokens_are_generated_once_and_kept_private(tmp_path):
    p = tmp_path / "cfg" / "server-tokens.json"
    tok, viewer, created = config_mod.load_or_create_tokens(p)
    assert created and len(tok) >= 24 and tok != viewer
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    again = config_mod.load_or_create_tokens(p)
    assert again == (tok, viewer, False)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="server-tokens.json"):
        config_mod.load_or_create_tokens(p)


def test_whip_answers_list_configured_ice_servers():
    from liveavatar.server.signalling import ice_links
    cfg = ServerConfig(ice_servers=["stun:stun.example:3478", "turn:turn.example:3478"],
                       ice_username="mia", ice_credential="pw")
    links = ice_links(cfg)
    assert links[0] == '<stun:stun.example:3478>; rel="ice-server"'
    assert 'username="mia"' in links[1] and 'credential="pw"' in links[1]
    assert ice_links(ServerConfig()) == []  # offline by default: no STUN lookups at all


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="size"):
        config_mod.build(size=333)
    with pytest.raises(ConfigError, match="ice_servers"):
        config_mod.build(ice_servers=["http://stun.example"])
    assert config_mod.build(host="0.0.0.0").loopback_only is False
    assert config_mod.build(host="127.0.0.1").loopback_only is True
    assert json.loads(config_mod.build(port=9000).model_dump_json())["port"] == 9000
