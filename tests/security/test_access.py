"""Access control of the live service, against a real service on a free port (real generator and
conditioner; perception is the server's stand-in: these tests are about the HTTP surface).

Off localhost a token is required for control and ingest, a viewer token only reads, tokens are
compared in constant time, hosts and origins that are not ours are refused, and bodies are
size-limited."""
from __future__ import annotations

import hmac
import http.client as httpclient
import json

import pytest

from liveavatar.server import security as server_security
from liveavatar.server.config import ServerConfig
from tests.server.harness import http, running_server

TOKEN = "ctl-5d1c0b7e9a3f4e21b6c8d2f0"
VIEWER = "view-8f2e4a6c1b3d5e7f9a0c2e4b"
SIZE = 64
CONTROL_CALLS = [
    ("POST", "/api/sessions/default/emotion", {"name": "happy"}),
    ("POST", "/api/sessions/default/action", {"name": "wave"}),
    ("POST", "/api/sessions/default/calibrate", {}),
    ("POST", "/api/sessions/default/character", {"name": "nova"}),
    ("POST", "/api/hotkey", {"name": "liveavatar.emotion.happy"}),
    ("DELETE", "/api/sessions/default/feeds", None),
]
READ_CALLS = ["/api/sessions/default/state", "/api/sessions", "/metrics", "/api/config",
              "/api/sessions/default/frame.png"]


@pytest.fixture(scope="module")
def remote():
    """Bound beyond localhost (0.0.0.0) with control and viewer tokens, as `serve --host 0.0.0.0`."""
    with running_server(host="0.0.0.0", size=SIZE, token=TOKEN, viewer_token=VIEWER) as srv:
        yield srv


@pytest.fixture(scope="module")
def local():
    with running_server(size=SIZE) as srv:
        yield srv


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def test_default_bind_is_localhost_without_token():
    import inspect

    from liveavatar.commands.serve import serve
    cfg = ServerConfig()
    assert cfg.host == "127.0.0.1" and cfg.loopback_only and not cfg.auth_required
    assert inspect.signature(serve).parameters["host"].default.default == "127.0.0.1"
    assert not ServerConfig(host="0.0.0.0").loopback_only
    assert not ServerConfig(host="192.168.1.20").loopback_only
    assert ServerConfig(host="::1").loopback_only


@pytest.mark.parametrize("method,path,body", CONTROL_CALLS)
def test_control_needs_the_control_token(remote, method, path, body):
    status, reply = http(remote.url + path, method, body)
    assert status == 401, reply
    assert "missing token" in reply["error"]
    status, reply = http(remote.url + path, method, body, bearer("not-the-token"))
    assert status == 401 and "wrong token" in reply["error"]
    status, reply = http(remote.url + path, method, body, bearer(VIEWER))
    assert status == 403 and "read-only" in reply["error"]
    status, reply = http(remote.url + path, method, body, bearer(TOKEN))
    assert status == 200, reply
    assert reply["ok"] is True


def test_query_token_works_like_the_header(remote):
    url = remote.url + "/api/sessions/default/emotion"
    assert http(url + "?token=nope", "POST", {"name": "happy"})[0] == 401
    assert http(url + f"?token={VIEWER}", "POST", {"name": "happy"})[0] == 403
    status, reply = http(url + f"?token={TOKEN}", "POST", {"name": "happy"})
    assert status == 200 and reply["ok"] is True


@pytest.mark.parametrize("path", READ_CALLS)
def test_reads_need_at_least_the_viewer_token(remote, path):
    assert http(remote.url + path)[0] == 401
    assert http(remote.url + path, headers=bearer("guess"))[0] == 401
    assert http(remote.url + path, headers=bearer(VIEWER))[0] == 200
    assert http(remote.url + path, headers=bearer(TOKEN))[0] == 200


def test_health_and_openapi_are_public_and_leak_no_token(remote):
    for path in ("/health", "/api/openapi.json"):
        status, body = http(remote.url + path)
        assert status == 200
        text = json.dumps(body)
        assert TOKEN not in text and VIEWER not in text


