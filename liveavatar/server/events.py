"""The events WebSocket (/api/events): control events, voice keywords, 1 Hz stats and, on request,
the tracking overlay's cues go out; control commands (control.COMMANDS), subscribe and ping
come in. A slow client loses its oldest events and never holds the service up."""
from __future__ import annotations

import asyncio
import json

import numpy as np
from aiohttp import WSMsgType, web

from liveavatar.errors import UserError
from liveavatar.server import control
from liveavatar.server.security import CONTROL, VIEW, require
from liveavatar.server.session import Session
from liveavatar.server.state import ENGINE
from liveavatar.types import Cues, Part


def cues_overlay(cues: Cues) -> dict:
    """Compact landmarks for the studio's tracking overlay (x, y rounded, present parts only)."""
    def part(p: Part | None, step: int = 1) -> list | None:
        if p is None or not p.present:
            return None
        return np.round(p.landmarks[::step, :2], 3).tolist()
    return {"type": "cues", "seq": cues.seq, "pose": part(cues.pose), "face": part(cues.face, 3),
            "hand_left": part(cues.hand_left), "hand_right": part(cues.hand_right),
            "speaking": round(float(cues.voice.speaking_prob), 2)}


async def ws_message(app: web.Application, s: Session, level: str, msg: dict, sub: dict[str, bool]) -> dict:
    kind = msg.get("type")
    if kind == "subscribe":
        want = bool(msg.get("cues"))
        s.want_cues(want, sub["cues"])
        sub["cues"] = want
        return {"type": "ack", "request": "subscribe"}
    if kind == "ping":
        return {"type": "pong", "t": msg.get("t")}
    if level != CONTROL:
        raise UserError("this token is read-only (viewer token)")
    state = await control.run_message(app[ENGINE], s, msg)
    return {"type": "ack", "request": kind, "state": state}


async def events_ws(request: web.Request) -> web.WebSocketResponse:
    level = require(request, VIEW)
    eng = request.app[ENGINE]
    sid = request.query.get("session", "default")
    s = eng.get(sid)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
    await ws.prepare(request)
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    s.subscribe(queue)
    sub = {"cues": False}

    async def sender() -> None:
        while True:
            ev = await queue.get()
            await ws.send_json(ev)

    send_task = asyncio.ensure_future(sender())
    try:
        await ws.send_json({"type": "hello", "session": sid, "access": level,
                            "state": control.full_state(eng, s), "fps": eng.cfg.fps})
        async for m in ws:
            if m.type != WSMsgType.TEXT:
                continue
            reply_id = None
            try:
                msg = json.loads(m.data)
                if not isinstance(msg, dict):
                    raise UserError("messages must be JSON objects")
                reply_id = msg.get("id")
                reply = await ws_message(request.app, s, level, msg, sub)
            except ValueError as e:
                reply = {"type": "error", "error": f"message is not valid JSON: {e}"}
            except UserError as e:
                reply = {"type": "error", "error": str(e)}
            if reply_id is not None:
                reply["id"] = reply_id
            await ws.send_json(reply)
    finally:
        send_task.cancel()
        s.unsubscribe(queue, sub["cues"])
    return ws
