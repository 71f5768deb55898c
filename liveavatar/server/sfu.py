"""Wires `serve --sfu janus:...` into the service: one Janus publisher per live session (its one
VP8 encode of the packed colour|alpha picture and its Opus voice), and what a viewer page asks
before it subscribes (`GET /api/sessions/{sid}/sfu`). The direct WHEP path is untouched and
stays the fallback: a page that finds the session not live in Janus watches directly."""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiortc import RTCRtpSender
from aiortc.contrib.media import MediaRelay

from liveavatar.interop.janus import JanusError, JanusPublisher, JanusTarget, parse_sfu
from liveavatar.output.webrtc import SharedVideoTrack, VoiceTrack
from liveavatar.server.config import ServerConfig
from liveavatar.server.engine import Engine
from liveavatar.server.session import Session
from liveavatar.server.signalling import new_peer_connection

log = logging.getLogger("liveavatar.server")


class SfuPublishing:
    """Keeps every session of the engine published in Janus, and only those."""

    def __init__(self, engine: Engine, cfg: ServerConfig) -> None:
        assert cfg.sfu is not None
        self.engine, self.cfg = engine, cfg
        self.relay: MediaRelay | None = None     # the app's, bound at startup
        self.target: JanusTarget = parse_sfu(cfg.sfu)
        # With tokens, the room gets a PIN that only holders of a viewer token learn (from
        # /api/sessions/{sid}/sfu), so Janus does not serve the avatar to anyone who finds it.
        self.pin = secrets.token_urlsafe(12) if cfg.auth_required else None
        self.publishers: dict[str, JanusPublisher] = {}
        self._sessions: dict[str, Session] = {}      # the session each publisher publishes
        self._task: asyncio.Task | None = None

    def start(self, relay: MediaRelay) -> None:
        self.relay = relay
        log.info("SFU: publishing sessions into Janus at %s", self.target)
        self._task = asyncio.ensure_future(self._follow_sessions())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for pub in list(self.publishers.values()):
            await pub.stop()
        self.publishers.clear()
        self._sessions.clear()

    async def _follow_sessions(self) -> None:
        while True:
            sessions = self.engine.sessions
            # A session closed (or closed and made anew under the same name): its publisher goes.
            for sid in [sid for sid in self.publishers if sessions.get(sid) is not self._sessions.get(sid)]:
                self._sessions.pop(sid, None)
                await self.publishers.pop(sid).stop()
            for sid, s in list(sessions.items()):
                if sid not in self.publishers:
                    self._sessions[sid] = s
                    self.publishers[sid] = JanusPublisher(
                        self.target, sid, lambda: new_peer_connection(self.cfg), self._attacher(s),
                        pin=self.pin).start()
            await asyncio.sleep(0.5)

    def _attacher(self, s: Session) -> Callable[[Any], Callable[[], None]]:
        def attach(pc: Any) -> Callable[[], None]:
            if self.engine.sessions.get(s.sid) is not s:   # closed while the publisher waited to retry
                raise JanusError(f"session {s.sid!r} is closed")
            # The same single encode our direct viewers share: Janus is one more reader of it.
            video = SharedVideoTrack(s.shared_encoder_for_viewers())
            vt = pc.addTransceiver(video, direction="sendonly")
            vt.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                    if c.mimeType.lower() == "video/vp8"])
            video.sender = vt.sender
            if s.voice is None:
                s.voice = VoiceTrack(s)
            assert self.relay is not None
            voice = self.relay.subscribe(s.voice, buffered=False)
            at = pc.addTransceiver(voice, direction="sendonly")
            at.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                    if c.mimeType.lower() == "audio/opus"])
            s.want_packed += 1

            def release() -> None:
                s.want_packed -= 1
                video.stop()
                voice.stop()       # leaves the relay (closing the connection alone does not)
            return release
        return attach

    def info(self, sid: str) -> dict[str, Any]:
        pub = self.publishers.get(sid)
        out: dict[str, Any] = {"kind": "janus", "url": self.target.url, "room": self.target.room,
                               "live": False, "feed": None, "attempts": 0, "losses": 0, "last_error": ""}
        if pub is not None:
            out.update(pub.info())
        if self.pin:
            out["pin"] = self.pin
        return out

    def stats(self) -> dict[str, Any]:
        return {sid: pub.info() for sid, pub in self.publishers.items()}


SFU = web.AppKey("sfu", SfuPublishing)


def attach(app: web.Application, engine: Engine, cfg: ServerConfig,
           require_view: Callable[[web.Request], Any], session_pattern: str) -> None:
    """The route (always: a page learns there is no SFU) and, with --sfu, the publishers."""

    async def sfu_info(request: web.Request) -> web.Response:
        require_view(request)
        s = engine.get(request.match_info["sid"])
        pub = app.get(SFU)
        return web.json_response(pub.info(s.sid) if pub is not None else {"kind": None, "live": False})

    app.router.add_get(f"/api/sessions/{{sid:{session_pattern}}}/sfu", sfu_info)
    if cfg.sfu is None:
        return
    publishing = app[SFU] = SfuPublishing(engine, cfg)

    async def on_startup(app: web.Application) -> None:
        from liveavatar.server.state import SERVICE
        publishing.start(app[SERVICE].relay)

    async def on_shutdown(app: web.Application) -> None:
        await publishing.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.insert(0, on_shutdown)
