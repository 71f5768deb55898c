"""The VTube Studio-compatible API driven by an independent client, PyPI `pyvts`, the way VTS
plugins use it: token request (approved through the studio's approval endpoint), authenticate,
then models, hotkeys, expressions and injected face parameters; plus VTS-style errors."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets

from liveavatar.server.config import ServerConfig
from liveavatar.types import FP
from tests.server.conftest import ServerThread, free_port, http, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = pytest.mark.slow
API = {"version": "1.0", "name": "VTubeStudioPublicAPI", "host": "127.0.0.1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LIVEAVATAR_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    cfg = ServerConfig(port=free_port(), size=128, demo=False, vts_port=free_port())
    srv = ServerThread(cfg, fake_perception_stages(cfg)).start()
    wait_until(lambda: _vts(srv) is not None, timeout=20, what="the VTS endpoint")
    yield srv
    srv.stop()
    mp.undo()


def _vts(srv):
    from liveavatar.interop.service import INTEROP
    return srv.app[INTEROP].vts


def plugin(server, tmp_path, name="LiveAvatarTest"):
    import pyvts
    return pyvts.vts(plugin_info={"plugin_name": name, "developer": "issue17",
                                  "authentication_token_path": str(tmp_path / f"{name}.token")},
                     vts_api_info={**API, "port": server.cfg.vts_port})


async def approve_when_asked(server, allow: bool = True) -> str:
    """What the studio page does: see the pending request, answer it."""
    for _ in range(200):
        status, body = await asyncio.to_thread(http, server.url + "/api/vts/approvals")
        if status == 200 and body["pending"]:
            req = body["pending"][0]
            status, _ = await asyncio.to_thread(http, server.url + f"/api/vts/approvals/{req['id']}", "POST",
                                                {"allow": allow})
            assert status == 200
            return req["plugin"]
        await asyncio.sleep(0.05)
    raise AssertionError("no plugin asked for permission")


async def test_pyvts_token_flow_hotkeys_expressions_models_and_injection(server, tmp_path):
    vts = plugin(server, tmp_path)
    await vts.connect()
    try:
        state = await vts.request(vts.vts_request.BaseRequest("APIStateRequest"))
        assert state["messageType"] == "APIStateResponse" and state["data"]["currentSessionAuthenticated"] is False
        approver = asyncio.ensure_future(approve_when_asked(server))
        await vts.request_authenticate_token()
        assert await approver == "LiveAvatarTest"
        assert vts.authentic_token and await vts.request_authenticate()

        s = server.engine.sessions["default"]
        model = await vts.request(vts.vts_request.BaseRequest("CurrentModelRequest"))
        assert model["data"]["modelLoaded"] and model["data"]["modelName"] == s.character
        models = (await vts.request(vts.vts_request.BaseRequest("AvailableModelsRequest")))["data"]
        assert {m["modelID"] for m in models["availableModels"]} == set(server.engine.characters())

        keys = (await vts.request(vts.vts_request.requestHotKeyList()))["data"]["availableHotkeys"]
        ids = {k["hotkeyID"] for k in keys}
        assert {"emotion.happy", "action.wave"} <= ids
        seen = []
        s.tick_taps.append(seen.append)
        try:
            reply = await vts.request(vts.vts_request.requestTriggerHotKey("emotion.happy"))
            assert reply["messageType"] == "HotkeyTriggerResponse", reply
            happy = list(s.conditioner.emotions).index("happy")
            await asyncio.to_thread(wait_until, lambda: seen and seen[-1].emotion[happy] > 0.5, 5, 0.05,
                                    "the happy expression on the avatar")
            expr = await vts.request(vts.vts_request.BaseRequest("ExpressionStateRequest", {"details": True}))
            active = {e["name"]: e["active"] for e in expr["data"]["expressions"]}
            assert active["happy"] is True and active["sad"] is False
            off = await vts.request(vts.vts_request.BaseRequest(
                "ExpressionActivationRequest", {"expressionFile": "happy.exp3.json", "active": False}))
            assert off["messageType"] == "ExpressionActivationResponse"
            expr = await vts.request(vts.vts_request.BaseRequest("ExpressionStateRequest",
                                                                 {"expressionFile": "happy.exp3.json"}))
            assert expr["data"]["expressions"][0]["active"] is False
            # Actions play like VTS animations.
            reply = await vts.request(vts.vts_request.requestTriggerHotKey("wave"))
            assert reply["data"]["hotkeyID"] == "action.wave"
            await asyncio.to_thread(wait_until, lambda: seen and seen[-1].action == "wave", 5, 0.05, "the wave")
            # Injected face parameters move the face (no camera in this session).
            for _ in range(10):
                reply = await vts.request(vts.vts_request.requestSetMultiParameterValue(
                    ["MouthOpen", "EyeOpenLeft"], [1.0, 0.0]))
                assert reply["messageType"] == "InjectParameterDataResponse", reply
                await asyncio.sleep(0.05)
            await asyncio.to_thread(wait_until, lambda: seen[-1].face[FP["mouth_open"]] > 0.5, 5, 0.05,
                                    "the injected open mouth")
        finally:
            s.tick_taps.remove(seen.append)

        chars = server.engine.characters()
        other = next((c for c in chars if c != s.character), s.character)
        loaded = await vts.request(vts.vts_request.BaseRequest("ModelLoadRequest", {"modelID": other}))
        assert loaded["messageType"] == "ModelLoadResponse" and s.character == other

        # VTS-style errors for bad requests.
        async def error_of(kind, data=None):
            r = await vts.request(vts.vts_request.BaseRequest(kind, data))
            assert r["messageType"] == "APIError", r
            assert "\n" not in r["data"]["message"]
            return r["data"]["errorID"]

        assert await error_of("NoSuchRequest") == 7
        assert await error_of("HotkeyTriggerRequest", {"hotkeyID": "nope\nnope"}) == 202
        assert await error_of("ModelLoadRequest", {"modelID": "nobody"}) == 152
        assert await error_of("InjectParameterDataRequest", {"parameterValues": [{"id": "Ears", "value": 1}]}) == 453
        assert await error_of("InjectParameterDataRequest", {"parameterValues": [{"id": "MouthOpen",
                                                                                   "value": "x"}]}) == 451
        assert await error_of("InjectParameterDataRequest", {"mode": "mix", "parameterValues": [{"id": "MouthOpen",
                                                                                                  "value": 1}]}) == 455
        assert await error_of("ExpressionActivationRequest", {"expressionFile": "grumpy.exp3.json"}) == 651
    finally:
        await vts.close()


async def test_unauthenticated_denied_and_malformed_requests(server, tmp_path):
    url = f"ws://127.0.0.1:{server.cfg.vts_port}"
    async with websockets.connect(url) as ws:
        async def ask(obj):
            await ws.send(obj if isinstance(obj, str) else json.dumps(obj))
            return json.loads(await ws.recv())

        base = {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0", "requestID": "r1"}
        r = await ask({**base, "messageType": "HotkeyTriggerRequest", "data": {"hotkeyID": "emotion.happy"}})
        assert r["messageType"] == "APIError" and r["data"]["errorID"] == 8 and r["requestID"] == "r1"
        assert (await ask("{not json"))["data"]["errorID"] == 2
        assert (await ask({**base, "apiName": "Other", "messageType": "APIStateRequest"}))["data"]["errorID"] == 3
        assert (await ask({**base, "apiVersion": "2.0", "messageType": "APIStateRequest"}))["data"]["errorID"] == 4
        assert (await ask({**base, "data": {}}))["data"]["errorID"] == 6
        r = await ask({**base, "messageType": "AuthenticationRequest",
                       "data": {"pluginName": "Guesser", "pluginDeveloper": "someone",
                                "authenticationToken": "0" * 64}})
        assert r["data"]["authenticated"] is False
        assert (await ask({**base, "messageType": "AuthenticationTokenRequest",
                           "data": {"pluginName": "x", "pluginDeveloper": "someone"}}))["data"]["errorID"] == 52
        # The streamer says no.
        denier = asyncio.ensure_future(approve_when_asked(server, allow=False))
        r = await ask({**base, "messageType": "AuthenticationTokenRequest",
                       "data": {"pluginName": "Unwanted", "pluginDeveloper": "someone"}})
        assert await denier == "Unwanted"
        assert r["messageType"] == "APIError" and r["data"]["errorID"] == 50
    # The approval endpoint itself refuses nonsense with a 4xx.
    status, _ = http(server.url + "/api/vts/approvals/" + "0" * 32, "POST", {"allow": True})
    assert status == 404
    status, _ = http(server.url + "/api/vts/approvals/" + "0" * 32, "POST", {"allow": "yes"})
    assert status == 400


def test_binds_localhost_only_and_keeps_only_token_hashes(server):
    other = next((a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")), None)
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, server.cfg.vts_port), timeout=2).close()
    stored = _vts(server).tokens.path.read_text()
    assert _vts(server).tokens.path.stat().st_mode & 0o077 == 0
    assert all(len(v) == 64 for v in json.loads(stored).values())  # sha256 hex, not the tokens
