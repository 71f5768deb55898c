"""The control commands: ONE table of (request model, handler, route) that the HTTP control
routes, the events WebSocket's control messages and the OpenAPI document are all made from, so
a command is validated once, by its pydantic model (api.ControlCommand is their union).

Studio keys, OBS hotkeys, the API and voice keywords all end up as the same ControlEvents on the
session's conditioner.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from liveavatar.errors import UserError
from liveavatar.server import api
from liveavatar.server.engine import Engine
from liveavatar.server.http_io import SESSION_ID, json_body, session_id
from liveavatar.server.security import CONTROL, require
from liveavatar.server.session import Session
from liveavatar.server.state import ENGINE
from liveavatar.types import ControlEvent, ControlKind, EventSource


@dataclass(frozen=True)
class Command:
    model: type[api.CommandBody]
    path: str        # its HTTP route; "{sid}" in it names the session, else the body does
    summary: str     # for the OpenAPI document
    run: Callable[[Engine, Session, Any], Awaitable[dict]]   # -> the session's state after it

    @property
    def kind(self) -> str:
        return str(self.model.model_fields["type"].default)

    @property
    def session_in_path(self) -> bool:
        return "{sid}" in self.path


# ---------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------

def controls(session: Session) -> dict:
    """Studio keys: 1-9 for emotions, a free letter per action (shown on the page)."""
    emotions = list(getattr(session.conditioner, "emotions", ()))
    actions = [a for a in getattr(session.conditioner, "actions", ()) if a != "none"]
    used: set[str] = set()
    action_keys = []
    for a in actions:
        key = next((c for c in a.lower() if c.isalpha() and c not in used), "")
        if not key:
            key = next((c for c in "abcdefghijklmnopqrstuvwxyz" if c not in used), "")
        used.add(key)
        action_keys.append({"name": a, "key": key})
    return {"emotions": [{"name": e, "key": str(i + 1) if i < 9 else ""} for i, e in enumerate(emotions)],
            "actions": action_keys}


def full_state(engine: Engine, session: Session) -> dict:
    """The session's state plus what a control page shows: characters and the studio's keys."""
    return {**session.state(), "characters": engine.characters(), "controls": controls(session)}


def check_name(kind: str, name: str, known: Iterable[str]) -> None:
    names = list(known)
    if names and name not in names:
        raise UserError(f"unknown {kind} {name!r}; known: {', '.join(names)}")


async def _emotion(engine: Engine, s: Session, cmd: api.EmotionRequest) -> dict:
    check_name("emotion", cmd.name, getattr(s.conditioner, "emotions", ()))
    return await s.state_after(s.control(cmd.event()))


async def _action(engine: Engine, s: Session, cmd: api.ActionRequest) -> dict:
    check_name("action", cmd.name, getattr(s.conditioner, "actions", ()))
    return await s.state_after(s.control(cmd.event()))


async def _character(engine: Engine, s: Session, cmd: api.CharacterRequest) -> dict:
    return await engine.set_character(s, cmd.name, cmd.source)


async def _calibrate(engine: Engine, s: Session, cmd: api.CalibrateRequest) -> dict:
    return await s.state_after(s.control(ControlEvent(ControlKind.CALIBRATE, "", cmd.source)))


def resolve_hotkey(session: Session, name: str) -> list[ControlEvent]:
    """OBS-style names (liveavatar.emotion.<name>, liveavatar.action.<name>, or a key of the
    mapping's [hotkeys]) -> the same control events as studio keys and the API."""
    events = list(session.conditioner.hotkey_events(name))
    if not events:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "liveavatar" and parts[1] in ("emotion", "action"):
            check_name(parts[1], parts[2], getattr(session.conditioner, parts[1] + "s", ()))
        raise UserError(f"unknown hotkey {name!r}; use liveavatar.emotion.<name>, "
                        "liveavatar.action.<name> or a key of the mapping's [hotkeys]")
    for ev in events:
        ev.source = EventSource.HOTKEY
    return events


async def _hotkey(engine: Engine, s: Session, cmd: api.HotkeyRequest) -> dict:
    n = 0
    for ev in resolve_hotkey(s, cmd.name):
        n = s.control(ev)
    return await s.state_after(n)


SID_PATH = "/api/sessions/{sid}"
COMMANDS: dict[str, Command] = {c.kind: c for c in (
    Command(api.EmotionRequest, f"{SID_PATH}/emotion", "Set an emotion (momentary, toggle or hold N s)", _emotion),
    Command(api.ActionRequest, f"{SID_PATH}/action", "Trigger an action (dance, wave, ...)", _action),
    Command(api.CharacterRequest, f"{SID_PATH}/character", "Switch the session's character", _character),
    Command(api.CalibrateRequest, f"{SID_PATH}/calibrate", "Start the 3-second neutral calibration", _calibrate),
    Command(api.HotkeyRequest, "/api/hotkey", "Resolve an OBS-style hotkey name (liveavatar.emotion.<name>, "
            "liveavatar.action.<name>) into a control event", _hotkey),
)}
# The union the WebSocket validates against is the table's models, no more, no less.
assert set(COMMANDS) == set(api.COMMAND_MODELS), "api.ControlCommand and control.COMMANDS disagree"


# ---------------------------------------------------------------------------------------------
# HTTP routes and WebSocket messages, both from the table
# ---------------------------------------------------------------------------------------------

def _http_handler(command: Command) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        require(request, CONTROL)
        engine = request.app[ENGINE]
        if command.session_in_path:   # an unknown session is a 404 before any body error
            s = engine.get(session_id(request))
            body = await json_body(request, command.model)
        else:   # the hotkey route: OBS scripts name the session in the body
            body = await json_body(request, command.model)
            assert isinstance(body, api.HotkeyRequest)
            s = engine.get(body.session)
        return web.json_response({"ok": True, "state": await command.run(engine, s, body)})
    return handle


def add_routes(app: web.Application) -> None:
    for command in COMMANDS.values():
        app.router.add_post(command.path.replace("{sid}", f"{{sid:{SESSION_ID}}}"), _http_handler(command))


def unknown_message(kind: Any) -> UserError:
    return UserError(f"unknown message type {kind!r}; use {', '.join(COMMANDS)}, subscribe or ping")


async def run_message(engine: Engine, s: Session, msg: dict[str, Any]) -> dict:
    """A control message from the events WebSocket, on its own session (a hotkey's `session`
    field is not used there). Returns the session's state after it."""
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in COMMANDS:   # (a list or dict is no table key)
        raise unknown_message(kind)
    command = api.parse_command(json.dumps({k: v for k, v in msg.items() if k != "id"}).encode())
    return await COMMANDS[kind].run(engine, s, command)


def openapi_paths(sid: dict, body: Callable[[str], dict], ok: Callable[..., dict], errors: dict) -> dict:
    paths = {}
    for command in COMMANDS.values():
        op: dict[str, Any] = {"summary": command.summary}
        if command.session_in_path:
            op["parameters"] = [sid]
        op.update({"requestBody": body(command.model.__name__), "responses": {"200": ok(), **errors},
                   "security": [{"bearer": []}]})
        paths[command.path] = {"post": op}
    return paths