def test_ingest_needs_the_control_token(remote):
    """WHIP is ingest: without the control token nobody can drive the streamer's character."""
    offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    sdp = {"Content-Type": "application/sdp"}
    for headers, want in (({}, 401), (bearer("x"), 401), (bearer(VIEWER), 403)):
        status, reply = http(remote.url + "/whip/default", "POST", offer.encode(), {**sdp, **headers})
        assert status == want, reply
    # with the token the request gets past auth and fails on the (useless) offer: a 4xx, not 401/403
    status, reply = http(remote.url + "/whip/default", "POST", offer.encode(), {**sdp, **bearer(TOKEN)})
    assert 400 <= status < 500 and status not in (401, 403), reply
    # WHEP (playback) needs at least the viewer token
    assert http(remote.url + "/whep/default", "POST", offer.encode(), sdp)[0] == 401


def test_events_socket_needs_a_token_and_viewer_cannot_control(remote):
    import asyncio

    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as c:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await c.ws_connect(remote.url + "/api/events")
            assert e.value.status == 401
            async with c.ws_connect(remote.url + f"/api/events?token={VIEWER}") as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["access"] == "view"
                await ws.send_json({"type": "emotion", "name": "angry", "id": 7})
                while True:
                    reply = await ws.receive_json(timeout=10)
                    if reply.get("id") == 7:
                        break
                assert reply["type"] == "error" and "read-only" in reply["error"]
    asyncio.run(go())


def test_tokens_are_compared_in_constant_time(remote, monkeypatch):
    """Every token check goes through hmac.compare_digest (no early-exit string compare)."""
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)
    monkeypatch.setattr(server_security.hmac, "compare_digest", spy)
    http(remote.url + "/api/sessions/default/state", headers=bearer("wrong-guess"))
    http(remote.url + "/api/sessions/default/state", headers=bearer(VIEWER))
    presented = {a for a, _ in seen}
    expected = {b for _, b in seen}
    assert b"wrong-guess" in presented and VIEWER.encode() in presented
    assert TOKEN.encode() in expected and VIEWER.encode() in expected


def test_localhost_service_refuses_foreign_host_headers(local):
    """DNS rebinding: a web page on evil.example resolving to 127.0.0.1 must not drive an open
    (token-less) local service."""
    status, reply = http(local.url + "/api/sessions/default/emotion", "POST", {"name": "happy"},
                         {"Host": "evil.example:8080"})
    assert status == 403 and "refused" in reply["error"]
    assert http(local.url + "/api/sessions/default/emotion", "POST", {"name": "happy"})[0] == 200


def test_foreign_origins_are_refused(local):
    status, reply = http(local.url + "/api/sessions/default/emotion", "POST", {"name": "happy"},
                         {"Origin": "https://evil.example"})
    assert status == 403 and "origin" in reply["error"]
    own = local.url.replace("127.0.0.1", "127.0.0.1")
    assert http(local.url + "/api/sessions/default/emotion", "POST", {"name": "happy"},
                {"Origin": own})[0] == 200


def test_bodies_are_size_limited(local):
    limit = local.cfg.max_body_bytes
    big = json.dumps({"name": "happy", "pad": "x" * (limit + 10)}).encode()
    status, reply = http(local.url + "/api/sessions/default/emotion", "POST", big,
                         {"Content-Type": "application/json"})
    assert status == 413 and str(limit) in reply["error"]
    sdp = b"v=0\r\n" + b"a=x\r\n" * (limit // 4)
    status, reply = http(local.url + "/whip/default", "POST", sdp, {"Content-Type": "application/sdp"})
    assert status == 413 and "too large" in reply["error"]
    # the service is still fine afterwards
    assert http(local.url + "/api/sessions/default/emotion", "POST", {"name": "happy"})[0] == 200


def test_websocket_messages_are_size_limited(local):
    import asyncio

    import aiohttp

    async def go():
        async with aiohttp.ClientSession() as c:
            async with c.ws_connect(local.url + "/api/events") as ws:
                await ws.receive_json(timeout=10)
                await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 70000}))
                msg = await ws.receive(timeout=10)
                while msg.type == aiohttp.WSMsgType.TEXT:  # stats events may come first
                    msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    asyncio.run(go())
    assert http(local.url + "/health")[0] == 200


@pytest.mark.parametrize("raw_path", ["/static/../app.py", "/static/%2e%2e/app.py",
                                      "/static/..%2fconfig.py", "/static//etc/passwd",
                                      "/studio/../../server/config.py"])
def test_static_files_cannot_escape_their_folder(local, raw_path):
    conn = httpclient.HTTPConnection("127.0.0.1", local.cfg.port, timeout=10)
    conn.request("GET", raw_path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status in (400, 403, 404), (resp.status, body[:200])
    assert b"import" not in body and b"root:" not in body
