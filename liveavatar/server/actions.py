"""HTTP routes for actions as data: list / show / remove the imported actions, and record a take
of the streamer's own tracked motion as a new action (bindable at once). Triggering them is the
ordinary /api/sessions/{sid}/action route, like any built-in.

Registered from app.py with `actions.register(app)`; the OpenAPI document takes its paths and
models from here.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import Field

from liveavatar.errors import UserError
from liveavatar.server.api import _Body
from liveavatar.types import ACTIONS, EventSource

if TYPE_CHECKING:   # the engine imports this module
    from liveavatar.server.engine import Engine
    from liveavatar.server.session import Session

log = logging.getLogger(__name__)

SESSION_ID = r"[A-Za-z0-9_.\-]{1,64}"
ACTION_NAME = r"[a-z0-9][a-z0-9_\-]{0,39}"


class RecordRequest(_Body):
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_\-]{0,39}$",
                      examples=["my-wave"])
    seconds: float = Field(5.0, ge=3, le=10, description="Length of the take")
    countdown_s: float = Field(0.0, ge=0, le=10, description="Wait this long before recording starts")
    parts: Literal["whole", "upper", "arms", "legs"] = "whole"
    loop: bool = False
    replace: bool = Field(False, description="Replace an imported action of the same name")
    description: str = Field("", max_length=300)
    source: EventSource = EventSource.API


def character_actions_dir(character: str) -> Path | None:
    """A character pack's own actions folder, if it has one (shipped packs, then the user's)."""
    from liveavatar.generation.characters import characters_dir
    from liveavatar.paths import data_dir
    for root in (characters_dir(), data_dir() / "characters"):
        folder = root / character / "actions"
        if folder.is_dir():
            return folder
    return None


def use_character_actions(session: Session) -> None:
    """Point the session's conditioner at its character's action set (blocking: file reads)."""
    reload = getattr(session.conditioner, "reload_actions", None)
    if reload is not None:
        reload(character_actions_dir(session.character))


def _refresh_all(engine: Engine) -> None:
    for s in list(engine.sessions.values()):
        reload = getattr(s.conditioner, "reload_actions", None)
        if reload is not None:
            reload()


def _listing(session: Session) -> dict[str, Any]:
    from liveavatar.conditioning.action_files import actions_dir
    lib = getattr(session.conditioner, "library", None)
    imported = []
    if lib is not None:
        for c in lib.clips.values():
            imported.append({"name": c.name, "duration_s": round(c.duration_s, 3), "loop": c.loop,
                             "parts": c.parts, "origin": c.origin, "frames": len(c.frames)})
    return {"builtin": [a for a in ACTIONS if a != "none"], "imported": imported,
            "all": [a for a in getattr(session.conditioner, "actions", ACTIONS) if a != "none"],
            "folder": str(actions_dir()), "errors": list(lib.errors) if lib is not None else []}


async def list_actions(request: web.Request) -> web.Response:
    from liveavatar.server.http_io import session_id
    from liveavatar.server.security import VIEW, require
    from liveavatar.server.state import ENGINE
    require(request, VIEW)
    s = request.app[ENGINE].get(session_id(request))
    return web.json_response(_listing(s))


async def show_action(request: web.Request) -> web.Response:
    from liveavatar.conditioning import action_files as af
    from liveavatar.server.security import VIEW, require
    require(request, VIEW)
    name = request.match_info["name"]
    loop = asyncio.get_running_loop()
    act = await loop.run_in_executor(None, af.load_action, af.action_path(name))
    return web.json_response({**act.summary(), "channels": list(act.channels), "frames": act.frames})


async def remove_action(request: web.Request) -> web.Response:
    from liveavatar.conditioning import action_files as af
    from liveavatar.server.security import CONTROL, require
    from liveavatar.server.state import ENGINE
    require(request, CONTROL)
    name = request.match_info["name"]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, af.remove_action, name)
    await loop.run_in_executor(None, _refresh_all, request.app[ENGINE])
    return web.json_response({"ok": True, "removed": name})


async def record_action(request: web.Request) -> web.Response:
    """Record `seconds` of the session's own motion (after `countdown_s`) as action `name`."""
    from liveavatar.conditioning import action_files as af
    from liveavatar.server.http_io import json_body, session_id
    from liveavatar.server.security import CONTROL, require
    from liveavatar.server.state import ENGINE
    require(request, CONTROL)
    engine = request.app[ENGINE]
    s = engine.get(session_id(request))
    body = await json_body(request, RecordRequest)
    af.check_name(body.name)
    if not body.replace and af.action_path(body.name).exists():
        raise UserError(f"an action called {body.name!r} exists already; pick another name or set replace")
    if not hasattr(s.conditioner, "start_take"):
        raise UserError("this session's conditioner cannot record takes")
    s.publish_event({"type": "recording", "session": s.sid, "name": body.name, "phase": "countdown",
                     "seconds": body.seconds, "countdown_s": body.countdown_s})
    await asyncio.sleep(body.countdown_s)
    take = s.conditioner.start_take(body.seconds)
    s.publish_event({"type": "recording", "session": s.sid, "name": body.name, "phase": "recording",
                     "seconds": body.seconds})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.seconds + 3.0
    while not take.done and loop.time() < deadline:  # noqa: ASYNC110 - the render thread sets it
        await asyncio.sleep(0.05)
    if not take.done:
        take.done = True          # the render loop stalled: keep what was captured
    bones, root = take.motion(af.PLAY_FPS)
    src = af.ActionSource(kind="recorded", file=None, layout=None, start_s=None, end_s=None)
    act = af.make_action(body.name, bones, root, af.PLAY_FPS, loop=body.loop, parts=body.parts,
                         description=body.description, source=src)
    path = await loop.run_in_executor(None, lambda: af.save_action(act, replace=body.replace))
    await loop.run_in_executor(None, _refresh_all, engine)
    s.publish_event({"type": "recording", "session": s.sid, "name": body.name, "phase": "saved"})
    log.info("session %s: recorded action %s (%d frames) -> %s", s.sid, body.name, len(act.frames), path)
    return web.json_response({"ok": True, "action": act.summary(), "path": str(path),
                              "actions": _listing(s)["all"]})


