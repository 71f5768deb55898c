"""A VTube Studio-compatible API (`serve --vts-port PORT`), so VTS plugins (Streamer.bot, Mix It
Up, Stream Deck plugins, pyvts / vtubestudio scripts) drive LiveAvatar unchanged.

The public API's JSON over a WebSocket on 127.0.0.1 (apiName VTubeStudioPublicAPI, apiVersion
1.0): the token flow (AuthenticationTokenRequest waits until the streamer allows the plugin in
the studio page, then AuthenticationRequest), APIStateRequest, CurrentModelRequest,
AvailableModelsRequest, ModelLoadRequest (our characters are the models),
HotkeysInCurrentModelRequest and HotkeyTriggerRequest (our emotions toggle like VTS expressions,
our actions play like its animations), ExpressionStateRequest and ExpressionActivationRequest
(our emotions as <name>.exp3.json) and InjectParameterDataRequest (VTS's face input parameters
-> our face features). Mistakes get VTS's own APIError (errorID, message).

Tokens: random, given out only after the streamer's approval, kept as SHA-256 hashes
(config dir, vts-tokens.json, mode 0600); neither tokens nor requests are logged.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from liveavatar.types import FACE_FEATURES, FF, ControlEvent, ControlKind, Cues, EventSource, Part, TriggerMode

log = logging.getLogger("liveavatar.interop.vts")
API_NAME, API_VERSION = "VTubeStudioPublicAPI", "1.0"
VERSION = "1.28.0"  # the VTS version we answer as (plugins check only that one is given)
APPROVAL_TIMEOUT_S = 120.0

# VTS's ErrorID values (DenchiSoft/VTubeStudio, Files/ErrorID.cs).
INTERNAL, JSON_INVALID, API_NAME_INVALID, API_VERSION_INVALID = 0, 2, 3, 4
REQUEST_ID_INVALID, TYPE_MISSING, TYPE_UNKNOWN, NEEDS_AUTH = 5, 6, 7, 8
TOKEN_DENIED, TOKEN_ONGOING, PLUGIN_NAME_INVALID, DEVELOPER_INVALID = 50, 51, 52, 53
AUTH_TOKEN_MISSING, AUTH_NAME_MISSING, AUTH_DEVELOPER_MISSING = 100, 101, 102
MODEL_ID_MISSING, MODEL_ID_NOT_FOUND, CANNOT_CHANGE_MODEL = 150, 152, 154
HOTKEY_NOT_FOUND, HOTKEY_FAILED = 202, 206
INJECT_NO_DATA, INJECT_VALUE_INVALID, INJECT_WEIGHT_INVALID, INJECT_PARAM_NOT_FOUND = 450, 451, 452, 453
INJECT_MODE_UNKNOWN = 455
EXPRESSION_STATE_BAD_FILE, EXPRESSION_STATE_NOT_FOUND = 600, 601
EXPRESSION_BAD_FILE, EXPRESSION_NOT_FOUND = 650, 651

EXPRESSION_SUFFIX = ".exp3.json"
# VTS default input parameters -> (our FACE_FEATURES name, scale to our units, offset).
# Angles: VTS degrees -> radians; eyes: VTS "open" 0..1 -> our blink 0..1.
INJECTABLE: dict[str, tuple[str, float, float]] = {
    "FaceAngleX": ("head_yaw", math.pi / 180, 0.0), "FaceAngleY": ("head_pitch", math.pi / 180, 0.0),
    "FaceAngleZ": ("head_roll", math.pi / 180, 0.0),
    "EyeOpenLeft": ("blink_left", -1.0, 1.0), "EyeOpenRight": ("blink_right", -1.0, 1.0),
    "EyeLeftX": ("gaze_x", 1.0, 0.0), "EyeRightX": ("gaze_x", 1.0, 0.0),
    "EyeLeftY": ("gaze_y", 1.0, 0.0), "EyeRightY": ("gaze_y", 1.0, 0.0),
    "MouthOpen": ("mouth_open", 1.0, 0.0), "MouthSmile": ("smile", 1.0, 0.0),
    "BrowLeftY": ("brow_raise_left", 1.0, 0.0), "BrowRightY": ("brow_raise_right", 1.0, 0.0),
}


class VtsError(Exception):
    def __init__(self, error_id: int, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id


def _one_line(text: Any, limit: int = 64) -> str:
    return " ".join(str(text).split())[:limit]


@dataclass
class Approval:
    """A plugin waiting for the streamer to allow it (shown in the studio page)."""
    id: str
    plugin: str
    developer: str
    future: asyncio.Future = field(repr=False)


class TokenStore:
    """Granted plugins: sha256(token) per (plugin, developer), persisted with mode 0600."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._hashes: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                self._hashes = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
            except (OSError, ValueError, AttributeError):
                log.warning("%s is unreadable; plugins will be asked to allow again", path)

    @staticmethod
    def _key(plugin: str, developer: str) -> str:
        return f"{plugin}\n{developer}"

    def issue(self, plugin: str, developer: str) -> str:
        token = secrets.token_hex(32)
        self._hashes[self._key(plugin, developer)] = hashlib.sha256(token.encode()).hexdigest()
        self._save()
        return token

    def check(self, plugin: str, developer: str, token: str) -> bool:
        want = self._hashes.get(self._key(plugin, developer))
        return want is not None and hmac.compare_digest(want, hashlib.sha256(token.encode()).hexdigest())

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._hashes, f)
        os.replace(tmp, self.path)


