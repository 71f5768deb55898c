"""Wires `serve --sfu janus:...` into the service: one Janus publisher per live session (its one
VP8 encode of the packed colour|alpha picture and its Opus voice), and what a viewer page asks
before it subscribes (`GET /api/sessions/{sid}/sfu`). The direct WHEP path is untouched and
stays the fallback: a page that finds the session not live in Janus watches directly.

`/whep-janus/{sid}` lets a WHEP player watch through Janus, the service signalling Janus on its
behalf, in the server-offer form: Janus 1.1's VideoRoom (and its Streaming plugin) only ever
makes the offer to a subscriber, so the standard form (the player offers, RFC 9725) cannot be
mapped onto it; see JanusWhep."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiortc import RTCRtpSender
from aiortc.contrib.media import MediaRelay

from liveavatar.errors import NotFoundError, UserError
from liveavatar.interop.janus import (
    JanusError,
    JanusPublisher,
    JanusSession,
    JanusTarget,
    parse_sfu,
    start_subscriber,
    subscriber_offer,
)
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

#: Subscriptions the service holds for WHEP players at once (each is one WebSocket to Janus).
MAX_WHEP_RESOURCES = 200
#: A player that took Janus's offer and sent no answer within this long is let go.
ANSWER_TIMEOUT_S = 30.0
SDP = "application/sdp"


@dataclass
class _Subscription:
    sid: str
    janus: JanusSession
    handle: int
    created: float
    started: bool = False
    watcher: asyncio.Task | None = None


class JanusWhep:
    """WHEP through Janus, server-offer form (what Meetecho's simple-whep-server keeps for the
    VideoRoom, and WHEP's drafts before -02 had):
    - `POST /whep-janus/{sid}` with an empty body: the service joins the session's Janus feed as a
      subscriber and answers 201 with Janus's SDP offer (`Content-Type: application/sdp`, all
      candidates in it) and `Location` of the resource;
    - `PATCH` that resource with the player's SDP answer (`application/sdp`): Janus starts sending;
    - `DELETE` it to leave. Janus's media goes straight to the player: not our encoder.
    A standard WHEP player POSTs its own offer instead; Janus 1.1 has no way to take it (its
    VideoRoom and Streaming plugins only offer to subscribers: client offers reached the Streaming
    plugin after 1.1, meetecho/janus-gateway#3199), so such a POST is a 415 that says so. The
    service holds at most MAX_WHEP_RESOURCES, drops one whose answer does not come within
    ANSWER_TIMEOUT_S and one that Janus hangs up."""

    def __init__(self, publishing: SfuPublishing) -> None:
        self.publishing = publishing
        self.subs: dict[str, _Subscription] = {}

    async def offer(self, sid: str) -> tuple[str, str]:
        pub = self.publishing.publishers.get(sid)
        info = pub.info() if pub is not None else {"live": False}
        if not info["live"] or not info["feed"]:
            raise _NotLive(f"session {sid!r} is not live in Janus (yet); retry, or watch it directly at /whep/{sid}")
        if len(self.subs) >= MAX_WHEP_RESOURCES:
            raise _NotLive(f"{MAX_WHEP_RESOURCES} WHEP subscriptions through Janus already; retry later")
        try:
            js, handle, sdp = await subscriber_offer(self.publishing.target, int(info["feed"]), self.publishing.pin)
        except JanusError as e:
            raise _NotLive(f"Janus refused the subscription: {e}") from None
        rid = secrets.token_hex(16)
        sub = self.subs[rid] = _Subscription(sid, js, handle, time.monotonic())
        sub.watcher = asyncio.ensure_future(self._watch(rid, sub))
        return rid, sdp

    async def answer(self, sid: str, rid: str, sdp: str) -> None:
        sub = self._get(sid, rid)
        if sub.started:
            raise UserError("this subscription has its answer already (ICE restarts are not supported)")
        try:
            await start_subscriber(sub.janus, sub.handle, sdp)
        except JanusError as e:
            await self.close(rid)
            raise UserError(f"Janus refused the answer: {e}") from None
        sub.started = True

    def _get(self, sid: str, rid: str) -> _Subscription:
        sub = self.subs.get(rid)
        if sub is None or sub.sid != sid:
            raise NotFoundError(f"no WHEP resource {rid!r} through Janus")
        return sub

    async def _watch(self, rid: str, sub: _Subscription) -> None:
        """Let go of a subscription Janus hung up or dropped, or one left without an answer."""
        while rid in self.subs:
            if sub.janus.closed.is_set() or sub.handle in sub.janus.hangups:
                break
            if not sub.started and time.monotonic() - sub.created > ANSWER_TIMEOUT_S:
                break
            await asyncio.sleep(0.5)
        self.subs.pop(rid, None)
        await sub.janus.close()

    async def close(self, rid: str) -> None:
        sub = self.subs.pop(rid, None)
        if sub is not None:
            if sub.watcher is not None:
                sub.watcher.cancel()
            await sub.janus.close()

    async def close_all(self) -> None:
        for rid in list(self.subs):
            with contextlib.suppress(Exception):
                await self.close(rid)


class _NotLive(Exception):
    """Not the client's mistake: the session is not in Janus right now (503, retry)."""


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
    _attach_whep(app, engine, publishing, require_view, session_pattern)


def _attach_whep(app: web.Application, engine: Engine, publishing: SfuPublishing,
                 require_view: Callable[[web.Request], Any], session_pattern: str) -> None:
    whep = JanusWhep(publishing)

    async def post(request: web.Request) -> web.Response:
        require_view(request)
        s = engine.get(request.match_info["sid"])
        body = await request.read()
        if body.strip():
            return web.json_response({"error": "Janus 1.1 only offers to subscribers, it cannot take a player's "
                                      "offer: POST an empty body, answer the offer in the reply with PATCH "
                                      f"({SDP}), or watch directly at /whep/{s.sid}"}, status=415,
                                     headers={"Accept-Post": SDP})
        try:
            rid, offer = await whep.offer(s.sid)
        except _NotLive as e:
            return web.json_response({"error": str(e)}, status=503, headers={"Retry-After": "2"})
        return web.Response(status=201, text=offer, content_type=SDP,
                            headers={"Location": f"/whep-janus/{s.sid}/{rid}"})

    async def patch(request: web.Request) -> web.Response:
        require_view(request)
        if request.content_type != SDP:
            raise UserError(f"PATCH the SDP answer as {SDP} (trickle ICE fragments are not supported)")
        answer = await request.text()
        if "m=" not in answer:
            raise UserError("the body is not an SDP answer")
        await whep.answer(request.match_info["sid"], request.match_info["rid"], answer)
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.Response:
        require_view(request)
        whep._get(request.match_info["sid"], request.match_info["rid"])
        await whep.close(request.match_info["rid"])
        return web.Response(status=200)

    async def on_shutdown(app: web.Application) -> None:
        await whep.close_all()

    base = f"/whep-janus/{{sid:{session_pattern}}}"
    app.router.add_post(base, post)
    app.router.add_patch(base + "/{rid:[0-9a-f]{32}}", patch)
    app.router.add_delete(base + "/{rid:[0-9a-f]{32}}", delete)
    app.on_shutdown.insert(0, on_shutdown)