def openapi_paths(sid: dict, body: Callable[[str], dict], ok: Callable[..., dict], errors: dict) -> dict:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^{ACTION_NAME}$"}}
    return {
        "/api/actions": {"get": {"summary": "Actions the default (or ?session=) session plays: built-ins and imported",
                                 "parameters": [{"name": "session", "in": "query",
                                                 "schema": {"type": "string", "default": "default"}}],
                                 "responses": {"200": {"description": "builtin, imported, all"}, **errors}}},
        "/api/actions/{name}": {
            "get": {"summary": "An imported action file (documented JSON format)", "parameters": [name],
                    "responses": {"200": {"description": "action"}, **errors}},
            "delete": {"summary": "Remove an imported action", "parameters": [name],
                       "responses": {"200": {"description": "removed"}, **errors}, "security": [{"bearer": []}]}},
        "/api/sessions/{sid}/actions/record": {
            "post": {"summary": "Record a 3-10 s take of the streamer's tracked motion as a new action "
                                "(after an optional countdown); it can be triggered at once",
                     "parameters": [sid], "requestBody": body("RecordRequest"),
                     "responses": {"200": {"description": "saved action"}, **errors}, "security": [{"bearer": []}]}},
    }


MODELS = [RecordRequest]


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/actions", list_actions)
    r.add_get(f"/api/actions/{{name:{ACTION_NAME}}}", show_action)
    r.add_delete(f"/api/actions/{{name:{ACTION_NAME}}}", remove_action)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/actions/record", record_action)

