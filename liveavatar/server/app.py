"""The aiohttp application: its route table, middlewares and hooks. Each job has its own
module: security (tokens, CORS, errors), control (the command table), signalling (WHIP/WHEP),
events (the WebSocket), status (health, metrics, state), feeds, tasks (background work)."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from liveavatar.interop import service as interop
from liveavatar.server import actions, characters, control, events, metrics, sfu, signalling, status, tasks
from liveavatar.server import feeds as feed_routes
from liveavatar.server.config import ServerConfig
from liveavatar.server.engine import Engine
from liveavatar.server.http_io import SESSION_ID
from liveavatar.server.security import CONTROL, VIEW, errors_middleware, require, security_middleware
from liveavatar.server.stages import Stages, real_stages
from liveavatar.server.state import CONFIG, ENGINE, SERVICE, ServiceState

STATIC = Path(__file__).resolve().parent / "static"


async def page(request: web.Request) -> web.FileResponse:
    name = request.match_info["page"]
    resp = web.FileResponse(STATIC / f"{name}.html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/studio" + (f"?{request.query_string}" if request.query_string else ""))


def create_app(cfg: ServerConfig, stages: Stages | None = None,
               feeds: list[tuple[str, str]] | None = None) -> web.Application:
    app = web.Application(middlewares=[security_middleware, errors_middleware],
                          client_max_size=cfg.max_body_bytes)
    engine = Engine(cfg, stages or real_stages(cfg), None)  # loop: bound at startup
    app[CONFIG] = cfg
    app[ENGINE] = engine
    app[SERVICE] = ServiceState(registry=metrics.make_registry(engine), startup_feeds=list(feeds or []))
    r = app.router
    r.add_get("/", index)
    r.add_get("/favicon.ico", no_content)
    r.add_get("/{page:studio|viewer}", page)
    r.add_static("/static", STATIC, append_version=False)
    r.add_get("/health", status.health)
    r.add_get("/metrics", status.metrics_handler)
    r.add_get("/api/openapi.json", status.openapi_handler)
    r.add_get("/api/config", status.client_config)
    r.add_get("/api/events", events.events_ws)
    r.add_get("/api/sessions", status.sessions_list)
    r.add_get(f"/api/sessions/{{sid:{SESSION_ID}}}/state", status.state)
    r.add_get(f"/api/sessions/{{sid:{SESSION_ID}}}/frame.png", status.frame_png)
    control.add_routes(app)    # emotion, action, character, calibrate, hotkey
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/feeds", feed_routes.feeds_start)
    r.add_delete(f"/api/sessions/{{sid:{SESSION_ID}}}/feeds", feed_routes.feeds_stop)
    characters.add_routes(app, ENGINE, lambda req, write: require(req, CONTROL if write else VIEW))
    r.add_post(f"/whip/{{sid:{SESSION_ID}}}", signalling.whip)
    r.add_post(f"/whep/{{sid:{SESSION_ID}}}", signalling.whep)
    r.add_delete(f"/{{kind:whip|whep}}/{{sid:{SESSION_ID}}}/{{rid:[0-9a-f]{{32}}}}", signalling.resource_delete)
    r.add_patch(f"/{{kind:whip|whep}}/{{sid:{SESSION_ID}}}/{{rid:[0-9a-f]{{32}}}}", signalling.resource_patch)
    actions.register(app)
    app.on_startup.append(tasks.on_startup)
    app.on_shutdown.append(tasks.on_shutdown)
    interop.attach(app, engine, cfg)
    sfu.attach(app, engine, cfg, lambda req: require(req, VIEW), SESSION_ID)
    return app
