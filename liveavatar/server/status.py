"""Read-only routes: /health, /metrics, the pages' client config, the OpenAPI document, a
session's state, the session list and the latest frame as PNG."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from liveavatar.errors import NotFoundError
from liveavatar.server import api, control, metrics
from liveavatar.server.health import service_health
from liveavatar.server.http_io import session_id
from liveavatar.server.security import VIEW, require
from liveavatar.server.session import STRIP_ROWS
from liveavatar.server.state import CONFIG, ENGINE, SERVICE


async def health(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    # Ready means warmed up *and* the default session exists, so a hotkey sent right after a
    # 200 (OBS script, Stream Deck) always finds its session.
    ready = eng.ready and request.app[SERVICE].outputs_ready.is_set() and "default" in eng.sessions
    return web.json_response(service_health(eng), status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    require(request, VIEW)
    body = metrics.exposition(request.app[SERVICE].registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def client_config(request: web.Request) -> web.Response:
    """What our pages need before they make an offer: ICE servers (for remote use), sizes."""
    require(request, VIEW)
    cfg = request.app[CONFIG]
    ice = []
    if cfg.ice_servers:
        entry: dict[str, Any] = {"urls": cfg.ice_servers}
        if cfg.ice_username:
            entry.update(username=cfg.ice_username, credential=cfg.ice_credential or "")
        ice.append(entry)
    return web.json_response({"ice_servers": ice, "fps": cfg.fps, "size": cfg.size,
                              "strip_rows": STRIP_ROWS})


async def openapi_handler(request: web.Request) -> web.Response:
    from liveavatar import __version__ as version
    s = request.app[ENGINE].sessions.get("default")
    actions = getattr(s.conditioner, "actions", None) if s else None   # imported ones too
    return web.json_response(api.openapi(version) if actions is None else api.openapi(version, actions))


async def state(request: web.Request) -> web.Response:
    require(request, VIEW)
    s = request.app[ENGINE].get(session_id(request))
    st = control.full_state(request.app[ENGINE], s)
    st["stats"] = request.app[SERVICE].stats.get(s.sid, {})
    return web.json_response(st)


async def sessions_list(request: web.Request) -> web.Response:
    require(request, VIEW)
    eng = request.app[ENGINE]
    return web.json_response({"sessions": [{"session": sid, "camera": bool(s.ingest), "viewers": s.viewers,
                                            "character": s.character} for sid, s in eng.sessions.items()],
                              "max_sessions": eng.cfg.max_sessions})


async def frame_png(request: web.Request) -> web.Response:
    require(request, VIEW)
    eng = request.app[ENGINE]
    s = eng.get(session_id(request))
    for _ in range(20):  # a brand-new session renders its first frame within a tick or two
        if s.latest is not None:
            break
        await asyncio.sleep(0.05)
    frame = s.latest
    if frame is None:
        raise NotFoundError(f"session {s.sid!r} has not rendered a frame yet")

    def encode() -> bytes:
        import cv2
        ok, buf = cv2.imencode(".png", cv2.cvtColor(frame.rgba, cv2.COLOR_RGBA2BGRA))
        return buf.tobytes()

    png = await asyncio.get_running_loop().run_in_executor(eng.pool, encode)
    return web.Response(body=png, content_type="image/png",
                        headers={"X-Capture-Ns": str(frame.t_capture_ns), "X-Frame-Seq": str(frame.seq)})