class VtsServer:
    """The WebSocket endpoint (its own aiohttp site on 127.0.0.1) for one session."""

    def __init__(self, engine: Any, session_id: str, port: int, tokens_path: Path | None = None) -> None:
        self.engine, self.sid, self.port = engine, session_id, port
        if tokens_path is None:
            from liveavatar.server.config import config_dir
            tokens_path = config_dir() / "vts-tokens.json"
        self.tokens = TokenStore(tokens_path)
        self.pending: dict[str, Approval] = {}
        self.loaded_at = time.time()
        self._runner: web.AppRunner | None = None
        self.requests = 0
        self.hotkeys_triggered = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        from liveavatar.errors import UserError
        app = web.Application()
        app.router.add_get("/", self._websocket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise UserError(f"--vts-port {self.port}: cannot listen on 127.0.0.1:{self.port} "
                            f"({e.strerror or e})") from None
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for a in self.pending.values():
            if not a.future.done():
                a.future.set_result(False)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- approvals (the studio page) -----------------------------------------------------------
    def pending_list(self) -> list[dict[str, str]]:
        return [{"id": a.id, "plugin": a.plugin, "developer": a.developer} for a in self.pending.values()]

    def decide(self, approval_id: str, allow: bool) -> bool:
        a = self.pending.pop(approval_id, None)
        if a is None:
            return False
        if not a.future.done():
            a.future.set_result(allow)
        return True

    async def _ask(self, plugin: str, developer: str) -> bool:
        if any(a.plugin == plugin and a.developer == developer for a in self.pending.values()):
            raise VtsError(TOKEN_ONGOING, "a permission request from this plugin is already waiting")
        a = Approval(uuid.uuid4().hex, plugin, developer, asyncio.get_running_loop().create_future())
        self.pending[a.id] = a
        s = self.engine.sessions.get(self.sid)
        if s is not None:
            s.publish_event({"type": "vts_permission", "id": a.id, "plugin": plugin, "developer": developer})
        try:
            return bool(await asyncio.wait_for(asyncio.shield(a.future), APPROVAL_TIMEOUT_S))
        except asyncio.TimeoutError:
            return False
        finally:
            self.pending.pop(a.id, None)

    # -- the WebSocket --------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=512 * 1024, heartbeat=30)
        await ws.prepare(request)
        conn = {"authenticated": False}
        async for m in ws:
            if m.type != WSMsgType.TEXT:
                continue
            reply = await self.handle_text(m.data, conn)
            await ws.send_str(json.dumps(reply))
        return ws

    async def handle_text(self, text: str, conn: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        request_id = None
        try:
            try:
                msg = json.loads(text)
            except ValueError as e:
                raise VtsError(JSON_INVALID, f"the message is not valid JSON ({_one_line(e)})") from None
            if not isinstance(msg, dict):
                raise VtsError(JSON_INVALID, "the message must be a JSON object")
            request_id = msg.get("requestID")
            if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 64):
                request_id = None
                raise VtsError(REQUEST_ID_INVALID, "requestID must be a string of at most 64 characters")
            if msg.get("apiName") != API_NAME:
                raise VtsError(API_NAME_INVALID, f"apiName must be {API_NAME!r}")
            if msg.get("apiVersion") != API_VERSION:
                raise VtsError(API_VERSION_INVALID, f"apiVersion must be {API_VERSION!r}")
            kind = msg.get("messageType")
            if not isinstance(kind, str) or not kind:
                raise VtsError(TYPE_MISSING, "messageType is missing")
            handler = HANDLERS.get(kind)
            if handler is None:
                raise VtsError(TYPE_UNKNOWN, f"unknown messageType {_one_line(kind)!r}")
            data = msg.get("data") or {}
            if not isinstance(data, dict):
                raise VtsError(JSON_INVALID, "data must be a JSON object")
            if kind not in OPEN_REQUESTS and not conn["authenticated"]:
                raise VtsError(NEEDS_AUTH, f"{kind} needs an authenticated session (AuthenticationRequest)")
            out_type, out = await handler(self, data, conn)
        except VtsError as e:
            out_type, out = "APIError", {"errorID": e.error_id, "message": str(e)}
        except Exception:
            log.exception("VTS request failed")
            out_type, out = "APIError", {"errorID": INTERNAL, "message": "internal error (see the service log)"}
        return {"apiName": API_NAME, "apiVersion": API_VERSION, "timestamp": int(time.time() * 1000),
                "requestID": request_id or "", "messageType": out_type, "data": out}

    # -- helpers -----------------------------------------------------------------------------
    def session(self) -> Any:
        s = self.engine.sessions.get(self.sid)
        if s is None:
            raise VtsError(CANNOT_CHANGE_MODEL, f"session {self.sid!r} is not running")
        return s

    def model(self, name: str, loaded: bool) -> dict[str, Any]:
        return {"modelLoaded": loaded, "modelName": name, "modelID": name, "vtsModelName": f"{name}.vtube.json",
                "vtsModelIconName": ""}

    def hotkeys(self, s: Any) -> list[dict[str, Any]]:
        keys = []
        for e in getattr(s.conditioner, "emotions", ()):
            if e != "neutral":
                keys.append({"name": e, "type": "ToggleExpression", "description": f"emotion {e}",
                             "file": e + EXPRESSION_SUFFIX, "hotkeyID": f"emotion.{e}", "keyCombination": [],
                             "onScreenButtonID": -1})
        for a in getattr(s.conditioner, "actions", ()):
            if a != "none":
                keys.append({"name": a, "type": "TriggerAnimation", "description": f"action {a}",
                             "file": a + ".motion3.json", "hotkeyID": f"action.{a}", "keyCombination": [],
                             "onScreenButtonID": -1})
        return keys

    @staticmethod
    def active_emotions(s: Any) -> set[str]:
        with s.lock:
            triggers = s.conditioner.state().get("triggers", [])
        # A toggle that is on has no end yet; one toggled off is fading out (remaining_s set).
        return {t["emotion"] for t in triggers
                if t.get("mode") == TriggerMode.TOGGLE.value and t.get("remaining_s") is None}


def _text(data: dict[str, Any], key: str, error_id: int, what: str, lo: int = 1, hi: int = 64) -> str:
    v = data.get(key)
    if not isinstance(v, str) or not lo <= len(v.strip()) <= hi:
        raise VtsError(error_id, f"{key} ({what}) must be a string of {lo}-{hi} characters")
    return v.strip()


# -- handlers: (server, data, connection) -> (response messageType, data) -----------------------

async def api_state(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    return "APIStateResponse", {"active": True, "vTubeStudioVersion": VERSION,
                                "currentSessionAuthenticated": bool(conn["authenticated"])}


async def token_request(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    plugin = _text(data, "pluginName", PLUGIN_NAME_INVALID, "the plugin's name", 3, 32)
    developer = _text(data, "pluginDeveloper", DEVELOPER_INVALID, "its developer", 3, 32)
    if not await srv._ask(plugin, developer):
        raise VtsError(TOKEN_DENIED, "the streamer did not allow this plugin")
    return "AuthenticationTokenResponse", {"authenticationToken": srv.tokens.issue(plugin, developer)}


async def authenticate(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    token = data.get("authenticationToken")
    if not isinstance(token, str) or not token:
        raise VtsError(AUTH_TOKEN_MISSING, "authenticationToken is missing")
    plugin = _text(data, "pluginName", AUTH_NAME_MISSING, "the plugin's name", 3, 32)
    developer = _text(data, "pluginDeveloper", AUTH_DEVELOPER_MISSING, "its developer", 3, 32)
    ok = srv.tokens.check(plugin, developer, token)
    conn["authenticated"] = ok
    return "AuthenticationResponse", {"authenticated": ok, "reason": "Token valid. The plugin is authenticated."
                                      if ok else "Token invalid or revoked: ask for a new one."}


async def current_model(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    out = srv.model(s.character, True)
    out.update({"live2DModelName": "", "modelLoadTime": 0, "timeSinceModelLoaded": int((time.time() - srv.loaded_at)
                                                                                         * 1000),
                "numberOfLive2DParameters": len(FACE_FEATURES), "numberOfLive2DArtmeshes": 0,
                "hasPhysicsFile": False, "numberOfTextures": 0, "textureResolution": srv.engine.cfg.size,
                "modelPosition": {"positionX": 0.0, "positionY": 0.0, "rotation": 0.0, "size": 0.0}})
    return "CurrentModelResponse", out


async def available_models(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    current = srv.session().character
    models = [srv.model(name, name == current) for name in srv.engine.characters()]
    return "AvailableModelsResponse", {"numberOfModels": len(models), "availableModels": models}


async def model_load(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    model_id = data.get("modelID")
    if not isinstance(model_id, str) or not model_id:
        raise VtsError(MODEL_ID_MISSING, "modelID is missing")
    if model_id not in srv.engine.characters():
        raise VtsError(MODEL_ID_NOT_FOUND, f"no model {_one_line(model_id)!r}; see AvailableModelsRequest")
    await srv.engine.set_character(srv.session(), model_id, EventSource.API)
    srv.loaded_at = time.time()
    return "ModelLoadResponse", {"modelID": model_id}


async def hotkeys_in_model(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    return "HotkeysInCurrentModelResponse", {"modelLoaded": True, "modelName": s.character, "modelID": s.character,
                                             "availableHotkeys": srv.hotkeys(s)}


async def hotkey_trigger(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    wanted = data.get("hotkeyID")
    if not isinstance(wanted, str) or not wanted:
        raise VtsError(HOTKEY_NOT_FOUND, "hotkeyID is missing")
    key = next((k for k in srv.hotkeys(s) if wanted in (k["hotkeyID"], k["name"])), None)
    if key is None:
        raise VtsError(HOTKEY_NOT_FOUND, f"no hotkey {_one_line(wanted)!r} in this model; see "
                                         "HotkeysInCurrentModelRequest")
    kind, name = key["hotkeyID"].split(".", 1)
    if kind == "emotion":  # VTS toggles expressions on and off
        n = s.control(ControlEvent(ControlKind.EMOTION, name, EventSource.HOTKEY, TriggerMode.TOGGLE))
    else:
        n = s.control(ControlEvent(ControlKind.ACTION, name, EventSource.HOTKEY, TriggerMode.MOMENTARY))
    srv.hotkeys_triggered += 1
    await s.state_after(n)  # answer once a frame showing it is rendered, as the HTTP API does
    return "HotkeyTriggerResponse", {"hotkeyID": key["hotkeyID"]}


def _expression_name(srv: VtsServer, s: Any, data: dict, bad: int, missing: int, required: bool) -> str | None:
    file = data.get("expressionFile")
    if file is None and not required:
        return None
    if not isinstance(file, str) or not file.endswith(EXPRESSION_SUFFIX):
        raise VtsError(bad, f"expressionFile must be a file name ending in {EXPRESSION_SUFFIX}")
    name = file[: -len(EXPRESSION_SUFFIX)]
    if name == "neutral" or name not in getattr(s.conditioner, "emotions", ()):
        raise VtsError(missing, f"no expression {_one_line(file)!r} in this model; see ExpressionStateRequest")
    return name


async def expression_state(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    only = _expression_name(srv, s, data, EXPRESSION_STATE_BAD_FILE, EXPRESSION_STATE_NOT_FOUND, False)
    active = srv.active_emotions(s)
    names = [only] if only else [e for e in s.conditioner.emotions if e != "neutral"]
    expressions = [{"name": n, "file": n + EXPRESSION_SUFFIX, "active": n in active,
                    "deactivateWhenKeyIsLetGo": False, "autoDeactivateAfterSeconds": False, "secondsRemaining": 0,
                    "usedInHotkeys": [{"name": n, "id": f"emotion.{n}"}], "parameters": []} for n in names]
    return "ExpressionStateResponse", {"modelLoaded": True, "modelName": s.character, "modelID": s.character,
                                       "expressions": expressions}


async def expression_activation(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    name = _expression_name(srv, s, data, EXPRESSION_BAD_FILE, EXPRESSION_NOT_FOUND, True)
    want = data.get("active", True)
    if not isinstance(want, bool):
        raise VtsError(EXPRESSION_BAD_FILE, "active must be true or false")
    if (name in srv.active_emotions(s)) != want:  # a toggle flips it to what was asked
        s.control(ControlEvent(ControlKind.EMOTION, str(name), EventSource.HOTKEY, TriggerMode.TOGGLE))
    return "ExpressionActivationResponse", {}


async def inject_parameters(srv: VtsServer, data: dict, conn: dict) -> tuple[str, dict]:
    s = srv.session()
    mode = data.get("mode", "set")
    if mode not in ("set", "add"):
        raise VtsError(INJECT_MODE_UNKNOWN, "mode must be 'set' or 'add'")
    values = data.get("parameterValues")
    if not isinstance(values, list) or not values:
        raise VtsError(INJECT_NO_DATA, "parameterValues must be a non-empty list")
    last = s.last_cues
    expr = (last.expression.copy() if last is not None and last.expression_present
            else np.zeros(len(FACE_FEATURES), np.float32))
    if last is None or not last.expression_present:
        expr[FF["mouth_width"]] = 0.5
    for item in values:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise VtsError(INJECT_PARAM_NOT_FOUND, "each parameter value needs an id")
        spec = INJECTABLE.get(item["id"])
        if spec is None:
            raise VtsError(INJECT_PARAM_NOT_FOUND, f"no parameter {_one_line(item['id'])!r}; known: "
                                                   + ", ".join(INJECTABLE))
        value, weight = _number(item.get("value")), _number(item.get("weight", 1.0))
        if value is None or not math.isfinite(value):
            raise VtsError(INJECT_VALUE_INVALID, f"{item['id']}: value must be a finite number")
        if weight is None or not 0.0 <= weight <= 1.0:
            raise VtsError(INJECT_WEIGHT_INVALID, f"{item['id']}: weight must be between 0 and 1")
        feature, scale, offset = spec
        i = FF[feature]
        ours = float(value) * scale + (offset if mode == "set" else 0.0)
        target = ours if mode == "set" else expr[i] + ours
        expr[i] = expr[i] * (1.0 - weight) + target * weight
    np.clip(expr, -1.0, 1.0, out=expr)
    # The injected face stands where perception's would, with the body as last seen.
    pose = last.pose if last is not None else Part.empty(33)
    cues = Cues(last.seq + 1 if last is not None else 1, time.monotonic_ns(), pose, Part.empty(478), Part.empty(21),
                Part.empty(21), expr, True, last.voice if last is not None else _silence(),
                (), last.image_size if last is not None and last.image_size[0] else (1000, 1000))
    s.cues.put(cues)
    return "InjectParameterDataResponse", {}


def _number(v: Any) -> float | None:
    """A JSON number as a float (None for anything else, including ints too big for a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def _silence() -> Any:
    from liveavatar.types import VoiceFeatures
    return VoiceFeatures()


HANDLERS = {
    "APIStateRequest": api_state, "AuthenticationTokenRequest": token_request,
    "AuthenticationRequest": authenticate, "CurrentModelRequest": current_model,
    "AvailableModelsRequest": available_models, "ModelLoadRequest": model_load,
    "HotkeysInCurrentModelRequest": hotkeys_in_model, "HotkeyTriggerRequest": hotkey_trigger,
    "ExpressionStateRequest": expression_state, "ExpressionActivationRequest": expression_activation,
    "InjectParameterDataRequest": inject_parameters,
}
OPEN_REQUESTS = {"APIStateRequest", "AuthenticationTokenRequest", "AuthenticationRequest"}
