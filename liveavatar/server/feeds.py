"""Output feeds of a session's avatar besides WebRTC: the low-latency MPEG-TS feed that OBS's
media source reads (started over the API or by `serve`), and the virtual camera (`serve` only)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from liveavatar.errors import UserError
from liveavatar.server import api
from liveavatar.server.http_io import json_body, session_id
from liveavatar.server.security import CONTROL, require
from liveavatar.server.session import Session
from liveavatar.server.state import ENGINE


async def feeds_start(request: web.Request) -> web.Response:
    require(request, CONTROL)
    s = request.app[ENGINE].get(session_id(request))
    body = await json_body(request, api.FeedRequest)
    info = await start_feed(request.app, s, body.url)
    return web.json_response({"ok": True, "feed": info})


async def start_feed(app: web.Application, s: Session, url: str) -> dict:
    eng = app[ENGINE]
    try:
        from liveavatar.output.mpegts import MpegTsFeed, receiver_url
    except ImportError as e:
        raise UserError(f"the MPEG-TS feed is not available in this build ({e})") from None
    sink = MpegTsFeed(url, eng.cfg.size, eng.cfg.size, eng.cfg.fps, background=eng.flat_bg)
    await asyncio.get_running_loop().run_in_executor(eng.pool, sink.start)
    old = s.replace_sink("mpegts", sink)
    if old is not None:
        await asyncio.get_running_loop().run_in_executor(eng.pool, old.stop)
    return {"kind": "mpegts", "url": url, "reader_url": receiver_url(url), "width": eng.cfg.size,
            "height": eng.cfg.size, "fps": eng.cfg.fps}


async def feeds_stop(request: web.Request) -> web.Response:
    require(request, CONTROL)
    s = request.app[ENGINE].get(session_id(request))
    stopped = []
    # the virtual camera is the machine's, started by `serve --virtualcam`: not a feed to stop here
    for name, sink in s.take_sinks(keep=("virtualcam",)).items():
        await asyncio.get_running_loop().run_in_executor(request.app[ENGINE].pool, sink.stop)
        stopped.append(name)
    return web.json_response({"ok": True, "stopped": stopped})
