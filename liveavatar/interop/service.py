"""Wires VMC out/in and the VTube Studio-style API into the running service (`serve --vmc-out`,
`--vmc-in`, `--vts-port`). All of them act on the default session."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

log = logging.getLogger("liveavatar.interop")
SESSION = "default"


class Interop:
    """The interop endpoints of one service; `start` once the default session exists."""

    def __init__(self, engine: Any, cfg: Any) -> None:
        self.engine, self.cfg = engine, cfg
        self.vmc_out: Any = None
        self.vmc_in: Any = None
        self.vts: Any = None
        self._tasks: list[asyncio.Task] = []

    @property
    def wanted(self) -> bool:
        return bool(self.cfg.vmc_out or self.cfg.vmc_in or self.cfg.vts_port)

    async def start(self, session: Any) -> None:
        from liveavatar.interop import vmc
        cfg = self.cfg
        if cfg.vmc_out:
            host, port = vmc.parse_host_port(cfg.vmc_out, "--vmc-out")
            sender = vmc.VmcSender(host, port, bundle=cfg.vmc_bundle, arkit=cfg.vmc_arkit,
                                   emotions=lambda: tuple(getattr(session.conditioner, "emotions", ())))
            await asyncio.get_running_loop().run_in_executor(None, sender.start)
            session.tick_taps.append(sender.offer)
            self.vmc_out = sender
            log.info("VMC out: sending the default session to %s:%d (%s)", host, port,
                     "bundled" if cfg.vmc_bundle else "single messages")
        if cfg.vmc_in:
            self.vmc_in = await vmc.open_receiver(cfg.vmc_in, lambda cues: self._vmc_cues(session, cues),
                                                  lambda: bool(getattr(session.conditioner, "mirror", True)),
                                                  host=cfg.host)
            self._tasks.append(asyncio.ensure_future(self._watch_vmc_in(session)))
            log.info("VMC in: listening on UDP %s:%d for the default session", cfg.host, cfg.vmc_in)
        if cfg.vts_port:
            from liveavatar.interop.vts import VtsServer
            self.vts = VtsServer(self.engine, SESSION, cfg.vts_port)
            await self.vts.start()
            log.info("VTube Studio-style API on ws://127.0.0.1:%d", cfg.vts_port)

    def _vmc_cues(self, session: Any, cues: Any) -> None:
        """Parser thread: a VMC frame stands where perception's Cues would."""
        session.cues.put(cues)
        session.last_used = time.monotonic()
        if session.ingest_kind != "vmc" and session.ingest is None:
            self.engine.loop.call_soon_threadsafe(self._vmc_started, session)

    def _vmc_started(self, session: Any) -> None:
        if session.ingest is None and session.ingest_kind != "vmc":
            self.engine.stop_file(session)  # a live tracker replaces the demo / --source clip
            session.ingest_kind, session.ever_had_camera = "vmc", True
            session.publish_event({"type": "camera", "session": session.sid, "connected": True, "ingest": "vmc"})

    async def _watch_vmc_in(self, session: Any) -> None:
        while True:
            await asyncio.sleep(0.5)
            if session.ingest_kind == "vmc" and not self.vmc_in.live:
                session.ingest_kind = ""  # no more Cues come: the conditioner idles the avatar
                session.publish_event({"type": "camera", "session": session.sid, "connected": False})

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.vts is not None:
            await self.vts.stop()
        if self.vmc_in is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.vmc_in.stop)
        if self.vmc_out is not None:
            s = self.engine.sessions.get(SESSION)
            if s is not None and self.vmc_out.offer in s.tick_taps:
                s.tick_taps.remove(self.vmc_out.offer)
            await asyncio.get_running_loop().run_in_executor(None, self.vmc_out.stop)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.vmc_out is not None:
            out["vmc_out"] = {"frames": self.vmc_out.frames_sent, "dropped": self.vmc_out.dropped,
                              "send_errors": self.vmc_out.send_errors}
        if self.vmc_in is not None:
            out["vmc_in"] = self.vmc_in.stats()
        return out


INTEROP = web.AppKey("interop", Interop)


def attach(app: web.Application, engine: Any, cfg: Any) -> Interop:
    """Register the interop endpoints (started by `start_for`, stopped at cleanup)."""
    interop = Interop(engine, cfg)
    app[INTEROP] = interop

    async def on_cleanup(app: web.Application) -> None:
        await interop.stop()

    app.on_cleanup.append(on_cleanup)
    if cfg.vts_port:
        # The studio page's prompt for VTS plugins asking for a token (static/vts-approval.js).
        app.router.add_get("/api/vts/approvals", _approvals)
        app.router.add_post("/api/vts/approvals/{id:[0-9a-f]{32}}", _decide)
    return interop


async def _approvals(request: web.Request) -> web.Response:
    from liveavatar.server.security import CONTROL, require
    require(request, CONTROL)
    vts = request.app[INTEROP].vts
    return web.json_response({"pending": vts.pending_list() if vts is not None else []})


async def _decide(request: web.Request) -> web.Response:
    from liveavatar.errors import NotFoundError, UserError
    from liveavatar.server.security import CONTROL, require
    require(request, CONTROL)
    try:
        body = await request.json()
    except ValueError:
        raise UserError("send JSON: {\"allow\": true} or {\"allow\": false}") from None
    if not isinstance(body, dict) or not isinstance(body.get("allow"), bool):
        raise UserError("send JSON: {\"allow\": true} or {\"allow\": false}")
    vts = request.app[INTEROP].vts
    if vts is None or not vts.decide(request.match_info["id"], body["allow"]):
        raise NotFoundError("no VTS plugin is waiting under that id")
    return web.json_response({"ok": True})


async def start_for(app: web.Application, session: Any) -> None:
    """Start what the config asks for, now that the default session exists. A UserError (a
    port in use) propagates: the service reports it as a startup error."""
    interop = app[INTEROP]
    if interop.wanted:
        await interop.start(session)
